#!/usr/bin/env python3
"""Time reading and reassembling a capture, phase by phase, each phase in its own process.

    python benchmarks/bench_reassembly.py /tmp/a.pcap [--repeat 3]

Phases: ``tcpdump -r FILE -w /dev/null`` (C-speed baseline), capture iteration alone (plain and keyed
segments, and ``iterate-runs``: keyed and coalesced as the compiled scanner reads), connection listing
(tracking without sinks), full reassembly into a null sink (``cli.pipeline.reassemble``: the analysis's own
feeding), records (every channel parser), ``analyze`` end to end in the process, and
``whole``: the whole ``migshark analyze --json FILE`` process as a user pays it (start-up, imports, the
report printed, exit; wall clock). Prints MB/s (file bytes / seconds inside the phase, interpreter start-up
excluded but for ``whole`` and ``tcpdump``; median of the runs), the ratio of the time to tcpdump's, the CPU
seconds (user + system: of the whole process for ``whole`` and ``tcpdump``, of the phase inside the process
for the others) and their ratio to tcpdump's (less swayed than wall time when other work shares the
machine), the peak RSS of each phase's process (GNU time ``%M``), and the load average before and after.
Warm page cache; one untimed ``whole`` run first writes the bytecode caches (a run with
``PYTHONDONTWRITEBYTECODE`` set compiles every module each time: ~0.2 s more per process, which is not what
an installed migshark pays).

    python benchmarks/bench_reassembly.py FILE --phases tcpdump,whole,analyze --repeat 5   # issue 15's table

A phase name ending in ``-pure`` (``reassemble-pure``, ``records-pure``, ...) runs that phase with
``MIGSHARK_PURE_PYTHON=1``: the pure-Python reader, as on a machine where the compiled scanner was not built.
One ending in ``-single`` (``whole-single``, ``analyze-single``) runs it with ``MIGSHARK_NO_COALESCE=1``: the
compiled scanner without its coalescer, every segment handed to the tracker one by one (as before issue 15).
One ending in ``-zlib`` runs it with ``MIGSHARK_STDLIB_ZLIB=1``: gzip inflated by the standard library's zlib
instead of zlib-ng.

Compressed and piped input (whole processes, like ``whole``; the gzip'd copy is ``--gzip GZ``, else FILE.gz if it
exists, else made once with ``gzip -c`` in a temporary folder and deleted at the end):

- ``zcat``: ``zcat GZ > /dev/null``, gzip's own inflater, the baseline for the compressed rows;
- ``whole-gz``: ``migshark analyze --json GZ``;
- ``whole-stdin`` / ``whole-stdin-gz``: ``cat FILE | migshark analyze --json -`` and the same with GZ (the seconds
  are the pipeline's, the CPU seconds, page faults and RSS the migshark process's).

    python benchmarks/bench_reassembly.py FILE --repeat 3 \
        --phases tcpdump,zcat,whole,whole-gz,whole-gz-zlib,whole-stdin,whole-stdin-gz

The ``faults`` column is the process's minor page faults (``ru_minflt``, start-up included): reading into fresh
buffers shows there (one fault per 4 KiB page each time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("tcpdump", "iterate", "iterate-keyed", "iterate-runs", "connections", "reassemble", "records", "analyze",
          "whole", "zcat", "whole-gz", "whole-stdin", "whole-stdin-gz")
WHOLE = ("whole", "whole-gz", "whole-stdin", "whole-stdin-gz")   # a ``migshark analyze --json`` process


class NullSink:
    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> None:
        pass

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        pass

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        self.bytes = offset


def run_phase(phase: str, path: str) -> dict[str, object]:
    """Body of one child process: time ``phase`` on ``path``."""
    sys.path.insert(0, str(ROOT))
    from dissectors.capture import open_capture

    if phase == "analyze":
        return run_analyze(path)
    if phase == "records":
        return run_records(path)
    t0, c0 = time.perf_counter(), time.process_time()
    result: dict[str, object] = {}
    with open_capture(path) as cap:
        if phase == "iterate":
            deque(cap.tcp_segments(), maxlen=0)
        elif phase == "iterate-keyed":
            deque(cap.keyed_segments(), maxlen=0)
        elif phase == "iterate-runs":      # what reassembly reads: coalesced as the compiled scanner reads
            from dissectors.capture.scanner import COALESCE_WINDOW, compiled_coalescer
            from dissectors.tcp.flags import CONTROL

            coalesce = compiled_coalescer()
            if coalesce is None:
                raise SystemExit("iterate-runs needs the compiled scanner")
            deque(cap.keyed_runs(coalesce, COALESCE_WINDOW, CONTROL), maxlen=0)
        else:
            from dissectors.cli.pipeline import reassemble as feed  # the analysis's own feeding (coalesced)

            reassemble = phase == "reassemble"
            tracker, _ = feed(cap, path, lambda conn: NullSink() if reassemble else None)
            result["connections"] = len(tracker.connections)
            result["stream_bytes"] = sum(sum(c.bytes) for c in tracker.connections)
            result["retransmitted"] = sum(sum(c.retransmitted_bytes) for c in tracker.connections)
            result["gaps"] = sum(sum(c.gap_bytes) for c in tracker.connections)
        result["segments"] = cap.stats.tcp_segments
    result["seconds"] = time.perf_counter() - t0
    result["cpu_s"] = round(time.process_time() - c0, 3)
    return result


def run_records(path: str) -> dict[str, object]:
    """Reassembly, channel identification and every channel parser, through ``ConnectionFacts`` sinks
    sharing one ``PageLedger`` (what ``analyze`` does before judging)."""
    from dissectors.analysis.facts import ConnectionFacts
    from dissectors.analysis.ledger import PageLedger
    from dissectors.cli.pipeline import reassemble_file

    t0, c0 = time.perf_counter(), time.process_time()
    ledger = PageLedger()
    facts: list[ConnectionFacts] = []

    def factory(conn: object) -> object:
        f = ConnectionFacts(conn, ledger)  # type: ignore[arg-type]
        facts.append(f)
        return f.sink

    _, summary = reassemble_file(path, factory)
    segments = summary["tcp_segments"]
    seconds = time.perf_counter() - t0
    cpu = round(time.process_time() - c0, 3)
    counts: dict[str, int] = {}
    for f in facts:
        for k, v in f.counts.items():
            counts[k] = counts.get(k, 0) + v
    return {"seconds": seconds, "cpu_s": cpu, "segments": segments, "kinds": ",".join(f.kind or "-" for f in facts),
            "ram.page": counts.get("ram.page", 0), "multifd.packet": counts.get("multifd.packet", 0),
            "multifd.normal_pages": counts.get("multifd.normal_pages", 0)}


def run_analyze(path: str) -> dict[str, object]:
    """``migshark analyze`` end to end (``cli.pipeline.analyze_file``: report built, not printed)."""
    from dissectors.cli.pipeline import analyze_file

    t0, c0 = time.perf_counter(), time.process_time()
    report = analyze_file(path).report
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "migrations": len(report["migrations"]), "findings": report["findings"],
            "cpu_s": round(time.process_time() - c0, 3)}


def measure(phase: str, path: str, gz: str | None = None) -> tuple[float, int, dict[str, object]]:
    """Run one phase in a child; return (seconds, peak RSS in KiB, extra). ``gz``: the gzip'd copy of ``path``.

    The child is started through GNU ``/usr/bin/time`` when present: a process forked straight from this
    (bigger) Python would inherit its peak RSS across ``exec``, so ``os.wait4`` would overstate small phases.
    """
    env = dict(os.environ)
    env.pop("MIGSHARK_PURE_PYTHON", None)
    env.pop("MIGSHARK_NO_COALESCE", None)
    env.pop("MIGSHARK_STDLIB_ZLIB", None)
    if phase.endswith("-zlib"):
        phase = phase.removesuffix("-zlib")
        env["MIGSHARK_STDLIB_ZLIB"] = "1"
    if phase.endswith("-pure"):
        phase = phase.removesuffix("-pure")
        env["MIGSHARK_PURE_PYTHON"] = "1"
    if phase.endswith("-single"):
        phase = phase.removesuffix("-single")
        env["MIGSHARK_NO_COALESCE"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    feed: str | None = None                 # piped into the process's standard input
    if phase == "tcpdump":
        cmd = ["tcpdump", "-r", path, "-w", "/dev/null"]
    elif phase == "zcat":
        cmd = ["zcat", str(gz)]
    elif phase in WHOLE:
        source = gz if phase.endswith("-gz") else path
        if phase.startswith("whole-stdin"):
            feed, source = source, "-"
        cmd = [sys.executable, "-m", "dissectors.cli.main", "analyze", "--json", str(source)]
    else:
        cmd = [sys.executable, __file__, "--phase", phase, path]
    gnu_time = shutil.which("time") or (Path("/usr/bin/time").exists() and "/usr/bin/time")
    with tempfile.NamedTemporaryFile("r") as report:
        if gnu_time:
            cmd = [gnu_time, "-f", "%M", "-o", report.name, *cmd]
        t0 = time.perf_counter()
        feeder = subprocess.Popen(["cat", feed], stdout=subprocess.PIPE) if feed else None
        proc = subprocess.Popen(cmd, stdin=feeder.stdout if feeder else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL if phase == "zcat" else subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        if feeder is not None:
            assert feeder.stdout is not None
            feeder.stdout.close()           # the child holds the pipe's read end now
        out = proc.stdout.read() if proc.stdout is not None else b""
        _, status, usage = os.wait4(proc.pid, 0)
        if feeder is not None:
            feeder.wait()
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        if code and not (phase in WHOLE and code == 1):     # analyze: 1 = findings
            raise SystemExit(f"{phase} failed with exit code {code}")
        rss_kib = int(report.read().split()[-1]) if gnu_time else usage.ru_maxrss
    faults = usage.ru_minflt
    if phase in ("tcpdump", "zcat"):
        return wall, rss_kib, {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "faults": faults}
    if phase in WHOLE:
        report = json.loads(out)
        cpu = usage.ru_utime + usage.ru_stime      # less swayed than wall time by other load on the machine
        return wall, rss_kib, {"migrations": len(report["migrations"]), "exit": code, "cpu_s": round(cpu, 3),
                               "faults": faults}
    extra = json.loads(out)
    extra["faults"] = faults
    return float(extra.pop("seconds")), rss_kib, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--phase", choices=PHASES[1:], help=argparse.SUPPRESS)
    ap.add_argument("--phases", default=",".join(PHASES[:9]),
                    help="comma-separated subset of " + ",".join(PHASES) + " (default: the first nine)")
    ap.add_argument("--gzip", metavar="GZ", help="the gzip'd copy of FILE for the compressed phases (default: FILE.gz "
                                                 "if it exists, else one made with gzip -c and deleted at the end)")
    args = ap.parse_args(argv)
    if args.phase:
        result = run_phase(args.phase, args.file)
        from dissectors.capture.scanner import compiled_scanner
        result["reader"] = "python" if compiled_scanner() is None else "compiled"
        print(json.dumps(result))
        return 0
    size = os.path.getsize(args.file)
    with open(args.file, "rb") as f:        # warm the page cache
        while f.read(1 << 24):
            pass
    phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in phases if p.removesuffix("-zlib").removesuffix("-pure").removesuffix("-single") not in PHASES]
    if unknown:
        ap.error(f"unknown phase(s): {', '.join(unknown)}")
    if "tcpdump" in phases and shutil.which("tcpdump") is None:
        phases.remove("tcpdump")
    with tempfile.TemporaryDirectory(prefix="bench-gz-") as scratch:
        gz = gzipped(args.file, args.gzip, scratch) if any("gz" in p or p.startswith("zcat") for p in phases) else None
        run_phases(phases, args.file, size, args.repeat, gz)
    return 0


def gzipped(path: str, given: str | None, scratch: str) -> str:
    """The gzip'd copy of ``path``: ``given``, or PATH.gz beside it, or one made now in ``scratch``."""
    if given:
        return given
    if os.path.exists(path + ".gz"):
        return path + ".gz"
    made = os.path.join(scratch, os.path.basename(path) + ".gz")
    with open(made, "wb") as out:
        subprocess.run(["gzip", "-c", path], stdout=out, check=True)
    return made


def run_phases(phases: list[str], path: str, size: int, repeat: int, gz: str | None) -> None:
    if gz is not None:
        with open(gz, "rb") as f:           # warm the page cache
            while f.read(1 << 24):
                pass
    if any(p.startswith("whole") for p in phases):
        measure("whole", path)              # untimed: bytecode caches written, imports warm
    print(f"{path}: {size / 1e6:.1f} MB" + (f" ({gz}: {os.path.getsize(gz) / 1e6:.1f} MB)" if gz else "")
          + f", median of {repeat} runs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'phase':<16} {'seconds':>8} {'MB/s':>8} {'x tcpdump':>10} {'time x':>7} {'CPU s':>7} {'CPU x':>6} "
          f"{'x zcat':>6} {'faults':>8} {'peak RSS':>10}  notes")
    base_rate = base_cpu = zcat_cpu = None
    for phase in phases:
        runs = [measure(phase, path, gz) for _ in range(repeat)]
        secs = statistics.median(r[0] for r in runs)
        cpu = statistics.median(float(r[2].get("cpu_s", "nan")) for r in runs)  # type: ignore[arg-type]
        faults = statistics.median(int(r[2].get("faults", 0)) for r in runs)  # type: ignore[call-overload]
        rss = max(r[1] for r in runs)
        rate = size / secs / 1e6
        if phase == "tcpdump":
            base_rate, base_cpu = rate, cpu
        if phase == "zcat":
            zcat_cpu = cpu
        ratio = f"{rate / base_rate:.2f}" if base_rate else "-"          # speed: tcpdump's MB/s = 1
        times = f"{base_rate / rate:.2f}" if base_rate else "-"          # time: tcpdump's seconds = 1
        cpu_x = f"{cpu / base_cpu:.2f}" if base_cpu else "-"             # CPU time: tcpdump's = 1
        zcat_x = f"{cpu / zcat_cpu:.2f}" if zcat_cpu else "-"            # CPU time: zcat's = 1
        notes = " ".join(f"{k}={v}" for k, v in runs[-1][2].items() if k not in ("cpu_s", "faults"))
        print(f"{phase:<16} {secs:>8.3f} {rate:>8.0f} {ratio:>10} {times:>7} {cpu:>7.3f} {cpu_x:>6} {zcat_x:>6} "
              f"{faults:>8.0f} {rss / 1024:>8.1f}MB  {notes}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
