"""The default engine: with no scheduler, ``migshark fleet`` starts its own local Dask cluster (here
``-j 2``: two worker processes) and stops it afterwards."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("distributed")

from distributed import Client  # noqa: E402

from dissectors.cli.main import main  # noqa: E402
from dissectors.fleet.inputs import CaptureInput  # noqa: E402
from dissectors.fleet.runner import (  # noqa: E402
    FULL_COLLECTION_EVERY,
    WORKER_MALLOC,
    _start_method,
    local_cluster,
    run_tasks,
)

CORPUS = Path(__file__).resolve().parent.parent / "captures"


def test_fleet_starts_a_local_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    caps = [CORPUS / "precopy-10.0.pcap.gz", CORPUS / "holdback-preempt-7.2.pcap.gz",
            CORPUS / "preempt-tls-7.2.pcap.gz"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["fleet", "-j", "2", *map(str, caps), "-o", str(tmp_path / "t.jsonl")])
    text = out.getvalue()
    assert "on local Dask cluster, 2 worker processes" in text
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["capture"] for r in rows][:1] == [str(caps[0])] and {r["capture"] for r in rows} == set(map(str, caps))
    assert code == 1                         # the 7.2 hold-back of the preempt channel stalls
    assert any(r["stalls_preempt_as_main"] for r in rows)
    done, total = next(r for r in rows if r["capture"] == str(caps[2]))["tls_decrypted"].split("/")
    assert done == total != "0"


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["fleet", str(CORPUS), "-o", str(tmp_path / "t.xlsx")]) == 2
    assert "suffix" in capsys.readouterr().err
    assert main(["fleet", "-o", str(tmp_path / "t.csv")]) == 2
    assert "no capture given" in capsys.readouterr().err
    assert main(["fleet", "-j", "1", str(tmp_path / "nothing.pcap"), "-o", str(tmp_path / "t.csv")]) == 2
    assert "nothing.pcap: no such file" in (tmp_path / "t.csv").read_text()   # written: the row says why


def test_timings_account_for_the_run(tmp_path, monkeypatch, capsys):
    """``--timings``: the phases in order, every capture in a worker's tasks, CPU of the client and each worker."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    caps = [CORPUS / "precopy-10.0.pcap.gz", CORPUS / "holdback-preempt-7.2.pcap.gz",
            CORPUS / "preempt-tls-7.2.pcap.gz"]
    main(["fleet", "-j", "2", "--timings", *map(str, caps), "-o", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    phases = ["local cluster started", "client connected", "tasks submitted", "first result back",
              "last result back", "client closed", "local cluster closed", "table written", "summary printed"]
    where = [err.index(p) for p in phases]
    assert where == sorted(where)
    tasks = re.findall(r"worker \d \(\S+\): (\d+) tasks, (\d+) captures, [\d.]+ s busy", err)
    assert tasks and sum(int(c) for _, c in tasks) == len(caps)
    assert "this process (client, scheduler and nannies):" in err
    assert len(re.findall(r"worker \d \(\S+\): [\d.]+ before, [\d.]+ during \([\d.]+ in tasks", err)) == len(tasks)
    assert re.search(r"Dask's own CPU during the tasks: [\d.]+ s \(this process [\d.]+, the workers beside their "
                     r"tasks -?[\d.]+\), against [\d.]+ s in the tasks", err)


def die_on_poison(item: CaptureInput) -> str:
    """A capture that kills the worker process analysing it (as running out of memory does)."""
    if "poison" in item.url:
        os._exit(1)
    return item.url


def test_a_capture_that_kills_its_worker_is_the_only_error():
    """Real worker deaths on the local cluster: the task queued behind the dying one on the same worker is
    blamed by Dask as well, but only the capture that kills its worker when run alone becomes an error."""
    items = [CaptureInput(f"/fleet/{'poison' if i in (3, 9) else 'ok'}-{i}.pcap", 1000 * (20 - i))
             for i in range(20)]
    died: list[tuple[str, str]] = []
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):   # every death counts at once
        with local_cluster(2) as cluster:
            got = run_tasks(die_on_poison, items, scheduler=cluster.scheduler_address,
                            on_error=lambda item, exc: died.append((item.url, type(exc).__name__)) or "error")
            with Client(cluster) as client:          # the nannies restarted the dead workers: how?
                client.wait_for_workers(2, timeout=60)
                parents = set(client.run(os.getppid).values())
        assert dask.config.get("distributed.worker.multiprocessing-method") == "spawn"   # held until closed
    assert sorted(died) == [("/fleet/poison-3.pcap", "KilledWorker"), ("/fleet/poison-9.pcap", "KilledWorker")]
    assert got == [("error" if i in (3, 9) else items[i].url) for i in range(20)]
    if _start_method() == "forkserver":
        # forked by the fork server like the first ones, not spawned by this process (1.5-2 s of CPU each)
        assert os.getpid() not in parents and len(parents) == 1
    assert all(os.environ.get(k) != v for k, v in WORKER_MALLOC.items())   # this process's own environment


def test_the_local_cluster_leaves_dask_config_whole_in_a_fresh_process():
    """``local_cluster`` first thing in a process (distributed not imported yet): Dask's own settings are
    all there afterwards (a config change set before distributed loaded its defaults dropped them on undo,
    and the next Client failed on ``distributed.admin``), and the start method is back at close."""
    code = ("import dask\n"
            "print(dask.config.get('distributed.worker.multiprocessing-method', 'spawn'))\n"
            "from dissectors.fleet.runner import local_cluster\n"
            "with local_cluster(1) as c:\n"
            "    from distributed import Client\n"
            "    with Client(c) as client:\n"
            "        assert client.submit(sum, [1, 2]).result() == 3\n"
            "    print(dask.config.get('distributed.admin.event-loop'))\n"
            "print(dask.config.get('distributed.worker.multiprocessing-method'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    before, loop, after = out.stdout.split()
    assert loop and after == before


def test_workers_start_with_the_malloc_settings():
    """glibc reads ``WORKER_MALLOC`` when a process starts: the workers' start environment (the fork
    server's, which this runner starts itself) has them, and this process's own environment does not."""
    psutil = pytest.importorskip("psutil")
    with local_cluster(2) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        assert all(os.environ.get(k) != v for k, v in WORKER_MALLOC.items())
        for pid in pids:
            env = psutil.Process(pid).environ()
            assert {k: env.get(k) for k in WORKER_MALLOC} == WORKER_MALLOC


def collector_threshold(item: CaptureInput) -> tuple[int, int, int]:
    import gc

    return gc.get_threshold()


def test_captures_are_analysed_with_rarer_full_collections_and_the_setting_is_undone_after():
    """On the workers and in the serial loop alike: full collections ten times rarer while a task runs
    (``runner.fewer_full_collections``), Python's own thresholds back once it ends."""
    import gc

    items = [CaptureInput(f"/fleet/c{i}.pcap", 1000 + i) for i in range(4)]
    before = gc.get_threshold()
    with local_cluster(2) as cluster:
        on_cluster = run_tasks(collector_threshold, items, scheduler=cluster.scheduler_address)
        with Client(cluster) as client:
            after_on_workers = set(client.run(gc.get_threshold).values())
    serial = run_tasks(collector_threshold, items, workers=1)
    rarer = (before[0], before[1], FULL_COLLECTION_EVERY)
    assert on_cluster == serial == [rarer] * len(items)
    assert after_on_workers == {before} and gc.get_threshold() == before


FULL_COLLECTIONS = r"""
import gc, sys
import distributed  # noqa: F401 - what a Dask worker holds
from dissectors.fleet.inputs import discover
from dissectors.fleet.runner import fewer_full_collections
from dissectors.fleet.task import analyse_capture

items = discover(sys.argv[1:]) * 6
analyse_capture(items[0])
full = [0]


def count(phase, info):
    if phase == "stop" and info["generation"] == 2:
        full[0] += 1


gc.callbacks.append(count)
for mode in ("default", "rarer"):
    full[0] = 0
    if mode == "rarer":
        with fewer_full_collections():
            for item in items:
                analyse_capture(item)
    else:
        for item in items:
            analyse_capture(item)
    print(mode, full[0])
"""


def test_rarer_full_collections_are_what_a_worker_gets():
    """The analysis of the corpus (x6) in a process holding distributed, as a worker does: Python's default
    thresholds run many full collections (each walking distributed's ~60,000 objects); the runner's
    setting a fraction of them."""
    caps = sorted(str(p) for p in CORPUS.glob("*.pcap.gz"))[:20]
    proc = subprocess.run([sys.executable, "-c", FULL_COLLECTIONS, *caps], capture_output=True, text=True,
                          timeout=600, check=False, cwd=CORPUS.parent)
    assert proc.returncode == 0, proc.stderr
    counts = dict(line.split() for line in proc.stdout.splitlines())
    assert int(counts["default"]) >= 4, counts
    assert int(counts["rarer"]) * 3 <= int(counts["default"]), counts


def test_fleet_starts_the_fork_server_before_it_imports_the_analysis(tmp_path, monkeypatch):
    """The server imports distributed and the analysis on another core while `migshark fleet` imports its
    own (the analysis, the tables): its start comes before the command's imports are done."""
    if _start_method() != "forkserver":
        pytest.skip("the fork server is the Linux start method")
    from dissectors.cli.fleet import TASK_MODULE
    from dissectors.fleet.task import analyse_capture

    assert TASK_MODULE == analyse_capture.__module__
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    proc = subprocess.run([sys.executable, "-m", "dissectors.cli.main", "fleet", "--timings", "-j", "2",
                           str(CORPUS / "precopy-10.0.pcap.gz"), "-o", str(tmp_path / "t.jsonl")],
                          capture_output=True, text=True, timeout=300, check=False, cwd=CORPUS.parent)
    assert proc.returncode == 0, proc.stderr
    marks = re.findall(r"^\s+([\d.]+)  (.+)$", proc.stderr, re.M)
    when = {what: float(t) for t, what in marks}
    assert when["fork server started"] < when["imports done, command line read"] < when["local cluster started"]


START_EARLY = r"""
import sys
from dissectors.fleet import runner
scheduler, workers = sys.argv[1] or None, int(sys.argv[2]) if sys.argv[2] else None
runner.start_fork_server_early("dissectors.fleet.task", scheduler, workers)
print(runner._SERVER_STARTED is not None)
"""


@pytest.mark.parametrize("scheduler, workers, env, started", [
    ("", "2", None, True), ("", "", None, True), ("", "1", None, False),
    ("tcp://127.0.0.1:1", "2", None, False), ("", "2", "tcp://127.0.0.1:1", False)])
def test_the_fork_server_is_started_early_only_for_a_local_cluster(scheduler, workers, env, started):
    if _start_method() != "forkserver":
        pytest.skip("the fork server is the Linux start method")
    environ = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    if env:
        environ["DASK_SCHEDULER_ADDRESS"] = env
    proc = subprocess.run([sys.executable, "-c", START_EARLY, scheduler, workers], capture_output=True, text=True,
                          timeout=120, check=False, cwd=CORPUS.parent, env=environ)
    assert proc.returncode == 0, proc.stderr
    expected = started and (workers != "" or (os.cpu_count() or 1) > 1)
    assert proc.stdout.strip() == str(expected)


def test_timings_count_from_the_process_start_to_the_tick():
    """``--timings``' origin is the process's start to the kernel's 10 ms tick: psutil's ``create_time()`` adds
    the start's ticks to a boot time in whole seconds and was up to a second early (0.4 s here)."""
    code = ("import time; t = time.time(); from dissectors.fleet.timeline import process_start; "
            "print(process_start(), t)")
    for _ in range(3):
        before = time.time()
        start, seen = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                check=True, cwd=CORPUS.parent).stdout.split())
        assert before - 0.011 <= start <= seen, (before, start, seen)


def _refuse_to_load() -> None:
    raise ValueError("this result cannot be loaded here")


class _Unloadable:
    """A task's result that the worker sends but the client cannot load."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _refuse_to_load, ()


def unloadable_for_bad(item: CaptureInput) -> Any:
    return _Unloadable() if "bad" in item.url else item.url


@pytest.mark.timeout(180)
def test_a_result_the_client_cannot_load_is_that_capture_error():
    """A result whose fetch fails on the client (here: it cannot be unpickled) makes its capture an error
    row, the others of its task retried alone; the run ends (fetching results on the client's event loop,
    with as_completed's with_results, the fetching coroutine died and the run waited forever)."""
    items = [CaptureInput(f"/fleet/{'bad' if i == 4 else 'ok'}-{i}.pcap", 1000 * (12 - i)) for i in range(12)]
    failed: list[str] = []
    with local_cluster(2) as cluster:
        got = run_tasks(unloadable_for_bad, items, scheduler=cluster.scheduler_address,
                        on_error=lambda item, exc: failed.append(f"{item.url}: {exc}") or "error")
    assert got == [("error" if i == 4 else items[i].url) for i in range(12)]
    assert failed == ["/fleet/bad-4.pcap: this result cannot be loaded here"]


def nap(item: CaptureInput) -> tuple[str, float]:
    """Sleeps (3 s for a "long" capture), then says when it ended (this machine's clock, as the client's)."""
    time.sleep(3.0 if "long" in item.url else 0.05)
    return item.url, time.time()


@pytest.mark.timeout(180)
def test_results_that_end_close_together_are_fetched_together(monkeypatch):
    """A fetch interrupts a busy worker (its event loop takes the interpreter from the analysis to answer):
    results wait on their workers to be fetched together, at once when the last task has ended. Here
    every task ends well within FETCH_EVERY of the first: one fetch, however many tasks (fetched as each
    task ended, this was one fetch per batch of tasks that ended together: 8 here)."""
    from dissectors.fleet import runner

    fetched: list[int] = []
    real = runner._fetch

    def counted(client: Any, ended: list[Any]) -> dict[str, Any]:
        fetched.append(len(ended))
        return real(client, ended)

    monkeypatch.setattr(runner, "_fetch", counted)
    monkeypatch.setattr(runner, "FETCH_EVERY", 60.0)
    items = [CaptureInput(f"/fleet/{i}.pcap", 1000) for i in range(16)]
    with local_cluster(2) as cluster:
        got = run_tasks(nap, items, scheduler=cluster.scheduler_address)
    assert [url for url, _ in got] == [item.url for item in items]
    assert len(fetched) == 1 and fetched[0] == len(runner.batches(items, 2)) > 4


@pytest.mark.timeout(180)
def test_a_long_task_does_not_hold_back_the_results_of_others(monkeypatch):
    """A result waits on its worker at most FETCH_EVERY: the short tasks' captures reach ``on_result`` (the
    progress bar) soon after their tasks end while a long one still runs, not when the run ends."""
    from dissectors.fleet import runner

    monkeypatch.setattr(runner, "FETCH_EVERY", 0.3)
    items = [CaptureInput("/fleet/long.pcap", 10**6)] + [CaptureInput(f"/fleet/{i}.pcap", 1000) for i in range(8)]
    late: dict[str, float] = {}          # from the task's end to on_result
    with local_cluster(2) as cluster:
        got = run_tasks(nap, items, scheduler=cluster.scheduler_address,
                        on_result=lambda item, result: late.setdefault(item.url, time.time() - result[1]))
    assert [url for url, _ in got] == [item.url for item in items]
    assert len(late) == 9 and max(late.values()) < 0.3 + 1.0     # 3 s or more if held to the end


def _group_gone(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(300)
@pytest.mark.parametrize("jobs, after", [("2", 0.3), ("2", 0.6), ("2", 1.5), ("2", 3.0), ("1", 1.5)])
def test_ctrl_c_ends_the_run_with_130_the_table_so_far_and_no_traceback(tmp_path, jobs, after):
    """Ctrl-C on a terminal: SIGINT to the whole process group (migshark, the fork server, the workers), here
    while the fork server imports (0.3 s), while the cluster starts (0.6 s) and while tasks run (1.5, 3 s).
    Exit code 130, nothing on stderr, every process of the group gone; the table holds the rows of every
    capture analysed so far (the summary says how many of how many), with the results that had ended
    and were not fetched yet. Before: no table; the fork server and each worker died of the signal with
    a KeyboardInterrupt traceback, and a cluster interrupted halfway through its start made Dask's exit
    handler print an AssertionError traceback."""
    import signal

    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for i in range(6):                                    # ~500 captures: the run lasts well past the signal
        (fleet / str(i)).symlink_to(CORPUS)
    table = tmp_path / "t.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "dissectors.cli.main", "fleet", "-j", jobs,
                             *(str(d) for d in sorted(fleet.iterdir())), "-o", str(table)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent,
                            # a terminal's foreground group of its own, with Ctrl-C not ignored (a shell's
                            # background job, as CI may run the tests, starts with SIGINT ignored)
                            preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), os.setpgrp()))
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert err == ""
    assert _group_gone(proc.pid, within=10)
    said = re.match(r"migshark fleet: interrupted \(Ctrl-C\) with (\d+) of (\d+) capture", out)
    assert said, out[:500]
    done, total = map(int, said.groups())
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert len({r["capture"] for r in rows}) == done < total
    if after >= 3.0:
        assert done > 0
