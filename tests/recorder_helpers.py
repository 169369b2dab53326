"""Shared helpers for the tests that record real QEMU migrations."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from dissectors.recorder.capture import RING_TIMEOUT_S
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


def wait_handed_over(pcap: Path, timeout: float = 30.0) -> None:
    """Until tcpdump's file has held packets and kept its size for longer than the ring's timeout: the kernel
    has handed over every block (in a recording, while the QEMUs quit before the capture is stopped)."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now, current = time.monotonic(), pcap.stat().st_size
        if current != size:
            size, since = current, now
        elif size > 24 and now - since > RING_TIMEOUT_S + 0.5:
            return
        time.sleep(0.05)
    raise AssertionError(f"{pcap.name}: tcpdump wrote nothing that stayed for {RING_TIMEOUT_S + 0.5} s")
