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

# Link headers with a be16 protocol field: (header length, offset of the protocol field).
ETHERNET_HEADER = (14, 12)      # dst, src, ethertype (VLAN tags, 4 bytes each, before the ethertype)
SLL_HEADER = (16, 14)           # Linux cooked v1: ..., protocol last
SLL2_HEADER = (20, 0)           # Linux cooked v2: protocol first
RAW_IP_HEADER = (0, -1)         # no link header, no protocol field: the IP version nibble tells
_VLAN_TAG = 4

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
    off = start + ETHERNET_HEADER[1]
    while off + 2 <= stop:
        ethertype = _U16(buf, off)[0]
        if ethertype in _VLAN_TPIDS:
            off += _VLAN_TAG
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
    size, proto = SLL_HEADER
    if start + size > stop:
        return None
    return _U16(buf, start + proto)[0], start + size


def _sll2(buf: memoryview, start: int, stop: int) -> tuple[int, int] | None:
    size, proto = SLL2_HEADER
    if start + size > stop:
        return None
    return _U16(buf, start + proto)[0], start + size


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

#: Link types the compiled scanner (``_pcapscan.c``) reads: (link header length, offset of its be16
#: ethertype or -1 for raw IP, told apart by the version nibble). Ethernet (VLAN tags go to the Python
#: loop), Linux cooked v1 and v2 (``tcpdump -i any``), raw IP. (LINKTYPE_IPV4/IPV6 are left to Python:
#: their nibble is not checked there.)
_SCANNER_LAYOUTS: dict[LinkDecoder, tuple[int, int]] = {
    _ethernet: ETHERNET_HEADER, _sll: SLL_HEADER, _sll2: SLL2_HEADER, _raw: RAW_IP_HEADER,
}
LINK_LAYOUTS: dict[int, tuple[int, int]] = {
    linktype: _SCANNER_LAYOUTS[decoder] for linktype, decoder in LINK_DECODERS.items() if decoder in _SCANNER_LAYOUTS
}
