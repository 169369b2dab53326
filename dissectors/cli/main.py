"""``migshark``: the command line. It only wires the rooms together.

Exit codes: 0 clean, 1 findings (misclassification, stall, failure, regression), 2 usage or input error.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Sequence

from dissectors import __version__
from dissectors.analysis.findings import no_migration_reason
from dissectors.argtypes import count, file_name, seconds
from dissectors.cli.options import add_judge_options, add_keylog_options, add_time_option
from dissectors.errors import InputError

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
#: analyze's and watch's --qemu-version (watch said only "the destination's QEMU version").
QEMU_VERSION_HELP = "the destination's QEMU version (e.g. 7.2, 10.0); default: inferred from the streams"
#: ``dissect --channel`` values (dissectors.channels.sink's channel kinds).
DISSECT_CHANNELS = ("main", "main-recovery", "return-path", "multifd", "preempt", "tls", "unknown")


def _analyze(args: argparse.Namespace) -> int:
    from dissectors.analysis.judge import Options
    from dissectors.cli.pipeline import analyze_file, is_migration_stream, load_keylog

    if is_migration_stream(args.capture):       # a raw QEVM file (migrate "exec:cat > FILE"): no TCP
        from dissectors.cli.stream_file import run_analyze_stream

        return run_analyze_stream(args)
    from dissectors.outputs.progress import Progress
    from dissectors.outputs.text import render_report
    from dissectors.outputs.timefmt import TimeFormat

    opts = Options(qemu_version=args.qemu_version, stall_threshold=args.stall_threshold,
                   progress_timeout=args.progress_timeout, tls_verify=args.tls_verify)
    bar = Progress(f"analyse {args.capture}", force=args.progress)
    try:
        result = analyze_file(args.capture, opts, progress=bar, keylog=load_keylog(args.keylog))
    finally:
        bar.close()
    if args.plot:
        from dissectors.outputs.plot import plot_timeline

        plot_timeline(result, args.plot)
    if args.json:
        json.dump(result.report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_report(result.report, TimeFormat(args.time_format)))
        if args.plot:
            sys.stdout.write(f"timeline written to {args.plot}\n")
    return report_exit_code(result.report, args.capture)


def report_exit_code(report: dict, label: str) -> int:
    """``analyze``'s exit code for a report (``watch`` ends with the same)."""
    why = no_migration_reason(report)
    if why:
        print(f"migshark: error: {label}: {why}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_FINDINGS if report["findings"] else EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    from dissectors.cli.watch import run_watch

    return run_watch(args)


def _dissect(args: argparse.Namespace) -> int:
    from dissectors.cli.dissect import run_dissect

    return run_dissect(args)


def _check(args: argparse.Namespace) -> int:
    from dissectors.cli.check import run_check

    return run_check(args)


def _fleet(args: argparse.Namespace) -> int:
    from dissectors.cli.fleet import run_fleet

    return run_fleet(args)


def _export(args: argparse.Namespace) -> int:
    from dissectors.outputs.lua import run_export

    return run_export(args.out)


def _record(args: argparse.Namespace) -> int:
    missing = getattr(args, "_record_error", None)
    if missing:                      # the recorder's own dependencies (qemu.qmp) are not installed
        print(f"migshark: error: record is not available: {missing} (install migshark's recorder "
              "dependencies: pip install -e '.[record]' or scripts/install-test-deps.sh)", file=sys.stderr)
        return EXIT_ERROR
    from dissectors.recorder import command as recorder_cli

    return recorder_cli.run(args)


def _completion(args: argparse.Namespace) -> int:
    from dissectors.cli.completion import run

    return run(args)


def _reader_kind() -> str:
    """Which capture reader runs: the compiled scanner, or pure Python (and why)."""
    from dissectors.capture.scanner import scanner_status

    return scanner_status()


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (its first word not starting with '-'), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line. With ``command`` (the subcommand about to run), the arguments of ``fleet`` and
    ``record``, which come from heavy modules (the fleet room, the recorder, asyncio), are declared only for
    that subcommand, so that ``analyze`` of a small capture imports neither; each stays listed in --help."""
    full = command is None
    p = argparse.ArgumentParser(prog="migshark", description="Dissect and analyse QEMU live-migration captures.")
    p.add_argument("--version", action="version", version=f"migshark {__version__}, {_reader_kind()}")
    sub = p.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("analyze", aliases=["analyse"], help="per migration: accept order, roles, findings")
    a.add_argument("capture", type=file_name,
                   help="pcap or pcapng file (optionally gzip-compressed); '-', a pipe or a FIFO is read as a "
                        "stream; or a raw migration stream file (migrate \"exec:cat > FILE\"), summarised as one")
    a.add_argument("--json", action="store_true", help="machine-readable report (docs/report-schema.md)")
    add_judge_options(a, QEMU_VERSION_HELP)
    add_keylog_options(a)
    a.add_argument("--plot", type=file_name, metavar="FILE.png", help="write a timeline picture of the channels")
    a.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    add_time_option(a)
    a.set_defaults(func=_analyze)

    w = sub.add_parser("watch", help="follow a live capture: an event line as each thing happens, the report at "
                                     "the end (or on Ctrl-C)")
    w.add_argument("capture", nargs="?", type=file_name,
                   help="'-' (standard input), a pipe or a FIFO: tcpdump -U -w - ... | migshark watch -")
    w.add_argument("-i", "--interface", metavar="IFACE", help="start tcpdump -U -w - on IFACE (needs root or "
                                                               "tcpdump's capture capabilities)")
    w.add_argument("-f", "--filter", metavar="FILTER", help="capture filter for -i (e.g. 'tcp port 4444')")
    w.add_argument("--json", action="store_true", help="JSON lines: one per event, then the report "
                                                       "(docs/report-schema.md, watch events)")
    add_judge_options(w, QEMU_VERSION_HELP)
    w.add_argument("--silent-threshold", type=seconds, default=1.0, metavar="S",
                   help="seconds a channel taken as main (or blocking a peek) must stay silent before the alert "
                        "(default 1)")
    add_keylog_options(w)
    w.add_argument("--progress", action="store_true", help="show bytes read and rate even when stderr is not a "
                                                           "terminal")
    add_time_option(w)
    w.set_defaults(func=_watch)

    d = sub.add_parser("dissect", help="decoded QEMU records per connection, like tshark -V",
                       description="Each text line: the capture frames holding the record, connection, "
                                   "direction, channel, stream offset, seconds since the capture's first TCP "
                                   "segment (as tshark -t r), record type, size and fields. --json keeps "
                                   "capture timestamps (seconds since the epoch).")
    d.add_argument("capture", type=file_name,
                   help="pcap or pcapng file (optionally gzip-compressed), '-' or a pipe; or a raw migration "
                        "stream file (migrate \"exec:cat > FILE\"), read as the main channel")
    d.add_argument("--json", action="store_true", help="one JSON object per record (JSON lines)")
    add_keylog_options(d, verify=False)
    d.add_argument("--connection", "-c", action="append", metavar="N|IP:PORT",
                   help="only this connection (index or client/server endpoint); repeatable")
    d.add_argument("--channel", action="append", metavar="KIND", choices=DISSECT_CHANNELS,
                   help=f"only channels of this kind: {', '.join(DISSECT_CHANNELS)}; repeatable")
    d.add_argument("--type", "-t", action="append", metavar="PATTERN",
                   help="only records whose type matches (glob, e.g. 'main.cmd', 'rp.*'); repeatable")
    d.add_argument("--pages", action="store_true", help="also list every RAM page record (long)")
    d.add_argument("-V", "--verbose", action="store_true",
                   help="show each record's frames and its fields as a tree, labelled from the Scapy layers (like "
                        "tshark -V)")
    d.add_argument("--summary", action="store_true", help="only the count per record type")
    d.add_argument("-x", "--hex", action="store_true",
                   help="hex dump of each record's bytes after it (the first 256 bytes of a larger record)")
    d.add_argument("--limit", type=count, default=0, metavar="N",
                   help="list at most N records (0 = no limit); the counts after them still cover the whole capture")
    d.add_argument("--device", action="append", metavar="NAME",
                   help="only these devices' state: section idstr, idstr/INSTANCE or vmsd name, globs "
                        "allowed ('*e1000*', 'i8259/1'); with -V each field decoded along the VMDESCRIPTION")
    d.set_defaults(func=_dissect)

    c = sub.add_parser("check", help="compare captures with their expected reports (regression)")
    c.add_argument("paths", nargs="+", type=file_name, help="capture files or directories holding them")
    c.add_argument("--update", action="store_true", help="rewrite the expected reports")
    c.add_argument("--json", action="store_true", help="one JSON object: each capture's status and diff")
    c.add_argument("-j", "--jobs", type=int, metavar="N",
                   help="check on a local Dask cluster of N worker processes (default 1: serial, no Dask)")
    c.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="check on an existing Dask cluster (also $DASK_SCHEDULER_ADDRESS); see docs/fleet.md")
    c.set_defaults(func=_check)

    f = sub.add_parser("fleet", help="many captures (files, globs, URLs) on Dask into one table, a row per migration")
    if full or command == "fleet":
        from dissectors.cli.fleet import add_arguments as fleet_arguments

        fleet_arguments(f)
    f.set_defaults(func=_fleet)

    e = sub.add_parser("export-wireshark", help="write the Wireshark Lua plugin (qmig) generated from the layers")
    e.add_argument("out", nargs="?", type=file_name, metavar="OUT.lua", help="output file (default or '-': stdout)")
    e.set_defaults(func=_export)

    r = sub.add_parser("record", help="record a real QEMU migration with tcpdump")
    if full or command == "record":
        try:
            from dissectors.recorder import command as recorder_cli

            recorder_cli.add_arguments(r)
        except ImportError as exc:  # the recorder is optional at import time
            r.set_defaults(_record_error=str(exc))
    r.set_defaults(func=_record)

    from dissectors.cli.completion import add_arguments as completion_arguments

    s = sub.add_parser("completion", help="print a shell completion script (bash, zsh)")
    completion_arguments(s)
    s.set_defaults(func=_completion)
    return p


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but an argument no subcommand knows is that subcommand's usage error (its
    usage, exit 2), not the top-level one's."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = _subparsers(parser).get(getattr(args, "command", None) or "", parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:        # the process's own command line (console script, python -m): it exits on return
        try:
            return _interruptible(sys.argv[1:])
        finally:
            # Out of the sight of the interpreter's collections at shutdown, which would otherwise walk every
            # object left (Scapy's tables, the report): ~0.04 s of every run. Objects are still freed and
            # finalised, files flushed, atexit handlers run; only cyclic garbage is left to the exit.
            gc.freeze()
    return _interruptible(list(argv))


def _interruptible(words: list[str]) -> int:
    """``_main``, with Ctrl-C anywhere in it (the command's imports and its parser too) exit code 130."""
    try:
        return _main(words)
    except KeyboardInterrupt:
        return 130


def _main(words: list[str]) -> int:
    parser = build_parser(_command_of(words))
    args = parse(parser, words)
    try:
        return int(args.func(args))
    except InputError as exc:
        hint = ""
        if "magic 0x5145564d" in exc.message:      # QEVM through a pipe: stream files are read as files
            hint = " (a raw migration stream: give it as a file, not through a pipe or standard input)"
        elif exc.message == "is a directory" and exc.path == getattr(args, "capture", None):
            hint = " (this command reads one capture; fleet and check take directories)"
        print(f"migshark: error: {exc.describe()}{hint}", file=sys.stderr)
        return EXIT_ERROR
    except FileNotFoundError as exc:
        print(f"migshark: error: {exc.filename}: no such file", file=sys.stderr)
        return EXIT_ERROR
    except IsADirectoryError as exc:
        print(f"migshark: error: {exc.filename}: is a directory", file=sys.stderr)
        return EXIT_ERROR
    except PermissionError as exc:
        print(f"migshark: error: {exc.filename}: permission denied", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
