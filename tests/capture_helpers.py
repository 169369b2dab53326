"""Helpers for the capture reader tests: read a file into comparable tuples, build non-TCP frames, damage gzip."""

from __future__ import annotations

import ipaddress
import struct
import zlib
from pathlib import Path

from dissectors.capture import CaptureStats, TcpSegment, open_capture
from dissectors.capture.writer import ipv4_checksum

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def read_segments(path: Path | str) -> tuple[list[TcpSegment], CaptureStats, list[str]]:
    """Every segment of ``path`` as a ``TcpSegment`` with ``bytes`` payload, plus stats and warnings."""
    with open_capture(path) as cap:
        segments = [TcpSegment(*seg)._replace(payload=bytes(seg[9])) for seg in cap.tcp_segments()]
        return segments, cap.stats, list(cap.warnings)


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def udp_frame(src: str = "10.0.0.1", dst: str = "10.0.0.2", payload: bytes = b"dns?") -> bytes:
    udp = struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 7, 0, 64, 17, 0, ip(src), ip(dst))
    header = header[:10] + struct.pack("!H", ipv4_checksum(header)) + header[12:]
    return MAC_B + MAC_A + b"\x08\x00" + header + udp


def arp_frame() -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_A, ip("10.0.0.1"), bytes(6), ip("10.0.0.2"))
    return b"\xff" * 6 + MAC_A + b"\x08\x06" + body + bytes(18)


def ipv4_fragment_frame(offset_units: int, more: bool, payload: bytes = b"x" * 24) -> bytes:
    """An Ethernet/IPv4 fragment of a TCP packet (``offset_units`` in 8-byte units)."""
    frag = (0x2000 if more else 0) | offset_units
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 9, frag, 64, 6, 0,
                         ip("10.0.0.1"), ip("10.0.0.2"))
    return MAC_B + MAC_A + b"\x08\x00" + header + payload


def ipv6_fragment_frame(offset_units: int, more: bool, payload: bytes = b"y" * 24) -> bytes:
    """An Ethernet/IPv6 frame with a fragment header in front of (part of) a TCP packet."""
    frag = struct.pack("!BBHI", 6, 0, (offset_units << 3) | int(more), 77)
    body = frag + payload
    header = struct.pack("!IHBB16s16s", 0x60000000, len(body), 44, 64, ip("fd00::1"), ip("fd00::2"))
    return MAC_B + MAC_A + b"\x86\xdd" + header + body


def gzip_damaged_at(raw: bytes, at: int, level: int = 6) -> tuple[bytes, int]:
    """``raw`` gzip'd, damaged where its first ``at`` bytes end: a full flush there starts the next deflate block
    on a byte boundary, and that block's header byte is given the reserved type 3, which zlib refuses ("invalid
    block type") at that byte. Returns the file's bytes and that compressed offset."""
    deflate = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = deflate.compress(raw[:at]) + deflate.flush(zlib.Z_FULL_FLUSH)
    blob = bytearray(head + deflate.compress(raw[at:]) + deflate.flush())
    blob[len(head)] = 0x06          # BFINAL 0, BTYPE 11
    return bytes(blob), len(head)


def zlib_most(blob: bytes) -> tuple[bytes, int | None]:
    """The most Python's ``zlib.decompressobj`` recovers of the gzip'd ``blob``: fed one compressed byte at a
    time (a call that raises gives none of what it inflated), up to the byte it fails on, whose offset comes
    second (None if it does not fail)."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = []
    for i in range(len(blob)):
        try:
            out.append(inflate.decompress(blob[i:i + 1]))
        except zlib.error:
            return b"".join(out), i
        if inflate.eof:
            break
    return b"".join(out), None
