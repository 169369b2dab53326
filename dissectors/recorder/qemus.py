# SPDX-License-Identifier: GPL-2.0-or-later
"""The QEMU binaries the recorder knows by name, and how to start one for a migration."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PREFIX_10_0 = Path(os.environ.get("MIGSHARK_QEMU_10_0_PREFIX", "/opt/qemu-10.0"))


class EnvironmentProblem(Exception):
    """Something the recorder needs is missing (binary, permission); exit status 2."""


@dataclass(frozen=True)
class QemuInstall:
    name: str  # "7.2" or "10.0"
    binary: Path
    env: dict[str, str] = field(default_factory=dict)
    firmware_dirs: tuple[Path, ...] = ()

    def check(self) -> None:
        if not self.binary.is_file() or not os.access(self.binary, os.X_OK):
            hint = "apt-get install qemu-system-x86" if self.name == "7.2" else "scripts/install-qemu.sh"
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
    raise EnvironmentProblem(f"unknown QEMU {name!r} (known: 7.2, 10.0)")


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
) -> list[str]:
    """The command line of one side. The destination starts with ``-incoming defer``."""
    cmd = [
        str(install.binary),
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
        f"file:{serial_log}",
        "-kernel",
        str(guest.kernel),
        "-append",
        guest.append,
        "-qmp",
        f"unix:{qmp_socket},server=on,wait=off",
    ]
    for d in install.firmware_dirs:
        cmd += ["-L", str(d)]
    if tls_dir is not None:
        endpoint = "server" if incoming else "client"
        cmd += ["-object", f"tls-creds-x509,id=tls0,dir={tls_dir},endpoint={endpoint},verify-peer=on"]
    if incoming:
        cmd += ["-incoming", "defer"]
    return cmd


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EnvironmentProblem(f"{name} not found in PATH")
    return path
