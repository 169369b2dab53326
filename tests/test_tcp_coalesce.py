"""Coalesced runs (``_pcapscan.coalesce`` + ``TcpTracker.feed_coalesced``) have exactly the effect of feeding
the same segments one by one: the same sink calls (bytes, offsets, times), in the same global order across
connections, the same connection facts and the same reports, on every corpus capture and on synthetic
interleaved, reordered, retransmitted, cut and reset connections (IPv4 and IPv6)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_helpers import Flow

from dissectors.capture import open_capture
from dissectors.cli.check import corpus_keylog
from dissectors.cli.pipeline import analyze_file
from dissectors.tcp import Connection, TcpTracker
from dissectors.tcp.flags import CONTROL

_pcapscan = pytest.importorskip("dissectors.capture._pcapscan", reason="the compiled scanner is not built")
if not hasattr(_pcapscan, "coalesce"):
    pytest.fail("the compiled scanner predates coalesce: rebuild it (pip install -e .)", pytrace=False)
coalesce = _pcapscan.coalesce

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "captures").glob("*.pcap.gz"))
SKIPS = (0, 0, 0, 1, 7, 100, 1500, 5000, 70_000)


class LogSink:
    """Logs every call (connection, direction, offset, crc and length of the bytes, time) into one list
    shared by all connections, and asks for skip windows of assorted sizes, as a parser would."""

    def __init__(self, log: list[tuple], conn: Connection, skips: bool) -> None:
        self.log, self.index, self.skips = log, conn.index, skips

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
        self.log.append((self.index, "data", direction, offset, len(data), zlib.crc32(data), ts))
        return SKIPS[(offset * 7 + len(data) + direction) % len(SKIPS)] if self.skips else 0

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        self.log.append((self.index, "gap", direction, offset, length, ts))

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        self.log.append((self.index, "end", direction, offset, ts, how))


def facts(tracker: TcpTracker) -> list[Any]:
    out: list[Any] = [tracker.first_ts, tracker.last_ts, tracker.untracked_segments]
    for conn in tracker.connections:
        out.append(conn.to_dict())
        for h in conn.halves:
            out.append((h.frames, h.last_ts, h.first_data_ts, h.last_data_ts, h.offset, h.retransmitted_bytes,
                        h.overlap_conflicts, list(h.conflict_offsets), list(h.gaps), h.ignored_bytes,
                        [bytes(p) for p in h.tail]))
    return out


def feed_both(batches: list[list[tuple]], window: int, skips: bool, **kwargs: Any) -> tuple[Any, Any]:
    """(log, facts) one by one and coalesced."""
    results = []
    for coalesced in (False, True):
        log: list[tuple] = []
        tracker = TcpTracker(lambda conn, log=log: LogSink(log, conn, skips), **kwargs)
        for batch in batches:
            if coalesced:
                tracker.feed_coalesced(*coalesce(batch, window, CONTROL, tracker.one_by_one))
            else:
                tracker.feed_keyed(batch)
        tracker.finish()
        results.append((log, facts(tracker)))
    return results[0], results[1]


# ---- synthetic connections ------------------------------------------------------------------------

IPV6_A = bytes.fromhex("fd00000000000000000000000000000a")
IPV6_B = bytes.fromhex("fd00000000000000000000000000000b")


@st.composite
def flow_segments(draw: st.DrawFn, index: int) -> list[tuple]:
    v6 = draw(st.booleans())
    f = Flow(cisn=draw(st.sampled_from([1000, (1 << 32) - 2500, draw(st.integers(0, (1 << 32) - 1))])),
             cport=40000 + index, cip=IPV6_A if v6 else bytes([10, 0, 0, 1]),
             sip=IPV6_B if v6 else bytes([10, 0, 0, 2]))
    size = draw(st.integers(1, 6000))
    data = bytes((i * 31 + index) & 0xFF for i in range(size))
    step = draw(st.sampled_from([1, 100, 536, 1448]))
    pieces = [(a, min(size, a + step)) for a in range(0, size, step)]
    segs: list[tuple] = f.handshake() if draw(st.booleans()) else []
    order = list(range(len(pieces)))
    for _ in range(draw(st.integers(0, 3))):                    # a few swaps: reordering
        i = draw(st.integers(0, len(order) - 1))
        j = min(len(order) - 1, i + draw(st.integers(1, 3)))
        order[i], order[j] = order[j], order[i]
    lost = []
    for n, i in enumerate(order):
        a, b = pieces[i]
        choice = draw(st.integers(0, 19))
        if choice == 0:                                        # lost (or late: after a reset, below)
            lost.append((a, b))
            continue
        if choice == 1:                                        # snaplen cut
            segs.append(f.c(a, data[a:a + (b - a) // 2], missing=(b - a) - (b - a) // 2))
            continue
        segs.append(f.c(a, data[a:b]))
        if choice == 2:                                        # retransmitted, maybe with other bytes
            body = data[a:b] if draw(st.booleans()) else bytes(b - a)
            segs.append(f.c(a, body))
        if n % 2:
            segs.append(f.s(0, flags="A"))                      # the receiver's acknowledgment
        if choice == 3:
            segs.append(f.s(0, b"reply"))                      # the other direction talks
    end = draw(st.sampled_from(["fin", "rst", "server-rst", "none"]))
    if end == "fin":
        segs += [f.c(size, flags="FA"), f.s(0, flags="FA")]
    elif end == "rst":
        segs.append(f.c(size, flags="R"))
    elif end == "server-rst":
        segs.append(f.s(0, flags="RA"))
    if end in ("rst", "server-rst") and draw(st.booleans()):   # reordered: they arrive after the reset
        segs += [f.c(a, data[a:b]) for a, b in lost] + [f.c(size, b"beyond")]
    return segs


@st.composite
def interleaved(draw: st.DrawFn) -> list[tuple]:
    flows = [draw(flow_segments(i)) for i in range(draw(st.integers(1, 3)))]
    picks = draw(st.lists(st.integers(0, len(flows) - 1), min_size=sum(map(len, flows)),
                          max_size=sum(map(len, flows))))
    out, at = [], [0] * len(flows)
    for p in picks + [i for i, f in enumerate(flows) for _ in f]:
        if at[p] < len(flows[p]):
            out.append(flows[p][at[p]])
            at[p] += 1
    ts = 0.0
    timed = []
    for seg in out:                                             # capture order: times never go back
        ts += draw(st.sampled_from([0.0, 0.001, 0.25]))
        timed.append((seg[0], round(ts, 6), *seg[2:]))
    return timed


@settings(max_examples=300, deadline=None)
@given(segs=interleaved(), window=st.sampled_from([1, 3000, 64 << 10]), cut=st.integers(1, 60),
       skips=st.booleans(), ooo=st.sampled_from([1 << 20, 2000]), tail=st.sampled_from([256, 3]))
def test_coalesced_equals_one_by_one(segs: list[tuple], window: int, cut: int, skips: bool, ooo: int,
                                     tail: int) -> None:
    batches = [segs[i:i + cut] for i in range(0, len(segs), cut)]
    single, runs = feed_both(batches, window, skips, ooo_limit=ooo, tail_segments=tail)
    assert runs[0] == single[0]
    assert runs[1] == single[1]


def test_a_direction_taking_every_byte_is_handed_one_by_one() -> None:
    """Runs of a direction whose sink takes every byte keep waiting for the other connections' segments:
    the tracker asks the coalescer for that direction's segments one by one (and the effect stays equal)."""
    flows = [Flow(cport=40000 + i) for i in range(3)]
    segs = [f.c(n * 100, bytes(100)) for n in range(40) for f in flows]
    single, runs = feed_both([segs], 1 << 16, skips=False)
    assert runs == single
    tracker = TcpTracker(lambda conn: LogSink([], conn, False))
    tracker.feed_coalesced(*coalesce(segs, 1 << 16, CONTROL, tracker.one_by_one))
    assert len(tracker.one_by_one) == 3
    entries, _ = coalesce(segs, 1 << 16, CONTROL, tracker.one_by_one)
    assert len(entries) == len(segs)


def test_runs_are_made_and_ordered() -> None:
    """The coalescer does merge (or the test above would prove nothing): in-order payload of a direction
    becomes one entry, acknowledgments another, and each segment says where it stood."""
    f, g = Flow(), Flow(cport=40001)
    segs = [f.c(0, b"a" * 10), g.c(0, b"x" * 5), f.s(0, flags="A"), f.c(10, b"b" * 10), f.s(0, flags="A"),
            f.c(30, b"c"), f.c(20, b"d" * 10), f.c(31, b"e", flags="FA")]
    entries, last = coalesce(segs, 1 << 16, CONTROL)
    assert last == segs[-1][1]
    run = entries[0][5]
    assert [bytes(p) for p in run[0]] == [b"a" * 10, b"b" * 10]
    assert run[1] == [segs[0][1], segs[3][1]] and run[2] == [10, 20]
    assert run[3] == [0, 3] and run[4] == [0, 3]              # entries before each segment; its index
    assert entries[1] is segs[1]                               # a run of one is the segment itself
    assert coalesce(segs, 1 << 16, CONTROL, {segs[0][0]: True})[0][0] is segs[0]    # excluded: one by one
    assert [bytes(p) for p in entries[2][5][0]] == [b"", b""]  # two acknowledgments
    assert [e[2] for e in entries[3:]] == [segs[5][2], segs[6][2], segs[7][2]]   # out of order: one by one


# ---- the corpus ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("capture", CORPUS, ids=lambda p: p.name.split(".pcap")[0])
def test_corpus_streams_and_reports_equal(capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_capture(str(capture)) as cap:
        batches = [list(b) for b in cap.keyed_batches()]
    for window in (64 << 10, 1 << 20):
        single, runs = feed_both(batches, window, skips=True)
        assert runs[0] == single[0]
        assert runs[1] == single[1]
    del batches, single, runs
    reports = []
    for off in ("1", ""):
        monkeypatch.setenv("MIGSHARK_NO_COALESCE", off)
        reports.append(json.dumps(analyze_file(str(capture), keylog=corpus_keylog(capture)).report))
    assert reports[0] == reports[1]


def test_the_coalescer_is_off_for_pure_python_and_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from dissectors.capture.scanner import compiled_coalescer

    monkeypatch.delenv("MIGSHARK_PURE_PYTHON", raising=False)
    monkeypatch.delenv("MIGSHARK_NO_COALESCE", raising=False)
    assert compiled_coalescer() is coalesce
    monkeypatch.setenv("MIGSHARK_NO_COALESCE", "1")
    assert compiled_coalescer() is None
    monkeypatch.delenv("MIGSHARK_NO_COALESCE")
    monkeypatch.setenv("MIGSHARK_PURE_PYTHON", "1")
    assert compiled_coalescer() is None
