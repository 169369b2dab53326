#!/usr/bin/env python3
"""Soak: synthetic migrations through a pipe into ``migshark watch`` at full speed; is memory flat?

    python benchmarks/bench_watch_soak.py [--duration 3600] [--sample 10] [--finish]

A writer plays migrations (benchmarks/live_feed.py: main + 2 multifd, every other one misread on a QEMU
7.2 destination) into ``migshark watch --json --qemu-version 7.2 -`` as fast as the pipe takes them, one
every 0.1 s of capture time, each from its own client address (a pool of 4096 reused in turn, the
timestamps moved on). It samples watch's resident set size (``VmRSS``) every ``--sample`` seconds and
prints it at the start (after a warm-up of 5 % of the run, at least 10 s), at the end, and its maximum,
with the migrations fed, the bytes and rate, and the alerts received (one per misread migration is
expected). The baseline is watch's own RSS at the start: the ratio end/start should stay near 1.

At the end watch is killed (the full report of an hour of migrations is not the subject here); with
``--finish`` the pipe is closed instead and the time and peak RSS of the final report are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_feed import PCAP_HEADER, fast_migration  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POOL = 4096
SPACING = 0.1


def retired_bytes(pid: int) -> int | None:
    """Size of watch's temporary file of retired reports, found through /proc/PID/fd: named
    ``migshark-retired-*`` and unlinked, or (``O_TMPFILE``, Linux) ``/tmp/#INODE (deleted)``."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if "migshark-retired-" in link or (link.endswith("(deleted)") and "/#" in link):
                return os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue
    return None


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=3600.0, help="seconds to run (default an hour)")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--finish", action="store_true", help="end the stream and wait for the final report")
    args = p.parse_args(argv)

    print(f"building {POOL} migrations ...", file=sys.stderr)
    t0 = 1_800_000_000.0
    pool = []
    for n in range(POOL):
        records, _ = fast_migration(t0 + n * SPACING, n + 1, misread=n % 2 == 1)
        pool.append([(int.from_bytes(r[:4], "little"), r[4:]) for r in records])
    cycle = POOL * SPACING

    proc = subprocess.Popen([sys.executable, "-m", "dissectors.cli.main", "watch", "--json", "--qemu-version",
                             "7.2", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    counts: Counter[str] = Counter()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b'{"event":"report"') or line.startswith(b'{"event": "report"'):
                counts["report"] += 1
                continue
            counts[json.loads(line)["event"]] += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.stdin is not None
    fd = proc.stdin.fileno()
    os.write(fd, PCAP_HEADER)
    fed = written = 0
    start = time.monotonic()
    warm = max(10.0, 0.05 * args.duration)
    samples: list[tuple[float, int]] = []
    next_sample = start + warm
    rss_start = None
    while True:
        now = time.monotonic()
        if now - start >= args.duration:
            break
        if now >= next_sample:
            kib = rss_kib(proc.pid)
            samples.append((now - start, kib))
            if rss_start is None:
                rss_start = kib
                fed_at_start = fed
            print(f"  {now - start:7.0f} s  {fed:8d} migrations  {written / 1e6:9.1f} MB  RSS {kib / 1024:6.1f} MiB  "
                  f"alerts {counts['misclassified']}", file=sys.stderr)
            next_sample = now + args.sample
        shift = int((fed // POOL) * cycle)
        out = bytearray()
        for sec, rest in pool[fed % POOL]:
            out += (sec + shift).to_bytes(4, "little") + rest
        os.write(fd, out)
        written += len(out)
        fed += 1
    elapsed = time.monotonic() - start
    rss_end = rss_kib(proc.pid)
    rss_peak = rss_kib(proc.pid, "VmHWM")
    disk = retired_bytes(proc.pid)
    print(f"duration {elapsed:.0f} s: {fed} migrations ({(fed - fed_at_start) if rss_start else fed} after the "
          f"warm-up), {written / 1e6:.1f} MB, {written / 1e6 / elapsed:.2f} MB/s, {fed / elapsed:.0f} migrations/s")
    if rss_start:
        print(f"RSS at the start (after {warm:.0f} s): {rss_start / 1024:.1f} MiB; "
              f"at the end: {rss_end / 1024:.1f} MiB (end/start {rss_end / rss_start:.2f}); "
              f"peak {rss_peak / 1024:.1f} MiB")
    print(f"events: {dict(counts)}; misread migrations fed: {fed // 2}")
    if disk is not None:
        print(f"retired reports on disk: {disk / 1e6:.1f} MB, {disk / max(fed, 1):.0f} bytes per migration fed")
    if args.finish:
        t = time.monotonic()
        proc.stdin.close()
        proc.wait()
        reader.join()
        print(f"final report after {time.monotonic() - t:.1f} s (exit {proc.returncode})")
    else:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
