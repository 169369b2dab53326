"""Command-line options shared by the commands that judge migrations (analyze, watch, fleet)."""

from __future__ import annotations

import argparse

from dissectors.argtypes import file_name, seconds


def qemu_version(text: str) -> str:
    """A ``--qemu-version`` value that names a known destination policy."""
    from dissectors.analysis.policies import policy_for_version

    try:
        policy_for_version(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def add_judge_options(p: argparse.ArgumentParser, qemu_help: str) -> None:
    """--qemu-version, --stall-threshold and --progress-timeout (the analysis's ``Options``)."""
    p.add_argument("--qemu-version", type=qemu_version, metavar="V", help=qemu_help)
    p.add_argument("--stall-threshold", type=seconds, default=1.0, metavar="S",
                   help="seconds a postcopy page request may wait before it counts as a stall (default 1)")
    p.add_argument("--progress-timeout", type=seconds, default=5.0, metavar="S",
                   help="seconds without traffic before an unfinished migration counts as stalled (default 5)")


def add_time_option(p: argparse.ArgumentParser) -> None:
    """``-t FORMAT``: how the text output shows times, with tshark's letters (outputs/timefmt.py)."""
    from dissectors.outputs.timefmt import FORMATS

    p.add_argument("-t", "--time-format", choices=list(FORMATS), default="r", metavar="FORMAT",
                   help="times in the text output, as tshark -t: "
                        + "; ".join(f"{k}{' (default)' if k == 'r' else ''}: {v}" for k, v in FORMATS.items()))


def add_keylog_options(p: argparse.ArgumentParser, verify: bool = True) -> None:
    """--keylog (and, where the analysis skips page contents, --tls-verify)."""
    p.add_argument("--keylog", type=file_name, metavar="FILE",
                   help="NSS key log (SSLKEYLOGFILE) to decrypt TLS migrations")
    if verify:
        p.add_argument("--tls-verify", action="store_true",
                       help="decrypt and authenticate every TLS record, page contents too (slower; by default "
                            "records holding only page contents are framed, their tags not checked)")
