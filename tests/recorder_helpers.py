"""Shared helpers for the tests that record real QEMU migrations."""

from __future__ import annotations

import os
import shutil

from dissectors.recorder.qemus import qemu_install


def live_recording_unavailable() -> str | None:
    """Why a real 7.2 migration cannot be recorded here (root, QEMU 7.2, tcpdump, gcc, qemu.qmp), or None."""
    if os.geteuid() != 0:
        return "needs root (tcpdump, userfaultfd)"
    if not qemu_install("7.2").binary.is_file():
        return "Debian's qemu-system-x86_64 (QEMU 7.2) is not installed"
    for tool in ("tcpdump", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import qemu.qmp  # noqa: F401
    except ImportError:
        return "python package qemu.qmp is not installed"
    return None
