#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Re-record the capture corpus in this directory, one migration at a time (root; see docs/recording.md).
# Usage: captures/record-corpus.sh [SCENARIO...]     (default: every scenario below)
set -u
cd "$(dirname "$0")/.."
SCENARIOS="${*:-precopy-7.2 precopy-10.0 multifd4-7.2 multifd4-10.0 multifd4-7.2-to-10.0 multifd-tls-7.2
    postcopy-7.2 preempt-7.2 preempt-10.0 preempt-recover-7.2 preempt-recover-10.0
    holdback-multifd-7.2 holdback-preempt-7.2 holdback-multifd-10.0 holdback-preempt-10.0
    holdback-preempt-7.2-to-10.0 holdback-tls-7.2 holdback-multifd-conn-7.2}"
for s in $SCENARIOS; do
    echo "== $s"
    timeout 300 python3 -m dissectors.recorder --scenario "$s" --out captures --gzip -v
    echo "exit $?"
done
