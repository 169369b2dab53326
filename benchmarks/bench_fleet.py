#!/usr/bin/env python3
"""``migshark fleet`` on Dask against a plain loop: speed-up on a local cluster, and the per-capture
overhead of the Dask path.

    python benchmarks/bench_fleet.py [--generated 100] [--copies 100] [--workers 2] [--repeat 3]

Builds a fleet of captures in a temporary directory (deleted afterwards; ``--keep DIR`` keeps it):
``--generated`` captures from ``gen_capture.py`` with valid QEMU streams (``qemu_payload``) at small sizes
(``--sizes``, cycled; each with its own seed) and ``--copies`` copies of the corpus captures in
captures/ (hard links, with their key logs beside, so TLS ones are decrypted). Then, with the page cache
warm, ``--repeat`` rounds of every kind of run below, one after the other in each round (so a change in
the machine's other load weighs on each kind alike), the median of each kind kept; each round starts
its clusters afresh and has every worker analyse one capture before the timing (the loop's process has
imported the analysis too):

- ``loop``: ``task.analyse_capture`` on every capture, one after the other, in one process that has not
  imported distributed, as ``migshark fleet -j 1``'s has not (the baseline; a child forked before the
  clusters start, warmed with one capture);
- ``dask``: ``runner.run_tasks`` on a running ``LocalCluster`` of ``--workers`` processes (one thread
  each), largest capture first, every row collected back here; and the same with the cluster's start and
  stop included (``dask+startup``: what ``migshark fleet`` costs end to end);
- ``dask-1``: the same on a one-worker cluster: its excess over ``loop``, per capture, is what the Dask
  path adds to each capture (pickling the task and its rows, scheduling, the round trips);
- ``noop``: an empty task per capture on the one-worker cluster: the scheduling round trip alone;
- ``pool``: no Dask, a ``multiprocessing`` pool of ``--workers`` forked processes taking one capture at a
  time, largest first (started and warmed outside the timing): what two processes analysing at once
  give on this machine, the ceiling for any runner (two analyses at once share the cores' caches and
  memory bandwidth, and the machine's other load);
- ``cli-1``, ``cli-N``: ``migshark fleet -j 1`` (no Dask) and ``-j N`` on the fleet, each in a fresh process,
  end to end: the interpreter's start, imports, the cluster's start (with its fork server, which the
  runs in this process share) and stop, the table written. Their ratio is what a user sees;
- ``dask-N+spawn``: ``dask-N+startup`` with the workers spawned (Dask's default start method) instead of
  forked from a fork server (``MIGSHARK_FLEET_START=spawn``), to show what the start method costs.

The last round's cluster runs (not ``noop``) are also timed phase by phase (``--timings`` of
``migshark fleet``: cluster started, client connected, tasks submitted, each worker's first task start and
last task end, results back, closed) with the CPU of every process (client with scheduler and nannies,
each worker: in its tasks and beside them), printed after the table.

The benchmark's process re-executes itself with the local cluster's glibc malloc settings for its
workers (``runner.WORKER_MALLOC``), so that ``loop`` and ``pool`` allocate as the workers do: the
comparison is of the runners, not of two allocators.

Ratios are within the same run. The tables must be equal (rows, less ``seconds``) or the run fails.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from dissectors.analysis.judge import Options  # noqa: E402
from dissectors.fleet.inputs import CaptureInput, discover  # noqa: E402
from dissectors.fleet.runner import WORKER_MALLOC, batches, fewer_full_collections, run_tasks  # noqa: E402
from dissectors.fleet.runner import local_cluster as cluster  # noqa: E402
from dissectors.fleet.task import analyse_capture  # noqa: E402
from dissectors.fleet.timeline import Timeline  # noqa: E402

_POOL: tuple[list[CaptureInput], Options] | None = None     # what the forked pool processes analyse
TASK = (analyse_capture.__module__,)        # what the clusters' fork server imports, as run_tasks has it


def noop(item: CaptureInput, options: Options) -> list[dict[str, Any]]:
    return []


def _loop(items: list[CaptureInput], options: Options) -> list[list[dict[str, Any]]]:
    with fewer_full_collections():          # as migshark fleet -j 1's loop and every runner have it
        return [analyse_capture(i, options) for i in items]


def _pool_one(j: int) -> list[dict[str, Any]]:
    assert _POOL is not None
    with fewer_full_collections():
        return analyse_capture(_POOL[0][j], _POOL[1])


def pool_run(pool: Any, items: list[CaptureInput]) -> list[list[dict[str, Any]]]:
    """Every capture on the forked pool, largest first, one at a time; results in the order of ``items``."""
    order = sorted(range(len(items)), key=lambda j: -items[j].size)
    results: list[Any] = [None] * len(items)
    for j, rows in zip(order, pool.imap(_pool_one, order, chunksize=1), strict=True):
        results[j] = rows
    return results


def with_timeline(fn: Callable[[Timeline], Any], timelines: dict[str, Timeline], name: str) -> Callable[[], Any]:
    def run() -> Any:
        timelines[name] = timeline = Timeline()
        timeline.mark("run starts")
        return fn(timeline)
    return run


def build_fleet(root: Path, generated: int, copies: int, sizes: list[str]) -> None:
    import gen_capture

    source = gen_capture.load_source("qemu_payload:payload_source")
    gen = root / "generated"
    gen.mkdir(parents=True)
    for i, size in zip(range(generated), itertools.cycle(sizes), strict=False):
        gen_capture.generate(gen / f"gen-{i:03d}-{size}.pcap", gen_capture.parse_size(size), seed=i,
                             retrans=0.0007, reorder=0.0005, payload_source=source, snaplen=262144)
    corpus = sorted(p for p in (ROOT / "captures").iterdir() if p.name.endswith((".pcap", ".pcap.gz")))
    out = root / "corpus"
    out.mkdir()
    for i, cap in zip(range(copies), itertools.cycle(corpus), strict=False):
        name = f"c{i:03d}-{cap.name}"
        os.link(cap, out / name)
        keylog = cap.with_name(cap.name.split(".pcap")[0] + ".keylog")
        if keylog.exists():
            os.link(keylog, out / (name.split(".pcap")[0] + ".keylog"))


def bytecode_caches(prefix: Path) -> None:
    """Let the clusters' worker processes load migshark from bytecode caches, as an installed migshark's
    do (pip compiles them). Where ``PYTHONDONTWRITEBYTECODE`` is set and the package has none (a source
    tree), every worker would otherwise compile the whole analysis at its start (~0.2 s of CPU quiet, a
    second or more at a load of 8). The caches go under ``prefix`` (``PYTHONPYCACHEPREFIX``), not into
    the source tree."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    sys.pycache_prefix = str(prefix)
    compileall.compile_dir(ROOT / "dissectors", quiet=1)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and every process under it (the local cluster's
    scheduler, nannies and workers run in here or below), processes that already ended excepted."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of the process tree, and the result of one call."""
    c0 = cpu_seconds()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, cpu_seconds() - c0, result


def tail_bound(items: list[CaptureInput], costs: list[float], workers: int, per_task: float = 0.003) -> str:
    """The runner's packing played with each capture's cost in the loop: ``workers`` workers each taking
    the next task in queue order when free, ``per_task`` seconds per task. Less load-sensitive than the
    cluster's wall clock: what the order and sizes of the tasks alone allow."""
    groups = batches(items, workers)
    ends = [0.0] * workers
    for group in groups:
        w = min(range(workers), key=ends.__getitem__)
        ends[w] += sum(costs[j] for j in group) + per_task
    ideal = sum(costs) / workers
    return (f"tail: {len(groups)} tasks; played with the loop's per-capture times on {workers} workers the last "
            f"ends at {max(ends):.2f} s of an ideal {ideal:.2f} s, the first {max(ends) - min(ends):.3f} s "
            f"before it: the packing allows {sum(costs) / max(ends):.2f}x")


def cli_run(root: Path, jobs: int, out: Path) -> list[dict[str, Any]]:
    """``migshark fleet -j JOBS`` on the fleet in a fresh process, end to end (the interpreter's start,
    imports, the cluster's start and stop with its fork server, the table written); the table's rows."""
    import json

    proc = subprocess.run([sys.executable, "-m", "dissectors.cli.main", "fleet", "-j", str(jobs), str(root),
                           "-o", str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"migshark fleet -j {jobs} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in out.read_text().splitlines()]


def strip(results: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    return [[{k: v for k, v in r.items() if k != "seconds"} for r in rows] for rows in results]


def same_malloc_as_the_workers() -> None:
    """Run this process with ``WORKER_MALLOC`` (glibc reads it at start: re-execute if it is not set)."""
    if any(os.environ.get(k) != v for k, v in WORKER_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **WORKER_MALLOC})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generated", type=int, default=100)
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--sizes", default="2M,4M,8M,16M", help="generated capture payload sizes, cycled")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", metavar="DIR", help="build the fleet in DIR and keep it")
    args = ap.parse_args(argv)

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="migshark-fleet-bench-"))
    try:
        if not any(root.glob("*/*.pcap*")):
            t0 = time.perf_counter()
            build_fleet(root, args.generated, args.copies, args.sizes.split(","))
            print(f"fleet built in {time.perf_counter() - t0:.1f} s in {root}")
        bytecode_caches(root / "pycache")
        items = discover([str(root)])
        total = sum(i.size for i in items)
        print(f"{len(items)} captures, {total / 1e6:,.1f} MB on storage; load average "
              f"{os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
        opts = Options()
        for item in items:                              # warm the page cache
            Path(item.url).read_bytes()
        # The loop runs in a child forked now, before this process imports distributed for the clusters:
        # a process like `migshark fleet -j 1`'s. In this process, distributed's ~50,000 objects made
        # every full collection of the loop's longer (~5 % of its CPU), which flattered the clusters.
        looper = multiprocessing.get_context("fork").Pool(1)
        looper.apply(analyse_capture, (items[-1], opts))

        load0 = os.getloadavg()[0]
        # The runs are interleaved, round after round (the median of each kind is kept), so that a change in
        # the machine's other load during the benchmark weighs on every kind alike. A cluster is started
        # fresh for each round and only its runs are timed (its idle CPU is in the process tree's).
        wall: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        rows: dict[str, Any] = {}
        two, start_name = f"dask-{args.workers}", f"dask-{args.workers}+startup"

        def record(name: str, fn: Callable[[], Any]) -> None:
            s, c, result = measure(fn)
            wall.setdefault(name, []).append(s)
            cpus.setdefault(name, []).append(c)
            rows[name] = result
            print(f"  {name:<16} {s:7.2f} s, {c:6.2f} s CPU; load {os.getloadavg()[0]:.2f}", flush=True)

        def warm(c: Any) -> None:              # every worker analyses one capture (the loop's process has)
            from distributed import Client

            with Client(c.scheduler_address) as client:
                client.run(analyse_capture, items[-1], opts)

        global _POOL
        _POOL = (items, opts)
        pool_name, spawn_name = f"pool-{args.workers}", f"dask-{args.workers}+spawn"
        cli_name = f"cli-{args.workers}"
        timelines: dict[str, Timeline] = {}
        for _ in range(args.repeat):
            record("loop", lambda: looper.apply(_loop, (items, opts)))
            with multiprocessing.get_context("fork").Pool(args.workers) as pool:
                pool.map(_pool_one, [len(items) - 1] * args.workers, chunksize=1)
                record(pool_name, lambda: pool_run(pool, items))
            with cluster(args.workers, preload=TASK) as c:
                warm(c)
                record(two, with_timeline(lambda t: run_tasks(analyse_capture, items, opts, timeline=t,
                                                              scheduler=c.scheduler_address), timelines, two))
            record(start_name, with_timeline(lambda t: run_tasks(analyse_capture, items, opts, workers=args.workers,
                                                                 timeline=t), timelines, start_name))
            os.environ["MIGSHARK_FLEET_START"] = "spawn"
            try:
                record(spawn_name, with_timeline(lambda t: run_tasks(analyse_capture, items, opts, timeline=t,
                                                                     workers=args.workers), timelines, spawn_name))
            finally:
                del os.environ["MIGSHARK_FLEET_START"]
            for jobs, name in ((1, "cli-1"), (args.workers, cli_name)):
                record(name, lambda jobs=jobs: cli_run(root, jobs, root / "cli-table.jsonl"))
            with cluster(1, preload=TASK) as c:
                warm(c)
                record("dask-1", with_timeline(lambda t: run_tasks(analyse_capture, items, opts, timeline=t,
                                                                   scheduler=c.scheduler_address), timelines, "dask-1"))
                record("noop-1", lambda: run_tasks(noop, items, opts, scheduler=c.scheduler_address))
        looper.terminate()
        secs = {k: statistics.median(v) for k, v in wall.items()}
        CPU = {k: statistics.median(v) for k, v in cpus.items()}
        loop_s, dask_s, start_s, one_s, noop_s = (secs[k] for k in ("loop", two, start_name, "dask-1", "noop-1"))
        loop_rows, dask_rows, one_rows = rows["loop"], rows[two], rows["dask-1"]
        if not (strip(loop_rows) == strip(dask_rows) == strip(one_rows) == strip(rows[pool_name])
                == strip(rows[start_name]) == strip(rows[spawn_name])):
            print("FAIL: the cluster's table differs from the loop's", file=sys.stderr)
            return 1
        if strip([rows["cli-1"]]) != strip([rows[cli_name]]) or len(rows["cli-1"]) != sum(map(len, loop_rows)):
            print("FAIL: migshark fleet's tables differ (-j 1 against the cluster, or from the loop's row count)",
                  file=sys.stderr)
            return 1
        busy = sum(r["seconds"] for rows in dask_rows for r in rows[:1])
        n = len(items)
        print(f"{'run':<16} {'seconds':>8} {'captures/s':>11} {'MB/s':>8} {'x loop':>7} {'CPU s':>7} "
              f"{'CPU/capture':>12}")
        for name, s in secs.items():
            cpu = CPU[name]                     # not with start-up: its workers' CPU ended with them
            cpu_txt = f"{cpu:7.2f} {cpu / n * 1000:9.1f} ms" if name in ("loop", pool_name, two, "dask-1",
                                                                          "noop-1") else ""
            print(f"{name:<16} {s:8.2f} {n / s:11.1f} {total / 1e6 / s:8.1f} {loop_s / s:7.2f} {cpu_txt}")
        print(f"speed-up on the running {args.workers}-worker cluster: {loop_s / dask_s:.2f}x "
              f"(with cluster start-up and shutdown: {loop_s / start_s:.2f}x)")
        for name in (two, pool_name, start_name):   # the same, round by round: the host's drift cancels out
            per = [lw / w for lw, w in zip(wall["loop"], wall[name], strict=True)]
            print(f"  round by round, loop / {name}: " + ", ".join(f"{r:.2f}" for r in per)
                  + f" (median {statistics.median(per):.2f}x)")
        print(f"Dask path overhead per capture (dask-1 - loop) / n: {(one_s - loop_s) / n * 1000:+.1f} ms "
              f"({(one_s - loop_s) / loop_s * 100:+.1f} % of the loop); empty-task round trip "
              f"{noop_s / n * 1000:.1f} ms; workers busy {busy:.2f} s of {dask_s * args.workers:.2f} s")
        dask_cpu = CPU[two]
        print(f"CPU: the cluster spent {dask_cpu / CPU['loop']:.2f}x the loop's CPU for the same table; on "
              f"{args.workers} otherwise idle cores that bounds the speed-up at "
              f"{args.workers * CPU['loop'] / dask_cpu:.2f}x; dask-1 spent {CPU['dask-1'] / CPU['loop']:.2f}x "
              f"({(CPU['dask-1'] - CPU['loop']) / n * 1000:+.1f} ms of CPU per capture)")
        pool_bound = args.workers * CPU["loop"] / CPU[pool_name]
        print(f"ceiling without Dask ({pool_name}, forked processes): {loop_s / secs[pool_name]:.2f}x the loop, CPU "
              f"{CPU[pool_name] / CPU['loop']:.2f}x the loop's (bound {pool_bound:.2f}x); "
              f"the running cluster reaches {secs[pool_name] / dask_s:.2f} of the pool's speed, with CPU "
              f"{dask_cpu / CPU[pool_name]:.2f}x the pool's")
        print(f"start-up and shutdown (dask+startup - dask, medians): forked workers {start_s - dask_s:+.2f} s, "
              f"spawned {secs[spawn_name] - dask_s:+.2f} s")
        print(f"end to end, migshark fleet in a fresh process (interpreter, imports, cluster start and stop, table): "
              f"-j {args.workers} {secs[cli_name]:.2f} s against -j 1 (no Dask) {secs['cli-1']:.2f} s: "
              f"{secs['cli-1'] / secs[cli_name]:.2f}x")
        print(tail_bound(items, [rows[0]["seconds"] if rows else 0.0 for rows in loop_rows], args.workers))
        for name, timeline in timelines.items():
            print(f"--- {name}, last round: " + timeline.render(), end="")
        if two in timelines:
            client, beside, tasks = timelines[two].overhead()
            print(f"Dask's own CPU in the last round's {two} run: {client + beside:.2f} s ({client:.2f} s in this "
                  f"process: client, scheduler, nannies; {beside:.2f} s in the workers beside their tasks), "
                  f"{(client + beside) / CPU['loop'] * 100:.1f} % of the loop's median CPU; the tasks' threads "
                  f"{tasks:.2f} s ({tasks / CPU['loop']:.2f}x the loop's)")
        print(f"load average before {load0:.2f}, after {os.getloadavg()[0]:.2f} (other processes share the cores: "
              "wall-clock ratios are only meaningful on a quiet machine)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    same_malloc_as_the_workers()
    sys.exit(main())
