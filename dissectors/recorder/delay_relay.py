# SPDX-License-Identifier: GPL-2.0-or-later
"""A jittered layer-2 relay between two interfaces: netem's delay + jitter, in userspace.

Run inside the middle namespace of a ``NetnsPath``::

    ip netns exec MIDDLE python -m dissectors.recorder.delay_relay --a IF_A --b IF_B \\
        --delay-ms 5 --jitter-ms 3 --seed 1 --deadline-s 120 --stats stats.json

Every Ethernet frame read on one interface (an AF_PACKET raw socket on each) is sent out of the other
after ``max(0, N(delay, jitter))`` ms, drawn per frame and per direction, so a later frame can overtake
an earlier one as with netem's jitter. Queued frames wait in a heap ordered by release time. The relay
prints ``ready`` once both sockets are bound, stops by itself at the deadline or on SIGTERM/SIGINT, and
then writes its statistics (frames forwarded and overtaken per direction, delays drawn, oversize frames,
kernel drops) as JSON. ``DelayQueue`` is the sans-IO core; ``Relay`` adds the sockets.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_OUTGOING = 4
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
ETH_HLEN = 14
VLAN_HLEN = 4
RCVBUF = 32 * 1024 * 1024
MAX_FRAME = 65536 + ETH_HLEN


@dataclass
class DirectionStats:
    received: int = 0
    forwarded: int = 0
    bytes: int = 0
    reordered: int = 0  # released after a frame that came in later in the same direction (overtaken)
    oversize: int = 0  # longer than MTU + Ethernet header (+ a VLAN tag): offloads still on
    send_errors: int = 0
    left_in_queue: int = 0
    delay_sum_ms: float = 0.0
    delay_min_ms: float | None = None
    delay_max_ms: float | None = None
    clamped_to_zero: int = 0
    _max_released_seq: int = -1

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if not k.startswith("_") and not k.startswith("delay_sum")}
        d["delay_mean_ms"] = round(self.delay_sum_ms / self.received, 3) if self.received else None
        for k in ("delay_min_ms", "delay_max_ms"):
            if d[k] is not None:
                d[k] = round(d[k], 3)
        return d


@dataclass
class DelayQueue:
    """Frames waiting for their release time; sans-IO (the caller passes the clock)."""

    delay_ms: float
    jitter_ms: float
    rng: random.Random
    directions: tuple[str, ...] = ("a_to_b", "b_to_a")
    stats: dict[str, DirectionStats] = field(default_factory=dict)
    max_depth: int = 0
    _heap: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        for d in self.directions:
            self.stats.setdefault(d, DirectionStats())

    def draw_ms(self) -> tuple[float, bool]:
        """One delay in ms: ``max(0, N(delay, jitter))``; True when it was clamped to zero."""
        value = self.rng.gauss(self.delay_ms, self.jitter_ms) if self.jitter_ms > 0 else self.delay_ms
        return (value, False) if value >= 0 else (0.0, True)

    def push(self, now: float, direction: str, frame: bytes) -> float:
        """Queue ``frame``; returns its release time (same clock as ``now``, seconds)."""
        st = self.stats[direction]
        delay, clamped = self.draw_ms()
        st.received += 1
        st.delay_sum_ms += delay
        st.delay_min_ms = delay if st.delay_min_ms is None else min(st.delay_min_ms, delay)
        st.delay_max_ms = delay if st.delay_max_ms is None else max(st.delay_max_ms, delay)
        st.clamped_to_zero += clamped
        release = now + delay / 1000.0
        heapq.heappush(self._heap, (release, self._seq, direction, frame))
        self._seq += 1
        self.max_depth = max(self.max_depth, len(self._heap))
        return release

    def next_release(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, bytes]]:
        """Frames whose release time has come, in release order (ties: arrival order)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, direction, frame = heapq.heappop(self._heap)
            st = self.stats[direction]
            if seq < st._max_released_seq:
                st.reordered += 1
            st._max_released_seq = max(st._max_released_seq, seq)
            out.append((direction, frame))
        return out

    def drain(self) -> int:
        """Forget the frames still queued (at stop); returns how many."""
        for _, _, direction, _ in self._heap:
            self.stats[direction].left_in_queue += 1
        n = len(self._heap)
        self._heap.clear()
        return n

    def __len__(self) -> int:
        return len(self._heap)


def _mtu(ifname: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{ifname}/mtu").read_text())
    except (OSError, ValueError):
        return 1500


def open_packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    with contextlib.suppress(OSError):
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, RCVBUF)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def kernel_drops(s: socket.socket) -> int | None:
    """PACKET_STATISTICS: frames the kernel dropped on this socket since the last call."""
    try:
        _, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        return None
    return int(drops)


@dataclass
class RelayConfig:
    iface_a: str
    iface_b: str
    delay_ms: float
    jitter_ms: float
    seed: int
    deadline_s: float
    max_wait_s: float = 0.05  # poll timeout cap, so a stop request is seen quickly


class Relay:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.queue = DelayQueue(config.delay_ms, config.jitter_ms, random.Random(config.seed))
        self.stop_reason: str | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0
        self.kernel_drops: dict[str, int | None] = {}
        self.mtu: dict[str, int] = {}

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def run(self, ready: Any = None) -> None:
        cfg = self.config
        socks = {"a": open_packet_socket(cfg.iface_a), "b": open_packet_socket(cfg.iface_b)}
        self.mtu = {"a": _mtu(cfg.iface_a), "b": _mtu(cfg.iface_b)}
        for s in socks.values():
            kernel_drops(s)  # reset the counters
        out_of = {"a_to_b": socks["b"], "b_to_a": socks["a"]}
        limit = {"a_to_b": self.mtu["b"] + ETH_HLEN + VLAN_HLEN, "b_to_a": self.mtu["a"] + ETH_HLEN + VLAN_HLEN}
        by_fd = {socks["a"].fileno(): ("a", "a_to_b"), socks["b"].fileno(): ("b", "b_to_a")}
        poller = select.poll()
        for s in socks.values():
            poller.register(s, select.POLLIN)
        self.started_at = time.time()
        deadline = time.monotonic() + cfg.deadline_s
        if ready is not None:
            ready()
        q = self.queue
        try:
            while self.stop_reason is None:
                now = time.monotonic()
                if now >= deadline:
                    self.request_stop("deadline")
                    break
                nxt = q.next_release()
                wait = min(cfg.max_wait_s, deadline - now, max(0.0, nxt - now) if nxt is not None else 1.0)
                events = poller.poll(wait * 1000.0)
                for fd, _ in events:
                    side, direction = by_fd[fd]
                    sock = socks[side]
                    while True:
                        try:
                            frame, addr = sock.recvfrom(MAX_FRAME)
                        except BlockingIOError:
                            break
                        if addr[2] == PACKET_OUTGOING:
                            continue
                        q.push(time.monotonic(), direction, frame)
                for direction, frame in q.pop_due(time.monotonic()):
                    st = q.stats[direction]
                    if len(frame) > limit[direction]:
                        st.oversize += 1
                    try:
                        out_of[direction].send(frame)
                        st.forwarded += 1
                        st.bytes += len(frame)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE, errno.ENETDOWN):
                            raise
                        st.send_errors += 1
        finally:
            q.drain()
            self.stopped_at = time.time()
            self.kernel_drops = {"a": kernel_drops(socks["a"]), "b": kernel_drops(socks["b"])}
            for s in socks.values():
                s.close()

    def stats(self) -> dict[str, Any]:
        cfg = self.config
        dirs = {d: st.to_dict() for d, st in self.queue.stats.items()}
        return {
            "interfaces": {"a": cfg.iface_a, "b": cfg.iface_b},
            "mtu": self.mtu,
            "delay_ms": cfg.delay_ms,
            "jitter_ms": cfg.jitter_ms,
            "seed": cfg.seed,
            "deadline_s": cfg.deadline_s,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "stop_reason": self.stop_reason,
            "frames_forwarded": sum(st.forwarded for st in self.queue.stats.values()),
            "frames_reordered": sum(st.reordered for st in self.queue.stats.values()),
            "frames_oversize": sum(st.oversize for st in self.queue.stats.values()),
            "max_queue_depth": self.queue.max_depth,
            "kernel_drops": self.kernel_drops,
            "directions": dirs,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dissectors.recorder.delay_relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, metavar="IF", help="first interface (e.g. towards the source)")
    p.add_argument("--b", required=True, metavar="IF", help="second interface (towards the destination)")
    p.add_argument("--delay-ms", type=float, default=5.0, help="mean one-way delay per frame (ms)")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="standard deviation of the delay (ms)")
    p.add_argument("--seed", type=int, default=None, help="RNG seed (default: a random one, reported)")
    p.add_argument("--deadline-s", type=float, default=300.0, help="stop by itself after this many seconds")
    p.add_argument("--stats", type=Path, help="write the statistics here as JSON when stopping")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    relay = Relay(RelayConfig(args.a, args.b, args.delay_ms, args.jitter_ms, seed, args.deadline_s))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        relay.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        relay.run(ready=lambda: print("ready", flush=True))
    finally:
        stats = relay.stats()
        if args.stats is not None:
            tmp = args.stats.with_name(args.stats.name + ".tmp")
            tmp.write_text(json.dumps(stats, indent=2) + "\n")
            os.replace(tmp, args.stats)
        print(json.dumps({k: stats[k] for k in ("stop_reason", "frames_forwarded", "frames_reordered")}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


class RelayProcess:
    """Start the relay as ``PREFIX python -m dissectors.recorder.delay_relay ...`` and stop it (SIGTERM)."""

    def __init__(self, prefix: list[str], config: RelayConfig, stats_path: Path) -> None:
        self.config = config
        self.stats_path = stats_path
        self.args = [
            *prefix, sys.executable, "-m", "dissectors.recorder.delay_relay",
            "--a", config.iface_a, "--b", config.iface_b,
            "--delay-ms", str(config.delay_ms), "--jitter-ms", str(config.jitter_ms),
            "--seed", str(config.seed), "--deadline-s", str(config.deadline_s), "--stats", str(stats_path),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if line.strip() == "ready":
                return
            self.output += line
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"delay relay did not start: {self.output.strip()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """SIGTERM, wait, SIGKILL if needed; returns the relay's statistics (None if it wrote none)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.output += self.proc.stdout.read()
            self.proc.stdout.close()
        try:
            return dict(json.loads(self.stats_path.read_text()))
        except (OSError, ValueError):
            return None
