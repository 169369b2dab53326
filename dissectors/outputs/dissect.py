"""Decoded QEMU records, filtered and printed as text lines (or JSON lines) with a summary per type."""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dissectors.channels import ChannelSink, Record
from dissectors.channels.ram_walk import expand_zero_run
from dissectors.outputs.vmstate import device_matches, device_tree, line_fields
from dissectors.tcp.connection import Connection, endpoint_text

PAGE_KINDS = {"ram.page", "ram.zero"}


HEX_FIELDS = {"addr", "start", "magic", "total"}


def _value(v: Any, key: str = "") -> Any:
    """A field for the text lines: big numbers and addresses in hex, bytes as hex digits."""
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, int) and not isinstance(v, bool) and (v > 0xFFFF or key in HEX_FIELDS):
        return hex(v)
    return v


def json_value(v: Any) -> Any:
    """A field for ``--json``: one JSON type per field whatever its value (numbers stay numbers, bytes are
    hex strings, tuples are arrays), documented in docs/report-schema.md."""
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_value(x) for x in v]
    return v


@dataclass(frozen=True)
class DissectOptions:
    """What ``migshark dissect`` prints: the selection and the format."""

    connections: Sequence[str] = ()     # indexes or client/server endpoints
    channels: Sequence[str] = ()        # channel kinds
    types: Sequence[str] = ()           # record type globs
    pages: bool = False                 # list every RAM page record too
    verbose: bool = False               # Scapy layer tree under each record that kept its bytes
    summary: bool = False               # only the count per record type
    limit: int = 0                      # stop printing after this many records (0: no limit)
    json: bool = False                  # JSON lines
    devices: Sequence[str] = ()         # --device globs: only these devices' records


class RecordPrinter:
    def __init__(self, options: DissectOptions) -> None:
        self.args = options
        self.selected = list(options.connections)
        self.channels = set(options.channels)
        self.types = list(options.types)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.devices_seen: set[str] = set()
        self.printed = 0
        self.out = sys.stdout

    def wants_connection(self, conn: Connection) -> bool:
        if not self.selected:
            return True
        names = {str(conn.index), endpoint_text(conn.client), endpoint_text(conn.server)}
        return any(s in names for s in self.selected)

    def sink_for(self, conn: Connection) -> ChannelSink | None:
        """The TCP sink of a connection whose records are wanted (None: not selected)."""
        if not self.wants_connection(conn):
            return None
        sink = ChannelSink(lambda direction, records: self.records(conn, sink, direction, records),
                           device_state=True)
        return sink

    def records(self, conn: Connection, sink: ChannelSink, direction: int, records: list[Record]) -> None:
        for rec in records:
            if "pages" in rec.fields and rec.kind in PAGE_KINDS:     # a zero-page run
                if self.args.summary or not (self.args.pages or self.types):
                    self.count_run(sink, direction, rec)
                    continue
                for one in expand_zero_run(rec):
                    self.record(conn, sink, direction, one)
                continue
            self.record(conn, sink, direction, rec)

    def count_run(self, sink: ChannelSink, direction: int, rec: Record) -> None:
        """A zero-page run that is not shown: its pages counted (what ``record`` does with each)."""
        channel = sink.channel_kind(direction)
        if self.channels and channel not in self.channels:
            return
        if self.types and not any(fnmatch.fnmatchcase(rec.kind, t) for t in self.types):
            return
        if self.args.devices:
            return
        self.counts[(channel, rec.kind)] += rec.fields["pages"]

    def record(self, conn: Connection, sink: ChannelSink, direction: int, rec: Record) -> None:
        channel = sink.channel_kind(direction)
        if self.channels and channel not in self.channels:
            return
        if self.types and not any(fnmatch.fnmatchcase(rec.kind, t) for t in self.types):
            return
        if self.args.devices:
            if rec.kind != "device.vmstate" and rec.kind != "device.state":
                return
            if rec.fields.get("idstr"):
                self.devices_seen.add(rec.fields["idstr"])
            if not device_matches(rec.fields, self.args.devices):
                return
        self.counts[(channel, rec.kind)] += 1
        if self.args.summary or (rec.kind in PAGE_KINDS and not self.args.pages and not self.types):
            return
        if self.args.limit and self.printed >= self.args.limit:
            return
        self.printed += 1
        if self.args.json:
            obj = {"connection": conn.index, "client": endpoint_text(conn.client),
                   "server": endpoint_text(conn.server), "direction": "to-server" if direction == 0 else "to-client",
                   "channel": channel, "type": rec.kind, "offset": rec.offset, "length": rec.length,
                   "time": rec.ts, "fields": json_value(rec.fields)}
            self.out.write(json.dumps(obj) + "\n")
            return
        arrow = "->" if direction == 0 else "<-"
        shown = line_fields(rec.fields) if rec.kind == "device.vmstate" else rec.fields
        fields = " ".join(f"{k}={_value(v, k)}" for k, v in shown.items())
        self.out.write(f"#{conn.index} {arrow} {channel:<12} @{rec.offset:<10} {rec.ts:.6f} {rec.kind:<20} "
                       f"size={rec.length} {fields}\n")
        if self.args.verbose and rec.kind == "device.vmstate":
            self.out.write("".join(f"{line}\n" for line in device_tree(rec.fields)))
        elif self.args.verbose:
            layer = rec.layer()          # the Scapy dissection, built on demand for this record only
            if layer is not None:
                tree = layer.show(dump=True).rstrip("\n")
                self.out.write("".join(f"    {line}\n" for line in tree.splitlines()))

    def summary(self) -> None:
        if self.args.devices and not any(k.startswith("device.") for _, k in self.counts):
            seen = ", ".join(sorted(self.devices_seen)) or "none"
            print(f"migshark: note: no device section matches --device {' '.join(self.args.devices)} "
                  f"(devices in the capture: {seen})", file=sys.stderr)
        if self.args.json:
            if not self.args.summary:      # JSON lines of records only, unless the summary is asked for
                return
            obj = {"summary": [{"channel": ch, "type": k, "count": n} for (ch, k), n in sorted(self.counts.items())]}
            self.out.write(json.dumps(obj) + "\n")
            return
        self.out.write("\nRecords per channel kind and type:\n")
        for (ch, k), n in sorted(self.counts.items()):
            self.out.write(f"  {ch:<14} {k:<24} {n}\n")
