"""Byte-exact reassembly of one direction: wrap, retransmissions, reordering, drops, snaplen cuts."""

from __future__ import annotations

from tcp_helpers import Flow, Recorders, chunks, run

from dissectors.tcp import TcpTracker

DATA = bytes(range(256)) * 40  # 10,240 bytes


def test_in_order_with_handshake() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(off, part) for off, part in chunks(DATA, 1000)]
    segs += [f.s(0, flags="A"), f.c(len(DATA), flags="FA"), f.s(0, flags="FA"), f.c(len(DATA) + 1, flags="A")]
    tracker, recs = run(segs)
    (conn,) = tracker.connections
    rec = recs[0]
    assert rec.stream(0) == DATA
    assert rec.ends == [(len(DATA), "fin"), (0, "fin")]
    assert conn.bytes == (len(DATA), 0)
    assert conn.syn_seen and conn.role_guess == "syn"
    assert (conn.syn_ts, conn.synack_ts, conn.handshake_ts) == (0.001, 0.002, 0.003)
    assert conn.first_data_ts[0] == 0.004
    assert conn.retransmitted_bytes == (0, 0) and conn.gaps == ([], [])
    assert conn.closed_by == "client" and conn.state == "closed"
    assert conn.frames == (3 + 11 + 1, 3)


def test_isn_near_wrap() -> None:
    f = Flow(cisn=(1 << 32) - 3000, sisn=(1 << 32) - 1)
    segs = f.handshake() + [f.c(off, part) for off, part in chunks(DATA, 700)] + [f.c(len(DATA), flags="FA")]
    segs.append(f.s(0, b"reply", flags="PA"))
    tracker, recs = run(segs)
    assert recs[0].stream(0) == DATA
    assert recs[0].stream(1) == b"reply"
    assert recs[0].ends[0] == (len(DATA), "fin")
    assert tracker.connections[0].bytes == (len(DATA), 5)


def test_wrap_without_syn_and_reordered_across_the_wrap() -> None:
    f = Flow(cisn=(1 << 32) - 2000)
    parts = [f.c(off, part) for off, part in chunks(DATA, 1000)]
    parts[2], parts[3] = parts[3], parts[2]      # offsets 2000 (seq 0 after wrap) and 3000 swapped
    tracker, recs = run(parts)
    assert recs[0].stream(0) == DATA
    conn = tracker.connections[0]
    assert not conn.syn_seen and conn.role_guess == "port"
    assert conn.client == ("10.0.0.1", 40000) and conn.server == ("10.0.0.2", 4444)


def test_many_wraps_long_stream() -> None:
    f = Flow(cisn=0xFFFF0000)
    block = bytes(60000)
    segs = [f.c(i * 60000, block) for i in range(150)]  # 9 MB: more than 2 wraps of 2^32? no: exact offsets
    tracker, recs = run(segs, tail_segments=0)
    assert tracker.connections[0].bytes[0] == 150 * 60000
    assert recs[0].fronts[0] == 150 * 60000


def test_duplicates_counted_once() -> None:
    f = Flow()
    segs = f.handshake()
    for off, part in chunks(DATA, 1000):
        segs.append(f.c(off, part))
        if off % 3000 == 0:
            segs.append(f.c(off, part))
    tracker, recs = run(segs)
    conn = tracker.connections[0]
    assert recs[0].stream(0) == DATA
    assert conn.retransmitted_bytes == (4 * 1000, 0)
    assert conn.overlap_conflicts == (0, 0)


def test_overlapping_retransmission_with_different_content() -> None:
    f = Flow()
    changed = bytearray(DATA[500:1500])
    changed[10] ^= 0xFF
    changed[20] ^= 0xFF
    segs = f.handshake() + [f.c(0, DATA[:1000]), f.c(1000, DATA[1000:2000]),
                            f.c(500, bytes(changed)),              # overlaps 500..1500, 2 bytes differ
                            f.c(1500, DATA[1500:2500])]            # partial overlap, same content
    tracker, recs = run(segs)
    conn = tracker.connections[0]
    assert recs[0].stream(0) == DATA[:2500]
    assert conn.retransmitted_bytes[0] == 1000 + 500
    assert conn.overlap_conflicts[0] == 2
    assert conn.conflict_offsets[0] == [510]


def test_conflicts_beyond_tail_are_not_compared() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(off, part) for off, part in chunks(DATA, 1000)]
    segs.append(f.c(0, bytes(1000)))
    tracker, _ = run(segs, tail_segments=2)
    conn = tracker.connections[0]
    assert conn.retransmitted_bytes[0] == 1000
    assert conn.overlap_conflicts[0] == 0


def test_reordering_buffers_and_delivers_in_order() -> None:
    f = Flow()
    parts = [f.c(off, part) for off, part in chunks(DATA, 1000)]
    order = [0, 3, 1, 2, 6, 5, 4, 7, 9, 8, 10]
    tracker, recs = run(f.handshake() + [parts[i] for i in order])
    assert recs[0].stream(0) == DATA
    assert tracker.connections[0].retransmitted_bytes == (0, 0)


def test_drop_reports_exact_gap_at_finish() -> None:
    f = Flow()
    parts = [f.c(off, part) for off, part in chunks(DATA, 1000)]
    del parts[4]          # bytes 4000..5000 never captured
    tracker, recs = run(f.handshake() + parts)
    rec = recs[0]
    assert rec.gaps(0) == [(4000, 1000)]
    got = rec.data_at(0)
    assert got[0] == DATA[:4000] and got[5000] == DATA[5000:]
    assert rec.ends[0] == (len(DATA), "capture-end")
    conn = tracker.connections[0]
    assert conn.gaps[0] == [(4000, 1000)] and conn.gap_bytes[0] == 1000
    assert conn.bytes[0] == len(DATA)


def test_gap_before_fin_is_declared_at_fin_when_stream_ends() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:1000]), f.c(2000, DATA[2000:3000]), f.c(3000, flags="FA")]
    tracker, recs = run(segs)
    assert recs[0].gaps(0) == [(1000, 1000)]
    assert recs[0].ends[0] == (3000, "fin")


def test_ooo_limit_declares_gap_early() -> None:
    f = Flow()
    parts = [f.c(off, part) for off, part in chunks(DATA, 1000)]
    recs = Recorders()
    tracker = TcpTracker(recs, ooo_limit=2500)
    tracker.feed_keyed(f.handshake() + [parts[0]] + parts[2:5])
    rec = recs[0]
    # 3000 bytes buffered > 2500: the hole 1000..2000 is given up and everything buffered delivered
    assert rec.gaps(0) == [(1000, 1000)]
    assert rec.fronts[0] == 5000
    tracker.feed_keyed([parts[1]])      # arrives too late: counted as retransmitted, not delivered
    tracker.feed_keyed(parts[5:])
    tracker.finish()
    assert rec.fronts[0] == len(DATA)
    assert tracker.connections[0].retransmitted_bytes[0] == 1000


def test_snaplen_cut_segments_alternate_data_and_gaps() -> None:
    f = Flow()
    mss = 1448
    captured = 30      # snaplen 96 - 66 bytes of Ethernet/IPv4/TCP-with-timestamps headers
    stream = bytes((i * 7) & 0xFF for i in range(mss * 5))
    segs = f.handshake() + [f.c(off, stream[off:off + captured], missing=mss - captured)
                            for off in range(0, len(stream), mss)]
    tracker, recs = run(segs)
    rec = recs[0]
    assert rec.gaps(0) == [(off + captured, mss - captured) for off in range(0, len(stream), mss)]
    assert rec.data_at(0) == {off: stream[off:off + captured] for off in range(0, len(stream), mss)}
    conn = tracker.connections[0]
    assert conn.bytes[0] == len(stream)
    assert conn.gap_bytes[0] == 5 * (mss - captured)


def test_cut_segment_out_of_order_superseded_by_full_copy() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:1000]),
                            f.c(2000, DATA[2000:2030], missing=970),   # cut, out of order
                            f.c(2000, DATA[2000:3000]),                # full copy, also buffered
                            f.c(1000, DATA[1000:2000])]
    tracker, recs = run(segs)
    assert recs[0].stream(0) == DATA[:3000]
    assert tracker.connections[0].retransmitted_bytes[0] == 1000


def test_cut_segment_in_order_then_full_retransmission_counts_retransmitted() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:30], missing=970), f.c(0, DATA[:1000]), f.c(1000, DATA[1000:2000])]
    tracker, recs = run(segs)
    assert recs[0].gaps(0) == [(30, 970)]
    assert tracker.connections[0].retransmitted_bytes[0] == 1000


def test_tfo_data_in_syn() -> None:
    f = Flow()
    segs = [f.syn(b"hello"), f.synack(), f.c(5, flags="A"), f.c(5, b" world"), f.syn(b"hello")]
    tracker, recs = run(segs)
    assert recs[0].stream(0) == b"hello world"
    conn = tracker.connections[0]
    assert len(tracker.connections) == 1
    assert conn.retransmitted_bytes[0] == 5 and conn.handshake_ts == 0.003


def test_bytes_after_fin_ignored_and_counted() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:1000], flags="FPA"), f.c(1001, b"junk"), f.c(500, DATA[500:1500])]
    tracker, recs = run(segs)
    assert recs[0].stream(0) == DATA[:1000]
    assert recs[0].ends[0] == (1000, "fin")
    conn = tracker.connections[0]
    assert conn.ignored_bytes[0] == 4 + 500 and conn.retransmitted_bytes[0] == 500
    assert conn.fin_ts[0] == 0.004


def test_fin_out_of_order_waits_for_data() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:1000]), f.c(2000, flags="FA"), f.c(1000, DATA[1000:2000])]
    tracker, recs = run(segs)
    assert recs[0].stream(0) == DATA[:2000]
    assert recs[0].ends[0] == (2000, "fin")


def test_buffered_data_beyond_late_fin_is_ignored() -> None:
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:1000]), f.c(2000, DATA[2000:3000]), f.c(1500, flags="FA"),
                            f.c(1000, DATA[1000:2000])]
    tracker, recs = run(segs)
    assert recs[0].stream(0) == DATA[:1500]
    conn = tracker.connections[0]
    assert conn.ignored_bytes[0] == 1000 + 500


def test_one_segment_per_call_and_all_at_once_agree() -> None:
    """The state (including the last time seen) carries over from one ``feed_keyed`` call to the next."""
    f = Flow(cisn=(1 << 32) - 5000)
    parts = [f.c(off, part) for off, part in chunks(DATA, 999)]
    parts.insert(5, parts[3])
    parts[7], parts[8] = parts[8], parts[7]
    segs = f.handshake() + parts + [f.s(0, flags="A")] * 3
    a, ra = run(segs)
    recs = Recorders()
    b = TcpTracker(recs)
    for seg in segs:
        b.feed_keyed([seg])
    b.finish()
    assert ra[0].pieces == recs[0].pieces
    assert a.connections[0].to_dict() == b.connections[0].to_dict()
    assert (a.first_ts, a.last_ts) == (b.first_ts, b.last_ts) == (segs[0][1], segs[-1][1])


def test_no_sink_still_tracks() -> None:
    f = Flow()
    tracker = TcpTracker(lambda conn: None)
    tracker.feed_keyed(f.handshake() + [f.c(off, part) for off, part in chunks(DATA, 1000)])
    tracker.finish()
    assert tracker.connections[0].bytes == (len(DATA), 0)


def test_a_late_fin_trims_every_buffered_piece_beyond_it() -> None:
    """Buffered pieces are sorted by start, not end: a FIN below the end of one that is not the last buffered
    still cuts it (else the bytes beyond the FIN were delivered and the stream never reached its FIN)."""
    f = Flow()
    segs = f.handshake() + [f.c(0, DATA[:1000]), f.c(1100, DATA[1100:1500]), f.c(1200, DATA[1200:1300]),
                            f.c(1400, flags="FA"), f.c(1000, DATA[1000:1100])]
    tracker, recs = run(segs)
    assert recs[0].stream(0) == DATA[:1400]
    assert recs[0].ends[0] == (1400, "fin")
    assert tracker.connections[0].ignored_bytes[0] == 100
