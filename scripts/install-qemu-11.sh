#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# QEMU 11.1 for migshark's recorder. Debian 12 cannot run QEMU 10.1+ binaries (they are built for
# trixie's glibc), so this script builds a minimal Debian trixie root with debootstrap and installs
# qemu-system-x86 from trixie-backports inside it (1:11.1.3+ds-2~bpo13+1 with SeaBIOS 1.17 when
# written). The recorder runs it as `chroot ROOT qemu-system-x86_64 ...`; loopback is shared, so the
# host's tcpdump sees its traffic.
#
# Usage: scripts/install-qemu-11.sh [ROOT]
#   ROOT: the argument, else $MIGSHARK_TRIXIE_ROOT, else /opt/migshark-trixie
# Idempotent: re-running skips what is done and only redoes the mounts that are missing (they do not
# survive a reboot). Needs root.
set -eu

ROOT="${1:-${MIGSHARK_TRIXIE_ROOT:-/opt/migshark-trixie}}"
MIRROR="${MIGSHARK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-qemu-11.sh: must run as root" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive

# 1. debootstrap on the host.
if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends debootstrap
fi

# 2. The trixie root (a finished debootstrap leaves /usr/bin/apt-get and no /debootstrap directory).
if [ -x "$ROOT/usr/bin/apt-get" ] && [ ! -d "$ROOT/debootstrap" ]; then
    echo "trixie root already in $ROOT"
else
    mkdir -p "$ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR"
fi

# 3. Mounts, each only when /proc/mounts does not list it yet.
is_mounted() {
    awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts
}
mount_once() {  # mount_once TARGET MOUNT-ARGS...
    target="$1"
    shift
    if is_mounted "$target"; then
        return 0
    fi
    mkdir -p "$target"
    mount "$@" "$target"
    echo "mounted $target"
}
# /proc/mounts shows the real path (no symlinks, no trailing slash).
ROOT="$(cd "$ROOT" && pwd -P)"
mount_once "$ROOT/proc" -t proc proc
mount_once "$ROOT/dev" --bind /dev
mount_once "$ROOT/dev/pts" --bind /dev/pts
mount_once "$ROOT/sys" -t sysfs sys

# 4. QEMU from trixie-backports.
if chroot "$ROOT" dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"; then
    echo "QEMU already installed in $ROOT"
else
    list="$ROOT/etc/apt/sources.list.d/trixie-backports.list"
    if [ ! -f "$list" ]; then
        echo "deb $MIRROR trixie-backports main" > "$list"
    fi
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    chroot "$ROOT" apt-get update
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends -t trixie-backports qemu-system-x86
fi
mkdir -p "$ROOT/tmp"
chmod 1777 "$ROOT/tmp"

chroot "$ROOT" qemu-system-x86_64 --version | head -n1
chroot "$ROOT" dpkg-query -W -f='${Package} ${Version}\n' qemu-system-x86 seabios 2>/dev/null || true
echo "Run it with: chroot $ROOT qemu-system-x86_64 ...  (recorder: MIGSHARK_TRIXIE_ROOT=$ROOT)"
