"""Per-connection facts: a TCP stream sink that identifies the channel kind and runs its parser.

It keeps only what the analyser needs (first bytes, the multifd hello, commands with times, counts, a
sampled byte-progress series, malformed records), so memory stays bounded whatever the capture size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dissectors.analysis.ledger import PageLedger
from dissectors.analysis.repeats import RepeatedPages
from dissectors.channels import (
    TARGET_PAGE_SIZE,
    MainParser,
    MultifdParser,
    PreemptParser,
    Record,
    ReturnPathParser,
    TlsParser,
    identify_stream,
)
from dissectors.tcp import Connection

RecordHook = Callable[["ConnectionFacts", int, Record], None]

HEAD_KEPT = 64                 # first bytes kept per direction (evidence, relay matching)
BUFFER_LIMIT = 4096            # bytes buffered at most before a stream is called unknown
EVENT_LIMIT = 5000             # commands / return-path events kept per connection
MALFORMED_LIMIT = 50
SAMPLE_LIMIT = 4000            # progress points kept per direction (thinned when full)

PARSERS: dict[str, Callable[..., Any]] = {
    "main": MainParser,
    "main-recovery": MainParser,
    "multifd": MultifdParser,
    "preempt-candidate": PreemptParser,
    "tls": TlsParser,
}

# Records worth keeping with their time for the report and the timeline.
KEPT = {
    "main.header", "main.config", "main.cmd", "main.eof", "main.vmdesc", "main.section_start",
    "rp.shut", "rp.pong", "rp.recv_bitmap", "rp.resume_ack", "rp.switchover_ack",
    "multifd.hello", "truncated", "gap", "opaque",
}


@dataclass
class Progress:
    """(ts, stream offset) points, thinned by half whenever full: bounded, still covering the whole run."""

    points: list[tuple[float, int]] = field(default_factory=list)
    step: float = 0.0
    last_ts: float = -1.0

    def add(self, ts: float, offset: int) -> None:
        if ts - self.last_ts < self.step:
            return
        self.last_ts = ts
        self.points.append((ts, offset))
        if len(self.points) >= SAMPLE_LIMIT:
            self.points = self.points[::2]
            self.step = (self.points[-1][0] - self.points[0][0]) / (SAMPLE_LIMIT / 2) if self.points else 0.0


@dataclass
class Direction:
    first: bytearray = field(default_factory=bytearray)
    kind: str | None = None
    parser: Any = None
    progress: Progress = field(default_factory=Progress)
    end_offset: int = 0


class ConnectionFacts:
    """StreamSink for one connection (direction 0 = client to server)."""

    def __init__(self, conn: Connection, ledger: PageLedger, page_size: int = TARGET_PAGE_SIZE,
                 on_record: RecordHook | None = None, repeats: RepeatedPages | None = None) -> None:
        self.conn = conn
        self.on_record = on_record
        self.ledger = ledger
        self.repeats = repeats
        self.page_size = page_size
        self.endpoint = f"{conn.server[0]}:{conn.server[1]}"
        self.dirs = (Direction(), Direction())
        self.kind: str | None = None            # identify_stream() of direction 0
        self.magic: bytes | None = None
        self.events: list[Record] = []
        self.malformed: list[tuple[int, Record]] = []     # (direction, record)
        self.counts: dict[str, int] = {}
        self.hello: dict[str, Any] | None = None
        self.first_record_ts: float | None = None
        self.features: set[str] = set()
        self.last_page_ts: float | None = None
        self.page_records = 0
        self.pending_rp: list[tuple[int, bytes, float]] = []
        self.rp_block: str | None = None

    # -- StreamSink -------------------------------------------------------------------------------
    # Skip window: ``data`` returns how many upcoming bytes the direction's parser does not need (the rest
    # of a payload it skips by length), less one, so that the chunk holding a payload's last byte is
    # still fed and the pending record completes with that chunk's time, exactly as without the window.
    # The tracker then does not deliver the segments in between; the next call's offset jumps over them
    # (by exactly the window for data; by less for a gap or the stream's end inside it) and
    # ``parser.skipped`` accounts for them. Gaps always arrive where they are, so a payload partly lost
    # is flagged or truncated as before. The progress series gets no points inside windows; ``end``
    # closes it at the stream's end.
    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
        d = self.dirs[direction]
        parser = d.parser
        if parser is not None and offset != d.end_offset:   # we asked not to see the bytes in between
            records = parser.skipped(offset - d.end_offset, ts)
            if records:
                self._take(direction, records)
        end = d.end_offset = offset + len(data)
        progress = d.progress
        if ts - progress.last_ts >= progress.step:   # Progress.add's own test, inlined (hot path)
            progress.add(ts, end)
        if parser is not None:
            first = d.first
            short = len(first) < HEAD_KEPT    # the first bytes are kept: no window before them
            if short:
                first += data[:HEAD_KEPT - len(first)]
            records = parser.feed(data, ts)
            if records:
                self._take(direction, records)
            if short:
                return 0
            skip = parser.skip_ahead
            return skip - 1 if skip > 1 else 0
        if d.kind is not None:            # identified, nothing to parse with
            return 0
        d.first += data               # whole chunks: the parser gets every byte once identified
        if direction == 0:
            self._identify_client(ts)
        else:
            self._identify_server(ts)
        return 0

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        d = self.dirs[direction]
        if d.parser is not None and offset != d.end_offset:
            self._skipped(direction, offset, ts)
        d.end_offset = offset + length
        if d.parser is not None:
            self._take(direction, d.parser.gap(length, ts))
        elif d.kind is None:
            d.kind = "uncaptured"         # a hole at the start (snaplen, loss): nothing to identify
            self._note_kind(direction)

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        d = self.dirs[direction]
        if d.parser is not None:
            if offset != d.end_offset:    # the stream ended inside a skip window
                self._skipped(direction, offset, ts)
            self._take(direction, d.parser.eof(ts))
            for k, v in d.parser.counts.items():
                self.counts[k] = self.counts.get(k, 0) + v
            d.parser = None
        elif d.kind is None and d.first:
            if direction == 0:
                self._identify_client(ts, final=True)
            else:
                self._identify_server(ts, final=True)
            if d.parser is not None:
                self.end(direction, offset, ts, how)
                return
        points = d.progress.points        # data inside skip windows adds no points: close the series
        if offset and (not points or points[-1][1] < offset):
            when = self.conn.halves[direction].last_data_ts
            if when is None or (points and when < points[-1][0]):
                when = points[-1][0] if points else ts
            points.append((when, offset))

    def _skipped(self, direction: int, offset: int, ts: float) -> None:
        """The bytes from the direction's end offset up to ``offset`` were skipped at our request."""
        d = self.dirs[direction]
        records = d.parser.skipped(offset - d.end_offset, ts)
        d.end_offset = offset
        if records:
            self._take(direction, records)

    # -- identification ---------------------------------------------------------------------------
    def _identify_client(self, ts: float, final: bool = False) -> None:
        d = self.dirs[0]
        kind = identify_stream(bytes(d.first[:BUFFER_LIMIT]))
        if kind is None and (final or len(d.first) >= BUFFER_LIMIT):
            kind = "unknown"
        if kind is None:
            return
        self.kind = kind
        self.magic = bytes(d.first[:4]) if len(d.first) >= 4 else None
        self._start(0, kind, ts)
        # The server side may have been waiting to know what this connection is.
        s = self.dirs[1]
        if s.kind is None and s.first:
            self._identify_server(ts)

    def _identify_server(self, ts: float, final: bool = False) -> None:
        d = self.dirs[1]
        if self.kind is None and not final and len(d.first) < BUFFER_LIMIT:
            return
        if self.kind in ("main", "main-recovery"):
            kind = "return-path"
        elif self.kind == "tls":
            kind = "tls"
        else:
            kind = "unknown"
        self._start(1, kind, ts)

    def _start(self, direction: int, kind: str, ts: float) -> None:
        d = self.dirs[direction]
        d.kind = kind
        factory = ReturnPathParser if kind == "return-path" else PARSERS.get(kind)
        buffered = bytes(d.first)
        d.first = bytearray(buffered[:HEAD_KEPT])
        if factory is None:
            return
        d.parser = factory(page_size=self.page_size) if kind not in ("tls", "return-path") else factory()
        if buffered:
            self._take(direction, d.parser.feed(buffered, ts))

    def _note_kind(self, direction: int) -> None:
        if direction == 0:
            self.kind = self.dirs[0].kind

    # -- records ----------------------------------------------------------------------------------
    def _take(self, direction: int, records: list[Record]) -> None:
        if self.on_record is not None:
            for rec in records:
                self.on_record(self, direction, rec)
        for rec in records:
            kind = rec.kind
            if self.first_record_ts is None and direction == 0:
                self.first_record_ts = rec.ts
            if kind == "ram.page" or kind == "ram.zero":
                self.page_records += 1
                self.last_page_ts = rec.ts
                f = rec.fields
                self.ledger.page(self.endpoint, f.get("block", ""), f.get("addr", 0), rec.ts, self.conn.index)
                continue
            if kind == "multifd.packet" or kind == "multifd.sync":
                f = rec.fields
                if f.get("zero_pages"):
                    self.features.add("zero_pages")
                normal = f.get("normal_pages")
                if f.get("next_packet_size_ignored") and not normal:
                    self.features.add("stale_next_packet_size")
                if normal and self.repeats is not None and self.hello is not None:
                    self.repeats.packet((self.endpoint, self.hello["uuid"]), f["packet_num"], f["block"],
                                        f["pages_alloc"], normal, f["first_offset"], f["last_offset"], rec.ts,
                                        kind == "multifd.sync")
                self.last_page_ts = rec.ts
                continue
            if kind == "ram.multifd_flush":
                self.features.add("multifd_flush")
                continue
            if kind in ("rp.req_pages", "rp.req_pages_id"):
                f = rec.fields
                self.ledger.request(self.endpoint, f.get("block") or "", f.get("start", 0), f.get("len", 0),
                                    rec.ts, self.conn.index)
                self.counts["rp.req_pages.seen"] = self.counts.get("rp.req_pages.seen", 0) + 1
                continue
            if kind == "multifd.hello":
                self.hello = dict(rec.fields)
            if kind == "main.cmd":
                cmd = rec.fields.get("cmd")
                if cmd == "SWITCHOVER_START":
                    self.features.add("switchover_start")
                elif cmd == "POSTCOPY_LISTEN":
                    self.ledger.listen(self.endpoint)
                elif cmd == "RECV_BITMAP":
                    self.ledger.resume(self.endpoint)
            if kind == "malformed":
                if len(self.malformed) < MALFORMED_LIMIT:
                    self.malformed.append((direction, rec))
                continue
            if kind in KEPT and len(self.events) < EVENT_LIMIT:
                self.events.append(rec)

    # -- queries ----------------------------------------------------------------------------------
    def commands(self, name: str | None = None) -> list[Record]:
        return [r for r in self.events if r.kind == "main.cmd" and (name is None or r.fields.get("cmd") == name)]

    def first_event(self, kind: str, **match: Any) -> Record | None:
        for r in self.events:
            if r.kind == kind and all(r.fields.get(k) == v for k, v in match.items()):
                return r
        return None

    def channel_kind(self, direction: int) -> str:
        """The kind of one direction for people: main, main-recovery, return-path, multifd, preempt, tls."""
        kind = self.dirs[direction].kind
        if kind is None:
            return "silent" if direction == 0 and not self.dirs[0].first else "pending"
        return "preempt" if kind == "preempt-candidate" else kind

    def client_sent(self) -> int:
        return self.conn.bytes[0]

    def server_sent(self) -> int:
        return self.conn.bytes[1]
