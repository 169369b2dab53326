"""Decoded QEMU records, filtered and printed as text lines (or JSON lines) with a summary per type."""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scapy.packet import Packet

from dissectors.channels import ChannelSink, Record
from dissectors.channels.kinds import KINDS
from dissectors.channels.ram_walk import expand_zero_run
from dissectors.outputs.layer_tree import layer_tree
from dissectors.outputs.record_trace import HEX_BYTES, TREE_BYTES, DirectionTrace, FrameClock, TracingSink
from dissectors.outputs.timefmt import FORMATS
from dissectors.outputs.vmstate import device_matches, device_tree, line_fields
from dissectors.tcp.connection import Connection, endpoint_text

PAGE_KINDS = {"ram.page", "ram.zero"}
LISTED_CONNECTIONS = 20        # connections named in a message (an unknown -c)


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
    hex: bool = False                   # the record's first bytes as a hex dump (-x)


def record_layer(rec: Record, trace: DirectionTrace | None) -> Packet | None:
    """The Scapy packet of a record: from the bytes its parser kept, else from the first bytes of it the
    trace kept (TREE_BYTES: a multifd packet's header, a page record's header and the start of its page)."""
    layer = rec.layer()
    if layer is not None or trace is None:
        return layer
    kind = KINDS.get(rec.kind)
    data = trace.bytes_of(rec.offset, rec.length, TREE_BYTES)
    if kind is None or kind.layer is None or not data:
        return None
    try:
        return kind.layer(data)
    except Exception:  # noqa: BLE001 - bytes cut short by a gap: show no tree rather than fail
        return None


def frame_span(first: int | None, last: int | None) -> str:
    """``12`` or ``12-14`` (``?`` for a frame not known)."""
    a = "?" if first is None else str(first)
    b = "?" if last is None else str(last)
    return a if a == b else f"{a}-{b}"


def hex_dump(data: bytes, length: int) -> str:
    """``data`` as tshark ``-x`` shows bytes (offset, 16 hex bytes, ASCII), and what is left out."""
    lines = []
    for at in range(0, len(data), 16):
        row = data[at:at + 16]
        hx = " ".join(f"{b:02x}" for b in row[:8]) + "  " + " ".join(f"{b:02x}" for b in row[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"    {at:04x}  {hx:<49}  {text}\n")
    if len(data) < length:
        why = f"first {HEX_BYTES} bytes of a record shown" if len(data) == HEX_BYTES else "not captured or not at hand"
        lines.append(f"    ... {length - len(data)} more byte(s) ({why})\n")
    return "".join(lines) + "\n"


class RecordPrinter:
    def __init__(self, options: DissectOptions) -> None:
        self.args = options
        self.selected = list(options.connections)
        self.channels = set(options.channels)
        self.types = list(options.types)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.devices_seen: set[str] = set()
        self.available: Counter[tuple[str, str]] = Counter()   # selected connections, before -t/--channel
        self.connections: list[str] = []       # the capture's first connections, as text (for messages)
        self.connection_count = 0
        self.matched: set[str] = set()                         # the -c selectors some connection matched
        self.printed = 0
        self.out = sys.stdout
        self.clock = FrameClock()
        self.stream_file: str | None = None     # reading a raw migration stream file, not a capture
        #: Bytes kept of each record: for -V (records the parser kept no bytes of) and for -x.
        self.keep = TREE_BYTES if options.verbose else HEX_BYTES if options.hex else 0

    def wants_connection(self, conn: Connection) -> bool:
        self.connection_count += 1
        if len(self.connections) < LISTED_CONNECTIONS:   # text only: a Connection would outlive its forgetting
            self.connections.append(f"{conn.index} ({endpoint_text(conn.client)} -> {endpoint_text(conn.server)})")
        if not self.selected:
            return True
        names = {str(conn.index), endpoint_text(conn.client), endpoint_text(conn.server)}
        hits = names.intersection(self.selected)
        self.matched |= hits
        return bool(hits)

    def sink_for(self, conn: Connection) -> TracingSink | None:
        """The TCP sink of a connection whose records are wanted (None: not selected): its channels'
        parsers, behind a :class:`TracingSink` that notes which frame carried which bytes."""
        if not self.wants_connection(conn):
            return None
        tracing: TracingSink
        sink = ChannelSink(lambda direction, records: self.records(conn, sink, direction, records,
                                                                   tracing.traces[direction]),
                           device_state=True)
        tracing = TracingSink(sink, self.clock, keep=self.keep)
        return tracing

    def stream_file_sink(self, path: str) -> TracingSink | None:
        """The sink for a raw migration stream file, read as connection 0's client stream (the main
        channel); None when ``-c`` selects something else."""
        self.stream_file = path
        if self.selected:
            self.matched |= {"0"}.intersection(self.selected)
            if "0" not in self.selected:
                return None
        tracing: TracingSink
        sink = ChannelSink(lambda direction, records: self.records(None, sink, direction, records,
                                                                   tracing.traces[direction]),
                           device_state=True)     # --device -V: the fields along the VMDESCRIPTION
        tracing = TracingSink(sink, self.clock, keep=self.keep)
        return tracing

    def records(self, conn: Connection | None, sink: ChannelSink, direction: int, records: list[Record],
                trace: DirectionTrace | None = None) -> None:
        for rec in records:
            if "pages" in rec.fields and rec.kind in PAGE_KINDS:     # a zero-page run
                if self.args.summary or not (self.args.pages or self.types):
                    self.count_run(sink, direction, rec)
                    continue
                for one in expand_zero_run(rec):
                    self.record(conn, sink, direction, one, trace)
                continue
            self.record(conn, sink, direction, rec, trace)
        if trace is not None and records:
            trace.done_upto(min(r.offset for r in records), records[-1].offset + records[-1].length)

    def count_run(self, sink: ChannelSink, direction: int, rec: Record) -> None:
        """A zero-page run that is not shown: its pages counted (what ``record`` does with each)."""
        channel = sink.channel_kind(direction)
        self.available[(channel, rec.kind)] += rec.fields["pages"]
        if self.channels and channel not in self.channels:
            return
        if self.types and not any(fnmatch.fnmatchcase(rec.kind, t) for t in self.types):
            return
        if self.args.devices:
            return
        self.counts[(channel, rec.kind)] += rec.fields["pages"]

    def record(self, conn: Connection | None, sink: ChannelSink, direction: int, rec: Record,
               trace: DirectionTrace | None = None) -> None:
        channel = sink.channel_kind(direction)
        self.available[(channel, rec.kind)] += 1
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
        first, last = trace.frames_of(rec.offset, rec.length) if trace is not None else (None, None)
        data = trace.bytes_of(rec.offset, rec.length) if trace is not None and self.args.hex else b""
        index = 0 if conn is None else conn.index      # conn None: a raw migration stream file
        client = None if conn is None else endpoint_text(conn.client)
        server = None if conn is None else endpoint_text(conn.server)
        if self.args.json:
            obj = {"connection": index, "client": client, "server": server,
                   "direction": "to-server" if direction == 0 else "to-client",
                   "channel": channel, "type": rec.kind, "offset": rec.offset, "length": rec.length,
                   "time": None if conn is None else rec.ts, "first_frame": first, "last_frame": last,
                   "fields": json_value(rec.fields)}
            if self.args.hex:
                obj["bytes"] = data.hex()
            self.out.write(json.dumps(obj) + "\n")
            return
        arrow = "->" if direction == 0 else "<-"
        shown = line_fields(rec.fields) if rec.kind == "device.vmstate" else rec.fields
        fields = " ".join(f"{k}={_value(v, k)}" for k, v in shown.items())
        t0 = self.clock.first_ts
        when = "-" if conn is None else f"{rec.ts - (t0 if t0 is not None else rec.ts):.6f}"
        span = "-" if conn is None else frame_span(first, last)
        self.out.write(f"{span:>13} #{index} {arrow} {channel:<12} @{rec.offset:<10} "
                       f"{when} {rec.kind:<20} size={rec.length} {fields}\n")
        if self.args.verbose and first is not None:
            self.out.write(f"    Frames: {frame_span(first, last)} (first and last capture frame holding "
                           "the record's bytes)\n")
        if self.args.verbose and rec.kind == "device.vmstate":
            self.out.write("".join(f"{line}\n" for line in device_tree(rec.fields)))
        elif self.args.verbose:
            layer = record_layer(rec, trace)    # the Scapy dissection, built for this record only
            if layer is not None:
                self.out.write("".join(f"    {line}\n" for line in layer_tree(layer)))
                if rec.raw is None and rec.length > TREE_BYTES:
                    self.out.write(f"    (the tree decodes the record's first {TREE_BYTES} of {rec.length} bytes)\n")
        if self.args.hex:
            self.out.write(hex_dump(data, rec.length))

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
        if not self.counts:
            self.out.write("  none\n")

    def unknown_connections(self) -> list[str]:
        """The ``-c`` selectors that named no connection of the capture."""
        return [s for s in self.selected if s not in self.matched]

    def connection_list(self) -> str:
        """The capture's connections, for a message: ``0 (127.0.0.1:39260 -> 127.0.0.1:4444), ...``."""
        if self.stream_file is not None:
            return "0 (a raw migration stream file has one stream, connection 0)"
        n = self.connection_count
        shown = ", ".join(self.connections) + (f", ... ({n} in all)" if n > len(self.connections) else "")
        return shown or "none"

    def hidden_note(self) -> str | None:
        """Why nothing was printed, when the options hid every record (None: something was printed)."""
        if not self.available and not self.selected and self.stream_file is None:
            return f"no QEMU migration record in the capture's {self.connection_count} TCP connection(s)"
        if self.printed or self.args.summary or not (self.connections or self.stream_file):
            return None
        pages = sum(n for (_, k), n in self.counts.items() if k in PAGE_KINDS)
        if self.counts and pages == sum(self.counts.values()):
            return (f"{pages} RAM page record(s) matched but none is listed: pages are shown only with --pages "
                    "(or a -t pattern naming them, e.g. -t 'ram.*'); --summary counts them")
        if self.counts:
            return None
        if not self.available:
            return "the selected connection(s) carry no decoded record"
        channels = sorted({ch for ch, _ in self.available})
        kinds = sorted({k for _, k in self.available})
        asked = " and ".join(x for x in (
            f"--channel {' '.join(sorted(self.channels))}" if self.channels else "",
            f"-t {' '.join(self.types)}" if self.types else "") if x)
        hint = " (TLS: --keylog FILE decrypts it)" if "tls" in channels else ""
        if self.types and all(t in FORMATS for t in self.types):     # tshark's -t, the time format
            hint += (f" (dissect's -t is --type, a record type glob; {', '.join(self.types)} is a time format "
                     "of analyze and watch: dissect's times are seconds since the capture's first TCP segment)")
        return (f"no record matches {asked or 'the options'}; the selected connection(s) carry channel kind(s) "
                f"{', '.join(channels)} with record type(s) {', '.join(kinds)}{hint}")
