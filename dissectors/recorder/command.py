# SPDX-License-Identifier: GPL-2.0-or-later
"""``migshark record``: options and exit status (0 completed, 1 failed or stalled, 2 usage/environment)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dissectors.argtypes import channels, directory_name, seconds

from .proxy import HOLD_AT, hold_back_indices
from .qemus import KNOWN_QEMUS, EnvironmentProblem
from .scenarios import INTERRUPTS, SCENARIOS, with_overrides


def _byte(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"not a byte (0..0xff): {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", metavar="NAME", help="scenario to record (see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--src-qemu", choices=list(KNOWN_QEMUS), help="source QEMU (overrides the scenario)")
    parser.add_argument("--dst-qemu", choices=list(KNOWN_QEMUS), help="destination QEMU")
    parser.add_argument("--multifd", type=channels, metavar="N", help="multifd channels (0 = off, at most 255)")
    parser.add_argument(
        "--hold-back",
        choices=["main", "multifd", "preempt", "none"],
        help="reordering proxy: hold back this channel (its upstream connect, or see --hold-at) by ~1 s",
    )
    parser.add_argument(
        "--hold-at",
        choices=list(HOLD_AT),
        help="what the proxy holds back: the upstream connect (default), or with --tls every client byte after "
        "the first TLS record (the client's Finished: the destination completes that handshake last)",
    )
    parser.add_argument("--hold-delay", type=seconds, metavar="S", help="how long to hold back (default 1 s)")
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TLS with x509 credentials made by certtool",
    )
    parser.add_argument(
        "--tls-priority",
        metavar="STRING",
        help="GnuTLS priority string for both sides' tls-creds-x509 (priority=, QEMU 2.9+), e.g. "
        "NORMAL:-VERS-ALL:+VERS-TLS1.2 for TLS 1.2 or with :-AES-256-GCM:-AES-128-GCM for ChaCha20-Poly1305; "
        "'' for QEMU's default",
    )
    parser.add_argument(
        "--timer-low-byte",
        type=_byte,
        metavar="BYTE",
        help="migrate a stopped source whose timer section's cpu_ticks_offset ends in BYTE (e.g. 0x7e: a "
        "footer look-alike in its body); the guest is run and stopped until it does",
    )
    parser.add_argument(
        "--interrupt",
        choices=[*INTERRUPTS, "none"],
        help="break the migration --interrupt-after seconds after migrate: migrate_cancel on the source, or "
        "SIGKILL the destination's or the source's QEMU",
    )
    parser.add_argument("--interrupt-after", type=seconds, metavar="S",
                        help="seconds after migrate for --interrupt (default 1)")
    parser.add_argument("--out", type=directory_name, default=Path("."), metavar="DIR",
                        help="output directory, made if missing (default: the current directory)")
    parser.add_argument("--name", help="file name stem (default: the scenario name)")
    parser.add_argument("--timeout", type=seconds, metavar="S", help="give up (stalled) after S seconds")
    parser.add_argument("--gzip", action="store_true", help="write NAME.pcap.gz instead of NAME.pcap")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the timeline while recording")
    parser.add_argument("--json", action="store_true", help="print the result (or --list) as JSON")


def check_hold(hold_back: str | None, hold_at: str, delay: float, *, tls: bool) -> None:
    """Reject hold options that cannot work together (ValueError, exit status 2)."""
    if not 0 < delay <= 60:
        raise ValueError(f"--hold-delay must be in (0, 60] seconds, not {delay:g}")
    if hold_at == "tls-finished":
        if hold_back is None:
            raise ValueError("--hold-at tls-finished needs a connection to hold (--hold-back main|multifd|preempt)")
        if not tls:
            raise ValueError("--hold-at tls-finished needs --tls (it holds the client's TLS second flight)")


def list_scenarios() -> str:
    width = max(len(n) for n in SCENARIOS)
    lines = []
    for sc in SCENARIOS.values():
        lines.append(f"{sc.name:<{width}}  {sc.src:>4} -> {sc.dst:<4}  expect {sc.expect:<9}  {sc.description}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        if getattr(args, "json", False):
            print(json.dumps([{"name": sc.name, "src": sc.src, "dst": sc.dst, "expect": sc.expect,
                               "description": sc.description} for sc in SCENARIOS.values()], indent=2))
        else:
            print(list_scenarios())
        return 0
    if not args.scenario:
        print("migshark record: --scenario NAME is required (see --list)", file=sys.stderr)
        return 2
    base = SCENARIOS.get(args.scenario)
    if base is None:
        print(f"migshark record: unknown scenario {args.scenario!r} (see --list)", file=sys.stderr)
        return 2
    sc = with_overrides(
        base,
        src=args.src_qemu,
        dst=args.dst_qemu,
        multifd=args.multifd,
        hold_back=args.hold_back,
        tls=args.tls,
        timeout_s=args.timeout,
        timer_low_byte=args.timer_low_byte,
        hold_at=getattr(args, "hold_at", None),
        hold_delay_s=getattr(args, "hold_delay", None),
        tls_priority=getattr(args, "tls_priority", None),
        interrupt=getattr(args, "interrupt", None),
        interrupt_after_s=getattr(args, "interrupt_after", None),
    )
    try:
        hold_back_indices(sc.hold_back, multifd=sc.multifd, preempt=sc.preempt)
        check_hold(sc.hold_back, sc.hold_at, sc.hold_delay_s, tls=sc.tls)
        if not 0 <= sc.interrupt_after_s <= 600:
            raise ValueError(f"--interrupt-after must be in [0, 600] seconds, not {sc.interrupt_after_s:g}")
    except ValueError as exc:
        print(f"migshark record: {exc}", file=sys.stderr)
        return 2
    try:
        from .driver import record  # imports qemu.qmp, which only recording needs
    except ImportError as exc:
        print(f"migshark record: needs the Python package qemu.qmp ({exc}); pip install 'migshark[record]'",
              file=sys.stderr)
        return 2

    try:
        rec = record(sc, args.out, args.name, compress=args.gzip, verbose=args.verbose)
    except EnvironmentProblem as exc:
        print(f"migshark record: {exc}", file=sys.stderr)
        return 2
    cap = rec.manifest_data.get("capture", {})
    if getattr(args, "json", False):
        print(json.dumps({"capture": str(rec.pcap), "manifest": str(rec.manifest), "outcome": rec.outcome,
                          "reason": rec.reason, "size_bytes": cap.get("size_bytes"),
                          "dropped_by_kernel": cap.get("packets_dropped_by_kernel")}, indent=2))
        return 0 if rec.outcome == "completed" else 1
    print(
        f"{rec.pcap}: {rec.outcome} ({rec.reason}); {cap.get('size_bytes', 0)} bytes, "
        + (f"{dropped} dropped by kernel" if (dropped := cap.get("packets_dropped_by_kernel")) is not None else
           "no capture count from tcpdump") + f"; manifest {rec.manifest}"
    )
    return 0 if rec.outcome == "completed" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="migshark record", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
