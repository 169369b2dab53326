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
# libpcap hands tcpdump a ring block only when it is full or its timeout (tcpdump's 1 s) runs out, and tcpdump's
# SIGINT handler drops the blocks not yet read (not counted as dropped): tcpdump is stopped only once it has
# written every packet the kernel took for it (``wait_written``). A fixed 0.3 s wait lost the last 29 packets
# (every FIN/RST) of multifd-postcopy-7.2, whose end came just before; a fixed 1.2 s one did not cover a tcpdump
# that a busy machine runs late. Waiting out a quiet spell longer than the ring's timeout after every stop cost
# 1.2 s (2.4 s with the two tcpdumps of a netns path) where the counts could tell at once: once tcpdump has
# written as many packets as the kernel took for it (twice as many taken on loopback), no block is left unread;
# a short quiet spell (``SETTLE_S``) then lets the packets still on their way (the relay's delay) be taken.
RING_TIMEOUT_S = 1.0
QUIET_S = RING_TIMEOUT_S + 0.2   # no packet taken nor written for this long: every ring block has been read
SETTLE_S = 0.2                   # counts unchanged this long, every packet taken written: nothing more is coming
ASK_EVERY_S = 0.1
WRITTEN_TIMEOUT_S = 60.0         # a bound on a hang (tcpdump stopped, or packets that keep coming)
# tcpdump's answer to SIGUSR1 (its running counts): packets written, packets the kernel's filter took, drops
_INFO = re.compile(r"^tcpdump: (\d+) packets? captured, (\d+) packets? received by filter, (\d+) packets? dropped "
                   r"by kernel\n", re.M)


def wait_written(proc: subprocess.Popen[bytes], log: Path, out: Path | None = None, group: bool = False,
                 timeout: float = WRITTEN_TIMEOUT_S, copies: int | None = None) -> bool:
    """Wait until the tcpdump ``proc`` (its stderr going to ``log``; ``group``: signal its process group) has
    written every packet the kernel took for it to its output ``out`` (a file, or None for a pipe).

    tcpdump is asked for its counts with SIGUSR1, a new question once the last one is answered (it prints the
    packets it captured and the packets the kernel's filter took, which the kernel counts as they arrive, read
    or not). Written means: those counts and the size of ``out`` stayed the same, with tcpdump answering, for
    ``SETTLE_S`` with taken equal to ``copies`` times captured (``copies``: how many times the kernel takes each
    packet tcpdump writes, 2 on loopback, sent and received, where libpcap drops the sent one; each packet is
    sent before it is received, so equality means every received one was written), or else (``copies`` None,
    or drops) for longer than the ring's timeout, so that the packets the kernel held when they last changed
    have been handed over and, tcpdump running, written. False if tcpdump ended or that did not come within
    ``timeout`` (packets kept coming, or tcpdump did not run)."""
    deadline = time.monotonic() + timeout
    read_to = log.stat().st_size if log.exists() else 0
    last: tuple[object, ...] | None = None
    quiet_from = 0.0
    answers_after = 0     # answers seen once the ring's timeout had run out in this quiet spell
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        (os.killpg if group else os.kill)(proc.pid, signal.SIGUSR1)
        answer = None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            with open(log, "rb") as f:
                f.seek(read_to)
                text = f.read().decode(errors="replace")
            found = list(_INFO.finditer(text))
            if found:
                answer = found[-1].groups()
                read_to += len(text[:found[-1].end()].encode())
            else:
                time.sleep(0.01)
        if answer is None:
            return False
        now = time.monotonic()
        state = (answer[0], answer[1], out.stat().st_size if out is not None and out.exists() else None)
        if state != last:
            last, quiet_from, answers_after = state, now, 0
        elif copies is not None and int(answer[1]) == copies * int(answer[0]) and now - quiet_from >= SETTLE_S:
            return True
        elif now - quiet_from >= RING_TIMEOUT_S:
            answers_after += 1
            if now - quiet_from >= QUIET_S and answers_after >= 2:
                return True
        time.sleep(ASK_EVERY_S)
    return False


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
        self.copies = 2 if interface == "lo" else 1  # times the kernel takes each packet written (wait_written)
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
        self.stop(wait=False)
        raise EnvironmentProblem(f"tcpdump did not start (root needed?): {text.strip()}")

    def stop(self, wait: bool = True) -> CaptureStats:
        """SIGINT once tcpdump has written every packet it took (``wait``: not when it never said it listens)."""
        unwritten = ""
        if self.proc is not None and self.proc.poll() is None:
            if wait and not wait_written(self.proc, self.stderr_path, self.out, group=True, copies=self.copies):
                unwritten = (f"migshark: tcpdump had not written every packet it took within "
                             f"{WRITTEN_TIMEOUT_S:.0f} s (packets kept coming, or it did not run); stopped anyway\n")
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if hasattr(self, "_err"):
            self._err.close()
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        text = unwritten + _INFO.sub("", text)   # without the answers to wait_written's questions
        self.stderr_path.unlink(missing_ok=True)
        return CaptureStats(
            _count("captured", text),
            _count("received by filter", text),
            _count("dropped by kernel", text),
            text.strip(),
        )
