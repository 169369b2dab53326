# SPDX-License-Identifier: GPL-2.0-or-later
"""The QEMU binaries the recorder knows by name, and how to start one for a migration."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PREFIX_10_0 = Path(os.environ.get("MIGSHARK_QEMU_10_0_PREFIX", "/opt/qemu-10.0"))
KNOWN_QEMUS = ("7.2", "10.0", "11.1")  # 11.1 runs in a trixie chroot (chroot.py)


class EnvironmentProblem(Exception):
    """Something the recorder needs is missing (binary, permission); exit status 2."""


@dataclass(frozen=True)
class QemuInstall:
    """One QEMU build. ``binary`` is its host path (checked before a run).

    A QEMU that runs in another root (``root``, e.g. QEMU 11.1 in a trixie chroot) is started as
    ``prefix + [command_binary, ...]`` and sees host paths under ``root`` at their in-root path:
    ``qemu_path()`` translates every path written on its command line or in its environment. A wrapper
    such as ``ip netns exec NS`` goes in front of the whole command line, so the two compose.
    """

    name: str  # "7.2", "10.0" or "11.1"
    binary: Path
    env: dict[str, str] = field(default_factory=dict)
    firmware_dirs: tuple[Path, ...] = ()  # as QEMU sees them
    root: Path | None = None  # host path of the root QEMU runs in (None: the host's)
    prefix: tuple[str, ...] = ()  # e.g. ("chroot", "/opt/migshark-trixie")
    command_binary: str | None = None  # the binary as the prefix's command sees it (default: binary)
    install_hint: str | None = None

    def argv0(self) -> list[str]:
        """The start of the command line: the prefix, then the binary."""
        return [*self.prefix, self.command_binary or str(self.binary)]

    def qemu_path(self, host_path: Path) -> str:
        """``host_path`` as QEMU sees it (the in-root path when it runs in a root)."""
        if self.root is None:
            return str(host_path)
        try:
            inner = Path(host_path).resolve().relative_to(Path(self.root).resolve())
        except ValueError:
            raise EnvironmentProblem(
                f"QEMU {self.name} runs in {self.root} and cannot open {host_path} (outside the root)"
            ) from None
        return "/" + inner.as_posix() if inner.parts else "/"

    def check(self) -> None:
        if self.root is not None:
            from .chroot import check_root

            check_root(self)
            return
        if not self.binary.is_file() or not os.access(self.binary, os.X_OK):
            hint = self.install_hint or (
                "apt-get install qemu-system-x86" if self.name == "7.2" else "scripts/install-qemu.sh"
            )
            raise EnvironmentProblem(f"QEMU {self.name} not found at {self.binary} (run {hint})")


def qemu_install(name: str) -> QemuInstall:
    if name == "7.2":
        path = os.environ.get("MIGSHARK_QEMU_7_2", "/usr/bin/qemu-system-x86_64")
        return QemuInstall(name, Path(path))
    if name == "10.0":
        prefix = DEFAULT_PREFIX_10_0
        return QemuInstall(
            name,
            prefix / "usr/bin/qemu-system-x86_64",
            env={"QEMU_MODULE_DIR": str(prefix / "usr/lib/x86_64-linux-gnu/qemu")},
            firmware_dirs=(prefix / "usr/share/seabios", prefix / "usr/share/qemu"),
        )
    if name == "11.1":
        from .chroot import chroot_install

        return chroot_install(name)
    raise EnvironmentProblem(f"unknown QEMU {name!r} (known: {', '.join(KNOWN_QEMUS)})")


@dataclass(frozen=True)
class GuestSpec:
    kernel: Path
    append: str
    memory_mib: int = 64
    machine: str = "pc"


def qemu_command(
    install: QemuInstall,
    guest: GuestSpec,
    *,
    qmp_socket: Path,
    serial_log: Path,
    incoming: bool,
    tls_dir: Path | None,
    name: str,
    tls_priority: str | None = None,
) -> list[str]:
    """The command line of one side. The destination starts with ``-incoming defer``."""
    path = install.qemu_path
    cmd = [
        *install.argv0(),
        "-name",
        name,
        "-accel",
        "tcg",
        "-M",
        guest.machine,
        "-m",
        str(guest.memory_mib),
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{path(serial_log)}",
        "-kernel",
        path(guest.kernel),
        "-append",
        guest.append,
        "-qmp",
        f"unix:{path(qmp_socket)},server=on,wait=off",
    ]
    for d in install.firmware_dirs:
        cmd += ["-L", str(d)]
    if tls_dir is not None:
        endpoint = "server" if incoming else "client"
        creds = f"tls-creds-x509,id=tls0,dir={path(tls_dir)},endpoint={endpoint},verify-peer=on"
        if tls_priority:
            creds += ",priority=" + tls_priority.replace(",", ",,")   # QemuOpts: a comma is doubled
        cmd += ["-object", creds]
    if incoming:
        cmd += ["-incoming", "defer"]
    return cmd


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EnvironmentProblem(f"{name} not found in PATH")
    return path
