"""Map one task over many captures: on a Dask cluster (a local one by default), or in a plain loop.

``run_tasks(fn, items, ...)`` calls ``fn(item, *args)`` for every capture and returns the results in the
order of ``items``; ``on_result(item, result)`` is called in this process as each one finishes (the
progress bar). Where it runs:

- ``scheduler`` (``tcp://HOST:PORT``), else Dask's ``scheduler-address`` setting (the
  ``DASK_SCHEDULER_ADDRESS`` environment variable): an existing cluster; its workers need migshark
  installed and must see the captures at the same names (a shared filesystem, or fsspec URLs);
- else ``workers`` > 1 (or None: one per core): a ``distributed.LocalCluster`` of that many worker
  processes with one thread each (the analysis is CPU-bound Python: processes, not threads);
- else (``workers`` == 1): a plain loop in this process, no Dask at all.

The queue is ordered largest capture first (Dask task priorities), so a large capture does not start
last. A large capture is still one task: the analysis streams it in bounded memory; small ones are
packed several to a task, the tasks shrinking towards the end of the queue (``batches``). A capture
whose task dies with its worker (killed, out of memory) is tried again alone, and if that dies too, once
more at the end with nothing else running (Dask blames the task queued behind a dying one too); if that
dies as well it comes back through ``on_error`` as a result, not an exception.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from dissectors.fleet.inputs import CaptureInput
from dissectors.fleet.timeline import TaskSpan, Timeline, child_cpu, process_cpu, task_span

R = TypeVar("R")
ResultFn = Callable[[CaptureInput, Any], None]
ErrorFn = Callable[[CaptureInput, BaseException], Any]


class RunnerError(Exception):
    """The cluster cannot be reached or started (a usage / environment error, exit code 2)."""


def default_workers() -> int:
    """The cores this process may run on (the local cluster's size)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def scheduler_address(explicit: str | None) -> str | None:
    """``--scheduler``, else Dask's ``scheduler-address`` setting (``DASK_SCHEDULER_ADDRESS``), else None."""
    if explicit:
        return explicit
    if os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return os.environ["DASK_SCHEDULER_ADDRESS"]
    try:
        import dask
    except ImportError:
        return None
    value = dask.config.get("scheduler-address", None)
    return str(value) if value else None


def describe_engine(scheduler: str | None, workers: int | None) -> str:
    address = scheduler_address(scheduler)
    if address:
        return f"Dask cluster at {address}"
    n = workers or default_workers()
    return "serial (one process)" if n == 1 else f"local Dask cluster, {n} worker processes"


def run_tasks(fn: Callable[..., R], items: Sequence[CaptureInput], *args: Any, scheduler: str | None = None,
              workers: int | None = None, on_result: ResultFn | None = None,
              on_error: ErrorFn | None = None, timeline: Timeline | None = None) -> list[R]:
    """``fn(item, *args)`` for every item, results in the order of ``items`` (see the module's text);
    ``timeline``, if given, is filled with the run's phases, tasks and CPU per process."""
    address = scheduler_address(scheduler)
    if address is None and (workers or default_workers()) == 1:
        results = _serial(fn, items, args, on_result)
        _mark(timeline, f"{len(items)} captures analysed in this process (no Dask)")
        return results
    if address is None and _wants_fork_server():
        # it imports while this process imports and starts the rest (if not started already, earlier)
        started = start_fork_server((fn.__module__,))
        if timeline is not None and started >= timeline.origin:
            timeline.mark("fork server started", at=started)
    try:
        from distributed import Client
    except ImportError as exc:
        raise RunnerError(f"running on Dask needs dask and distributed ({exc}); install them with "
                          "pip install 'migshark[fleet]', or run serially with -j 1") from None
    if address is not None:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise RunnerError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        _mark(timeline, "client connected to the scheduler")
        with client:
            results = _on_dask(client, fn, items, args, on_result, on_error, timeline)
        _mark(timeline, "client closed")
        return results
    try:
        cluster = local_cluster(workers or default_workers(), preload=(fn.__module__,))
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise RunnerError(f"cannot start a local Dask cluster: {exc}") from None
    _mark(timeline, "local cluster started")
    if timeline is not None:
        timeline.client_hosts_cluster = True
    with cluster:
        with Client(cluster) as client:
            _mark(timeline, "client connected")
            results = _on_dask(client, fn, items, args, on_result, on_error, timeline)
        _mark(timeline, "client closed")
    _mark(timeline, "local cluster closed")
    return results


def _mark(timeline: Timeline | None, what: str) -> None:
    if timeline is not None:
        timeline.mark(what)


def local_cluster(workers: int, preload: Sequence[str] = ()) -> Any:
    """The embedded cluster: ``workers`` processes of one thread on loopback, no dashboard, quiet logs.

    Two of Dask's worker defaults cost the analysis CPU and are changed here: the statistical profiler
    (it samples the analysis's stacks every 10 ms, under the GIL, for a dashboard nobody sees here) is
    off, and instead of ``MALLOC_TRIM_THRESHOLD_=65536`` in the workers' environment, which made the
    analysis ~45 % slower (glibc then hands every freed read window back to the kernel and faults it in
    again; see benchmarks/README.md, "Fleet"), the workers get ``WORKER_MALLOC``, which keeps freed memory
    for reuse. The analysis's memory is bounded anyway. Its event-loop, system and
    memory monitors tick less often (the idle cluster's own CPU falls from ~7 % to ~2 % of a core; the
    memory monitors of each worker and its nanny, psutil every 100 ms by default, alone were about half of
    what was left: 30 against 17 ms of CPU per second with one worker). Its logs are
    silenced below CRITICAL: a worker's heartbeat racing the shutdown logs a traceback at ERROR, and what
    matters to the user (a task that failed, a worker that died) comes back through the futures. The
    workers ignore SIGINT (``WORKER_INIT``, a Dask preload): Ctrl-C reaches the whole process group, and
    it is this process's to answer, by closing the cluster.

    On Linux the worker processes are started by a fork server (``distributed.worker.multiprocessing-method:
    forkserver``) instead of spawned. A spawned worker is a new interpreter that imports distributed, dask
    and the analysis again: ~1-2.5 s of CPU each, most of the fleet's start-up on a 2-core machine
    (benchmarks/README.md, "Fleet"). The fork server is started once per process with distributed and the
    task's module (``preload``: the analysis) imported, and forks each worker from there, ready to run. A
    plain ``fork`` of this process would be cheaper still, but this process has threads (the cluster's
    event loop, Dask's offload thread) and a fork may copy one of their locks held: a worker hung that
    way in a test, in a logging handler's flush. Elsewhere than Linux Dask's ``spawn`` is kept;
    ``MIGSHARK_FLEET_START=spawn|forkserver|fork`` chooses. Dask reads the start method each time a
    nanny starts a worker, so it is held in this process's Dask config until the cluster closes: a
    worker restarted after it died is forked from the server too (spawned, it cost 1.5-2 s of CPU
    while the other workers ran), and the workers' malloc variables, which the nanny puts into this
    process's environment at each start, are taken out of it again when the cluster closes.
    """
    import dask
    import distributed  # noqa: F401 - its config defaults are loaded before ours are set (and later undone)

    method = _start_method()
    # Held until the cluster closes (see above): read again by each nanny's (re)start of its worker.
    held = dask.config.set({"distributed.worker.multiprocessing-method": method})
    # Dask's nanny puts the workers' variables into this process's environment before it starts one
    # (os.environ.update): put it back afterwards, so that what this process starts later (a
    # subprocess, another tool) does not inherit the workers' malloc settings.
    saved = {k: os.environ.get(k) for k in WORKER_MALLOC}

    def restore_environ() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def release() -> None:
        held.__exit__(None, None, None)
        restore_environ()

    with dask.config.set({"distributed.worker.profile.enabled": False,
                          # glibc keeps freed read windows for the next capture (see WORKER_MALLOC)
                          **{f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC.items()},
                          # event-loop health and system metrics for dashboards: every 20 / 500 ms by default
                          "distributed.admin.tick.interval": "1s",
                          "distributed.admin.system-monitor.interval": "2s",
                          # each worker's and each nanny's memory check (psutil), every 100 ms by default
                          "distributed.worker.memory.monitor-interval": "1s",
                          # Ctrl-C is the migshark process's to answer (workerinit's text)
                          "distributed.worker.preload": [WORKER_INIT]}):
        try:
            if method == "forkserver":
                start_fork_server(preload)
            # No dashboard; the scheduler's remaining HTTP routes (health, metrics) on a free loopback
            # port, not 8787 (taken when another Dask cluster runs on the machine, which printed a warning).
            with _sigint_deferred() as interrupted:
                cluster = _cluster_class()(n_workers=workers, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                           silence_logs=logging.CRITICAL)
        except BaseException:
            release()
            raise
    cluster.on_closed = release
    restore_environ()             # the workers have started: this process's environment as it was
    if interrupted:
        cluster.close()
        raise KeyboardInterrupt
    return cluster


#: The local workers' Dask preload: they leave SIGINT (Ctrl-C) to the migshark process.
WORKER_INIT = "dissectors.fleet.workerinit"

_CLUSTER_CLASS: Any = None


def _cluster_class() -> Any:
    """``distributed.LocalCluster`` calling its ``on_closed`` once when it has closed (defined on first use:
    distributed is imported only for a run on Dask)."""
    global _CLUSTER_CLASS
    if _CLUSTER_CLASS is None:
        from distributed import LocalCluster

        class Cluster(LocalCluster):  # type: ignore[misc]
            on_closed: Callable[[], None] | None = None

            async def _close(self) -> None:
                try:
                    await super()._close()
                finally:
                    done, self.on_closed = self.on_closed, None
                    if done is not None:
                        done()

        _CLUSTER_CLASS = Cluster
    return _CLUSTER_CLASS


# The workers' glibc malloc settings (environment variables read when a process starts). By default
# glibc serves each capture's read windows from fresh mmap'd or newly grown memory and gives it back when
# freed, so every byte read is page-faulted in again: ~395,000 minor faults and ~1 s of system CPU per
# 200 captures (~20 % of the analysis's CPU). With these, the freed memory is kept and reused: ~13,000-
# 28,000 faults, 0.15-0.2 s (benchmarks/README.md, "Fleet"). The worker's memory stays near its peak
# (bounded by the analysis) instead of shrinking between captures. Dask's own default here,
# MALLOC_TRIM_THRESHOLD_=65536, was the opposite and made the analysis ~45 % slower.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "268435456"}


def _start_method() -> str:
    """How the local cluster starts its worker processes: ``forkserver`` on Linux (see ``local_cluster``),
    else Dask's default, ``spawn``; ``MIGSHARK_FLEET_START=spawn|forkserver|fork`` overrides it."""
    chosen = os.environ.get("MIGSHARK_FLEET_START", "")
    if chosen in ("spawn", "forkserver", "fork"):
        return chosen
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


def _wants_fork_server() -> bool:
    return _start_method() == "forkserver" and importlib.util.find_spec("distributed") is not None


def start_fork_server_early(module: str, scheduler: str | None, workers: int | None) -> None:
    """Start the local cluster's fork server first thing, before the caller imports the analysis, if the
    run is to have a local cluster: no ``scheduler``, no ``DASK_SCHEDULER_ADDRESS``, more than one worker.
    ``module`` is the task's, by name: importing it is what the server does meanwhile, on another core.
    Dask's configuration files are not read here (importing dask alone takes ~0.3 s, more than this
    saves): where they name a scheduler, the server started is left unused. Measured with ``migshark
    fleet -j 2`` on 200 captures, 6 runs each way interleaved: tasks submitted 0.18 s earlier (1.72 against
    1.90 s from the process's start), the tasks' CPU unchanged."""
    if scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or (workers or default_workers()) == 1:
        return
    if _wants_fork_server():
        start_fork_server((module,))


_SERVER_STARTED: float | None = None        # when this process first started its fork server (time.time())


def start_fork_server(modules: Sequence[str]) -> float:
    """Start this process's fork server, if it is not running yet, importing distributed and ``modules``
    (the task's), so that each worker forked from it starts with both imported. Returns when this
    process first started it (``time.time()``).

    Started here rather than by Dask at the first worker's start, so that its imports (0.4-1.4 s of CPU)
    run on the other core while this process imports distributed and starts the scheduler and nannies
    (``run_tasks`` calls it before importing distributed), instead of after them while every worker
    waits. Its environment is this process's with ``WORKER_MALLOC``: glibc reads those variables when a
    process starts, and a forked worker keeps the server's allocator settings (Dask's nanny sets its
    own pre-spawn variables only just before it starts a worker; the server is started once). Dask's
    ``PYTHONHASHSEED`` pre-spawn setting is not needed for its purpose here: every worker is a fork of
    the one server and has its hash seed. Once the server runs, what Dask or a later call asks it to
    import has no effect (it keeps what it imported)."""
    global _SERVER_STARTED
    import multiprocessing
    from multiprocessing import forkserver

    if _SERVER_STARTED is None:
        _SERVER_STARTED = time.time()
    wanted = ["distributed", *(m for m in modules if m and m != "__main__")]
    multiprocessing.get_context("forkserver").set_forkserver_preload(wanted)
    saved = {k: os.environ.get(k) for k in WORKER_MALLOC}
    os.environ.update(WORKER_MALLOC)
    try:
        with _sigint_ignored():
            forkserver.ensure_running()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return _SERVER_STARTED


@contextmanager
def _sigint_handled(handler: Any) -> Iterator[None]:
    """SIGINT handled by ``handler`` in this process while the block runs, as before afterwards (on the main
    thread; elsewhere nothing changes)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _sigint_deferred() -> Iterator[list[int]]:
    """Ctrl-C (SIGINT) while the block runs is noted in the list yielded instead of raised. Around the local
    cluster's start: interrupted halfway, the cluster was left half made, and Dask's exit handler, closing
    it, printed an ``AssertionError`` traceback (``Status.init``). The caller closes the cluster once made,
    then raises ``KeyboardInterrupt``."""
    noted: list[int] = []
    with _sigint_handled(lambda signum, frame: noted.append(signum)):
        yield noted


def _sigint_ignored() -> Any:
    """SIGINT ignored while the block runs, so that a process it starts inherits it ignored. The fork server
    does: Ctrl-C reaches the whole process group, and the server, which ignores SIGINT only once its imports
    are done, died of one that came during them with a ``KeyboardInterrupt`` traceback on the terminal;
    started this way it ignores SIGINT from its first instruction, and so do the workers it forks (it gives
    them back the handler it started with). A Ctrl-C meant for this process in the few milliseconds of the
    start is lost."""
    import signal

    return _sigint_handled(signal.SIG_IGN)


#: The collector's third threshold while captures are analysed one after another (Python's default is 10).
FULL_COLLECTION_EVERY = 100


@contextmanager
def fewer_full_collections() -> Iterator[None]:
    """Full collections ten times rarer while the block runs, as they were before it afterwards.

    A full collection walks every object the process holds. In a Dask worker that is distributed's and
    dask's ~60,000 objects, three times the analysis's own: with Python's default (a full collection
    after every 10 of the middle generation's) the collector took 0.44-0.58 s of CPU for 200 captures,
    0.39-0.46 s of it in 10 full collections, ~11 % of the analysis (benchmarks/README.md, "Fleet"). With
    this, one full collection instead of ten, the collector's total 0.14-0.25 s; the peak memory the same
    (126 against 128 MB: the young generations still collect the analysis's short-lived cycles). Scoped,
    not set for the process: a worker of an existing cluster runs other people's tasks too."""
    import gc

    saved = gc.get_threshold()
    gc.set_threshold(saved[0], saved[1], max(saved[2], FULL_COLLECTION_EVERY))
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def _serial(fn: Callable[..., R], items: Sequence[CaptureInput], args: tuple[Any, ...],
            on_result: ResultFn | None) -> list[R]:
    out = []
    with fewer_full_collections():
        for item in items:
            result = fn(item, *args)
            if on_result is not None:
                on_result(item, result)
            out.append(result)
    return out


def batches(items: Sequence[CaptureInput], slots: int, max_bytes: int = 256 << 20,
            max_count: int = 32, split: float = 1.5) -> list[list[int]]:
    """Indexes of ``items`` grouped into tasks, in queue order: largest capture first, tasks shrinking
    towards the end of the queue (guided self-scheduling).

    Each task takes at most ``1 / (split * slots)`` of the captures still unassigned *and* of their bytes
    (and at most ``max_bytes`` / ``max_count``; a capture at least that big is a task alone). A
    capture's cost is not known before it is analysed: it grows with its bytes, but a small capture of
    real traffic (many records, TLS) can cost as much as one a hundred times its size of bulk pages. A
    task capped on both counts holds at most that share of the remaining work whatever the mix, so the
    first tasks are large (Dask's own cost per task, 3-6 ms of CPU over scheduler, worker and client, is
    paid rarely) and the last ones are single captures that fill the workers' tail evenly. With
    ``split`` 1.5 a task holds at most two thirds of a worker's fair share of what is left: on the
    benchmark's 200 captures 26 tasks instead of 42 with ``split`` 2 and 64 MiB (Dask's own CPU down by
    ~0.1-0.15 s per run, 2-3 % of the analysis), and played with the measured per-capture costs, and with
    those costs distorted (the largest captures, or the smallest, made 2-3x dearer, random per-capture
    factors), the tail still allows 1.95-1.98x on two workers (benchmarks/README.md, "Fleet")."""
    order = sorted(range(len(items)), key=lambda j: -items[j].size)
    share = max(1.0, split * slots)
    left_n, left_bytes = len(order), sum(items[j].size for j in order)
    out: list[list[int]] = []
    i = 0
    while i < len(order):
        count_cap = max(1, min(max_count, int(left_n // share)))
        byte_cap = min(max_bytes, int(left_bytes // share))
        group, size = [order[i]], items[order[i]].size
        i += 1
        while i < len(order) and len(group) < count_cap and size + items[order[i]].size <= byte_cap:
            group.append(order[i])
            size += items[order[i]].size
            i += 1
        out.append(group)
        left_n -= len(group)
        left_bytes -= size
    return out


def run_batch(fn: Callable[..., R], batch: list[CaptureInput], *args: Any) -> tuple[list[R], TaskSpan]:
    """What a worker runs: ``fn`` on each capture of one task, in order; with the task's span (which
    worker, when, its CPU: a few numbers, for ``--timings``)."""
    start, cpu0 = time.time(), time.thread_time()
    with fewer_full_collections():
        results = [fn(item, *args) for item in batch]
    return results, task_span(start, cpu0, len(batch))


def _slots(client: Any) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - an estimate only
        return 1


def _cpu_by_process(client: Any) -> dict[str, float]:
    """CPU seconds of this process and of every worker's (for ``--timings``)."""
    out = process_cpu()
    try:
        for per_worker in client.run(process_cpu).values():
            out.update(per_worker)
    except Exception:  # noqa: BLE001 - timings only; a worker without psutil or gone is left out
        pass
    out.update({k: v for k, v in child_cpu().items() if k not in out})   # fork server, resource tracker
    return out


def _fetch(client: Any, ended: list[Any]) -> dict[str, Any]:
    """The results of the futures ``ended``, by key, in one round trip; None for a future whose result
    cannot be had: it failed, or the fetch itself failed (a result that cannot be loaded in this process,
    a result lost with its worker and the task run again failed), then tried one by one."""
    try:
        return dict(client.gather({fut.key: fut for fut in ended}, errors="skip"))
    except Exception:  # noqa: BLE001 - which one? each alone
        got: dict[str, Any] = {}
        for fut in ended:
            try:
                got[fut.key] = fut.result() if fut.status == "finished" else None
            except Exception:  # noqa: BLE001 - a failure of this task's: retried or reported as such
                got[fut.key] = None
        return got


#: How long a finished task's result may wait on its worker before it is fetched (seconds): results are
#: fetched together, at most this often, and at once when no other task is running.
FETCH_EVERY = 1.0


def _on_dask(client: Any, fn: Callable[..., R], items: Sequence[CaptureInput], args: tuple[Any, ...],
             on_result: ResultFn | None, on_error: ErrorFn | None, timeline: Timeline | None = None) -> list[R]:
    """The tasks on ``client``'s cluster.

    Results are fetched together, at most once every ``FETCH_EVERY`` seconds while tasks still run (a
    finished task's result waits on its worker until then), and at once when the last running task ends:
    one ``gather`` with ``errors="skip"`` for all that ended since the last. A fetch is a round trip through
    the scheduler to each worker holding a result, whose event loop takes the interpreter from the
    analysis to answer it: fetching each result as its task ended (26 fetches for the benchmark's 200
    captures) cost 2.5-4.5 % of the wall-clock time against one fetch a second (benchmarks/README.md,
    "Fleet", seventh pass). So ``on_result`` (the progress bar) hears of captures a second at a time.

    Tasks that ended are learnt of from ``Future.add_done_callback`` into a queue this thread waits on
    with a timeout (the next fetch). Not ``as_completed(..., with_results=True)``, which fetched each
    result on the client's event loop: when that fetch itself raised (a result lost with its worker, the
    task recomputed and then killed with another worker), the fetching coroutine died silently and the
    iteration waited forever (seen once in tests/test_fleet_local.py under load). Here a fetch that
    raises is retried future by future, and a result that cannot be had is its task's failure.

    A failed task of several captures has each of them tried again alone (at once: its status says so
    without a fetch). A capture whose task fails alone is a suspect, tried once more at the end with
    nothing else running: when a capture kills its worker, Dask also blames the task queued behind it on
    that worker, so an innocent capture can fail alongside a guilty one; only a capture that fails when it
    runs by itself becomes an error.

    Ctrl-C (``KeyboardInterrupt`` while waiting) fetches and delivers the results of the tasks that have
    ended before it is raised on, so that the caller can report every capture analysed so far."""
    import asyncio
    import queue

    from distributed import wait

    tag = os.urandom(4).hex()
    pending: dict[str, list[int]] = {}
    attempt = itertools.count()
    ended_now: queue.SimpleQueue[Any] = queue.SimpleQueue()    # filled on Dask's callback thread

    def submit(group: list[int], priority: int, tracked: bool = True) -> Any:
        # Higher runs first: the queue's order (largest captures first, small tasks last).
        fut = client.submit(run_batch, fn, [items[j] for j in group], *args, pure=False, priority=priority,
                            key=f"migshark-{group[0]}-{len(group)}-{tag}-{next(attempt)}")
        pending[fut.key] = group
        if tracked:
            fut.add_done_callback(ended_now.put)
        return fut

    results: list[Any] = [None] * len(items)

    def deliver(group: list[int], outcome: list[Any]) -> None:
        for j, result in zip(group, outcome, strict=True):
            results[j] = result
            if on_result is not None:
                on_result(items[j], result)

    suspects: list[int] = []

    def failed(group: list[int]) -> int:
        """A task that failed or whose result cannot be had: its captures tried again alone (how many
        tasks that submits), or a single capture kept for the end."""
        if len(group) > 1:  # the worker died (KilledWorker) or the task escaped: which capture did it?
            for j in group:
                submit([j], 0)
            return len(group)
        suspects.append(group[0])
        return 0

    if timeline is not None:
        timeline.cpu(timeline.cpu_before, _cpu_by_process(client))
    groups = batches(items, _slots(client))
    for k, g in enumerate(groups):
        submit(g, len(groups) - k)
    _mark(timeline, f"{len(groups)} tasks submitted for {len(items)} captures")
    first = True

    def collect(ended: list[Any], retry: bool = True) -> int:
        """Fetch the results of the tasks ``ended`` (in one round trip) and deliver them; a task whose result
        cannot be had is ``failed`` (if ``retry``). Returns how many tasks that submitted again."""
        nonlocal first
        got = _fetch(client, ended)
        if first:
            _mark(timeline, "first result back")
            first = False
        again = 0
        for fut in ended:
            group = pending.pop(fut.key)
            value = got.get(fut.key)
            fut.release()
            if value is not None:
                outcome, span = value
                if timeline is not None:
                    timeline.spans.append(span)
                deliver(group, outcome)
            elif retry:
                again += failed(group)
        return again

    running = len(groups)                   # tasks submitted and not ended
    finished: list[Any] = []                # ended with a result not fetched yet
    due = 0.0                               # when those are fetched
    try:
        while running or finished:
            if running:
                try:
                    ended = [ended_now.get(timeout=max(0.0, due - time.monotonic()) if finished else None)]
                except queue.Empty:
                    ended = []
                while not ended_now.empty():
                    ended.append(ended_now.get())
                running -= len(ended)
                for fut in ended:
                    if fut.status in ("error", "cancelled"):
                        running += failed(pending.pop(fut.key))
                        fut.release()
                        continue
                    # finished; or its result already lost with its worker and being recomputed ("lost",
                    # "pending"): the fetch waits for it
                    if not finished:
                        due = time.monotonic() + FETCH_EVERY
                    finished.append(fut)
            if finished and (not running or time.monotonic() >= due):
                running += collect(finished)    # (interrupted halfway, the rest is delivered below)
                finished = []
    except KeyboardInterrupt:
        # Ctrl-C: the results of the tasks that have ended are delivered (the caller keeps what it was given
        # so far) before the run stops; a second Ctrl-C stops it at once
        while not ended_now.empty():
            finished.append(ended_now.get())
        collect([fut for fut in finished if fut.key in pending and fut.status == "finished"], retry=False)
        raise
    for j in suspects:            # alone on the cluster now: a failure here is this capture's own
        fut = submit([j], 0, tracked=False)
        wait([fut])
        pending.pop(fut.key)
        exc: BaseException | None = None
        if fut.status == "finished":
            try:
                outcome, span = fut.result()
                if timeline is not None:
                    timeline.spans.append(span)
            except Exception as cannot:  # noqa: BLE001 - its result cannot be had here (e.g. not loadable)
                exc = cannot
        else:
            try:
                exc = fut.exception()
            except (Exception, asyncio.CancelledError) as cancelled:  # a cancelled future raises instead
                exc = cancelled
        if exc is not None:
            if on_error is None:
                raise exc
            outcome = [on_error(items[j], exc)]
        fut.release()
        deliver([j], outcome)
    if timeline is not None:
        timeline.mark("last result back")
        timeline.cpu(timeline.cpu_after, _cpu_by_process(client))
    return results
