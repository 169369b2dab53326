"""``migshark dissect``: run a capture through the parsers and print the records."""

from __future__ import annotations

import argparse
import sys

from dissectors.analysis.facts import ConnectionFacts
from dissectors.analysis.ledger import PageLedger
from dissectors.cli.pipeline import reassemble_file
from dissectors.outputs.dissect import RecordPrinter
from dissectors.outputs.progress import Progress
from dissectors.tcp.connection import Connection


def run_dissect(args: argparse.Namespace) -> int:
    d = RecordPrinter(args)
    ledger = PageLedger()

    def factory(conn: Connection) -> ConnectionFacts | None:
        if not d.wants_connection(conn):
            return None
        return ConnectionFacts(conn, ledger, on_record=d.record)

    bar = Progress(f"dissect {args.capture}")
    try:
        tracker, capture = reassemble_file(args.capture, factory, bar)
    finally:
        bar.close()
    d.summary()
    for w in capture["warnings"]:
        print(f"migshark: warning: {w}", file=sys.stderr)
    bad = d.counts and any(k in ("malformed", "truncated") for _, k in d.counts)
    return 1 if bad else 0
