#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Everything the test suite needs on a fresh Debian 12 machine: Debian's tshark, tcpdump, QEMU 7.2
# (and QEMU 10.0 from bookworm-backports unpacked beside it, QEMU 11.1 in a debootstrapped trixie root),
# a virtualenv in .venv with migshark, its test packages and the fleet's (Dask, pyarrow, fsspec), with
# the compiled pcap scanner (gcc, python3-dev). Idempotent. Needs root for apt-get.
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

need=""
# wireshark-qt, xvfb, xdotool, imagemagick: the GUI screenshot (scripts/wireshark-screenshot.sh)
for p in tshark python3-venv python3-dev gcc wireshark-qt xvfb xdotool imagemagick; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $need
fi
sh scripts/install-qemu.sh
sh scripts/install-qemu-11.sh   # QEMU 11.1 in a trixie chroot (/opt/migshark-trixie)
sh scripts/install-tshark-roots.sh   # tshark 4.4 (trixie root) and 4.6 (sid root) for the plugin tests

# Run through sudo by a user (the README's command): apt-get and /opt as root, but the virtualenv in the
# user's checkout as that user, who can then go on using and updating it (pip as root left it root-owned).
as_user() {
    if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        sudo -u "$SUDO_USER" -- "$@"
    else
        "$@"
    fi
}
if [ ! -x .venv/bin/python ]; then
    as_user python3 -m venv .venv
fi
as_user .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test,fleet,docs]'   # fleet: dask, distributed, pyarrow, fsspec; docs: mkdocs, argparse-manpage
