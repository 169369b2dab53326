"""Where a fleet run's time went: phases, tasks on the workers, CPU per process (``migshark fleet
--timings``, benchmarks/bench_fleet.py).

The runner marks its phases (cluster started, client connected, tasks submitted, last result, closed) and
each task reports back which worker process ran it, when (wall clock, ``time.time()``: comparable across
the processes of one machine; on a real cluster the hosts' clocks must agree) and its thread's CPU time.
Before the client closes, the runner asks every worker for its process's CPU time (psutil, which
distributed already needs). Nothing here runs unless asked for.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskSpan:
    """One task as its worker saw it: ``captures`` analysed from ``start`` to ``end`` (epoch seconds),
    ``cpu`` seconds of the task's thread."""

    worker: str
    start: float
    end: float
    cpu: float
    captures: int


def task_span(start: float, cpu0: float, captures: int) -> TaskSpan:
    """The span of a task that began at ``start`` (``time.time()``) with thread CPU ``cpu0``, ending now."""
    return TaskSpan(f"{socket.gethostname()}:{os.getpid()}", start, time.time(), time.thread_time() - cpu0, captures)


def process_cpu() -> dict[str, float]:
    """This process's CPU seconds (user + system) by what runs in it: ``{"host:pid": seconds}``."""
    import psutil

    t = psutil.Process().cpu_times()
    return {f"{socket.gethostname()}:{os.getpid()}": t.user + t.system}


def child_cpu() -> dict[str, float]:
    """CPU seconds of every process under this one, as ``process_cpu`` names them (on this machine)."""
    import psutil

    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[f"{socket.gethostname()}:{p.pid}"] = t.user + t.system
    return out


def process_start() -> float:
    """When this process started (``time.time()``), to the kernel's 10 ms tick on Linux.

    Not psutil's ``create_time()``: it adds the start's ticks to the boot time of ``/proc/stat``, which is
    in whole seconds, so a start it gives can be up to a second early (0.4 s on this machine: every mark
    of ``--timings`` looked that much later than it was). Here the start's ticks are subtracted from the
    time since boot (``CLOCK_BOOTTIME``, the clock those ticks count on) instead."""
    now, since_boot = time.time(), time.clock_gettime(time.CLOCK_BOOTTIME)
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return now - (since_boot - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, IndexError, ValueError):        # not Linux: psutil's, whatever its rounding
        import psutil

        return float(psutil.Process().create_time())


@dataclass
class Timeline:
    """Phases (``mark``), task spans and CPU per process of one run; ``render()`` for the terminal."""

    origin: float = field(default_factory=time.time)
    marks: list[tuple[str, float]] = field(default_factory=list)
    spans: list[TaskSpan] = field(default_factory=list)
    cpu_before: dict[str, float] = field(default_factory=dict)
    cpu_after: dict[str, float] = field(default_factory=dict)
    client: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    client_hosts_cluster: bool = False

    @classmethod
    def since_process_start(cls) -> Timeline:
        """Times counted from this process's start (so the interpreter's start and imports show)."""
        timeline = cls(origin=process_start())
        timeline.mark("imports done, command line read")
        return timeline

    def mark(self, what: str, at: float | None = None) -> None:
        """``what`` happened now, or at ``at`` (``time.time()``)."""
        self.marks.append((what, time.time() if at is None else at))

    def cpu(self, which: dict[str, float], values: dict[str, Any]) -> None:
        which.update({k: float(v) for k, v in values.items()})

    def overhead(self) -> tuple[float, float, float]:
        """CPU seconds during the tasks: of this process (client; with the scheduler and nannies on a local
        cluster), of the workers beside their tasks (event loop, heartbeats, monitors, transfers), and in the
        tasks' threads. The first two are what Dask itself spent on the run."""
        tasks_by = {}
        for span in self.spans:
            tasks_by[span.worker] = tasks_by.get(span.worker, 0.0) + span.cpu
        during = {k: v - self.cpu_before.get(k, 0.0) for k, v in self.cpu_after.items()}
        client = during.get(self.client, 0.0)
        beside = sum(during.get(w, 0.0) - cpu for w, cpu in tasks_by.items())
        return client, beside, sum(tasks_by.values())

    def render(self) -> str:
        events = list(self.marks)
        by_worker: dict[str, list[TaskSpan]] = {}
        for span in self.spans:
            by_worker.setdefault(span.worker, []).append(span)
        names = {w: f"worker {k + 1} ({w})" for k, w in enumerate(sorted(by_worker))}
        for w, spans in by_worker.items():
            first = min(spans, key=lambda s: s.start)
            events.append((f"{names[w]}: first task starts ({first.captures} captures, "
                           f"{first.end - first.start:.3f} s)", first.start))
            events.append((f"{names[w]}: last task ends", max(s.end for s in spans)))
        lines = ["timings (seconds from the process start, or from the first mark):"]
        lines += [f"  {t - self.origin:8.3f}  {what}" for what, t in sorted(events, key=lambda e: e[1])]
        if by_worker:
            lines.append("tasks by worker: tasks, captures, busy seconds (first start to last end), task thread CPU:")
            for w, spans in sorted(by_worker.items(), key=lambda kv: names[kv[0]]):
                busy = sum(s.end - s.start for s in spans)
                span = max(s.end for s in spans) - min(s.start for s in spans)
                lines.append(f"  {names[w]}: {len(spans)} tasks, {sum(s.captures for s in spans)} captures, "
                             f"{busy:.2f} s busy of {span:.2f} s, {sum(s.cpu for s in spans):.2f} s CPU in tasks")
        if self.cpu_after:
            lines.append("CPU seconds by process (psutil, user + system): before the tasks (its start, imports), "
                         "during them:")
            for proc, after in self.cpu_after.items():
                before = self.cpu_before.get(proc, 0.0)
                helper = f"process {proc} (a worker without tasks, or a helper: fork server, resource tracker)"
                what = ("this process (client" + (", scheduler and nannies)" if self.client_hosts_cluster else ")")
                        if proc == self.client else names.get(proc, helper))
                tasks = sum(s.cpu for s in by_worker.get(proc, []))
                beside = after - before - tasks
                extra = f" ({tasks:.2f} in tasks, {beside:.2f} beside them)" if proc in by_worker else ""
                lines.append(f"  {what}: {before:.2f} before, {after - before:.2f} during{extra}")
            client, beside, tasks = self.overhead()
            lines.append(f"  Dask's own CPU during the tasks: {client + beside:.2f} s (this process {client:.2f}, the "
                         f"workers beside their tasks {beside:.2f}), against {tasks:.2f} s in the tasks")
        return "\n".join(lines) + "\n"
