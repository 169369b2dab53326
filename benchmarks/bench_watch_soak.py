#!/usr/bin/env python3
"""Soak: synthetic migrations through a pipe into ``migshark watch`` at full speed; is memory flat?

    python benchmarks/bench_watch_soak.py [--duration 3600] [--rate MIGRATIONS_PER_S] [--sample S] [--finish]

A writer plays migrations (benchmarks/live_feed.py: main + 2 multifd, every other one misread on a QEMU
7.2 destination) into ``migshark watch --json --qemu-version 7.2 -``, one every 0.1 s of capture time,
each from its own client address (a pool of 4096 reused in turn, the timestamps moved on): as fast as
the pipe takes them, or ``--rate`` per wall second (a constant feed, so that RSS at the start and at the
end compare whatever the machine's load; "behind" says how far the writer fell behind that schedule,
i.e. whether watch kept up). It prints watch's resident set size (``VmRSS``) at the start (after a
warm-up of 5 % of the run, at least 10 s), at every 10 % of the run and at the end, with the migrations
fed, the feed rate, watch's CPU share, the retired reports' bytes on disk, the alerts received (one per
misread migration is expected) and the load average; then its peak (``VmHWM``). The baseline is
watch's own RSS at the start: the ratio end/start should stay near 1.

At the end watch is killed (the full report of an hour of migrations is not the subject here); with
``--finish`` the pipe is closed instead: the time of the final report is printed, and the events counted
against it (one `migration-start` per migration, one `outcome` per final status, one `misclassified` per
misclassification).
"""

from __future__ import annotations

import argparse
import json
import math
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
CATCH_UP = 1.0      # --rate: at most this many seconds of the schedule made up by feeding faster


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=3600.0, help="seconds to run (default an hour)")
    p.add_argument("--rate", type=float, default=None, metavar="MIGRATIONS_PER_S",
                   help="feed this many migrations per wall second (default: as fast as the pipe takes them)")
    p.add_argument("--sample", type=float, default=0.0,
                   help="also print a sample every this many seconds (default: only at every 10 %% of the run)")
    p.add_argument("--finish", action="store_true", help="end the stream and wait for the final report")
    args = p.parse_args(argv)

    print(f"building {POOL} migrations ...", file=sys.stderr)
    t0 = 1_800_000_000.0
    pool = []
    for n in range(POOL):
        records, _ = fast_migration(t0 + n * SPACING, n + 1, misread=n % 2 == 1)
        pool.append([(int.from_bytes(r[:4], "little"), r[4:]) for r in records])
    # A whole number of seconds (only the records' seconds are moved on), and not less than the pool
    # spans: capture time never goes back (it went back 0.6 s at every reuse of the pool before, so the
    # last migrations of one round and the first of the next overlapped on the one destination; the
    # grouping, analyze's too, then mixed their channels).
    cycle = math.ceil(POOL * SPACING)

    proc = subprocess.Popen([sys.executable, "-m", "dissectors.cli.main", "watch", "--json", "--qemu-version",
                             "7.2", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    counts: Counter[str] = Counter()
    # Alert delay under the feed: a misread migration's records (its deciding one with them) written
    # into the pipe, against the arrival of each of its two `misclassified` events (keyed by client).
    written_at: dict[str, float] = {}
    delays: list[float] = []
    final: dict[str, int] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b'{"event":"report"') or line.startswith(b'{"event": "report"'):
                counts["report"] += 1
                if args.finish:
                    ms = json.loads(line)["report"]["migrations"]
                    final.update(migrations=len(ms), misclassified=sum(len(m["misclassifications"]) for m in ms),
                                 outcomes=sum(m["outcome"]["status"] in ("completed", "failed", "stalled")
                                              for m in ms))
                continue
            e = json.loads(line)
            counts[e["event"]] += 1
            if e["event"] == "misclassified":
                sent = written_at.get(e["client"].rsplit(":", 1)[0])
                if sent is not None:
                    delays.append(time.monotonic() - sent)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.stdin is not None
    fd = proc.stdin.fileno()
    os.write(fd, PCAP_HEADER)
    fed = written = 0

    def feed_one() -> None:
        nonlocal fed, written
        shift = int((fed // POOL) * cycle)
        out = bytearray()
        for sec, rest in pool[fed % POOL]:
            out += (sec + shift).to_bytes(4, "little") + rest
        if fed % 2 == 1:                 # misread (as the pool was built); timed as the write begins
            n = fed % POOL + 1
            written_at[f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255 or 1}"] = time.monotonic()
        os.write(fd, out)
        written += len(out)
        fed += 1

    # The clock starts once watch is up (its first event out): its start-up is not the subject here.
    feed_one()
    ready = time.monotonic()
    while not counts["migration-start"] and time.monotonic() - ready < 120 and proc.poll() is None:
        time.sleep(0.01)
    print(f"watch up after {time.monotonic() - ready:.1f} s", file=sys.stderr)
    start = time.monotonic()
    sched = start                  # --rate: when the next migration is due
    slipped = 0.0                  # seconds of the schedule given up (watch or the writer starved of CPU)
    warm = max(10.0, 0.05 * args.duration)
    marks = [warm] + [args.duration * k / 10 for k in range(1, 10)]
    marks = sorted({m for m in marks if m >= warm})
    samples: list[tuple[float, int, int, float, float]] = []     # (s, fed, RSS KiB, watch CPU s, behind s)
    last = {"t": start, "fed": fed, "cpu": cpu_seconds(proc.pid)}
    next_extra = start + warm + args.sample if args.sample > 0 else float("inf")
    rate = "as fast as the pipe takes them" if args.rate is None else f"{args.rate:g} migrations/s"
    print(f"feeding {rate} for {args.duration:.0f} s (load average {_load()})", flush=True)
    print(f"  {'time':>7}  {'migrations':>10}  {'MB':>8}  {'rate/s':>7}  {'RSS MiB':>7}  {'watch CPU':>9}  "
          f"{'behind':>6}  {'retired MB':>10}  {'alerts':>8}  load", flush=True)

    def sample(now: float) -> None:
        kib = rss_kib(proc.pid)
        cpu = cpu_seconds(proc.pid)
        lag = 0.0 if args.rate is None else slipped + max(0.0, now - sched)
        samples.append((now - start, fed, kib, cpu, lag))
        dt = max(now - last["t"], 1e-9)
        disk = retired_bytes(proc.pid)
        print(f"  {now - start:6.0f}s  {fed:10d}  {written / 1e6:8.1f}  {(fed - last['fed']) / dt:7.0f}  "
              f"{kib / 1024:7.1f}  {100 * (cpu - last['cpu']) / dt:8.0f}%  {lag:5.1f}s  "
              f"{(disk or 0) / 1e6:10.2f}  {counts['misclassified']:8d}  {_load()}", flush=True)
        last.update(t=now, fed=fed, cpu=cpu)

    while True:
        now = time.monotonic()
        if now - start >= args.duration:
            break
        if marks and now - start >= marks[0]:
            marks.pop(0)
            sample(now)
        elif now >= next_extra:
            sample(now)
            next_extra = now + args.sample
        if args.rate is not None:
            if sched > now:
                time.sleep(min(sched - now, 0.05))
                continue
            if now - sched > CATCH_UP:         # fallen behind: no burst to catch up, the rate stays
                slipped += now - CATCH_UP - sched
                sched = now - CATCH_UP
            sched += 1 / args.rate
        feed_one()
    sample(time.monotonic())
    elapsed = time.monotonic() - start
    rss_peak = rss_kib(proc.pid, "VmHWM")
    disk = retired_bytes(proc.pid)
    first, end = samples[0], samples[-1]
    print(f"duration {elapsed:.0f} s: {fed} migrations ({fed - first[1]} after the warm-up), "
          f"{written / 1e6:.1f} MB, {written / 1e6 / elapsed:.2f} MB/s, {fed / elapsed:.1f} migrations/s "
          f"(asked: {rate}; schedule given up or behind at the end: {end[4]:.1f} s)")
    print(f"RSS at the start (after {first[0]:.0f} s, {first[1]} migrations): {first[2] / 1024:.1f} MiB; at the end: "
          f"{end[2] / 1024:.1f} MiB (end/start {end[2] / first[2]:.2f}); lowest/highest sample "
          f"{min(x[2] for x in samples) / 1024:.1f}/{max(x[2] for x in samples) / 1024:.1f} MiB; peak (VmHWM) "
          f"{rss_peak / 1024:.1f} MiB")
    print(f"watch CPU {end[3]:.0f} s over {elapsed:.0f} s ({100 * end[3] / elapsed:.0f} %); load average at the end "
          f"{_load()}")
    print(f"events: {dict(counts)}; misread migrations fed: {fed // 2}")
    if delays:
        d = sorted(delays)
        print(f"alert delay under the feed (records written to misclassified read, {len(d)} alerts): median "
              f"{1e3 * d[len(d) // 2]:.0f} ms, p90 {1e3 * d[int(len(d) * 0.9)]:.0f} ms, p99 "
              f"{1e3 * d[int(len(d) * 0.99)]:.0f} ms, max {1e3 * d[-1]:.0f} ms, within 100 ms "
              f"{100 * sum(x <= 0.1 for x in d) / len(d):.1f} %")
    if disk is not None:
        print(f"retired reports on disk: {disk / 1e6:.2f} MB, {disk / max(fed, 1):.0f} bytes per migration fed")
    sys.stdout.flush()
    if args.finish:
        t = time.monotonic()
        proc.stdin.close()
        proc.wait()
        reader.join()
        print(f"final report after {time.monotonic() - t:.1f} s (exit {proc.returncode})")
        if final:
            print(f"events against the final report: migration-start {counts['migration-start']} for "
                  f"{final['migrations']} migrations, outcome {counts['outcome']} for {final['outcomes']} "
                  f"with a final status, misclassified {counts['misclassified']} for "
                  f"{final['misclassified']} misclassifications")
    else:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return 0


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
