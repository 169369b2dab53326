#!/usr/bin/env python3
"""Alert latency of ``migshark watch``: from the deciding packet written into the pipe to the alert on stdout.

    python benchmarks/bench_watch_latency.py [--migrations 40] [--gap 0.2]

A writer plays synthetic migrations (benchmarks/live_feed.py) into ``migshark watch --json
--qemu-version 7.2 -`` in real time (capture time = wall time), every other one misread (a multifd
channel accepted first). For each misread migration it notes the wall time just before writing the
packet that decides the misclassification (the multifd hello on the connection taken as main); a reader
notes when the ``misclassified`` event for that migration's destination arrives. Prints the latencies
(median, 90th percentile, max) against the 100 ms goal, and as a baseline the same pipe's round trip
through ``cat`` (a record in, a line out: what any reader costs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_feed import PCAP_HEADER, migration  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _play(proc: subprocess.Popen[bytes], count: int, gap: float, marks: dict[str, float]) -> None:
    assert proc.stdin is not None
    fd = proc.stdin.fileno()
    os.write(fd, PCAP_HEADER)
    time.sleep(3.0)      # let watch start up (imports) before the first migration
    for n in range(count):
        misread = n % 2 == 1
        port = 20000 + n
        t0 = time.time()
        records, deciding = migration(t0, n + 1, misread, dport=port)
        start = time.monotonic()
        for i, rec in enumerate(records):
            ts = _ts(rec)
            delay = (ts - t0) - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
            if i == deciding:
                marks[f"10.255.0.1:{port}"] = time.time()
            os.write(fd, rec)
        time.sleep(gap)
    proc.stdin.close()


def _ts(rec: bytes) -> float:
    sec = int.from_bytes(rec[0:4], "little")
    usec = int.from_bytes(rec[4:8], "little")
    return sec + usec / 1e6


def watch_latency(count: int, gap: float) -> list[float]:
    proc = subprocess.Popen([sys.executable, "-m", "dissectors.cli.main", "watch", "--json", "--qemu-version",
                             "7.2", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    marks: dict[str, float] = {}
    arrivals: dict[str, float] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.time()
            e = json.loads(line)
            if e["event"] == "misclassified" and e["role"] == "multifd" and e["destination"] not in arrivals:
                arrivals[e["destination"]] = now

    reader = threading.Thread(target=read)
    reader.start()
    _play(proc, count, gap, marks)
    proc.wait()
    reader.join()
    missing = sorted(set(marks) - set(arrivals))
    if missing:
        print(f"no alert for {len(missing)} misread migration(s): {missing[:5]}", file=sys.stderr)
    return [arrivals[d] - marks[d] for d in marks if d in arrivals]


def cat_latency(count: int) -> list[float]:
    """Baseline: one 100-byte record through ``cat`` and back, per round."""
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    out = []
    for _ in range(count):
        t = time.time()
        proc.stdin.write(b"x" * 99 + b"\n")
        proc.stdout.readline()
        out.append(time.time() - t)
        time.sleep(0.01)
    proc.stdin.close()
    proc.wait()
    return out


def _summary(name: str, lat: list[float]) -> str:
    lat = sorted(lat)
    if not lat:
        return f"{name}: no samples"
    p90 = lat[min(len(lat) - 1, int(len(lat) * 0.9))]
    return (f"{name}: n={len(lat)}  median {statistics.median(lat) * 1000:.1f} ms  p90 {p90 * 1000:.1f} ms  "
            f"max {lat[-1] * 1000:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--migrations", type=int, default=40, help="migrations played (every other one misread)")
    p.add_argument("--gap", type=float, default=0.2, help="seconds between migrations")
    args = p.parse_args(argv)
    lat = watch_latency(args.migrations, args.gap)
    base = cat_latency(max(len(lat), 1))
    print(_summary("watch alert latency", lat))
    print(_summary("baseline (cat round trip)", base))
    if lat:
        print(f"ratio of medians (watch / cat): {statistics.median(lat) / max(statistics.median(base), 1e-9):.0f}x; "
              f"goal: every alert within 100 ms: {'met' if max(lat) < 0.1 else 'NOT met'}")
    return 0 if lat and max(lat) < 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
