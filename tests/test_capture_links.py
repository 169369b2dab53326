"""Classic pcap: byte orders, timestamp units, every supported link type, IP variants, odd frames."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from capture_helpers import arp_frame, ip, read_segments, udp_frame

from dissectors.capture.writer import LINKTYPES, PcapWriter, tcp_frame


def write(path: Path, frames: list[bytes], **kwargs: object) -> Path:
    with PcapWriter(path, **kwargs) as w:  # type: ignore[arg-type]
        for i, frame in enumerate(frames):
            w.write(1_700_000_000.25 + i, frame)
    return path


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_byte_order_and_time_unit(tmp_path: Path, big_endian: bool, nanosecond: bool) -> None:
    frames = [tcp_frame("10.1.2.3", "10.4.5.6", 40000, 4444, 0xFFFFFFF0, 7, "PA", b"abc"),
              tcp_frame("10.4.5.6", "10.1.2.3", 4444, 40000, 7, 0xFFFFFFF3, "A")]
    path = write(tmp_path / "a.pcap", frames, big_endian=big_endian, nanosecond=nanosecond)
    segments, stats, warnings = read_segments(path)
    assert warnings == []
    first, second = segments
    assert first == (1, 1_700_000_000.25, ip("10.1.2.3"), 40000, ip("10.4.5.6"), 4444, 0xFFFFFFF0, 7, 0x18,
                     b"abc", 0)
    assert second.ts == 1_700_000_001.25 and second.payload == b"" and second.flags == 0x10
    assert stats.frames == 2 and stats.tcp_segments == 2 and stats.format == ("pcap-ns" if nanosecond else "pcap")


def test_nanosecond_resolution_kept(tmp_path: Path) -> None:
    path = tmp_path / "ns.pcap"
    with PcapWriter(path, nanosecond=True) as w:
        w.write(1.000000123, tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3))
    (segment,), _, _ = read_segments(path)
    assert segment.ts == pytest.approx(1.000000123, abs=1e-10)


@pytest.mark.parametrize("link", sorted(LINKTYPES))
@pytest.mark.parametrize("version", [4, 6])
def test_every_link_type(tmp_path: Path, link: str, version: int) -> None:
    src, dst = ("192.168.0.1", "192.168.0.2") if version == 4 else ("fd00::1", "fd00::2")
    payload = bytes(range(200))
    path = write(tmp_path / "l.pcap", [tcp_frame(src, dst, 1234, 4444, 99, 1, "PA", payload, link=link)],
                 linktype=link)
    (segment,), stats, warnings = read_segments(path)
    assert warnings == []
    assert (segment.src, segment.dst, segment.sport, segment.dport, segment.seq) == (ip(src), ip(dst), 1234, 4444, 99)
    assert segment.payload == payload and segment.missing == 0


@pytest.mark.parametrize("linktype", [12, 14, 101])
def test_raw_aliases_and_ip_only_links(tmp_path: Path, linktype: int) -> None:
    path = write(tmp_path / "raw.pcap", [tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=b"r", link="raw"),
                                         tcp_frame("::1", "::2", 1, 2, 3, payload=b"r6", link="raw")],
                 linktype=linktype)
    segments, _, warnings = read_segments(path)
    assert [s.payload for s in segments] == [b"r", b"r6"] and warnings == []


def test_ipv4_and_ipv6_linktypes(tmp_path: Path) -> None:
    v4 = write(tmp_path / "v4.pcap", [tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=b"4", link="raw")],
               linktype=228)
    v6 = write(tmp_path / "v6.pcap", [tcp_frame("::1", "::2", 1, 2, 3, payload=b"6", link="raw")], linktype=229)
    assert read_segments(v4)[0][0].payload == b"4"
    assert read_segments(v6)[0][0].payload == b"6"


@pytest.mark.parametrize("family", [2, 24, 28, 30])
@pytest.mark.parametrize("order", ["<", ">"])
def test_null_family_in_either_byte_order(tmp_path: Path, family: int, order: str) -> None:
    src, dst = ("10.0.0.1", "10.0.0.2") if family == 2 else ("::1", "::2")
    frame = struct.pack(order + "I", family) + tcp_frame(src, dst, 5, 6, 7, payload=b"lo", link="raw")
    (segment,), _, _ = read_segments(write(tmp_path / "n.pcap", [frame], linktype="null"))
    assert segment.payload == b"lo" and segment.src == ip(src)


def test_vlan_and_qinq(tmp_path: Path) -> None:
    single = tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=b"vlan", vlan=100)
    inner = tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 4, payload=b"qinq", vlan=200)
    qinq = inner[:12] + struct.pack("!HH", 0x88A8, 7) + inner[12:]
    segments, stats, _ = read_segments(write(tmp_path / "v.pcap", [single, qinq]))
    assert [s.payload for s in segments] == [b"vlan", b"qinq"] and stats.non_tcp == 0


def test_ipv4_options_and_ipv6_extension_headers(tmp_path: Path) -> None:
    frames = [tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=b"opts", ip_options=b"\x94\x04\x00\x00" * 3),
              tcp_frame("fd00::1", "fd00::2", 1, 2, 3, payload=b"ext", ipv6_ext=True)]
    segments, _, _ = read_segments(write(tmp_path / "o.pcap", frames))
    assert [s.payload for s in segments] == [b"opts", b"ext"]


def test_ethernet_padding_is_not_payload(tmp_path: Path) -> None:
    frame = tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, flags="A") + bytes(6) + b"\xde\xad\xbe\xef"  # pad + FCS
    (segment,), _, _ = read_segments(write(tmp_path / "p.pcap", [frame]))
    assert segment.payload == b"" and segment.missing == 0


def test_large_frames_beyond_65535(tmp_path: Path) -> None:
    big = bytes(i & 0xFF for i in range(100 * 1024))
    frames = [tcp_frame("127.0.0.1", "127.0.0.1", 1, 2, 3, payload=big[:65495]),  # 65,549-byte loopback frame
              tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=big),  # BIG TCP: IP total length 0
              tcp_frame("::1", "::1", 1, 2, 3, payload=big)]  # IPv6 payload length 0
    assert len(frames[0]) == 65549
    path = write(tmp_path / "big.pcap", frames)
    with open(path, "r+b") as f:  # the header understates real frame sizes, as some tools write it
        f.seek(16)
        f.write(struct.pack("<I", 65535))
    segments, stats, warnings = read_segments(path)
    assert warnings == [] and stats.truncated_frames == 0
    assert [s.payload for s in segments] == [big[:65495], big, big]


def test_snaplen_cut_reports_missing_bytes(tmp_path: Path) -> None:
    payload = b"p" * 1400
    frames = [tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=payload),
              tcp_frame("fd00::1", "fd00::2", 1, 2, 3, payload=payload, ipv6_ext=True),
              tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=payload, ip_options=b"\x01" * 40)]
    segments, stats, warnings = read_segments(write(tmp_path / "s.pcap", frames, snaplen=96))
    assert warnings == [] and stats.truncated_frames == 3 and stats.tcp_segments == 3
    assert segments[0].payload == payload[:96 - 54] and segments[0].missing == 1400 - (96 - 54)
    assert segments[1].payload == payload[:96 - 90] and segments[1].missing == 1400 - 6
    assert segments[2].payload == b"pp" and segments[2].missing == 1398


def test_snaplen_inside_tcp_header_is_a_short_frame(tmp_path: Path) -> None:
    frames = [tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=b"z" * 100)]
    segments, stats, warnings = read_segments(write(tmp_path / "h.pcap", frames, snaplen=50))
    assert segments == [] and stats.short_frames == 1 and stats.non_tcp == 1 and warnings == []


def test_non_tcp_counted_and_skipped(tmp_path: Path) -> None:
    frames = [udp_frame(), arp_frame(), tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=b"t")]
    segments, stats, warnings = read_segments(write(tmp_path / "u.pcap", frames))
    assert [s.frame for s in segments] == [3]
    assert (stats.frames, stats.tcp_segments, stats.non_tcp) == (3, 1, 2) and warnings == []


def test_unsupported_link_type_warns_and_counts(tmp_path: Path) -> None:
    path = write(tmp_path / "x.pcap", [b"\x00" * 60, b"\x01" * 60], linktype=147)
    segments, stats, warnings = read_segments(path)
    assert segments == [] and stats.unsupported_link == 2 and stats.non_tcp == 2
    assert len(warnings) == 1 and "147" in warnings[0] and "interface 0" in warnings[0]
    assert str(path) in warnings[0] and "offset 20" in warnings[0]
