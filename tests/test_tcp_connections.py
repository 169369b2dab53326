"""Connection tracking: roles, handshake times, RST, close, SYN retransmission, port reuse, IPv6."""

from __future__ import annotations

import json

import pytest
from tcp_helpers import MASK, Flow, Recorders, run

from dissectors.tcp import TcpTracker
from dissectors.tcp.tracker import RESET_GRACE


def test_rst_ends_both_directions() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, b"abc"), f.s(0, b"xy"), f.s(2, flags="RA"), f.c(3, b"late")]
    tracker, recs = run(segs)
    (conn,) = tracker.connections
    assert recs[0].ends == [(3, "rst"), (2, "rst")]
    assert conn.closed_by == "server" and conn.state == "reset"
    assert conn.rst_ts == (None, 0.006)
    assert conn.ignored_bytes == (4, 0)
    assert conn.frames == (4, 3)


def test_rst_flushes_buffered_data_with_gap() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, b"abc"), f.c(10, b"klm"), f.c(13, flags="RA")]
    _, recs = run(segs)
    assert recs[0].pieces[0] == [("data", 0, b"abc"), ("gap", 3, 7), ("data", 10, b"klm")]
    assert recs[0].ends[0] == (13, "rst")


DATA = bytes(range(256)) * 16


def test_segments_after_a_reset_fill_the_holes_below_what_the_stream_carried() -> None:
    """On a path that reorders, segments sent before a reset arrive after it: those filling holes are
    data (tshark reassembles them too); the stream ends, reset, once they are in; bytes beyond what the
    stream had carried at the reset are not data."""
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:1000]), f.c(2000, DATA[2000:3000]), f.s(0, flags="RA"),
                            f.c(1000, DATA[1000:1500]), f.c(3000, DATA[3000:3100]), f.c(1500, DATA[1500:2000])]
    tracker, recs = run(segs)
    conn = tracker.connections[0]
    assert recs[0].stream(0) == DATA[:3000] and recs[0].gaps(0) == []
    assert recs[0].ends == [(3000, "rst"), (0, "rst")]
    assert conn.gap_bytes == (0, 0) and conn.retransmitted_bytes == (0, 0)
    assert conn.ignored_bytes[0] == 100
    assert conn.rst_ts == (None, 0.006) and conn.state == "reset" and conn.closed_by == "server"


def test_a_reset_connection_waiting_for_holes_is_reset_not_closed() -> None:
    f = Flow()
    tracker = TcpTracker(Recorders())
    tracker.feed_keyed(f.handshake() + [f.c(0, DATA[:1000]), f.c(2000, DATA[2000:3000]), f.s(0, flags="RA")])
    conn = tracker.connections[0]
    assert conn.state == "reset" and not conn.closed
    tracker.feed_keyed([f.c(1000, DATA[1000:2000])])
    assert conn.closed and conn.end_how == ("rst", "rst")


def test_holes_of_a_reset_connection_are_gaps_once_its_grace_has_passed() -> None:
    """A segment arriving long after the reset (more than RESET_GRACE) is no reordering: the holes were
    declared gaps before it, at the connection's last segment time, and it counts as retransmitted. Any
    later segment of the capture (here another connection's, in a later batch) gives up the holes too."""
    for other in (False, True):
        f, g = Flow(), Flow(cport=40001)
        recs = Recorders()
        tracker = TcpTracker(recs)
        tracker.feed_keyed(f.handshake() + [f.c(0, DATA[:1000]), f.c(2000, DATA[2000:3000]), f.s(0, flags="RA")])
        late = 0.006 + RESET_GRACE + 0.5
        if other:
            tracker.feed_keyed([(g.c(0, b"x")[0], late, *g.c(0, b"x")[2:])])
            assert tracker.connections[0].closed          # a live watcher sees the end without waiting
        tracker.feed_keyed([(f.c(1000, DATA[1000:2000])[0], late + 0.1, *f.c(1000, DATA[1000:2000])[2:])])
        tracker.finish()
        conn = tracker.connections[0]
        assert recs[0].gaps(0) == [(1000, 1000)]
        assert recs[0].ends[0] == (3000, "rst")
        assert recs[0].last_ts[0] == 0.006                  # declared at the connection's last segment time
        assert conn.retransmitted_bytes[0] == 1000


def test_a_fin_before_the_reset_still_ends_the_stream() -> None:
    """A FIN seen before the reset keeps its offset as the stream's end; segments after the reset fill
    the holes below it."""
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:1000]), f.c(2000, DATA[2000:2500], flags="FPA"), f.s(0, flags="RA"),
                            f.c(1000, DATA[1000:2000]), f.c(2500, b"more")]
    tracker, recs = run(segs)
    assert recs[0].stream(0) == DATA[:2500]
    assert recs[0].ends[0] == (2500, "fin")
    assert tracker.connections[0].ignored_bytes[0] == 4


def _reset_after(f: Flow, rst_offset: int, *, before: list[tuple] | None = None, ooo_limit: int = 8 << 20,
                 flags: str = "RA") -> tuple[TcpTracker, Recorders]:
    """Feed a handshake, the client's first 1000 bytes (``before``: other segments instead) and an RST from
    the client at ``rst_offset``; the tracker is left open (no finish)."""
    recs = Recorders()
    tracker = TcpTracker(recs, ooo_limit=ooo_limit)
    segs = before if before is not None else [f.c(0, DATA[:1000])]
    tracker.feed_keyed(f.handshake() + segs + [f.s(0, b"xy"), f.c(rst_offset, flags=flags)])
    return tracker, recs


@pytest.mark.parametrize("cisn", [1000, MASK - 1500])   # the second wraps the sequence space mid-stream
@pytest.mark.parametrize("flags", ["R", "RA"])
def test_a_reset_right_after_a_lost_segment_shows_the_hole_up_to_its_sequence_number(cisn: int, flags: str) -> None:
    """An RST carries its sender's SND.NXT: the segment before it that the capture missed (or that the path
    lost, the reset cancelling its retransmission) is a hole, live (would_lose) and, once the grace is over,
    a gap in the report. The other direction ends where it was."""
    f = Flow(cisn=cisn)
    tracker, recs = _reset_after(f, 2000, flags=flags)
    conn = tracker.connections[0]
    assert conn.would_lose == (1000, 0) and conn.state == "reset" and not conn.closed
    assert recs[0].ends == [None, (2, "rst")]
    ack = f.s(2, flags="A")
    tracker.feed_keyed([(ack[0], 0.006 + RESET_GRACE + 0.5, *ack[2:])])   # a segment after the grace
    assert conn.closed and recs[0].gaps(0) == [(1000, 1000)]
    assert recs[0].ends == [(2000, "rst"), (2, "rst")]
    assert conn.gaps == ([(1000, 1000)], []) and conn.gap_bytes == (1000, 0)
    assert conn.to_dict()["directions"][0]["gaps"] == [[1000, 1000]]


def test_the_segment_before_the_reset_arriving_within_the_grace_fills_the_hole() -> None:
    f = Flow()
    tracker, recs = _reset_after(f, 2000)
    tracker.feed_keyed([f.c(1000, DATA[1000:2000])])
    conn = tracker.connections[0]
    assert conn.closed and conn.would_lose == (0, 0)
    tracker.finish()
    assert recs[0].stream(0) == DATA[:2000] and recs[0].ends[0] == (2000, "rst")
    assert conn.gap_bytes == (0, 0)


def test_a_reset_ahead_of_what_waits_out_of_order_adds_the_hole_after_it() -> None:
    f = Flow()
    tracker, recs = _reset_after(f, 4000, before=[f.c(0, DATA[:1000]), f.c(2000, DATA[2000:3000])])
    assert tracker.connections[0].would_lose == (2000, 0)
    tracker.finish()
    assert recs[0].gaps(0) == [(1000, 1000), (3000, 1000)] and recs[0].ends[0] == (4000, "rst")


def test_a_reset_after_a_fin_ends_the_stream_at_the_fin() -> None:
    """An RST after the sender's FIN carries the FIN's sequence number + 1: the FIN's offset stays the end."""
    f = Flow()
    before = [f.c(0, DATA[:1000]), f.c(2000, DATA[2000:2500], flags="FPA")]
    tracker, recs = _reset_after(f, 2501, before=before)
    assert tracker.connections[0].would_lose == (1000, 0)
    tracker.finish()
    assert recs[0].gaps(0) == [(1000, 1000)] and recs[0].ends[0] == (2500, "fin")


@pytest.mark.parametrize("ahead", [4097, 1 << 30, (1 << 31) + 12345, 3 << 30])
def test_a_reset_with_a_wild_sequence_number_adds_nothing(ahead: int) -> None:
    """A stray or forged RST's sequence number is random: more than the out-of-order bound ahead of what
    was carried (or, wrapped, behind it), it invents no gap."""
    f = Flow()
    tracker, recs = _reset_after(f, 1000 + ahead, ooo_limit=4096)
    conn = tracker.connections[0]
    assert conn.closed and conn.would_lose == (0, 0)
    assert recs[0].ends == [(1000, "rst"), (2, "rst")] and conn.gap_bytes == (0, 0)


def test_a_reset_the_out_of_order_bound_ahead_still_counts() -> None:
    f = Flow()
    tracker, recs = _reset_after(f, 1000 + 4096, ooo_limit=4096)
    assert tracker.connections[0].would_lose == (4096, 0)
    tracker.finish()
    assert recs[0].gaps(0) == [(1000, 4096)] and recs[0].ends[0] == (5096, "rst")


@pytest.mark.parametrize("rst_offset", [0, 600, 1000])
def test_a_reset_answering_a_segment_behind_the_front_adds_nothing(rst_offset: int) -> None:
    """An RST answering a segment takes that segment's ACK as its sequence number: at or behind what its
    sender carried, nothing to add."""
    f = Flow()
    tracker, recs = _reset_after(f, rst_offset)
    conn = tracker.connections[0]
    assert conn.closed and conn.would_lose == (0, 0)
    assert recs[0].ends == [(1000, "rst"), (2, "rst")] and conn.gap_bytes == (0, 0)


def test_a_reset_from_a_side_that_sent_nothing_seen_adds_nothing() -> None:
    """Without a SYN or a segment of its own before, the RST's sequence number maps to nothing known."""
    f = Flow()
    tracker, recs = run([f.c(0, DATA[:1000]), f.s(7777, flags="RA")])
    assert recs[0].ends == [(1000, "rst"), (0, "rst")] and tracker.connections[0].gap_bytes == (0, 0)


def test_simultaneous_close() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, b"hi"), f.s(0, b"yo"), f.s(2, flags="FA"), f.c(2, flags="FA"),
                            f.c(3, flags="A"), f.s(3, flags="A")]
    tracker, recs = run(segs)
    conn = tracker.connections[0]
    assert recs[0].ends == [(2, "fin"), (2, "fin")]
    assert conn.closed_by == "server" and conn.state == "closed"
    assert conn.fin_ts == (0.007, 0.006)


def test_syn_retransmission_is_not_a_new_connection() -> None:
    f = Flow()
    segs = [f.syn(), f.syn(), f.syn(), f.synack(), f.synack(), f.ack(), f.c(0, b"data")]
    tracker, recs = run(segs)
    (conn,) = tracker.connections
    assert conn.syn_ts == 0.001 and conn.synack_ts == 0.004 and conn.handshake_ts == 0.006
    assert recs[0].stream(0) == b"data"


def test_port_reuse_after_close_and_after_rst() -> None:
    a = Flow(cisn=100, sisn=200)
    segs = a.handshake() + [a.c(0, b"one"), a.c(3, flags="FA"), a.s(0, flags="FA"), a.c(4, flags="A")]
    b = Flow(cisn=100, sisn=900, ts=a.ts)     # same ISN: still a new connection (closed)
    segs += b.handshake() + [b.c(0, b"two"), b.s(0, flags="RA")]
    c = Flow(cisn=7777, sisn=1, ts=b.ts)
    segs += c.handshake() + [c.c(0, b"three")]
    tracker, recs = run(segs)
    assert [conn.index for conn in tracker.connections] == [0, 1, 2]
    assert [r.stream(0) for r in recs] == [b"one", b"two", b"three"]
    assert [r.ends[0][1] for r in recs] == ["fin", "rst", "capture-end"]
    assert tracker.connections[0].frames == (5, 2)


def test_new_isn_on_open_connection_supersedes_it() -> None:
    a = Flow(cisn=100)
    segs = a.handshake() + [a.c(0, b"old"), a.c(10, b"lost-before")]
    b = Flow(cisn=5_000_000, ts=a.ts)
    segs += b.handshake() + [b.c(0, b"new")]
    tracker, recs = run(segs)
    assert len(tracker.connections) == 2
    assert recs[0].pieces[0] == [("data", 0, b"old"), ("gap", 3, 7), ("data", 10, b"lost-before")]
    assert recs[0].ends == [(21, "superseded"), (0, "superseded")]
    assert recs[1].stream(0) == b"new"


def test_synless_connection_then_syn_is_new() -> None:
    a = Flow(cisn=100)
    segs = [a.c(0, b"mid-stream")]
    b = Flow(cisn=100, ts=a.ts)
    segs += b.handshake() + [b.c(0, b"fresh")]
    tracker, recs = run(segs)
    assert [c.syn_seen for c in tracker.connections] == [False, True]
    assert [r.stream(0) for r in recs] == [b"mid-stream", b"fresh"]


def test_role_guesses() -> None:
    # SYN-ACK first: the SYN was before the capture
    f = Flow(cport=50000, sport=49152)
    t, _ = run([f.synack(), f.ack(), f.c(0, b"x")])
    conn = t.connections[0]
    assert conn.role_guess == "synack" and not conn.syn_seen
    assert conn.client == ("10.0.0.1", 50000) and conn.handshake_ts is None
    assert conn.bytes == (1, 0)
    # both ports ephemeral, server sends first: first-packet guess gets it backwards
    f = Flow(cport=50000, sport=49152)
    t, _ = run([f.s(0, b"reply"), f.c(0, b"x")])
    assert t.connections[0].role_guess == "first-packet"
    assert t.connections[0].client == ("10.0.0.2", 49152)
    # ... unless the server port is known
    f = Flow(cport=50000, sport=49152)
    t, _ = run([f.s(0, b"reply"), f.c(0, b"x")], server_ports={49152})
    assert t.connections[0].role_guess == "port"
    assert t.connections[0].server == ("10.0.0.2", 49152)


def test_ipv6_and_to_dict_is_json() -> None:
    f = Flow(cip=bytes(15) + b"\x01", sip=bytes.fromhex("fe800000000000000000000000000002"))
    tracker, recs = run(f.handshake() + [f.c(0, b"abc"), f.s(0, b"de")])
    (conn,) = tracker.connections                 # 36-byte keys: both directions find the one connection
    d = conn.to_dict()
    assert d["client"] == "[::1]:40000" and d["server"] == "[fe80::2]:4444"
    assert d["directions"][0]["bytes"] == 3 and d["directions"][0]["end"] == "capture-end"
    assert conn.frames == (3, 2) and conn.handshake_ts == 0.003
    assert (recs[0].stream(0), recs[0].stream(1)) == (b"abc", b"de")
    json.dumps(d)


def test_ipv6_server_first_by_port() -> None:
    prefix = bytes.fromhex("20010db8") + bytes(11)           # 2001:db8::/32
    f = Flow(cip=prefix + b"\x01", sip=prefix + b"\x02", cport=50000, sport=4444)
    tracker, recs = run([f.s(0, b"reply"), f.c(0, b"x"), f.s(5, b"!")])
    (conn,) = tracker.connections
    assert conn.role_guess == "port"
    assert conn.client == ("2001:db8::1", 50000) and conn.server == ("2001:db8::2", 4444)
    assert (recs[0].stream(0), recs[0].stream(1)) == (b"x", b"reply!")


def test_several_connections_interleaved_in_first_seen_order() -> None:
    flows = [Flow(cport=40000 + i, cisn=i * 1000) for i in range(4)]
    segs = []
    for f in flows:
        segs += f.handshake()
    for step in range(3):
        for i, f in enumerate(flows):
            segs.append(f.c(step * 2, bytes([i, step])))
    tracker, recs = run(segs)
    assert [c.client[1] for c in tracker.connections] == [40000, 40001, 40002, 40003]
    assert [r.stream(0) for r in recs] == [bytes([i, 0, i, 1, i, 2]) for i in range(4)]


def test_pure_acks_take_the_fast_path_and_are_counted() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, b"a" * 100), f.s(0, flags="A"), f.c(100, b"b" * 100), f.s(0, flags="A")]
    tracker, _ = run(segs)
    conn = tracker.connections[0]
    assert conn.frames == (4, 3)
    assert conn.last_ts == 0.007 and conn.first_ts == 0.001
    assert conn.first_data_ts == (0.004, None)


def test_finish_is_idempotent_and_keeps_closed() -> None:
    f = Flow()
    tracker, recs = run(f.handshake() + [f.c(0, b"abc")])
    tracker.finish()
    assert recs[0].ends[0] == (3, "capture-end")
