# SPDX-License-Identifier: GPL-2.0-or-later
"""The channels room's one consumer of reassembled TCP: identify each direction's channel, pick its
parser from one table, feed it, and hand every record on.

:class:`ChannelSink` implements the TCP room's ``StreamSink`` protocol for one connection (direction 0 =
client to server). Whoever wants records (the analysis fold, ``migshark dissect``, a live watcher) passes
``on_records(direction, records)``; nothing here knows what they do with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dissectors.channels.engine import StreamParser
from dissectors.channels.identify import identify_stream
from dissectors.channels.main import MainParser
from dissectors.channels.multifd import MultifdParser
from dissectors.channels.preempt import PreemptParser
from dissectors.channels.record import Record
from dissectors.channels.return_path import ReturnPathParser
from dissectors.channels.tls import TlsParser
from dissectors.layers.derived import TARGET_PAGE_SIZE

RecordsFn = Callable[[int, list[Record]], None]
LastDataFn = Callable[[int], "float | None"]

HEAD_KEPT = 64                 # first bytes kept per direction (evidence, relay matching)
BUFFER_LIMIT = 4096            # bytes buffered at most before a stream is called unknown
SAMPLE_LIMIT = 4000            # arrival points kept per direction (thinned when full)

#: Channel kind (``identify_stream`` of the client's bytes) -> parser of the client's stream.
CLIENT_PARSERS: dict[str, Callable[[int], StreamParser]] = {
    "main": MainParser,
    "main-recovery": MainParser,
    "multifd": MultifdParser,
    "preempt-candidate": PreemptParser,
    "tls": lambda page_size: TlsParser(),
}
#: Client's channel kind -> kind of the server's stream on the same connection.
SERVER_KINDS: dict[str, str] = {"main": "return-path", "main-recovery": "return-path", "tls": "tls"}
#: Server stream kind -> parser.
SERVER_PARSERS: dict[str, Callable[[int], StreamParser]] = {
    "return-path": lambda page_size: ReturnPathParser(),
    "tls": lambda page_size: TlsParser(),
}


@dataclass(slots=True)
class Progress:
    """(ts, stream offset) arrival points, thinned by half whenever full: bounded, still covering the
    whole run."""

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


@dataclass(slots=True)
class Direction:
    first: bytearray = field(default_factory=bytearray)
    kind: str | None = None
    parser: StreamParser | None = None
    progress: Progress = field(default_factory=Progress)
    end_offset: int = 0


class ChannelSink:
    """StreamSink for one connection: channel identification, parser choice, records out.

    ``last_data_ts(direction)``, when given, says when the direction's last data segment arrived (the
    TCP room knows; it closes the arrival series at the stream's end).
    """

    __slots__ = ("on_records", "page_size", "last_data_ts", "dirs", "kind", "magic", "counts", "device_state",
                 "ended")

    def __init__(self, on_records: RecordsFn | None = None, page_size: int = TARGET_PAGE_SIZE,
                 last_data_ts: LastDataFn | None = None, device_state: bool = False) -> None:
        self.on_records = on_records
        self.device_state = device_state        # main channels decode device state (``device.vmstate``)
        self.page_size = page_size
        self.last_data_ts = last_data_ts
        self.dirs = (Direction(), Direction())
        self.kind: str | None = None            # identify_stream() of direction 0
        self.magic: bytes | None = None
        self.counts: dict[str, int] = {}        # the parsers' counts, added when a direction ends
        self.ended = 0                          # directions ended

    # -- StreamSink -------------------------------------------------------------------------------
    # Skip window: ``data`` returns how many upcoming bytes the direction's parser does not need (the rest
    # of a payload it skips by length), less one, so that the chunk holding a payload's last byte is
    # still fed and the pending record completes with that chunk's time, exactly as without the window.
    # The tracker then does not deliver the segments in between; the next call's offset jumps over them
    # (by exactly the window for data; by less for a gap or the stream's end inside it) and
    # ``parser.skipped`` accounts for them. Gaps always arrive where they are, so a payload partly lost
    # is flagged or truncated as before. The arrival series gets no points inside windows; ``end``
    # closes it at the stream's end.
    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
        d = self.dirs[direction]
        parser = d.parser
        if parser is not None and offset != d.end_offset:   # we asked not to see the bytes in between
            records = parser.skipped(offset - d.end_offset, ts)
            if records and self.on_records is not None:
                self.on_records(direction, records)
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
            if records and self.on_records is not None:
                self.on_records(direction, records)
            if short:
                return 0
            skip = parser.skip_ahead
            return skip - 1 if skip > 1 else 0
        if d.kind is not None:            # identified, nothing to parse with
            return 0
        d.first += data               # whole chunks: the parser gets every byte once identified
        self._identify(direction, ts)
        return 0

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        d = self.dirs[direction]
        if d.parser is not None and offset != d.end_offset:
            self._skipped(direction, offset, ts)
        d.end_offset = offset + length
        if d.parser is not None:
            self._out(direction, d.parser.gap(length, ts))
        elif d.kind is None:
            d.kind = "uncaptured"         # a hole at the start (snaplen, loss): nothing to identify
            if direction == 0:
                self.kind = d.kind

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        d = self.dirs[direction]
        if d.parser is None and d.kind is None and d.first:
            self._identify(direction, ts, final=True)
        if d.parser is not None:
            if offset != d.end_offset:    # the stream ended inside a skip window
                self._skipped(direction, offset, ts)
            self._out(direction, d.parser.eof(ts))
            for k, v in d.parser.counts.items():
                self.counts[k] = self.counts.get(k, 0) + v
            d.parser.close()
            d.parser = None
        points = d.progress.points        # data inside skip windows adds no points: close the series
        if offset and (not points or points[-1][1] < offset):
            when = self.last_data_ts(direction) if self.last_data_ts is not None else None
            if when is None or (points and when < points[-1][0]):
                when = points[-1][0] if points else ts
            points.append((when, offset))
        self.ended += 1
        if self.ended == 2:
            # Nothing comes after both ends: drop the callbacks, which usually hold whoever holds this
            # sink (a reference cycle the collector would otherwise have to find).
            self.on_records = None
            self.last_data_ts = None

    def _skipped(self, direction: int, offset: int, ts: float) -> None:
        """The bytes from the direction's end offset up to ``offset`` were skipped at our request."""
        d = self.dirs[direction]
        assert d.parser is not None
        records = d.parser.skipped(offset - d.end_offset, ts)
        d.end_offset = offset
        self._out(direction, records)

    def _out(self, direction: int, records: list[Record]) -> None:
        if records and self.on_records is not None:
            self.on_records(direction, records)

    # -- identification ---------------------------------------------------------------------------
    def _identify(self, direction: int, ts: float, final: bool = False) -> None:
        """Decide a direction's kind once its first bytes tell (or they never will) and start its parser.
        The server's stream waits for the client's kind: a return path is a return path because the
        client's stream is a main channel."""
        d = self.dirs[direction]
        if direction == 0:
            kind = identify_stream(bytes(d.first[:BUFFER_LIMIT]))
            if kind is None and (final or len(d.first) >= BUFFER_LIMIT):
                kind = "unknown"
            if kind is None:
                return
            self.kind = kind
            self.magic = bytes(d.first[:4]) if len(d.first) >= 4 else None
            self._start(0, kind, CLIENT_PARSERS.get(kind), ts)
            server = self.dirs[1]
            if server.kind is None and server.first:
                self._identify(1, ts)
            return
        if self.kind is None and not final and len(d.first) < BUFFER_LIMIT:
            return
        kind = SERVER_KINDS.get(self.kind or "", "unknown")
        self._start(1, kind, SERVER_PARSERS.get(kind), ts)

    def _start(self, direction: int, kind: str, factory: Callable[[int], StreamParser] | None,
               ts: float) -> None:
        d = self.dirs[direction]
        d.kind = kind
        buffered = bytes(d.first)
        d.first = bytearray(buffered[:HEAD_KEPT])
        if factory is None:
            return
        d.parser = factory(self.page_size)
        if self.device_state and isinstance(d.parser, MainParser):
            d.parser.keep_device_state()
        if buffered:
            self._out(direction, d.parser.feed(buffered, ts))

    # -- queries ----------------------------------------------------------------------------------
    def channel_kind(self, direction: int) -> str:
        """The kind of one direction for people: main, main-recovery, return-path, multifd, preempt, tls."""
        kind = self.dirs[direction].kind
        if kind is None:
            return "silent" if direction == 0 and not self.dirs[0].first else "pending"
        return "preempt" if kind == "preempt-candidate" else kind
