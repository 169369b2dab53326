"""``migshark dissect``: run a capture through the channel parsers and print the records."""

from __future__ import annotations

import argparse
import sys

from dissectors.cli.pipeline import decrypting, load_keylog, reassemble_file
from dissectors.outputs.dissect import DissectOptions, RecordPrinter
from dissectors.outputs.progress import Progress


def run_dissect(args: argparse.Namespace) -> int:
    d = RecordPrinter(DissectOptions(
        connections=args.connection or (), channels=args.channel or (), types=args.type or (),
        pages=args.pages, verbose=args.verbose, summary=args.summary, limit=args.limit, json=args.json))
    keylog = load_keylog(args.keylog)
    bar = Progress(f"dissect {args.capture}")
    try:
        _, capture = reassemble_file(args.capture, decrypting(d.sink_for, keylog), bar, forget_closed=True)
    finally:
        bar.close()
    d.summary()
    for w in capture["warnings"]:
        print(f"migshark: warning: {w}", file=sys.stderr)
    bad = d.counts and any(k in ("malformed", "truncated") for _, k in d.counts)
    return 1 if bad else 0
