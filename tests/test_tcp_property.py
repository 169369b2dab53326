"""Property tests: whatever order, duplication or loss, the sink sees the true bytes or declared gaps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_helpers import Flow, Recorders

from dissectors.tcp import TcpTracker

ISNS = st.one_of(st.integers(0, (1 << 32) - 1), st.integers((1 << 32) - 3000, (1 << 32) - 1))


@st.composite
def segmentation(draw: st.DrawFn, size: int) -> list[tuple[int, int]]:
    """Cut [0, size) into (start, end) pieces, plus re-segmented retransmissions overlapping them."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=20))) - {size})
    bounds = [0, *cuts, size]
    pieces = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    extra = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 600)), max_size=6))
    pieces += [(a, min(size, a + n)) for a, n in extra]
    return pieces


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), isn=ISNS, st_data=st.data())
def test_any_permutation_and_duplication_delivers_the_same_bytes(data: bytes, isn: int,
                                                                 st_data: st.DataObject) -> None:
    pieces = st_data.draw(segmentation(len(data)))
    order = st_data.draw(st.permutations(range(len(pieces) + 1)))   # the extra index is the FIN
    f = Flow(cisn=isn)
    segs = f.handshake()
    for i in order:
        if i == len(pieces):
            segs.append(f.c(len(data), flags="FA"))
        else:
            a, b = pieces[i]
            segs.append(f.c(a, data[a:b]))
    recs = Recorders()
    tracker = TcpTracker(recs, ooo_limit=1 << 20)
    tracker.feed_keyed(segs)
    tracker.finish()
    assert recs[0].stream(0) == data
    assert recs[0].ends[0] == (len(data), "fin")
    conn = tracker.connections[0]
    fed = sum(b - a for a, b in pieces)
    assert conn.retransmitted_bytes[0] == fed - len(data)
    assert conn.overlap_conflicts[0] == 0 and conn.gap_bytes[0] == 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), isn=ISNS, limit=st.integers(0, 2000),
       st_data=st.data())
def test_losses_and_small_buffer_never_fake_or_skip_bytes(data: bytes, isn: int, limit: int,
                                                          st_data: st.DataObject) -> None:
    pieces = st_data.draw(segmentation(len(data)))
    order = st_data.draw(st.permutations(range(len(pieces))))
    kept = st_data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    cut = st_data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    f = Flow(cisn=isn)
    segs = f.handshake()
    highest = 0
    for i in order:
        a, b = pieces[i]
        if kept[i]:
            if cut[i] and b - a > 1:            # snaplen cut: half captured, the rest missing
                m = (a + b) // 2
                segs.append(f.c(a, data[a:m], missing=b - m))
            else:
                segs.append(f.c(a, data[a:b]))
            highest = max(highest, b)
    recs = Recorders()
    tracker = TcpTracker(recs, ooo_limit=limit)
    tracker.feed_keyed(segs)
    tracker.finish()
    rec = recs[0]
    # The pieces tile [0, front) in order (the Recorder asserts contiguity); data is the true bytes.
    for kind, off, value in rec.pieces[0]:
        if kind == "data":
            assert data[off:off + len(value)] == value
    assert rec.fronts[0] == highest == tracker.connections[0].bytes[0]
    assert rec.ends[0] == (highest, "capture-end")
    assert tracker.connections[0].gap_bytes[0] == sum(v for k, _, v in rec.pieces[0] if k == "gap")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), isn=ISNS, limit=st.integers(0, 2000),
       end=st.sampled_from(["", "FA", "R"]), st_data=st.data())
def test_would_lose_is_what_the_end_of_the_capture_gives_up(data: bytes, isn: int, limit: int, end: str,
                                                           st_data: st.DataObject) -> None:
    """Before ``finish``, each direction's ``would_lose`` is exactly the gap bytes ``finish`` then adds (the
    holes before and between the pieces waiting, their snaplen-cut bytes, what is missing below a FIN or a
    reset's end), and ``finish`` is what makes them gaps: the live judgement counts them as the report will."""
    pieces = st_data.draw(segmentation(len(data)))
    order = st_data.draw(st.permutations(range(len(pieces) + 1)))   # the extra index is the FIN or RST
    kept = st_data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    cut = st_data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    f = Flow(cisn=isn)
    segs = f.handshake()
    for i in order:
        if i == len(pieces):
            if end == "FA":
                segs.append(f.c(len(data), flags="FA"))
            elif end == "R":
                segs.append(f.s(0, flags="R"))              # the other side resets
            continue
        a, b = pieces[i]
        if kept[i]:
            if cut[i] and b - a > 1:
                m = (a + b) // 2
                segs.append(f.c(a, data[a:m], missing=b - m))
            else:
                segs.append(f.c(a, data[a:b]))
    tracker = TcpTracker(Recorders(), ooo_limit=limit)
    tracker.feed_keyed(segs)
    conn = tracker.connections[0]
    gaps, would = conn.gap_bytes, conn.would_lose
    tracker.finish()
    assert conn.would_lose == (0, 0)
    assert conn.gap_bytes == (gaps[0] + would[0], gaps[1] + would[1])
