"""Generic frame decoding: link header -> IPv4/IPv6 (options, extension headers) -> TCP.

``decode_frame`` returns the tail of a segment tuple ``(src, sport, dst, dport, seq, ack, flags, payload,
missing)`` or one of the small integer codes below saying why the frame carries no TCP segment.
The readers' fast paths handle plain Ethernet/IPv4/TCP inline; everything else comes here.
"""

from __future__ import annotations

import struct

from .linktypes import ETH_IPV4, ETH_IPV6, LinkDecoder

NON_TCP = 0
FRAGMENT = 1
SHORT = 2

SegmentTail = tuple[bytes, int, bytes, int, int, int, int, memoryview, int]

_IPV4 = struct.Struct("!BxHxxHxB").unpack_from  # vihl, total length, flags+fragment offset, protocol
_IPV6 = struct.Struct("!4xHB").unpack_from  # payload length, next header
_TCP = struct.Struct("!HHIIBB").unpack_from  # sport, dport, seq, ack, data offset, flags
_U16 = struct.Struct("!H").unpack_from

_IPV6_EXT_GENERIC = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options: (len + 1) * 8
_IPV6_FRAGMENT = 44
_IPV6_AH = 51  # (len + 2) * 4
_TCP_PROTO = 6


def decode_frame(link: LinkDecoder, buf: memoryview, start: int, stop: int) -> SegmentTail | int:
    """Decode the frame ``buf[start:stop]`` whose link layer ``link`` understands."""
    found = link(buf, start, stop)
    if found is None:
        return SHORT
    ethertype, l3 = found
    if ethertype == ETH_IPV4:
        if l3 + 20 > stop:
            return SHORT
        vihl, total, frag, proto = _IPV4(buf, l3)
        ihl = (vihl & 15) << 2
        if vihl >> 4 != 4 or ihl < 20:
            return SHORT
        if frag & 0x3FFF:
            return FRAGMENT
        if proto != _TCP_PROTO:
            return NON_TCP
        if total == 0:  # TSO / BIG TCP frames captured before segmentation carry no length
            ip_end = stop
        elif total < ihl:
            return SHORT
        else:
            ip_end = l3 + total
        src = bytes(buf[l3 + 12:l3 + 16])
        dst = bytes(buf[l3 + 16:l3 + 20])
        tcp = l3 + ihl
    elif ethertype == ETH_IPV6:
        if l3 + 40 > stop or buf[l3] >> 4 != 6:
            return SHORT
        plen, nxt = _IPV6(buf, l3)
        ip_end = l3 + 40 + plen if plen else stop
        limit = min(stop, ip_end)
        src = bytes(buf[l3 + 8:l3 + 24])
        dst = bytes(buf[l3 + 24:l3 + 40])
        tcp = l3 + 40
        while nxt != _TCP_PROTO:
            if tcp + 8 > limit:
                return SHORT if nxt in _IPV6_EXT_GENERIC or nxt in (_IPV6_FRAGMENT, _IPV6_AH) else NON_TCP
            if nxt in _IPV6_EXT_GENERIC:
                size = (buf[tcp + 1] + 1) << 3
            elif nxt == _IPV6_FRAGMENT:
                if _U16(buf, tcp + 2)[0] & 0xFFF9:  # non-zero offset or more-fragments set
                    return FRAGMENT
                size = 8
            elif nxt == _IPV6_AH:
                size = (buf[tcp + 1] + 2) << 2
            else:
                return NON_TCP
            nxt = buf[tcp]
            tcp += size
    else:
        return NON_TCP
    if tcp + 20 > stop or tcp + 20 > ip_end:
        return SHORT
    sport, dport, seq, ack, doff, flags = _TCP(buf, tcp)
    hlen = (doff >> 4) << 2
    pstart = tcp + hlen
    if hlen < 20 or pstart > ip_end:
        return SHORT
    if ip_end <= stop:
        return src, sport, dst, dport, seq, ack, flags, buf[pstart:ip_end], 0
    if pstart >= stop:
        return src, sport, dst, dport, seq, ack, flags, buf[stop:stop], ip_end - pstart
    return src, sport, dst, dport, seq, ack, flags, buf[pstart:stop], ip_end - stop
