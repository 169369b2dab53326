"""``migshark analyze`` of a raw migration stream file: the main-channel parser fed the file's bytes."""

from __future__ import annotations

import argparse
import json
import sys

from dissectors.analysis.stream_file import StreamFileSummary
from dissectors.channels import ChannelSink
from dissectors.cli.pipeline import feed_stream_file
from dissectors.outputs.progress import Progress
from dissectors.outputs.stream_file import render_stream_file


def run_analyze_stream(args: argparse.Namespace) -> int:
    summary = StreamFileSummary()
    bar = Progress(f"analyse {args.capture}", force=getattr(args, "progress", False))
    try:
        capture = feed_stream_file(args.capture, ChannelSink(summary.on_records), bar)
    finally:
        bar.close()
    report = summary.report(capture)
    if getattr(args, "plot", None):
        print(f"migshark: note: {args.capture}: no timeline for a stream file (no capture times); "
              "--plot ignored", file=sys.stderr)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_stream_file(report))
    return 1 if report["findings"] else 0
