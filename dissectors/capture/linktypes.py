"""Link-layer headers: find where the IP packet starts inside a captured frame.

Each decoder takes ``(buf, start, stop)`` (the frame is ``buf[start:stop]``) and returns
``(ethertype, l3_offset)`` or ``None`` when the frame is too short. Non-Ethernet links report the
ethertype their IP version would have (0x0800 / 0x86DD) so the IP layer needs one dispatch only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))

LinkDecoder = Callable[[memoryview, int, int], "tuple[int, int] | None"]

_U16 = struct.Struct("!H").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_U32_BE = struct.Struct("!I").unpack_from

# BSD address-family numbers found in NULL/LOOP headers: AF_INET is 2 everywhere, AF_INET6 differs by OS.
_AF_TO_ETHERTYPE = {2: ETH_IPV4, 10: ETH_IPV6, 24: ETH_IPV6, 28: ETH_IPV6, 30: ETH_IPV6}

LINKTYPE_NAMES: dict[int, str] = {
    0: "NULL",
    1: "ETHERNET",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    108: "LOOP",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}


def linktype_name(linktype: int) -> str:
    """Name of a pcap LINKTYPE value, or ``LINKTYPE_<n>`` when unknown."""
    return LINKTYPE_NAMES.get(linktype, f"LINKTYPE_{linktype}")


def _ethernet(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    off = start + 12
    while off + 2 <= stop:
        ethertype = _U16(buf, off)[0]
        if ethertype in _VLAN_TPIDS:
            off += 4
            continue
        return ethertype, off + 2
    return None


def _null(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    # Host byte order of the writing machine, which need not match the file's: AF values are small,
    # so a value above 0xFFFF means the other order.
    if start + 4 > stop:
        return None
    family = _U32_LE(buf, start)[0]
    if family > 0xFFFF:
        family = _U32_BE(buf, start)[0]
    return _AF_TO_ETHERTYPE.get(family, -family), start + 4


def _loop(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    if start + 4 > stop:
        return None
    family = _U32_BE(buf, start)[0]
    return _AF_TO_ETHERTYPE.get(family, -family), start + 4


def _sll(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    if start + 16 > stop:
        return None
    return _U16(buf, start + 14)[0], start + 16


def _sll2(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    if start + 20 > stop:
        return None
    return _U16(buf, start)[0], start + 20


def _raw(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    if start >= stop:
        return None
    version = buf[start] >> 4
    if version == 4:
        return ETH_IPV4, start
    if version == 6:
        return ETH_IPV6, start
    return -version - 1, start


def _ipv4(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    return ETH_IPV4, start


def _ipv6(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    return ETH_IPV6, start


LINK_DECODERS: dict[int, LinkDecoder] = {
    0: _null,
    1: _ethernet,
    12: _raw,
    14: _raw,
    101: _raw,
    108: _loop,
    113: _sll,
    228: _ipv4,
    229: _ipv6,
    276: _sll2,
}
