"""``migshark fleet``: wires the fleet room (inputs, runner, task, tables, summary) to the command line."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from dissectors.argtypes import file_name
from dissectors.cli.options import add_judge_options
from dissectors.fleet.inputs import CaptureInput
from dissectors.fleet.runner import start_fork_server_early

# The analysis and the tables (~0.2 s of imports) are imported by run_fleet once the local cluster's fork
# server has been started: the server imports the task's module and distributed on the other core meanwhile.
TASK_MODULE = "dissectors.fleet.task"       # analyse_capture's (tests/test_fleet_local.py checks it)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("captures", nargs="*", type=file_name, metavar="CAPTURE",
                   help="capture files, directories (searched recursively), globs or fsspec URLs (s3://...)")
    p.add_argument("-o", "--output", required=True, type=file_name, metavar="TABLE",
                   help="the table: .parquet, .csv or .jsonl (a row per migration; docs/report-schema.md)")
    p.add_argument("--from-list", type=file_name, metavar="FILE",
                   help="more captures, one name or URL per line ('-': stdin)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="an existing Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, else a local cluster)")
    p.add_argument("-j", "--jobs", type=int, metavar="N",
                   help="local cluster size in worker processes (default: one per core; 1: no Dask, one process)")
    add_judge_options(p, "the destinations' QEMU version, if one for all (default: inferred)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="failure signatures in the summary (default 10)")
    p.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    p.add_argument("--timings", action="store_true",
                   help="print where the run's time went on stderr: phases, tasks per worker, CPU per process")


def _worker_died(item: CaptureInput, exc: BaseException) -> list[dict[str, Any]]:
    from dissectors.fleet.rows import error_row

    return [error_row(item.url, item.size, f"{item.url}: the worker analysing it died ({type(exc).__name__}: "
                                           f"{exc}); if it ran out of memory, give workers more")]


def run_fleet(args: argparse.Namespace) -> int:
    if args.jobs is not None and args.jobs < 1:
        print("migshark fleet: error: -j needs at least 1", file=sys.stderr)
        return 2
    start_fork_server_early(TASK_MODULE, args.scheduler, args.jobs)     # only for a local cluster
    from dissectors.analysis.judge import Options
    from dissectors.fleet.inputs import discover, largest_first, read_list
    from dissectors.fleet.runner import RunnerError, describe_engine, run_tasks
    from dissectors.fleet.summary import FleetProgress, exit_code, render_summary
    from dissectors.fleet.tables import TableError, table_format, write_table
    from dissectors.fleet.task import analyse_capture
    from dissectors.fleet.timeline import Timeline

    try:
        table_format(args.output)
    except TableError as exc:
        print(f"migshark fleet: error: {exc}", file=sys.stderr)
        return 2
    specs = list(args.captures)
    if "-" in specs:        # each capture is read where it lies, by whichever worker takes it
        print("migshark fleet: error: '-' is not a capture file here (a fleet reads files, directories, globs or "
              "URLs; --from-list - reads their names from standard input)", file=sys.stderr)
        return 2
    if args.from_list:
        try:
            specs += read_list("/dev/stdin" if args.from_list == "-" else args.from_list)
        except OSError as exc:
            print(f"migshark fleet: error: {args.from_list}: cannot read the list: {exc.strerror}", file=sys.stderr)
            return 2
    if not specs:
        print("migshark fleet: error: no capture given (CAPTURE... or --from-list FILE)", file=sys.stderr)
        return 2
    items = discover(specs)
    options = Options(qemu_version=args.qemu_version, stall_threshold=args.stall_threshold,
                      progress_timeout=args.progress_timeout)
    timeline = Timeline.since_process_start() if args.timings else None
    if timeline is not None:
        timeline.mark(f"{len(items)} captures found")
    engine = describe_engine(args.scheduler, args.jobs)
    bar = FleetProgress(items, engine, force=args.progress)
    by_url: dict[str, list[dict[str, Any]]] = {}      # each capture's rows as they come back

    def heard(item: CaptureInput, rows: list[dict[str, Any]]) -> None:
        by_url[item.url] = rows
        bar(item, rows)

    start = time.monotonic()
    interrupted = False
    try:
        results = run_tasks(analyse_capture, largest_first(items), options, scheduler=args.scheduler,
                            workers=args.jobs, on_result=heard, on_error=_worker_died,
                            timeline=timeline)
        by_url = {item.url: rows for item, rows in zip(largest_first(items), results, strict=True)}
    except RunnerError as exc:
        print(f"migshark fleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C: the table and the summary of the captures analysed so far
        interrupted = True
    finally:
        bar.close()
    seconds = time.monotonic() - start
    # the order the captures were named
    rows = [row for item in items if item.url in by_url for row in by_url[item.url]]
    try:
        write_table(rows, args.output)
    except OSError as exc:
        print(f"migshark fleet: error: {args.output}: cannot write the table: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if timeline is not None:
        timeline.mark("table written")
    sys.stdout.write(render_summary(rows, captures=len(by_url), seconds=seconds, engine=engine,
                                    table=args.output, top=args.top,
                                    interrupted_of=len(items) if interrupted else None))
    if timeline is not None:
        timeline.mark("summary printed")
        sys.stdout.flush()
        sys.stderr.write(timeline.render())
    return 130 if interrupted else exit_code(rows)
