# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU 11.1 from a Debian trixie root (scripts/install-qemu-11.sh), run as ``chroot ROOT qemu-system-x86_64``.

Debian 12 cannot run QEMU 10.1+ binaries (built for trixie's glibc), so the recorder runs them inside a
debootstrapped trixie root. Loopback is shared, so the host's tcpdump sees the traffic. Every file QEMU opens
(QMP socket, serial log, guest kernel, TLS credentials, SSLKEYLOGFILE) must lie inside the root: the recorder
makes its working directory under ``ROOT/tmp`` and hands QEMU the in-root path (``QemuInstall.qemu_path``),
while it uses the host path itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .qemus import EnvironmentProblem, QemuInstall

ROOT_ENV = "MIGSHARK_TRIXIE_ROOT"
DEFAULT_ROOT = Path("/opt/migshark-trixie")
BINARY = "/usr/bin/qemu-system-x86_64"
# Mounts QEMU needs inside the root (the install script makes them; they do not survive a reboot).
NEEDED_MOUNTS = ("proc", "dev", "sys")


def trixie_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def chroot_install(name: str, root: Path | None = None) -> QemuInstall:
    """A QEMU installed in a chroot: started as ``chroot ROOT qemu-system-x86_64``."""
    root = root or trixie_root()
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    return QemuInstall(
        name,
        root / BINARY.lstrip("/"),
        root=root,
        prefix=(chroot, str(root)),
        command_binary=BINARY,
        install_hint="scripts/install-qemu-11.sh",
    )


def mounted_points(mounts_text: str) -> set[str]:
    """Mount points listed in a /proc/mounts text (octal escapes such as ``\\040`` decoded)."""
    points = set()
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            points.add(fields[1].encode().decode("unicode_escape"))
    return points


def missing_mounts(root: Path, mounts_text: str | None = None) -> list[str]:
    """The mounts in NEEDED_MOUNTS that /proc/mounts does not show under ``root``."""
    if mounts_text is None:
        mounts_text = Path("/proc/mounts").read_text()
    points = mounted_points(mounts_text)
    real = os.path.realpath(root)
    return [m for m in NEEDED_MOUNTS if os.path.join(real, m) not in points]


def check_root(install: QemuInstall) -> None:
    """Raise EnvironmentProblem unless the root has QEMU and its mounts."""
    assert install.root is not None
    hint = f"run scripts/install-qemu-11.sh {install.root}"
    if not install.binary.is_file():
        raise EnvironmentProblem(f"QEMU {install.name} not found at {install.binary} ({hint})")
    missing = missing_mounts(install.root)
    if missing:
        raise EnvironmentProblem(
            f"QEMU {install.name}: {', '.join(missing)} not mounted in {install.root} ({hint}, it redoes them)"
        )


def work_parent(installs: Iterable[QemuInstall]) -> Path | None:
    """Where the recording's working directory must be made: ``ROOT/tmp`` of the side that runs chrooted.

    None when no side does (the system temporary directory). Two different roots cannot share one
    directory, so that is refused.
    """
    roots = {inst.root for inst in installs if inst.root is not None}
    if not roots:
        return None
    if len(roots) > 1:
        raise EnvironmentProblem(f"the two sides run in different roots ({', '.join(sorted(map(str, roots)))})")
    parent = roots.pop() / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def stage_kernel(kernel: Path, work: Path) -> Path:
    """A copy of the guest kernel in the working directory, so a chrooted QEMU can open it."""
    dest = work / kernel.name
    shutil.copyfile(kernel, dest)
    return dest
