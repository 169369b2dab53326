"""End to end: frames written to a real pcap, read back by the capture reader, reassembled."""

from __future__ import annotations

from pathlib import Path

import pytest
from tcp_helpers import Recorders

from dissectors.tcp import TcpTracker

capture = pytest.importorskip("dissectors.capture")
writer = pytest.importorskip("dissectors.capture.writer")

STREAM = bytes((i * 31 + 7) & 0xFF for i in range(50_000))
ISN = (1 << 32) - 20_000          # wraps inside the stream


def write_flow(path: Path, client: str, server: str, snaplen: int = 262144) -> None:
    frame, seq0, sseq = writer.tcp_frame, ISN, 77
    mss = 1448
    segments = [(off, STREAM[off:off + mss]) for off in range(0, len(STREAM), mss)]
    segments[3], segments[4] = segments[4], segments[3]      # reordered
    segments.insert(10, segments[9])                          # duplicated
    del segments[20]                                          # dropped: original segment 19
    ts = 1000.0
    with writer.PcapWriter(path, linktype="ether", snaplen=snaplen) as w:
        def put(*args: object, **kw: object) -> None:
            nonlocal ts
            ts += 0.0001
            w.write(ts, frame(*args, **kw))
        put(client, server, 50000, 4444, seq0, 0, "S")
        put(server, client, 4444, 50000, sseq, seq0 + 1, "SA")
        put(client, server, 50000, 4444, seq0 + 1, sseq + 1, "A")
        for off, part in segments:
            put(client, server, 50000, 4444, seq0 + 1 + off, sseq + 1, "PA", part)
        put(client, server, 50000, 4444, seq0 + 1 + len(STREAM), sseq + 1, "FA")


def reassemble(path: Path) -> tuple[TcpTracker, Recorders]:
    recs = Recorders()
    tracker = TcpTracker(recs)
    with capture.open_capture(path) as cap:
        tracker.feed_keyed(cap.keyed_segments())
        tracker.finish()
    return tracker, recs


@pytest.mark.parametrize("client,server", [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")])
def test_pcap_round_trip(tmp_path: Path, client: str, server: str) -> None:
    path = tmp_path / "flow.pcap"
    write_flow(path, client, server)
    tracker, recs = reassemble(path)
    (conn,) = tracker.connections
    rec = recs[0]
    lost = (19 * 1448, 1448)
    assert rec.gaps(0) == [lost]
    spans = rec.data_at(0)
    assert spans == {0: STREAM[:lost[0]], sum(lost): STREAM[sum(lost):]}
    assert rec.ends[0] == (len(STREAM), "fin")
    assert conn.retransmitted_bytes[0] == 1448 and conn.handshake_ts is not None
    host = f"[{client}]" if ":" in client else client
    assert conn.to_dict()["client"] == f"{host}:50000"


def test_pcap_snaplen_96(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    write_flow(path, "192.0.2.1", "192.0.2.2", snaplen=96)
    tracker, recs = reassemble(path)
    conn = tracker.connections[0]
    captured = 96 - 54                # Ethernet + IPv4 + TCP without options
    rec = recs[0]
    for kind, off, value in rec.pieces[0]:
        if kind == "data":
            assert value == STREAM[off:off + captured]
    assert conn.bytes[0] == len(STREAM)
    delivered = sum(len(v) for k, _, v in rec.pieces[0] if k == "data")
    assert delivered + conn.gap_bytes[0] == len(STREAM)
    assert rec.ends[0] == (len(STREAM), "fin")
