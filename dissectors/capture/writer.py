"""Write pcap / pcapng files and build TCP frames with plain ``struct`` (tests, benchmarks, fixtures).

``tcp_frame`` computes the IP lengths and a valid IPv4 header checksum; the TCP checksum is left 0.
Packets too long for the 16-bit IP length field get length 0, as Linux BIG TCP / TSO captures show them.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import sys
from types import TracebackType
from typing import BinaryIO, Self

LINKTYPES: dict[str, int] = {"ether": 1, "null": 0, "loop": 108, "sll": 113, "sll2": 276, "raw": 101}

_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}
_AF_INET, _AF_INET6_BSD = 2, 30  # NULL/LOOP address families (IPv6 value as written by macOS/FreeBSD)
_SRC_MAC = bytes.fromhex("020000000001")
_DST_MAC = bytes.fromhex("020000000002")


def tcp_flags(flags: str | int) -> int:
    """``"PA"`` -> 0x18; integers pass through."""
    if isinstance(flags, int):
        return flags & 0xFF
    value = 0
    for letter in flags.upper():
        value |= _FLAG_BITS[letter]
    return value


def ipv4_checksum(header: bytes) -> int:
    """Internet checksum of an IPv4 header whose checksum field is zero."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tcp_header(sport: int, dport: int, seq: int, ack: int, flags: int, window: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags,
                       window, 0, 0)


def _ipv4_packet(src: bytes, dst: bytes, segment: bytes, options: bytes) -> bytes:
    options += b"\x00" * (-len(options) % 4)  # pad with End-of-Options
    ihl = 5 + len(options) // 4
    if ihl > 15:
        raise ValueError("IPv4 options longer than 40 bytes")
    total = ihl * 4 + len(segment)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total if total <= 0xFFFF else 0, 1, 0x4000, 64, 6, 0,
                         src, dst) + options
    checksum = ipv4_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + segment


def _ipv6_packet(src: bytes, dst: bytes, segment: bytes, ext: bool) -> bytes:
    extensions = b""
    next_header = 6
    if ext:
        # hop-by-hop (PadN) -> destination options (PadN) -> TCP, 8 bytes each
        extensions = bytes((60, 0, 1, 4, 0, 0, 0, 0)) + bytes((6, 0, 1, 4, 0, 0, 0, 0))
        next_header = 0
    body = extensions + segment
    length = len(body) if len(body) <= 0xFFFF else 0
    return struct.pack("!IHBB16s16s", 0x60000000, length, next_header, 64, src, dst) + body


def _link_header(link: str, ipv6: bool, vlan: int | None) -> bytes:
    ethertype = 0x86DD if ipv6 else 0x0800
    if link == "ether":
        tag = struct.pack("!HH", 0x8100, vlan & 0x0FFF) if vlan is not None else b""
        return _DST_MAC + _SRC_MAC + tag + struct.pack("!H", ethertype)
    family = _AF_INET6_BSD if ipv6 else _AF_INET
    if link == "null":
        return family.to_bytes(4, sys.byteorder)  # host byte order of the writer, as DLT_NULL wants
    if link == "loop":
        return struct.pack("!I", family)
    if link == "sll":
        return struct.pack("!HHH8sH", 0, 772, 6, _SRC_MAC + b"\x00\x00", ethertype)
    if link == "sll2":
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, 772, 0, 6, _SRC_MAC + b"\x00\x00")
    if link == "raw":
        return b""
    raise ValueError(f"unknown link {link!r}; expected one of {sorted(LINKTYPES)}")


def tcp_frame(src: str, dst: str, sport: int, dport: int, seq: int, ack: int = 0, flags: str | int = "PA",
              payload: bytes = b"", *, link: str = "ether", vlan: int | None = None, ip_options: bytes = b"",
              ipv6_ext: bool = False, window: int = 65535) -> bytes:
    """One captured frame carrying a TCP segment from ``src:sport`` to ``dst:dport``."""
    src_ip = ipaddress.ip_address(src)
    dst_ip = ipaddress.ip_address(dst)
    if src_ip.version != dst_ip.version:
        raise ValueError("src and dst must be the same IP version")
    segment = _tcp_header(sport, dport, seq, ack, tcp_flags(flags), window) + bytes(payload)
    ipv6 = src_ip.version == 6
    if ipv6:
        packet = _ipv6_packet(src_ip.packed, dst_ip.packed, segment, ipv6_ext)
    else:
        packet = _ipv4_packet(src_ip.packed, dst_ip.packed, segment, ip_options)
    return _link_header(link, ipv6, vlan) + packet


def _split_ts(ts: float, units: int) -> tuple[int, int]:
    whole = int(ts // 1)
    frac = round((ts - whole) * units)
    if frac >= units:
        whole, frac = whole + 1, frac - units
    return whole, frac


class _Output:
    def __init__(self, target: str | os.PathLike[str] | BinaryIO) -> None:
        if isinstance(target, str | os.PathLike):
            self._file: BinaryIO = open(target, "wb")  # noqa: SIM115 - closed in close()
            self._owned = True
        else:
            self._file = target
            self._owned = False

    def close(self) -> None:
        if self._owned:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PcapWriter(_Output):
    """Classic pcap: little-endian unless ``big_endian``; microsecond timestamps unless ``nanosecond``."""

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, linktype: str | int = "ether",
                 snaplen: int = 262144, nanosecond: bool = False, big_endian: bool = False) -> None:
        super().__init__(target)
        self._order = ">" if big_endian else "<"
        self._units = 1_000_000_000 if nanosecond else 1_000_000
        self.snaplen = snaplen
        lt = LINKTYPES[linktype] if isinstance(linktype, str) else linktype
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._record = struct.Struct(self._order + "IIII").pack
        self._file.write(struct.pack(self._order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, lt))

    def write(self, ts: float, frame: bytes, orig_len: int | None = None) -> None:
        caplen = min(len(frame), self.snaplen)
        sec, frac = _split_ts(ts, self._units)
        wire = len(frame) if orig_len is None else orig_len
        self._file.write(self._record(sec, frac, caplen, wire))
        self._file.write(frame[:caplen] if caplen < len(frame) else frame)


class PcapngWriter(_Output):
    """pcapng with one section; ``tsresol`` is the raw ``if_tsresol`` byte (6 = µs, 9 = ns, 0x80|n = 2^-n)."""

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, big_endian: bool = False) -> None:
        super().__init__(target)
        self._order = ">" if big_endian else "<"
        self._interfaces: list[tuple[int, int, int]] = []  # (snaplen, units per second, offset in seconds)
        self.write_block(0x0A0D0D0A, struct.pack(self._order + "IHHq", 0x1A2B3C4D, 1, 0, -1))

    def write_block(self, block_type: int, body: bytes) -> None:
        """Any block: body is padded to 4 bytes and framed by the two length fields."""
        body += b"\x00" * (-len(body) % 4)
        length = len(body) + 12
        self._file.write(struct.pack(self._order + "II", block_type, length) + body
                         + struct.pack(self._order + "I", length))

    def add_interface(self, linktype: str | int = "ether", snaplen: int = 262144, tsresol: int = 6,
                      tsoffset: int = 0) -> int:
        """``tsoffset``: ``if_tsoffset`` in seconds, added by readers to every timestamp of the interface."""
        lt = LINKTYPES[linktype] if isinstance(linktype, str) else linktype
        options = b""
        if tsresol != 6:
            options += struct.pack(self._order + "HHB3x", 9, 1, tsresol)
        if tsoffset:
            options += struct.pack(self._order + "HHq", 14, 8, tsoffset)
        if options:
            options += struct.pack(self._order + "HH", 0, 0)  # end of options
        self.write_block(1, struct.pack(self._order + "HHI", lt, 0, snaplen) + options)
        units = 1 << (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol
        self._interfaces.append((snaplen, units, tsoffset))
        return len(self._interfaces) - 1

    def write(self, ts: float, frame: bytes, interface: int = 0, orig_len: int | None = None,
              simple: bool = False) -> None:
        snaplen, units, tsoffset = self._interfaces[interface]
        wire = len(frame) if orig_len is None else orig_len
        if simple:
            if interface != 0:
                raise ValueError("simple packet blocks always belong to interface 0")
            self.write_block(3, struct.pack(self._order + "I", wire) + frame[:snaplen or None])
            return
        data = frame[:snaplen] if snaplen and len(frame) > snaplen else frame
        sec, frac = _split_ts(ts - tsoffset, units)
        stamp = sec * units + frac
        self.write_block(6, struct.pack(self._order + "IIIII", interface, stamp >> 32, stamp & 0xFFFFFFFF,
                                        len(data), wire) + data)
