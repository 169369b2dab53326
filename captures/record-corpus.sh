#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Re-record the capture corpus in this directory, one migration at a time (root; see docs/recording.md).
# Usage: captures/record-corpus.sh [SCENARIO...]     (default: every scenario below)
# The *-11.1 scenarios run QEMU 11.1 in the trixie root made by scripts/install-qemu-11.sh (which also
# redoes its mounts after a reboot): run that first.
set -u
cd "$(dirname "$0")/.."
SCENARIOS="${*:-precopy-7.2 precopy-10.0 multifd4-7.2 multifd4-10.0 multifd4-7.2-to-10.0 multifd-tls-7.2
    postcopy-7.2 preempt-7.2 preempt-10.0 preempt-recover-7.2 preempt-recover-10.0
    holdback-multifd-7.2 holdback-preempt-7.2 holdback-multifd-10.0 holdback-preempt-10.0
    holdback-preempt-7.2-to-10.0 holdback-tls-7.2 holdback-multifd-conn-7.2 multifd-postcopy-7.2
    holdback-preempt-7.2-to-11.1 multifd4-postcopy-preempt-11.1 preempt-11.1 multifd4-11.1 precopy-11.1
    holdback-multifd-11.1 multifd4-10.0-to-11.1 preempt-recover-11.1 multifd-tls-11.1
    multifd-tls-10.0 multifd-tls-7.2-to-11.1 preempt-tls-7.2 preempt-tls-10.0 preempt-tls-11.1 holdback-tls-11.1 timer-footer-11.1
    tlsfin-multifd-7.2 tlsfin-multifd-10.0 tlsfin-multifd-11.1 tlsfin-preempt-7.2
    multifd-tls12-7.2 multifd-tls12-11.1 multifd-tls12-chacha-10.0
    netpath-multifd4-7.2 netpath-multifd4-7.2-misorder netpath-preempt-7.2
    netpath-multifd4-10.0 netpath-multifd-tls-11.1 preempt-tls12-11.1
    multifd4-11.1-to-10.0 multifd4-10.0-to-7.2 multifd4-11.1-to-7.2 preempt-10.0-to-7.2
    cancel-precopy-7.2 cancel-multifd4-11.1 cancel-postcopy-7.2 cancel-tls-7.2 cancel-multifd-tls-10.0
    kill-destination-multifd4-10.0 kill-destination-tls-10.0 kill-destination-preempt-11.1 kill-destination-preempt-tls-11.1
    kill-source-preempt-7.2
    multifd-tls13-chacha-11.1 preempt-recover-tls-11.1 multifd8-7.2-to-11.1 holdback-tls-11.1-to-10.0
    netpath-multifd4-11.1 netpath-kill-destination-10.0 netpath-preempt-recover-11.1 netpath-cancel-tls-11.1}"
# netpath-multifd4-7.2-misorder: netpath-multifd4-7.2 recorded again and again (at most 15 times) until the
# jittered path makes the destination accept a multifd channel before main (it prints the bad magic error).
record_misorder() {
    for i in $(seq 1 15); do
        echo "== netpath-multifd4-7.2-misorder, attempt $i"
        timeout 300 python3 -m dissectors.recorder --scenario netpath-multifd4-7.2 \
            --name netpath-multifd4-7.2-misorder --out captures --gzip
        grep -q '"destination_bad_magic": true' captures/netpath-multifd4-7.2-misorder.manifest.json && return 0
    done
    echo "no misordered run in 15 attempts (the last one is left in captures/)" >&2
    return 1
}
for s in $SCENARIOS; do
    if [ "$s" = netpath-multifd4-7.2-misorder ]; then
        record_misorder
        echo "exit $?"
        continue
    fi
    echo "== $s"
    timeout 300 python3 -m dissectors.recorder --scenario "$s" --out captures --gzip -v
    echo "exit $?"
done
