#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Install the tools migshark's recorder needs, and unpack QEMU 10.0 from bookworm-backports
# side by side with Debian 12's QEMU 7.2 (which stays the system QEMU).
#
# Usage: scripts/install-qemu.sh [PREFIX]        (default PREFIX: /opt/qemu-10.0)
# Idempotent: re-running skips what is already there. Needs root (apt-get).
set -eu

PREFIX="${1:-/opt/qemu-10.0}"
SOURCES=/etc/apt/sources.list.d/bookworm-backports.sources
BPO_PKGS="qemu-system-x86 qemu-system-common qemu-system-data seabios"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-qemu.sh: must run as root" >&2
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive

# 1. Debian 12's own packages (QEMU 7.2 and the capture/build tools).
need=""
for p in qemu-system-x86 qemu-utils tcpdump gnutls-bin gcc-multilib; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $need
fi

# 2. QEMU 10.0 from bookworm-backports, unpacked (not installed) into $PREFIX.
if [ -x "$PREFIX/usr/bin/qemu-system-x86_64" ]; then
    echo "QEMU already unpacked in $PREFIX: $("$PREFIX/usr/bin/qemu-system-x86_64" --version | head -n1)"
    exit 0
fi

if [ ! -f "$SOURCES" ]; then
    cat > "$SOURCES" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update

# Pick the backports version of each package (the candidate from the bookworm-backports suite).
bpo_version() {
    apt-cache madison "$1" | awk -F'|' '$3 ~ /bookworm-backports/ {gsub(/ /, "", $2); print $2; exit}'
}

work="$(mktemp -d)"
chmod 755 "$work"   # apt-get download runs as _apt
trap 'rm -rf "$work"' EXIT
specs=""
for p in $BPO_PKGS; do
    v="$(bpo_version "$p")"
    if [ -z "$v" ]; then
        echo "install-qemu.sh: no bookworm-backports version of $p" >&2
        apt-cache policy "$p" >&2
        exit 2
    fi
    echo "$p: $v"
    specs="$specs $p=$v"
done

# shellcheck disable=SC2086
(cd "$work" && apt-get download $specs)
mkdir -p "$PREFIX"
for deb in "$work"/*.deb; do
    dpkg -x "$deb" "$PREFIX"
done

"$PREFIX/usr/bin/qemu-system-x86_64" --version | head -n1
if ldd "$PREFIX/usr/bin/qemu-system-x86_64" | grep -q "not found"; then
    echo "install-qemu.sh: missing libraries:" >&2
    ldd "$PREFIX/usr/bin/qemu-system-x86_64" | grep "not found" >&2
    exit 2
fi
echo "Run it with QEMU_MODULE_DIR=$PREFIX/usr/lib/x86_64-linux-gnu/qemu" \
     "and -L $PREFIX/usr/share/seabios -L $PREFIX/usr/share/qemu"
