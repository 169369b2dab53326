"""Keyed segments: the reader's keyed walk (``Capture.keyed_segments``) matches its plain one
(``tcp_segments``), ``segment_key`` builds the reader's keys (IPv4 and IPv6), and ``TcpTracker.feed_keyed``
keeps its state and times across calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from tcp_helpers import Recorders
from test_tcp_pcap import write_flow

from dissectors.capture import KeyedSegment, open_capture
from dissectors.capture.writer import PcapngWriter, tcp_frame
from dissectors.tcp import TcpTracker, segment_key

CAPTURES = sorted((Path(__file__).resolve().parent.parent / "captures").glob("*.pcap*"))


def _from_plain(seg: tuple) -> tuple:
    """A plain reader segment as a keyed one, its key built by ``segment_key``."""
    _frame, ts, src, sport, dst, dport, seq, _ack, flags, payload, missing = seg
    return (segment_key(src, sport, dst, dport), ts, seq, flags, payload, missing)


def _both(path: Path) -> tuple[tuple[TcpTracker, Recorders], tuple[TcpTracker, Recorders]]:
    """Reassemble ``path`` from the reader's keyed walk and from its plain walk keyed by ``segment_key``."""
    out = []
    for keyed in (False, True):
        recs = Recorders()
        tracker = TcpTracker(recs)
        with open_capture(path) as cap:
            if keyed:
                tracker.feed_keyed(cap.keyed_segments())
            else:
                tracker.feed_keyed(map(_from_plain, cap.tcp_segments()))
            tracker.finish()
        out.append((tracker, recs))
    return out[0], out[1]


def _assert_same(path: Path) -> None:
    (plain, plain_recs), (keyed, keyed_recs) = _both(path)
    assert [c.to_dict() for c in keyed.connections] == [c.to_dict() for c in plain.connections]
    assert [(r.pieces, r.ends) for r in keyed_recs] == [(r.pieces, r.ends) for r in plain_recs]


def _assert_same_segments(path: Path) -> None:
    with open_capture(path) as cap:
        plain = [KeyedSegment(*_from_plain(s))._replace(payload=bytes(s[9])) for s in cap.tcp_segments()]
        plain_stats, plain_warnings = cap.stats, list(cap.warnings)
        keyed = [KeyedSegment(*s)._replace(payload=bytes(s[4])) for s in cap.keyed_segments()]
        assert keyed == plain
        assert {len(s.key) for s in keyed} <= {12, 36}
        assert cap.stats == plain_stats and cap.warnings == plain_warnings


@pytest.mark.parametrize("client,server", [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")])
@pytest.mark.parametrize("snaplen", [262144, 96])
def test_keyed_pcap_flows(tmp_path: Path, client: str, server: str, snaplen: int) -> None:
    path = tmp_path / "flow.pcap"
    write_flow(path, client, server, snaplen=snaplen)
    _assert_same_segments(path)
    _assert_same(path)


def test_keyed_pcapng(tmp_path: Path) -> None:
    path = tmp_path / "flow.pcapng"
    data = bytes(range(256)) * 20
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        w.add_interface()
        w.add_interface(snaplen=80, tsresol=9)
        w.write(1.0, tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, 100, 0, "S"))
        w.write(1.1, tcp_frame("10.0.0.2", "10.0.0.1", 80, 40000, 500, 101, "SA"))
        for i, off in enumerate(range(0, len(data), 1000)):
            w.write(1.2 + i / 100, tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, 101 + off, 501, "PA",
                                             data[off:off + 1000]), interface=i % 2)
    _assert_same_segments(path)
    _assert_same(path)


@pytest.mark.parametrize("path", CAPTURES[:4], ids=lambda p: p.name)
def test_keyed_real_captures(path: Path) -> None:
    _assert_same_segments(path)
    _assert_same(path)


@pytest.mark.parametrize("client,server", [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")])
def test_keys_from_reader_and_segment_key_share_connections(tmp_path: Path, client: str, server: str) -> None:
    """A tracker fed in two calls, the first with keys built by ``segment_key``, the second with the
    reader's, sees one connection per 4-tuple, whichever call opened it."""
    path = tmp_path / "flow.pcap"
    write_flow(path, client, server)
    with open_capture(path) as cap:
        plain = list(cap.tcp_segments())
        keyed = list(cap.keyed_segments())
        recs = Recorders()
        tracker = TcpTracker(recs)
        tracker.feed_keyed(map(_from_plain, plain[:5]))
        tracker.feed_keyed(keyed[5:])
        tracker.finish()
        (conn,) = tracker.connections
        (ref, ref_recs), _ = _both(path)
        assert conn.to_dict() == ref.connections[0].to_dict()
        assert recs[0].pieces == ref_recs[0].pieces


@pytest.mark.parametrize("path", CAPTURES[:2], ids=lambda p: p.name)
def test_first_and_last_ts_and_progress_hook(path: Path) -> None:
    with open_capture(path) as cap:
        times = [seg[1] for seg in cap.tcp_segments()]
        ticks: list[int] = []
        cap.on_progress = lambda: ticks.append(cap.position)
        tracker = TcpTracker(lambda conn: None)
        tracker.feed_keyed(cap.keyed_segments())
        assert (tracker.first_ts, tracker.last_ts) == (times[0], times[-1])
        assert ticks == sorted(ticks) and len(ticks) >= 1
    tracker = TcpTracker(lambda conn: None)
    with open_capture(path) as cap:
        for batch in cap.keyed_batches():            # one call per batch of the reader
            tracker.feed_keyed(batch)
            tracker.feed_keyed([])                   # an empty call in between changes nothing
    assert (tracker.first_ts, tracker.last_ts) == (times[0], times[-1])


def test_empty_feed_keeps_times() -> None:
    tracker = TcpTracker(lambda conn: None)
    tracker.feed_keyed([])
    tracker.feed_keyed(iter(()))
    assert tracker.first_ts is None and tracker.last_ts is None


def test_segment_key_layout() -> None:
    v4 = segment_key(bytes([10, 0, 0, 1]), 40000, bytes([10, 0, 0, 2]), 4444)
    assert v4 == bytes([10, 0, 0, 1, 10, 0, 0, 2]) + (40000).to_bytes(2, "big") + (4444).to_bytes(2, "big")
    v6 = segment_key(bytes(15) + b"\x01", 1, memoryview(bytes(16)), 65535)
    assert len(v6) == 36 and v6[-4:] == b"\x00\x01\xff\xff" and isinstance(v6, bytes)
