"""``migshark dissect``: run a capture through the channel parsers and print the records."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from dissectors.capture import Capture, open_capture
from dissectors.cli.pipeline import (
    decrypting,
    feed_stream_file,
    forgetting,
    gc_unfrozen_after,
    is_migration_stream,
    load_keylog,
    reassemble,
)
from dissectors.outputs.dissect import DissectOptions, RecordPrinter
from dissectors.outputs.progress import Progress
from dissectors.outputs.record_trace import FrameClock
from dissectors.tcp.tracker import segment_key


class NumberedSegments:
    """A capture read with frame numbers: each segment sets ``clock.frame`` as it is handed to the tracker
    (``tcp_segments()``, keyed on the way), so the sinks know which frame they are being fed."""

    def __init__(self, cap: Capture, clock: FrameClock) -> None:
        self.cap = cap
        self.clock = clock

    def __getattr__(self, name: str) -> Any:      # position, size, stats, warnings: the capture's
        return getattr(self.cap, name)

    @property
    def on_progress(self) -> Any:
        return self.cap.on_progress

    @on_progress.setter
    def on_progress(self, fn: Any) -> None:
        self.cap.on_progress = fn

    def keyed_segments(self) -> Iterator[tuple[Any, ...]]:
        clock = self.clock
        for frame, ts, src, sport, dst, dport, seq, _ack, flags, payload, missing in self.cap.tcp_segments():
            clock.frame = frame
            if clock.first_ts is None:
                clock.first_ts = ts
            yield segment_key(src, sport, dst, dport), ts, seq, flags, payload, missing

    def keyed_batches(self) -> Iterator[list[tuple[Any, ...]]]:
        for seg in self.keyed_segments():
            yield [seg]


def run_dissect(args: argparse.Namespace) -> int:
    d = RecordPrinter(DissectOptions(
        connections=args.connection or (), channels=args.channel or (), types=args.type or (),
        pages=args.pages, verbose=args.verbose, summary=args.summary, limit=args.limit, json=args.json,
        devices=args.device or (), hex=args.hex))
    keylog = load_keylog(args.keylog)
    bar = Progress(f"dissect {args.capture}")
    try:
        if is_migration_stream(args.capture):      # a raw QEVM file: the main channel, no TCP
            d.clock.frame = None
            sink = d.stream_file_sink(args.capture)
            capture = feed_stream_file(args.capture, sink, bar) if sink is not None else {"warnings": []}
        else:
            with gc_unfrozen_after(), open_capture(args.capture) as cap:
                _, capture = reassemble(NumberedSegments(cap, d.clock), str(args.capture),
                                        decrypting(d.sink_for, keylog), bar, freeze=True,
                                        on_batch=forgetting(),
                                        coalesce_runs=False)   # frame numbers: one segment at a time
    finally:
        bar.close()
    unknown = d.unknown_connections()
    if unknown:
        print(f"migshark: error: {args.capture}: no connection {', '.join(unknown)} (-c takes an index or a "
              f"client/server IP:PORT); the capture's connections: {d.connection_list()}", file=sys.stderr)
        return 2
    d.summary()
    for w in capture["warnings"]:
        print(f"migshark: warning: {w}", file=sys.stderr)
    if not d.available and capture["warnings"] and not args.connection:   # as analyze: nothing readable at all
        print(f"migshark: error: {args.capture}: no record decoded: the capture could not be read completely "
              "(see the warnings)", file=sys.stderr)
        return 2
    note = d.hidden_note()
    if note:
        print(f"migshark: note: {note}", file=sys.stderr)
    bad = d.counts and any(k in ("malformed", "truncated") for _, k in d.counts)
    return 1 if bad or capture.get("stopped") else 0    # a capture cut short is a finding, as for analyze
