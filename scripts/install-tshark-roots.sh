#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# tshark 4.4 and 4.6 for the Wireshark plugin tests (Debian 12's own tshark is 4.0). Each lives in a
# minimal Debian root and is run there with chroot, as an unprivileged user (Wireshark 4.4+ loads no
# Lua as root):
#   - 4.4: Debian trixie's tshark, in the trixie root that scripts/install-qemu-11.sh debootstraps
#     (/opt/migshark-trixie; made here with debootstrap --variant=minbase if missing);
#   - 4.6: Debian sid's tshark, in a minimal sid root (/opt/migshark-sid). A sid Release file can be
#     past its Valid-Until date, so apt is told not to check it.
# Only tshark and what it depends on (no recommends) is installed: about 60 MB of packages per root.
# The tests find the roots through $MIGSHARK_TSHARK_ROOTS (default "/opt/migshark-trixie /opt/migshark-sid").
#
# Usage: scripts/install-tshark-roots.sh [TRIXIE_ROOT [SID_ROOT]]
# Idempotent: a root that already has tshark is left alone. Needs root.
set -eu

TRIXIE="${1:-${MIGSHARK_TRIXIE_ROOT:-/opt/migshark-trixie}}"
SID="${2:-${MIGSHARK_SID_ROOT:-/opt/migshark-sid}}"
MIRROR="${MIGSHARK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
NOVALID="-o Acquire::Check-Valid-Until=false"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-tshark-roots.sh: must run as root" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive

if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends debootstrap
fi

# tshark_root SUITE ROOT: a minbase root of SUITE with tshark in it.
tshark_root() {
    suite="$1"
    root="$2"
    if [ -x "$root/usr/bin/tshark" ]; then
        echo "tshark already in $root: $(chroot "$root" tshark --version | head -n1)"
        return 0
    fi
    if [ ! -x "$root/usr/bin/apt-get" ] || [ -d "$root/debootstrap" ]; then
        mkdir -p "$root"
        debootstrap --variant=minbase "$suite" "$root" "$MIRROR"
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    echo "wireshark-common wireshark-common/install-setuid boolean false" | chroot "$root" debconf-set-selections
    # shellcheck disable=SC2086
    chroot "$root" apt-get $NOVALID update
    # shellcheck disable=SC2086
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get $NOVALID install -y --no-install-recommends tshark
    chroot "$root" apt-get clean
    mkdir -p "$root/tmp"
    chmod 1777 "$root/tmp"
    echo "installed in $root: $(chroot "$root" tshark --version | head -n1)"
}

tshark_root trixie "$TRIXIE"
tshark_root sid "$SID"
