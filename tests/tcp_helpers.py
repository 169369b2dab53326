"""Helpers for the tcp tests: keyed segments for a flow, and a sink that checks and records everything."""

from __future__ import annotations

from dataclasses import dataclass, field

from dissectors.tcp import Connection, TcpTracker, segment_key

CLIENT_IP = bytes([10, 0, 0, 1])
SERVER_IP = bytes([10, 0, 0, 2])
MASK = 0xFFFFFFFF
_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def flag_bits(flags: str) -> int:
    bits = 0
    for ch in flags:
        bits |= _FLAG_BITS[ch]
    return bits


@dataclass
class Flow:
    """Builds keyed segments ``(key, ts, seq, flags, payload, missing)`` for one connection, 1 ms apart;
    offsets are stream offsets (0 = first byte after SYN)."""

    cisn: int = 1000
    sisn: int = 5000
    cport: int = 40000
    sport: int = 4444
    cip: bytes = CLIENT_IP
    sip: bytes = SERVER_IP
    ts: float = 0.0

    def _seg(self, client: bool, seq: int, flags: str, payload: bytes, missing: int) -> tuple:
        self.ts += 0.001
        key = (segment_key(self.cip, self.cport, self.sip, self.sport) if client
               else segment_key(self.sip, self.sport, self.cip, self.cport))
        return (key, round(self.ts, 6), seq & MASK, flag_bits(flags), memoryview(payload), missing)

    def c(self, offset: int, data: bytes = b"", flags: str = "PA", missing: int = 0) -> tuple:
        return self._seg(True, self.cisn + 1 + offset, flags, data, missing)

    def s(self, offset: int, data: bytes = b"", flags: str = "PA", missing: int = 0) -> tuple:
        return self._seg(False, self.sisn + 1 + offset, flags, data, missing)

    def syn(self, data: bytes = b"") -> tuple:
        return self._seg(True, self.cisn, "S", data, 0)

    def synack(self) -> tuple:
        return self._seg(False, self.sisn, "SA", b"", 0)

    def ack(self) -> tuple:
        return self.c(0, flags="A")

    def handshake(self) -> list[tuple]:
        return [self.syn(), self.synack(), self.ack()]


def chunks(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(i, data[i:i + size]) for i in range(0, len(data), size)]


@dataclass
class Recorder:
    """A StreamSink asserting the contract (contiguous, non-overlapping, ordered, one end) and recording."""

    conn: Connection
    pieces: tuple[list, list] = field(default_factory=lambda: ([], []))
    fronts: list[int] = field(default_factory=lambda: [0, 0])
    ends: list = field(default_factory=lambda: [None, None])
    last_ts: list[float] = field(default_factory=lambda: [float("-inf"), float("-inf")])

    def _check(self, direction: int, offset: int, ts: float) -> None:
        assert self.ends[direction] is None, "call after end"
        assert offset == self.fronts[direction], (offset, self.fronts[direction])
        assert ts >= self.last_ts[direction]
        self.last_ts[direction] = ts

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> None:
        self._check(direction, offset, ts)
        assert len(data) > 0
        self.pieces[direction].append(("data", offset, bytes(data)))
        self.fronts[direction] += len(data)

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        self._check(direction, offset, ts)
        assert length > 0
        self.pieces[direction].append(("gap", offset, length))
        self.fronts[direction] += length

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        self._check(direction, offset, ts)
        self.ends[direction] = (offset, how)

    def stream(self, direction: int = 0) -> bytes:
        """The delivered bytes; raises if there was a gap."""
        out = bytearray()
        for kind, _off, value in self.pieces[direction]:
            assert kind == "data", self.pieces[direction]
            out += value
        return bytes(out)

    def gaps(self, direction: int = 0) -> list[tuple[int, int]]:
        return [(off, value) for kind, off, value in self.pieces[direction] if kind == "gap"]

    def data_at(self, direction: int = 0) -> dict[int, bytes]:
        """Delivered data as {offset: bytes}, adjacent data calls merged."""
        spans: dict[int, bytes] = {}
        start, run = None, bytearray()
        for kind, off, value in self.pieces[direction] + [("gap", -1, 0)]:
            if kind == "data":
                if start is None:
                    start = off
                run += value
            elif start is not None:
                spans[start] = bytes(run)
                start, run = None, bytearray()
        return spans


class Recorders(list):
    """A sink factory keeping every Recorder it made."""

    def __call__(self, conn: Connection) -> Recorder:
        rec = Recorder(conn)
        self.append(rec)
        return rec


def run(segments: list[tuple], **kwargs) -> tuple[TcpTracker, Recorders]:
    """Feed keyed segments through a tracker whose sinks record everything; return both."""
    recs = Recorders()
    tracker = TcpTracker(recs, **kwargs)
    tracker.feed_keyed(segments)
    tracker.finish()
    return tracker, recs
