"""Skip windows end to end: ``StreamParser.skip_ahead``/``skipped`` and ``ConnectionFacts`` returning them.

Letting bytes inside a skipped payload go past unseen must change nothing: the same records (times
included), counts, events and page ledger as feeding every byte.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import synth as S
from tcp_helpers import Flow

from dissectors.analysis.facts import ConnectionFacts
from dissectors.analysis.ledger import PageLedger
from dissectors.channels import ChannelSink, MainParser, MultifdParser, Record
from dissectors.cli.pipeline import reassemble_file
from dissectors.layers.synth import multifd_stream, precopy_stream
from dissectors.tcp import Connection, TcpTracker

STREAMS = {
    "main": (MainParser, lambda: precopy_stream(pages=40, zero_pages=5)),
    "multifd": (MultifdParser, lambda: multifd_stream(packets=6, pages_per_packet=16, sync_every=2)),
}


# -- the parser -------------------------------------------------------------------------------------------
def _chunks(data: bytes, seed: int) -> list[tuple[str, int, float]]:
    """(what, length, ts) steps covering ``data``: mostly feeds, some gaps."""
    rng = random.Random(seed)
    steps, pos, ts = [], 0, 1.0
    while pos < len(data):
        n = min(rng.choice((1, 7, 64, 700, 1000, 1448, 1448, 1448, 4095, 4096, 9000)), len(data) - pos)
        ts += 0.001
        steps.append(("gap" if rng.random() < 0.03 else "feed", n, round(ts, 6)))
        pos += n
    return steps


def _run(factory: Any, data: bytes, steps: list[tuple[str, int, float]], rng: random.Random | None) -> Any:
    """Feed ``steps``; with ``rng``, let chunks inside the skip window go past through ``skipped``."""
    parser = factory()
    records: list[Record] = []
    pos = 0
    skipped = 0
    for what, n, ts in steps:
        if what == "gap":
            records += parser.gap(n, ts)
        elif rng is not None and n <= parser.skip_ahead and rng.random() < 0.9:
            records += parser.skipped(n, ts)
            skipped += n
        elif rng is not None and 0 < parser.skip_ahead < n and rng.random() < 0.5:
            k = parser.skip_ahead                 # the window ends inside this chunk: skip up to its end
            records += parser.skipped(k, ts)
            records += parser.feed(data[pos + k:pos + n], ts)
            skipped += k
        else:
            records += parser.feed(data[pos:pos + n], ts)
        pos += n
    records += parser.eof(9.0)
    return records, parser.counts, parser.offset, skipped


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("seed", range(8))
def test_skipped_gives_the_records_of_feeding(name: str, seed: int) -> None:
    factory, build = STREAMS[name]
    data = build()
    steps = _chunks(data, seed)
    fed = _run(factory, data, steps, None)
    records, counts, offset, skipped = _run(factory, data, steps, random.Random(seed))
    assert skipped > len(data) // 20
    assert (records, counts, offset) == fed[:3]


def test_skipped_completes_the_pending_record_with_its_time() -> None:
    data = multifd_stream(packets=1, pages_per_packet=2)
    parser = MultifdParser()
    recs = parser.feed(data[:64], 1.0)                 # the hello
    assert [r.kind for r in recs] == ["multifd.hello"]
    # the packet header and its page offsets, then payload only
    pos = 64
    while not parser.skip_ahead:
        recs += parser.feed(data[pos:pos + 1], 1.5)
        pos += 1
    skip = parser.skip_ahead
    assert pos + skip == len(data)
    assert parser.skipped(skip - 10, 2.0) == []
    assert parser.skip_ahead == 10 and parser.offset == len(data) - 10
    done = parser.skipped(10, 3.0)
    assert [(r.kind, r.ts) for r in done] == [("multifd.packet", 3.0)]
    assert parser.skip_ahead == 0 and parser.offset == len(data)


def test_skipped_outside_the_window_is_refused() -> None:
    data = precopy_stream(pages=2, zero_pages=0)
    parser = MainParser()
    with pytest.raises(ValueError):
        parser.skipped(1)
    assert parser.skipped(0) == [] and parser.offset == 0
    parser.feed(data[:5], 1.0)                        # a partial header is buffered: no window
    assert parser.skip_ahead == 0
    with pytest.raises(ValueError):
        parser.skipped(1)


def test_no_window_in_opaque_mode() -> None:
    parser = MainParser()
    parser.feed(b"not a migration stream at all" * 10, 1.0)
    assert parser._opaque_from is not None
    assert parser.skip_ahead == 0


# -- ChannelSink feeding ConnectionFacts ---------------------------------------------------------------
class NoWindowSink(ChannelSink):
    """The same sink, never asking for a window."""

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
        super().data(direction, offset, data, ts)
        return 0


def _facts(run: Any, cls: type[ChannelSink]) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    ledger = PageLedger()
    seen: list[tuple[int, int, Record]] = []
    calls = 0
    facts: list[ConnectionFacts] = []

    class Counting(cls):  # type: ignore[valid-type, misc]
        def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
            nonlocal calls
            calls += 1
            return super().data(direction, offset, data, ts)

    def factory(conn: Connection) -> ChannelSink:
        f = ConnectionFacts(conn, ledger)

        def take(d: int, records: list[Record], f: ConnectionFacts = f) -> None:
            seen.extend((f.conn.index, d, rec) for rec in records)
            f.take(d, records)

        f.sink = Counting(take, last_data_ts=lambda d, conn=conn: conn.halves[d].last_data_ts)
        facts.append(f)
        return f.sink

    tracker = run(factory)
    out = []
    for f in facts:
        out.append({
            "kind": f.kind, "dirs": [(d.kind, bytes(d.first), d.end_offset) for d in f.dirs],
            "events": f.events, "malformed": f.malformed, "counts": f.counts, "hello": f.hello,
            "first_record_ts": f.first_record_ts, "features": f.features, "last_page_ts": f.last_page_ts,
            "page_records": f.page_records, "conn": f.conn.to_dict(),
            "progress_end": [d.progress.points[-1] if d.progress.points else None for d in f.dirs],
        })
        for d, h in zip(f.dirs, f.conn.halves, strict=True):
            if h.offset:
                assert d.progress.points[-1][1] == h.offset     # the series reaches the stream's end
    state = {"records": seen, "pages": vars(ledger), "connections": len(tracker.connections)}
    return out, state, calls


def _compare(run: Any, fewer: bool = True) -> None:
    """Windowed and plain facts agree; with ``fewer``, the windows saved at least half the data calls."""
    plain, plain_state, plain_calls = _facts(run, NoWindowSink)
    windowed, state, calls = _facts(run, ChannelSink)
    assert state == plain_state
    assert [{k: v for k, v in f.items() if k != "progress_end"} for f in windowed] == \
        [{k: v for k, v in f.items() if k != "progress_end"} for f in plain]
    assert [f["progress_end"][0][1] if f["progress_end"][0] else None for f in windowed] == \
        [f["progress_end"][0][1] if f["progress_end"][0] else None for f in plain]
    if fewer:
        assert calls < plain_calls / 2, (calls, plain_calls)


def _main_stream(parts: int = 6) -> bytes:
    out = S.header("pc-i440fx-7.2") + S.ram_start(total=1 << 30)
    for i in range(parts):
        out += S.ram_part([(i * 16 + j) * S.PAGE for j in range(16)])
    return out + S.eof()


def _multifd(channel: int, packets: int = 5) -> bytes:
    out = S.multifd_hello(channel)
    for i in range(packets):
        out += S.multifd_packet(i, 32, sync=i == packets - 1)
    return out


@pytest.mark.parametrize("snaplen", [262144, 1000, 96])
def test_facts_through_a_pcap(tmp_path: Path, snaplen: int) -> None:
    path = tmp_path / "mig.pcap"
    main = S.Conn(50000, 1.0).send(1.01, _main_stream()).reply(1.02, S.rp_pong(1)).close(2.0)
    conns = [main] + [S.Conn(50001 + i, 1.001 + i / 1000).send(1.1 + i / 100, _multifd(i)).close(2.0)
                      for i in range(2)]
    S.write_capture(str(path), conns, snaplen=snaplen)

    def run(factory: Any) -> TcpTracker:
        tracker, _ = reassemble_file(str(path), factory)
        return tracker

    _compare(run, fewer=snaplen > 1000)       # cut captures: the parsers lose sync, no windows


@pytest.mark.parametrize("seed", range(6))
def test_facts_with_reordering_losses_and_a_fin_inside_a_payload(seed: int) -> None:
    rng = random.Random(seed)
    stream = _multifd(0, packets=6)
    cut = len(stream) - rng.randrange(1, 4096)      # the sender stops in the middle of a page payload
    f = Flow(cport=50000 + seed)
    segs = f.handshake()
    parts = [(o, stream[o:min(o + 1448, cut)]) for o in range(0, cut, 1448)]
    for i in range(1, len(parts) - 1):
        if rng.random() < 0.05:
            parts[i], parts[i + 1] = parts[i + 1], parts[i]
    for o, p in parts:
        r = rng.random()
        if r < 0.03 and o > 1448:
            continue                                 # lost: a gap (inside a window or across its end)
        if r < 0.06:
            segs.append(f.c(o, p[:100], missing=len(p) - 100))   # cut by the snaplen
            continue
        segs.append(f.c(o, p))
        if r > 0.97:
            segs.append(f.c(o, p))                   # retransmitted
    segs.append(f.c(cut, flags="FA"))

    def run(factory: Any) -> TcpTracker:
        tracker = TcpTracker(factory)
        tracker.feed_keyed(segs)
        tracker.finish()
        return tracker

    _compare(run)
