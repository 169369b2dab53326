"""Map one task over many captures: on a Dask cluster (a local one by default), or in a plain loop.

``run_tasks(fn, items, ...)`` calls ``fn(item, *args)`` for every capture and returns the results in the
order of ``items``; ``on_result(item, result)`` is called in this process as each one finishes (the
progress line). Where it runs:

- ``scheduler`` (``tcp://HOST:PORT``), else Dask's ``scheduler-address`` setting (the
  ``DASK_SCHEDULER_ADDRESS`` environment variable): an existing cluster; its workers need migshark
  installed and must see the captures at the same names (a shared filesystem, or fsspec URLs);
- else ``workers`` > 1 (or None: one per core): a ``distributed.LocalCluster`` of that many worker
  processes with one thread each (the analysis is CPU-bound Python: processes, not threads);
- else (``workers`` == 1): a plain loop in this process, no Dask at all.

The queue is ordered largest capture first (Dask task priorities), so a large capture does not start
last. A large capture is still one task: the analysis streams it in bounded memory. A task that dies
with its worker (killed, out of memory) comes back through ``on_error`` as a result, not an exception.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dissectors.fleet.inputs import CaptureInput

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
              on_error: ErrorFn | None = None) -> list[R]:
    address = scheduler_address(scheduler)
    if address is None and (workers or default_workers()) == 1:
        return _serial(fn, items, args, on_result)
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
        with client:
            return _on_dask(client, fn, items, args, on_result, on_error)
    try:
        cluster = local_cluster(workers or default_workers())
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise RunnerError(f"cannot start a local Dask cluster: {exc}") from None
    with cluster, Client(cluster) as client:
        return _on_dask(client, fn, items, args, on_result, on_error)


def local_cluster(workers: int) -> Any:
    """The embedded cluster: ``workers`` processes of one thread on loopback, no dashboard, quiet logs.

    Two of Dask's worker defaults cost the analysis CPU and are turned off here: the statistical profiler
    (it samples the analysis's stacks every 10 ms, under the GIL, for a dashboard nobody sees here), and
    ``MALLOC_TRIM_THRESHOLD_=65536`` in the workers' environment, which made the analysis ~45 % slower
    (glibc then hands every freed read window back to the kernel and faults it in again; see
    benchmarks/README.md, "Fleet"). The analysis's memory is bounded anyway."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": False,
                          "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=None, silence_logs=logging.ERROR)


def _serial(fn: Callable[..., R], items: Sequence[CaptureInput], args: tuple[Any, ...],
            on_result: ResultFn | None) -> list[R]:
    out = []
    for item in items:
        result = fn(item, *args)
        if on_result is not None:
            on_result(item, result)
        out.append(result)
    return out


def _on_dask(client: Any, fn: Callable[..., R], items: Sequence[CaptureInput], args: tuple[Any, ...],
             on_result: ResultFn | None, on_error: ErrorFn | None) -> list[R]:
    from distributed import as_completed

    index = {}
    futures = []
    # Largest first: submitted in that order and prioritised by size (higher runs first).
    for i in sorted(range(len(items)), key=lambda j: -items[j].size):
        fut = client.submit(fn, items[i], *args, pure=False, priority=items[i].size,
                            key=f"migshark-{i}-{os.urandom(4).hex()}")
        index[fut.key] = i
        futures.append(fut)
    results: list[Any] = [None] * len(items)
    for fut in as_completed(futures):
        i = index[fut.key]
        item = items[i]
        try:
            result = fut.result()
        except Exception as exc:  # noqa: BLE001 - the worker died (KilledWorker) or the task escaped
            if on_error is None:
                raise
            result = on_error(item, exc)
        fut.release()
        results[i] = result
        if on_result is not None:
            on_result(item, result)
    return results
