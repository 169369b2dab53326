"""pcapng: interfaces with different link types and resolutions, SPB/OPB, skipped blocks, sections."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from capture_helpers import ip, read_segments

from dissectors.capture.writer import PcapngWriter, tcp_frame


def frame4(seq: int, payload: bytes, link: str = "ether") -> bytes:
    return tcp_frame("10.0.0.1", "10.0.0.2", 50000, 4444, seq, 1, "PA", payload, link=link)


@pytest.mark.parametrize("big_endian", [False, True])
def test_two_interfaces_different_links_and_resolutions(tmp_path: Path, big_endian: bool) -> None:
    path = tmp_path / "two.pcapng"
    with PcapngWriter(path, big_endian=big_endian) as w:
        eth = w.add_interface("ether", tsresol=6)
        sll = w.add_interface("sll2", tsresol=9)
        pow2 = w.add_interface("raw", tsresol=0x80 | 20)
        w.write(100.5, frame4(1, b"eth"), interface=eth)
        w.write(200.000000007, frame4(2, b"sll2", link="sll2"), interface=sll)
        w.write(300.25, frame4(3, b"raw", link="raw"), interface=pow2)
    segments, stats, warnings = read_segments(path)
    assert warnings == []
    assert [(s.frame, s.payload, s.seq) for s in segments] == [(1, b"eth", 1), (2, b"sll2", 2), (3, b"raw", 3)]
    assert segments[0].ts == 100.5
    assert segments[1].ts == pytest.approx(200.000000007, abs=1e-9)
    assert segments[2].ts == pytest.approx(300.25, abs=1e-6)
    assert stats.link_types == {"ETHERNET", "LINUX_SLL2", "RAW"} and stats.format == "pcapng"


def test_simple_packet_block_uses_interface_snaplen(tmp_path: Path) -> None:
    path = tmp_path / "spb.pcapng"
    with PcapngWriter(path) as w:
        w.add_interface("ether", snaplen=96)
        w.write(0, frame4(10, b"s" * 500), simple=True)
        w.write(5.0, frame4(11, b"e"))
        w.write(0, frame4(12, b"t"), simple=True)
    segments, stats, warnings = read_segments(path)
    assert warnings == []
    assert segments[0].payload == b"s" * 42 and segments[0].missing == 500 - 42
    assert stats.truncated_frames == 1
    assert segments[2].ts == 5.0  # SPBs carry no time: the previous packet's time is reused


def test_other_blocks_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "blocks.pcapng"
    with PcapngWriter(path) as w:
        w.add_interface("ether")
        w.write_block(4, struct.pack("<HH4s", 1, 4, ip("10.0.0.1")) + b"host\x00\x00\x00\x00" + bytes(4))  # NRB
        w.write(1.0, frame4(1, b"a"))
        w.write_block(5, struct.pack("<III", 0, 0, 0))  # ISB
        w.write_block(10, struct.pack("<II", 0x544C534B, 4) + b"keys")  # DSB
        w.write_block(0x00000BAD, struct.pack("<I", 32473) + b"custom data")  # custom block
        w.write_block(0x80000000 | 77, b"unknown local use")
        w.write(2.0, frame4(2, b"b"))
    segments, stats, warnings = read_segments(path)
    assert [s.payload for s in segments] == [b"a", b"b"] and stats.frames == 2 and warnings == []


def test_obsolete_packet_block(tmp_path: Path) -> None:
    path = tmp_path / "opb.pcapng"
    frame = frame4(9, b"old")
    with PcapngWriter(path) as w:
        w.add_interface("ether")
        w.write_block(2, struct.pack("<HHIIII", 0, 0, 0, 3_000_000, len(frame), len(frame)) + frame)
    (segment,), _, warnings = read_segments(path)
    assert segment.payload == b"old" and segment.ts == 3.0 and warnings == []


def test_sections_of_both_byte_orders_restart_interfaces(tmp_path: Path) -> None:
    first, second = tmp_path / "le.pcapng", tmp_path / "be.pcapng"
    with PcapngWriter(first) as w:
        w.add_interface("ether")
        w.write(1.0, frame4(1, b"le"))
    with PcapngWriter(second, big_endian=True) as w:
        w.add_interface("loop")  # interface 0 again, other link type
        w.write(2.0, frame4(2, b"be", link="loop"))
    both = tmp_path / "both.pcapng"
    both.write_bytes(first.read_bytes() + second.read_bytes())
    segments, stats, warnings = read_segments(both)
    assert [s.payload for s in segments] == [b"le", b"be"] and warnings == []
    assert stats.link_types == {"ETHERNET", "LOOP"}


def test_unsupported_interface_and_unknown_interface_id(tmp_path: Path) -> None:
    path = tmp_path / "odd.pcapng"
    with PcapngWriter(path) as w:
        w.add_interface("ether")
        w.add_interface(147)
        w.add_interface(148)
        w.write(1.0, b"\x00" * 64, interface=1)
        w.write(1.0, b"\x00" * 64, interface=2)
        w.write(1.0, frame4(1, b"ok"), interface=0)
        w.write_block(6, struct.pack("<IIIII", 9, 0, 0, 4, 4) + b"abcd")  # interface 9 was never described
    segments, stats, warnings = read_segments(path)
    assert [s.payload for s in segments] == [b"ok"]
    assert stats.frames == 4 and stats.unsupported_link == 3 and stats.non_tcp == 3
    assert any("unsupported link type 147" in w and "interface 1" in w for w in warnings)
    assert any("unsupported link type 148" in w and "interface 2" in w for w in warnings)
    assert any("interface 9" in w for w in warnings)
    assert all(str(path) in w and "offset" in w for w in warnings)
