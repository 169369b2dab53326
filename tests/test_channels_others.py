# SPDX-License-Identifier: GPL-2.0-or-later
"""MultifdParser, ReturnPathParser, TlsParser and identify_stream."""

from __future__ import annotations

import pytest
from channel_helpers import bytewise, key, kinds, whole

from dissectors.channels import MultifdParser, ReturnPathParser, TlsParser, identify_stream
from dissectors.layers.multifd import MultifdDeviceStatePacket
from dissectors.layers.return_path import (
    RecvBitmapDump,
    RpMessage,
    RpPong,
    RpRecvBitmap,
    RpReqPages,
    RpReqPagesId,
    RpResumeAck,
    RpShut,
)
from dissectors.layers.synth import multifd_packet, multifd_stream, precopy_stream, ram_pages
from dissectors.layers.tls import TlsHandshakeStart, TlsRecordHeader

# -- multifd ---------------------------------------------------------------------------------------

def test_multifd_stream() -> None:
    data = multifd_stream(packets=3, pages_per_packet=5, channel_id=2, sync_every=3)
    p = MultifdParser()
    recs = whole(p, data)
    assert kinds(recs) == ["multifd.hello"] + ["multifd.packet"] * 3 + ["multifd.sync"]
    assert recs[0].fields == {"version": 1, "uuid": "00010203-0405-0607-0809-0a0b0c0d0e0f", "id": 2}
    assert recs[1].fields["block"] == "pc.ram" and recs[1].fields["compression"] == "nocomp"
    assert recs[1].length == 1344 + 5 * 4096 and p.counts["multifd.normal_pages"] == 15
    assert recs[-1].fields["next_packet_size"] == 0 and recs[-1].length == 1344
    assert key(bytewise(MultifdParser(), data)) == key(recs)


def test_multifd_zero_pages_and_device_state() -> None:
    dev = bytes(MultifdDeviceStatePacket(flags="DEVICE_STATE", idstr=b"0000:00:04.0/vfio", next_packet_size=10))
    data = multifd_stream(packets=0) + multifd_packet(1, 2, zero=3) + dev + b"B" * 10 + multifd_packet(2, 1)
    p = MultifdParser()
    recs = whole(p, data)
    assert kinds(recs) == ["multifd.hello", "multifd.packet", "multifd.device_state", "multifd.packet"]
    assert p.counts["multifd.zero_pages"] == 3 and p.counts["multifd.normal_pages"] == 3
    assert recs[2].fields["idstr"] == "0000:00:04.0/vfio" and recs[2].length == 276 + 10


def test_multifd_64k_pages() -> None:
    data = multifd_stream(packets=2, pages_per_packet=8, page_size=65536)
    p = MultifdParser(page_size=65536)
    recs = whole(p, data)
    assert kinds(recs) == ["multifd.hello", "multifd.packet", "multifd.packet"]
    assert recs[1].length == 320 + 64 + 8 * 65536


def test_multifd_gap_resynchronises_on_magic() -> None:
    data = multifd_stream(packets=4, pages_per_packet=4)
    pkt = 1344 + 4 * 4096
    cut = 64 + pkt + 500  # inside the second packet's header
    p = MultifdParser()
    recs = p.feed(data[:cut], 0.0) + p.gap(1000, 1.0) + p.feed(data[cut + 1000:], 2.0) + p.eof(3.0)
    assert kinds(recs) == ["multifd.hello", "multifd.packet", "gap", "truncated", "opaque", "multifd.packet",
                           "multifd.packet"]
    assert recs[3].offset == 64 + pkt and recs[3].length == 500  # the partial header before the gap
    assert recs[4].offset == cut + 1000 and recs[5].offset == 64 + 2 * pkt
    assert recs[5].fields["packet_num"] == 3


def test_multifd_gap_inside_data_keeps_sync() -> None:
    data = multifd_stream(packets=2, pages_per_packet=4)
    p = MultifdParser()
    recs = p.feed(data[:64 + 2000], 0.0) + p.gap(5000, 1.0) + p.feed(data[64 + 7000:], 2.0) + p.eof(3.0)
    assert kinds(recs) == ["multifd.hello", "gap", "multifd.packet", "multifd.packet"]
    assert recs[2].fields["gap"] is True


def test_multifd_absurd_size_and_bad_magic() -> None:
    bad = bytearray(multifd_packet(1, 1, flags=0x02))      # zlib: next_packet_size is what follows
    bad[20:24] = (0xFFFFFFFF).to_bytes(4, "big")
    recs = whole(MultifdParser(), multifd_stream(packets=0) + bytes(bad))
    assert kinds(recs) == ["multifd.hello", "malformed", "opaque"]
    assert "next_packet_size" in recs[1].fields["reason"]
    assert kinds(whole(MultifdParser(), b"QEVM" + b"\0" * 100)) == ["malformed", "opaque"]


def test_multifd_nocomp_ignores_next_packet_size() -> None:
    # QEMU 7.2-8.2 leave the previous packet's next_packet_size in a packet without pages (seen in a
    # real 7.2 capture: normal_pages 0, next_packet_size 0x80000, nothing follows); nocomp receivers
    # read normal_pages x page_size and never look at it.
    stale = bytearray(multifd_packet(2, 0))
    stale[20:24] = (0x80000).to_bytes(4, "big")
    data = multifd_stream(packets=0) + bytes(stale) + multifd_packet(3, 1)
    recs = whole(MultifdParser(), data)
    assert kinds(recs) == ["multifd.hello", "multifd.packet", "multifd.packet"]
    assert recs[1].fields["next_packet_size_ignored"] is True
    assert recs[1].length == len(stale)


def test_multifd_truncated() -> None:
    data = multifd_stream(packets=1, pages_per_packet=2)
    recs = whole(MultifdParser(), data[:-100])
    assert kinds(recs) == ["multifd.hello", "truncated"] and recs[1].fields["missing"] == 100


# -- return path -----------------------------------------------------------------------------------

def rp_stream() -> bytes:
    return b"".join(bytes(x) for x in [
        RpMessage() / RpPong(value=1),
        RpMessage() / RpReqPagesId(start=0x1000, len=4096, block=b"pc.ram"),
        RpMessage() / RpReqPages(start=0x9000, len=8192),
        RpMessage() / RpRecvBitmap(block=b"pc.ram") / RecvBitmapDump(bitmap=b"\x0f" * 16),
        RpMessage() / RpResumeAck(),
        RpMessage(type=7),
        RpMessage() / RpShut(status=0),
    ])


def test_return_path_messages() -> None:
    data = rp_stream()
    p = ReturnPathParser()
    recs = whole(p, data)
    assert kinds(recs) == ["rp.pong", "rp.req_pages", "rp.req_pages", "rp.recv_bitmap", "rp.resume_ack",
                           "rp.switchover_ack", "rp.shut"]
    assert recs[2].fields == {"type": "REQ_PAGES", "len": 8192, "start": 0x9000, "block": "pc.ram"}
    assert recs[3].length == 4 + 7 + 8 + 16 + 8 and recs[3].fields["bitmap_size"] == 16
    assert key(bytewise(ReturnPathParser(), data)) == key(recs)
    assert recs[0].layer()[RpPong].value == 1


def test_return_path_bad_messages() -> None:
    assert kinds(whole(ReturnPathParser(), bytes.fromhex("0002 0008") + b"\0" * 8)) == ["malformed", "opaque"]
    bad_end = bytes(RpMessage() / RpRecvBitmap(block=b"x") / RecvBitmapDump(bitmap=b"\0" * 8, ending=5))
    assert kinds(whole(ReturnPathParser(), bad_end)) == ["malformed", "opaque"]
    huge = bytes(RpMessage() / RpRecvBitmap(block=b"x")) + (1 << 40).to_bytes(8, "big")
    assert kinds(whole(ReturnPathParser(), huge)) == ["malformed", "opaque"]


# -- TLS -------------------------------------------------------------------------------------------

def tls_stream() -> bytes:
    hello = bytes(TlsRecordHeader(version=0x0301) / TlsHandshakeStart(length=60) / (b"\x00" * 26))
    return hello + bytes(TlsRecordHeader(content_type=20) / b"\x01") + bytes(
        TlsRecordHeader(content_type=23) / (b"\xaa" * 3000)) * 2


def test_tls_records() -> None:
    data = tls_stream()
    p = TlsParser()
    recs = whole(p, data)
    assert kinds(recs) == ["tls.record"] * 4
    assert recs[0].fields["handshake"] == "client_hello" and recs[0].fields["version"] == 0x0301
    assert recs[2].fields == {"content_type": "application_data", "version": 0x0303, "len": 3000}
    assert key(bytewise(TlsParser(), data)) == key(recs)
    assert kinds(whole(TlsParser(), b"QEVM\0\0\0\3")) == ["malformed", "opaque"]


# -- identify_stream -------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "want"), [
    (precopy_stream(pages=1), "main"),
    (bytes.fromhex("08000a000706") + b"pc.ram", "main-recovery"),
    (multifd_stream(packets=0), "multifd"),
    (tls_stream(), "tls"),
    (ram_pages(b"pc.ram", [0x1000]), "preempt-candidate"),
    ((0x10).to_bytes(8, "big"), "preempt-candidate"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 300, "unknown"),
])
def test_identify_stream(data: bytes, want: str) -> None:
    assert identify_stream(data) == want


def test_identify_stream_needs_more() -> None:
    assert identify_stream(b"") is None
    assert identify_stream(b"QE") is None
    assert identify_stream(b"\x11\x22\x33") is None
    assert identify_stream(bytes.fromhex("0000000000001008") + b"\x06pc") is None
