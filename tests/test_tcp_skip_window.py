"""Skip windows: a sink's ``data`` returning k means it does not need the next k bytes.

Every scenario runs twice, with a plain sink and with a windowed one. The windowed sink must see exactly
what a model derives from the plain run (chunks wholly inside a window dropped, a chunk crossing its end
cut at it, gaps always where they are), with correct bytes at every offset, and the connection's counters
and times must not change.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_helpers import Flow, Recorders
from test_tcp_property import ISNS, segmentation

from dissectors.tcp import Connection, TcpTracker

DATA = bytes(random.Random(7).randrange(256) for _ in range(20_000))
Piece = tuple[str, int, object]           # ("data", offset, bytes) or ("gap", offset, length)


def window(direction: int, offset: int, length: int) -> int:
    """The windowed sink's answer: a deterministic function of the chunk (0 or None = no window)."""
    k = random.Random(offset * 7919 + length * 31 + direction).choice((0, 0, 1, 7, 100, 999, 1448, 3000, 9000))
    return k if k or offset & 1 else None  # type: ignore[return-value]


@dataclass
class WindowSink:
    """Records what it gets; checks offsets only move forward, by at most the window it asked for."""

    conn: Connection
    rule: Callable[[int, int, int], int | None] = window
    pieces: tuple[list[Piece], list[Piece]] = field(default_factory=lambda: ([], []))
    fronts: list[int] = field(default_factory=lambda: [0, 0])
    allowed: list[int] = field(default_factory=lambda: [0, 0])    # the window still open at the front
    ends: list = field(default_factory=lambda: [None, None])

    def _check(self, direction: int, offset: int) -> None:
        assert self.ends[direction] is None, "call after end"
        jump = offset - self.fronts[direction]
        assert 0 <= jump <= self.allowed[direction], (offset, self.fronts[direction], self.allowed[direction])
        self.allowed[direction] -= jump

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int | None:
        self._check(direction, offset)
        assert len(data) > 0
        self.pieces[direction].append(("data", offset, bytes(data)))
        self.fronts[direction] = offset + len(data)
        k = self.rule(direction, offset, len(data))
        self.allowed[direction] = k or 0
        return k

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        self._check(direction, offset)
        assert length > 0
        self.pieces[direction].append(("gap", offset, length))
        self.fronts[direction] = offset + length
        self.allowed[direction] = max(0, self.allowed[direction] - length)

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        self._check(direction, offset)
        self.ends[direction] = (offset, how)


def model(pieces: list[Piece], direction: int, rule: Callable[[int, int, int], int | None] = window) -> list[Piece]:
    """What a windowed sink should get, given what a plain sink got."""
    out: list[Piece] = []
    skip_until = 0
    for kind, off, value in pieces:
        if kind == "gap":
            out.append((kind, off, value))
            continue
        assert isinstance(value, bytes)
        end = off + len(value)
        if end <= skip_until:
            continue
        if off < skip_until:
            value, off = value[skip_until - off:], skip_until
        out.append((kind, off, value))
        k = rule(direction, off, len(value))
        if k:
            skip_until = end + k
    return out


def feed(tracker: TcpTracker, segs: list[tuple]) -> None:
    tracker.feed_keyed(segs)
    tracker.finish()


def run_with(rule: Callable[[int, int, int], int | None], segs: list[tuple]) -> tuple[TcpTracker, list[WindowSink]]:
    sinks: list[WindowSink] = []

    def factory(conn: Connection) -> WindowSink:
        sinks.append(WindowSink(conn, rule=rule))
        return sinks[-1]

    tracker = TcpTracker(factory)
    feed(tracker, segs)
    return tracker, sinks


def run(segs: list[tuple], **kwargs: int) -> tuple[TcpTracker, list[WindowSink]]:
    """Run ``segs`` with a plain and with a windowed sink; check the windowed run against the model."""
    plain_sinks = Recorders()
    plain = TcpTracker(plain_sinks, **kwargs)
    feed(plain, segs)
    sinks: list[WindowSink] = []

    def factory(conn: Connection) -> WindowSink:
        sinks.append(WindowSink(conn))
        return sinks[-1]

    tracker = TcpTracker(factory, **kwargs)
    feed(tracker, segs)
    assert [c.to_dict() for c in tracker.connections] == [c.to_dict() for c in plain.connections]
    for p, w in zip(plain_sinks, sinks, strict=True):
        assert w.ends == p.ends
        for d in (0, 1):
            assert w.pieces[d] == model(p.pieces[d], d)
            for kind, off, value in w.pieces[d]:
                if kind == "data" and d == 0:
                    assert value == DATA[off:off + len(value)]  # type: ignore[arg-type]
    return tracker, sinks


@pytest.mark.parametrize("mss", [1, 100, 1448])
def test_in_order_skips_what_was_asked(mss: int) -> None:
    f = Flow()
    size = 6000 if mss == 1 else len(DATA)
    segs = f.handshake() + [f.c(o, DATA[o:o + mss]) for o in range(0, size, mss)]
    segs += [f.c(size, flags="FA"), f.s(0, flags="FA")]
    tracker, sinks = run(segs)
    delivered = sum(len(v) for k, _, v in sinks[0].pieces[0] if k == "data")  # type: ignore[arg-type]
    assert delivered < size                      # something was skipped
    assert sinks[0].ends[0] == (size, "fin")
    assert tracker.connections[0].bytes == (size, 0)


def test_sink_asking_nothing_gets_everything() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(o, DATA[o:o + 1000]) for o in range(0, 5000, 1000)] + [f.c(5000, flags="FA")]
    plain = Recorders()
    feed(TcpTracker(plain), segs)
    tracker, sinks = run_with(lambda d, o, n: None, segs)
    assert sinks[0].pieces == plain[0].pieces and sinks[0].ends == plain[0].ends
    assert tracker.connections[0].halves[0].skip_until == 0


def test_exact_window_boundaries() -> None:
    """Windows ending inside a segment, at its end, and exactly one segment long."""
    answers = {0: 1500, 2000: 999, 3500: 500}   # by delivered offset

    def rule(direction: int, offset: int, length: int) -> int:
        return answers.get(offset, 0)

    f = Flow()
    segs = f.handshake() + [f.c(o, DATA[o:o + 500]) for o in range(0, 6000, 500)]
    tracker, sinks = run_with(rule, segs)
    got = [(off, len(v)) for _k, off, v in sinks[0].pieces[0]]  # type: ignore[arg-type]
    # [0,500) asks 1500: up to 2000, the segments at 500, 1000 and 1500 (ending exactly there) dropped;
    # 2000 asks 999: up to 3499, 2500 dropped, 3000 cut at 3499; 3500 asks 500: 4000 dropped.
    assert got == [(0, 500), (2000, 500), (3499, 1), (3500, 500), (4500, 500), (5000, 500), (5500, 500)]
    assert sinks[0].pieces[0][2] == ("data", 3499, DATA[3499:3500])
    assert sinks[0].ends[0] == (6000, "capture-end") and tracker.connections[0].bytes[0] == 6000


def test_reordering_and_retransmissions_inside_and_across_windows() -> None:
    f = Flow()
    parts = [(o, DATA[o:o + 1000]) for o in range(0, 15000, 1000)]
    parts[3], parts[4] = parts[4], parts[3]
    parts[8], parts[11] = parts[11], parts[8]
    parts.insert(6, (2500, DATA[2500:3700]))                 # partial retransmission
    parts.insert(9, (4000, b"\xff" * 1000))                  # conflicting retransmission
    segs = f.handshake() + [f.c(o, p) for o, p in parts] + [f.c(15000, flags="FA")]
    tracker, _ = run(segs)
    conn = tracker.connections[0]
    assert conn.retransmitted_bytes[0] == 2200 and conn.overlap_conflicts[0] > 0


def test_gaps_inside_and_crossing_windows_are_delivered_where_they_are() -> None:
    f = Flow()
    parts = [(o, DATA[o:o + 700]) for o in range(0, 14000, 700)]
    del parts[15], parts[9], parts[4]                        # drops: gaps at finish / at the ooo limit
    segs = f.handshake() + [f.c(o, p) for o, p in parts]
    for limit in (1 << 20, 1500):
        tracker, sinks = run(segs, ooo_limit=limit)
        gaps = [(off, v) for k, off, v in sinks[0].pieces[0] if k == "gap"]
        assert gaps == [(2800, 700), (6300, 700), (10500, 700)]
        assert tracker.connections[0].gap_bytes[0] == 2100


def test_snaplen_cut_segments() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(o, DATA[o:o + 60], missing=1388) for o in range(0, 14480, 1448)]
    run(segs)


@pytest.mark.parametrize("flags", ["FA", "R"])
def test_stream_ending_inside_a_window(flags: str) -> None:
    f = Flow()

    def rule(direction: int, offset: int, length: int) -> int:
        return 100_000

    segs = f.handshake() + [f.c(o, DATA[o:o + 1000]) for o in range(0, 5000, 1000)]
    segs.append(f.c(5000, flags=flags))
    tracker, sinks = run_with(rule, segs)
    assert sinks[0].pieces[0] == [("data", 0, DATA[:1000])]
    assert sinks[0].ends[0] == (5000, "fin" if flags == "FA" else "rst")
    assert tracker.connections[0].bytes[0] == 5000
    assert tracker.connections[0].last_data_ts[0] == segs[-2][1]


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 6000), isn=ISNS, limit=st.integers(0, 3000), st_data=st.data())
def test_any_order_loss_and_cut_matches_the_model(size: int, isn: int, limit: int,
                                                  st_data: st.DataObject) -> None:
    data = DATA[:size]
    pieces = st_data.draw(segmentation(size))
    order = st_data.draw(st.permutations(range(len(pieces))))
    kept = st_data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    cut = st_data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    fin = st_data.draw(st.booleans())
    f = Flow(cisn=isn)
    segs = f.handshake()
    for i in order:
        a, b = pieces[i]
        if kept[i] or not any(kept):
            if cut[i] and b - a > 1:
                m = (a + b) // 2
                segs.append(f.c(a, data[a:m], missing=b - m))
            else:
                segs.append(f.c(a, data[a:b]))
    if fin:
        segs.append(f.c(size, flags="FA"))
    run(segs, ooo_limit=limit)


class GatherSink:
    """Asks, after a chunk starting at 0, for the next ``g`` bytes as a whole; records (offset, length, ts)."""

    def __init__(self, g: int) -> None:
        self.g = g
        self.got: list[tuple[int, int, float]] = []

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int | None:
        self.got.append((offset, len(data), ts))
        return -self.g if direction == 0 and offset == 0 else None

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None: ...

    def end(self, direction: int, offset: int, ts: float, how: str) -> None: ...


@pytest.mark.parametrize("reorder", [False, True])
def test_a_gather_window_completes_with_the_piece_ending_at_its_end(reorder: bool) -> None:
    """A window whose last byte ends a segment is handed over with that segment, at its time: not with the
    next segment, which may come much later (the last TLS record before a pause came at the FIN)."""
    f = Flow()
    segs = f.handshake()
    head, body1, body2 = f.c(0, DATA[:100]), f.c(100, DATA[100:1548]), f.c(1548, DATA[1548:2100])
    done = body2[1]                       # the window [100, 2100) is whole with body2
    if reorder:                           # body2 first, then body1 fills the hole: whole at body1's time
        segs += [head, body2, body1]
        done = body1[1]
    else:
        segs += [head, body1, body2]
    later = Flow(ts=10.0).c(2100, DATA[2100:2200])          # 10 s later: the next data
    sinks: list[GatherSink] = []
    tracker = TcpTracker(lambda conn: sinks.append(GatherSink(2000)) or sinks[-1])
    tracker.feed_keyed([*segs, later])
    tracker.finish()
    assert sinks[0].got[:2] == [(0, 100, head[1]), (100, 2000, done)]
    assert sinks[0].got[2] == (2100, 100, later[1])
