# SPDX-License-Identifier: GPL-2.0-or-later
"""tcpdump on loopback, started and confirmed ready before the first SYN, stopped with its drop count."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .qemus import EnvironmentProblem, tool

BUFFER_KIB = 524288  # -B: 512 MiB; the default buffer dropped packets on a 9 MB migration
# libpcap hands tcpdump a ring block only when it is full or its 1 s timeout runs out, and tcpdump's SIGINT
# handler drops the block in progress (not counted as dropped): wait longer than that timeout before SIGINT.
# A 0.3 s wait lost the last 29 packets (every FIN/RST) of multifd-postcopy-7.2, whose end came just before.
FLUSH_S = 1.2


@dataclass
class CaptureStats:
    captured: int | None
    received_by_filter: int | None
    dropped_by_kernel: int | None
    stderr: str

    def to_dict(self) -> dict[str, object]:
        return {
            "packets_captured": self.captured,
            "packets_received_by_filter": self.received_by_filter,
            "packets_dropped_by_kernel": self.dropped_by_kernel,
            "tcpdump_stderr": self.stderr,
        }


def port_filter(ports: list[int]) -> str:
    return " or ".join(f"tcp port {p}" for p in sorted(set(ports)))


def _count(pattern: str, text: str) -> int | None:
    m = re.search(rf"(\d+) packets? {pattern}", text)
    return int(m.group(1)) if m else None


class Tcpdump:
    def __init__(self, out: Path, ports: list[int], interface: str = "lo", prefix: list[str] | None = None) -> None:
        """``prefix`` goes in front of tcpdump's command line (e.g. ``ip netns exec NS``)."""
        self.out = out
        self.args = [
            *(prefix or []),
            tool("tcpdump"),
            "-i",
            interface,
            "-B",
            str(BUFFER_KIB),
            "-s",
            "0",
            "-n",
            "-U",
            "-w",
            str(out),
            port_filter(ports),
        ]
        self.stderr_path = out.with_suffix(".tcpdump.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening on" in self.stderr_path.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        text = self.stderr_path.read_text(errors="replace")
        self.stop()
        raise EnvironmentProblem(f"tcpdump did not start (root needed?): {text.strip()}")

    def stop(self) -> CaptureStats:
        if self.proc is not None and self.proc.poll() is None:
            time.sleep(FLUSH_S)  # let the last packets through the ring buffer
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if hasattr(self, "_err"):
            self._err.close()
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        self.stderr_path.unlink(missing_ok=True)
        return CaptureStats(
            _count("captured", text),
            _count("received by filter", text),
            _count("dropped by kernel", text),
            text.strip(),
        )
