"""Classic pcap record walk (both byte orders, microsecond and nanosecond timestamps).

The loop body is deliberately flat: plain Ethernet/IPv4/TCP without options is decoded inline with one
precompiled ``struct`` call, everything else goes through ``frames.decode_frame``.

Keyed walks yield *lists* of segments (``Capture.keyed_segments`` chains them), one per
``BATCH_BYTES`` (256 KiB) of capture instead of a generator step per frame. Where the optional compiled
scanner (``_pcapscan.c``, built by ``setup.py``) is present, it takes the runs of plain IPv4/IPv6 TCP records
of a keyed walk (link types in ``linktypes.LINK_LAYOUTS``) and this loop handles the rest, one record at
a time, exactly as without it. ``MIGSHARK_PURE_PYTHON=1`` turns the scanner off.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .frames import FRAGMENT, SHORT, decode_frame
from .limits import BATCH_BYTES, MAX_RECORD, PROGRESS_STEP
from .linktypes import LINK_DECODERS, LINK_LAYOUTS, linktype_name
from .scanner import Runs, compiled_scanner, scan_runs

if TYPE_CHECKING:
    from .reader import Capture

PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    bytes.fromhex("d4c3b2a1"): ("<", 1_000_000),
    bytes.fromhex("a1b2c3d4"): (">", 1_000_000),
    bytes.fromhex("4d3cb2a1"): ("<", 1_000_000_000),
    bytes.fromhex("a1b23c4d"): (">", 1_000_000_000),
}
FILE_HEADER_LEN = 24
_RECORD_LEN = 16
# From Ethernet byte 12: ethertype, IPv4 vihl, total length, frag, proto, src, dst, then TCP ports, seq,
# ack, data offset, flags.
_ETH_IPV4_TCP = struct.Struct("!HBxHxxHxB2x4s4sHHIIBB")
# The same for keyed segments: addresses and ports as one 12-byte key, no acknowledgment number.
_ETH_IPV4_TCP_KEYED = struct.Struct("!HBxHxxHxB2x12sI4xBB")
_PORTS = struct.Struct("!HH").pack


def pcap_segments(cap: Capture, keyed: bool = False, runs: Runs | None = None) -> Iterator[tuple]:
    """Yield segment tuples of a classic pcap file; counters and warnings go to ``cap``.

    ``keyed``: yield lists of ``KeyedSegment`` tuples instead of single ``TcpSegment`` ones (see
    ``records``); ``runs``: the compiled scanner's lists come coalesced, as ``(entries, last_ts)`` (see
    ``scanner.scan_runs``)."""
    source = cap.source
    buf = source.first()
    base = 0
    end = len(buf)
    if end < FILE_HEADER_LEN:
        cap.warn(0, f"file ends inside the {FILE_HEADER_LEN}-byte pcap header")
        return
    order, div = PCAP_MAGICS[bytes(buf[:4])]
    snaplen, linkfield = struct.unpack_from(order + "II", buf, 16)
    linktype = linkfield & 0xFFFF  # upper bits: FCS length flags
    stats = cap.stats
    stats.format = "pcap-ns" if div == 1_000_000_000 else "pcap"
    stats.snaplen = snaplen
    stats.link_types.add(linktype_name(linktype))
    link = LINK_DECODERS.get(linktype)
    if link is None:
        cap.warn(20, f"unsupported link type {linktype} ({linktype_name(linktype)}) on interface 0: "
                     "its frames are skipped and counted")
    fast_min = 54 if linktype == 1 else 1 << 62  # smallest Ethernet/IPv4/TCP frame; off for other links
    record = struct.Struct(order + "IIII").unpack_from
    eth_ip_tcp = _ETH_IPV4_TCP.unpack_from
    eth_key = _ETH_IPV4_TCP_KEYED.unpack_from
    ports = _PORTS
    decode = decode_frame
    max_record = MAX_RECORD
    step = PROGRESS_STEP
    scan = compiled_scanner("pcap") if keyed and linktype in LINK_LAYOUTS else None
    rest = (order == ">", float(div), max_record, *LINK_LAYOUTS.get(linktype, (0, -1)))
    batch: list[tuple] = []
    add = batch.append
    cool = 0

    pos = FILE_HEADER_LEN
    last = end - _RECORD_LEN  # a record header fits while pos <= last
    checkpoint = pos + step
    mark = pos + BATCH_BYTES  # the next flush of ``batch`` or checkpoint, whichever is first
    frame = non_tcp = truncated = frags = short = unsupported = 0
    try:
        while True:
            if scan is not None:
                if cool:
                    cool -= 1
                elif pos < checkpoint:
                    if batch:
                        yield batch
                        batch = []
                        add = batch.append
                    pos, count, cut, cool, _ = yield from scan_runs(scan, buf, pos, checkpoint, end, rest, runs)
                    frame += count
                    truncated += cut
            if pos > last:
                if batch:  # hand over what is read before waiting for more (a live stream)
                    yield batch
                    batch = []
                    add = batch.append
                grown = source.more(buf, pos, _RECORD_LEN)
                if grown is None:
                    if pos < end:
                        cap.warn(base + pos, f"truncated record header ({end - pos} of 16 bytes); "
                                             "stopped reading")
                    break
                buf, base, pos, end = grown, base + pos, 0, len(grown)
                last, checkpoint, mark = end - _RECORD_LEN, 0, 0
                continue
            sec, frac, caplen, wirelen = record(buf, pos)
            start = pos + _RECORD_LEN
            nxt = start + caplen
            if nxt > end or caplen > max_record:
                if caplen > max_record:
                    cap.warn(base + pos, f"record claims {caplen} captured bytes (more than "
                                         f"{max_record >> 20} MiB): garbage or corrupt file; stopped reading")
                    break
                if batch:  # hand over what is read before waiting for more (a live stream)
                    yield batch
                    batch = []
                    add = batch.append
                grown = source.more(buf, pos, _RECORD_LEN + caplen)
                if grown is None or len(grown) < _RECORD_LEN + caplen:
                    have = len(grown) if grown is not None else end - pos
                    cap.warn(base + pos, f"truncated record: {caplen} captured bytes announced, "
                                         f"{max(have - _RECORD_LEN, 0)} present; stopped reading")
                    break
                buf, base, pos, end = grown, base + pos, 0, len(grown)
                last, checkpoint, mark = end - _RECORD_LEN, 0, 0
                continue
            frame += 1
            if wirelen > caplen:
                truncated += 1
            if pos >= mark:
                if batch:
                    yield batch
                    batch = []
                    add = batch.append
                if pos >= checkpoint:
                    cap.publish(base + pos, frame - 1, non_tcp)
                    checkpoint = pos + step
                mark = min(checkpoint, pos + BATCH_BYTES)
            if caplen >= fast_min:
                if keyed:
                    ethertype, vihl, total, frag, proto, key, seq, doff, flags = eth_key(buf, start + 12)
                    if ethertype == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF:
                        ip_end = start + 14 + total
                        pstart = start + 34 + ((doff >> 4) << 2)
                        if ip_end <= nxt and pstart <= ip_end and doff >= 0x50:
                            pos = nxt
                            add((key, sec + frac / div, seq, flags, buf[pstart:ip_end], 0))
                            continue
                else:
                    (ethertype, vihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff,
                     flags) = eth_ip_tcp(buf, start + 12)
                    if ethertype == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF:
                        ip_end = start + 14 + total
                        pstart = start + 34 + ((doff >> 4) << 2)
                        if ip_end <= nxt and pstart <= ip_end and doff >= 0x50:
                            pos = nxt
                            yield (frame, sec + frac / div, src, sport, dst, dport, seq, ack, flags,
                                   buf[pstart:ip_end], 0)
                            continue
            if link is None:
                unsupported += 1
                non_tcp += 1
            else:
                tail = decode(link, buf, start, nxt)
                if tail.__class__ is tuple:
                    pos = nxt
                    if keyed:
                        src, sport, dst, dport, seq, ack, flags, payload, missing = tail
                        add((src + dst + ports(sport, dport), sec + frac / div, seq, flags, payload, missing))
                    else:
                        yield (frame, sec + frac / div) + tail
                    continue
                non_tcp += 1
                if tail == FRAGMENT:
                    if not frags:
                        cap.warn(base + pos, f"frame {frame}: IP fragment skipped (fragments are not "
                                             "reassembled; all are counted in stats.ip_fragments)")
                    frags += 1
                elif tail == SHORT:
                    short += 1
            pos = nxt
        if batch:
            yield batch
    finally:
        if source.problem:
            cap.warn(base + pos, source.problem + "; stopped reading")
            source.problem = None
        if source.gzip_warning:
            cap.warn(base + pos, source.gzip_warning)
        stats.frames, stats.tcp_segments, stats.non_tcp = frame, frame - non_tcp, non_tcp
        stats.truncated_frames, stats.ip_fragments = truncated, frags
        stats.short_frames, stats.unsupported_link = short, unsupported
        stats.bytes = base + pos
        cap.offset = base + pos
