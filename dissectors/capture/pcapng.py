"""pcapng block walk: sections of either byte order, many interfaces, EPB / SPB / obsolete PB.

Interface Description Blocks give each interface its link type, snaplen and timestamp resolution
(``if_tsresol``, power of 10 or of 2) and offset (``if_tsoffset``); a new Section Header Block restarts
interface numbering. Other block types (name resolution, statistics, secrets, custom) are skipped.

As in pcap.py, keyed walks yield lists, and the compiled scanner (when built) takes runs of EPBs of the
current Ethernet interface holding plain Ethernet/IPv4/TCP frames; this loop handles every other block.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from .frames import FRAGMENT, SHORT, decode_frame
from .limits import BATCH_BYTES, MAX_RECORD, PROGRESS_STEP
from .linktypes import LINK_DECODERS, LINK_LAYOUTS, LinkDecoder, linktype_name
from .scanner import Runs, compiled_scanner, scan_runs

if TYPE_CHECKING:
    from .reader import Capture

SHB_TYPE = 0x0A0D0D0A
SHB_MAGIC = bytes.fromhex("0a0d0d0a")
_BOM = 0x1A2B3C4D
_IDB, _OPB, _SPB, _EPB = 1, 2, 3, 6
_OPT_TSRESOL, _OPT_TSOFFSET = 9, 14
_ETH_IPV4_TCP = struct.Struct("!HBxHxxHxB2x4s4sHHIIBB")
_ETH_IPV4_TCP_KEYED = struct.Struct("!HBxHxxHxB2x12sI4xBB")  # see pcap.py
_PORTS = struct.Struct("!HH").pack


class Interface(NamedTuple):
    link: LinkDecoder | None
    divisor: int
    tsoffset: int
    snaplen: int
    fast: bool
    layout: tuple[int, int] | None  # for the compiled scanner (linktypes.LINK_LAYOUTS)


def _parse_idb(buf: memoryview, pos: int, blen: int, order: str) -> tuple[int, int, int, int]:
    """Return (linktype, snaplen, divisor, tsoffset) of the IDB at ``pos``."""
    linktype, snaplen = struct.unpack_from(order + "H2xI", buf, pos + 8)
    divisor, tsoffset = 1_000_000, 0
    opt = pos + 16
    stop = pos + blen - 4
    opt_header = struct.Struct(order + "HH").unpack_from
    while opt + 4 <= stop:
        code, length = opt_header(buf, opt)
        if code == 0:
            break
        value = opt + 4
        if value + length > stop:
            break
        if code == _OPT_TSRESOL and length >= 1:
            res = buf[value]
            divisor = 1 << (res & 0x7F) if res & 0x80 else 10 ** res
        elif code == _OPT_TSOFFSET and length >= 8:
            tsoffset = struct.unpack_from(order + "q", buf, value)[0]
        opt = value + ((length + 3) & ~3)
    return linktype, snaplen, divisor, tsoffset


def pcapng_segments(cap: Capture, keyed: bool = False, runs: Runs | None = None) -> Iterator[tuple]:
    """Yield segment tuples of a pcapng file; counters and warnings go to ``cap``.

    ``keyed``: yield lists of ``KeyedSegment`` tuples (a list per ``BATCH_BYTES`` of capture) instead of single
    ``TcpSegment`` ones (see ``records``); ``runs``: the compiled scanner's lists come coalesced, as
    ``(entries, last_ts)`` (see ``scanner.scan_runs``)."""
    source = cap.source
    buf = source.first()
    base = 0
    end = len(buf)
    stats = cap.stats
    stats.format = "pcapng"
    order = "<"
    block_header = struct.Struct("<II").unpack_from
    u32 = struct.Struct("<I").unpack_from
    epb_block = struct.Struct("<IIIIIII").unpack_from  # type, length, interface, ts high/low, caplen, wirelen
    opb_fields = struct.Struct("<HHIIII").unpack_from
    eth_ip_tcp = _ETH_IPV4_TCP.unpack_from
    eth_key = _ETH_IPV4_TCP_KEYED.unpack_from
    ports = _PORTS
    decode = decode_frame
    max_record = MAX_RECORD
    step = PROGRESS_STEP
    interfaces: list[Interface] = []
    current = -1  # interface whose settings are bound to the locals below
    link: LinkDecoder | None = None
    divisor, tsoffset, fast_min = 1_000_000, 0, 1 << 62
    layout: tuple[int, int] | None = None  # the current interface's link layout for the scanner
    section = -1
    last_ts = 0.0
    batch: list[tuple] = []
    add = batch.append
    scan = compiled_scanner("pcapng") if keyed else None
    cool = 0

    pos = 0
    checkpoint = step
    mark = BATCH_BYTES  # the next flush of ``batch`` or checkpoint, whichever is first
    frame = non_tcp = truncated = frags = short = unsupported = 0
    try:
        while True:
            if scan is not None and layout is not None:  # the current interface's link type is scanned
                if cool:
                    cool -= 1
                elif pos < checkpoint:
                    rest = (order == ">", current, divisor, tsoffset, max_record, *layout)
                    if batch:
                        yield batch
                        batch = []
                        add = batch.append
                    pos, count, cut, cool, ts = yield from scan_runs(scan, buf, pos, checkpoint, end, rest, runs)
                    frame += count
                    truncated += cut
                    if ts is not None:
                        last_ts = ts
            if pos + 28 <= end:  # room for an EPB's fixed part: read it in one go, whatever the block is
                btype, blen, ifid, ts_high, ts_low, caplen, wirelen = epb_block(buf, pos)
            elif pos + 12 <= end:
                btype, blen = block_header(buf, pos)
            else:
                if batch:  # hand over what is read before waiting for more (a live stream)
                    yield batch
                    batch = []
                    add = batch.append
                grown = source.more(buf, pos, 12)
                if grown is None:
                    if pos < end:
                        cap.warn(base + pos, f"truncated block header ({end - pos} bytes); stopped reading")
                    break
                buf, base, pos, end = grown, base + pos, 0, len(grown)
                checkpoint = mark = 0
                continue
            if btype == SHB_TYPE:
                bom = bytes(buf[pos + 8:pos + 12])
                if bom == b"\x4d\x3c\x2b\x1a":
                    new_order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    new_order = ">"
                else:
                    cap.warn(base + pos, "section header with an unknown byte-order magic; stopped reading")
                    break
                if new_order != order:
                    order = new_order
                    block_header = struct.Struct(order + "II").unpack_from
                    u32 = struct.Struct(order + "I").unpack_from
                    epb_block = struct.Struct(order + "IIIIIII").unpack_from
                    opb_fields = struct.Struct(order + "HHIIII").unpack_from
                    btype, blen = block_header(buf, pos)
            if blen < 12 or blen & 3 or blen > max_record:
                cap.warn(base + pos, f"invalid block length {blen} (block type 0x{btype:08x}): garbage or "
                                     "corrupt file; stopped reading")
                break
            nxt = pos + blen
            if nxt > end:
                if batch:  # hand over what is read before waiting for more (a live stream)
                    yield batch
                    batch = []
                    add = batch.append
                grown = source.more(buf, pos, blen)
                if grown is None or len(grown) < blen:
                    have = len(grown) if grown is not None else end - pos
                    cap.warn(base + pos, f"truncated block (type 0x{btype:08x}): {blen} bytes announced, "
                                         f"{have} present; stopped reading")
                    break
                buf, base, pos, end = grown, base + pos, 0, len(grown)
                checkpoint = mark = 0
                continue
            if u32(buf, nxt - 4)[0] != blen:
                cap.warn(base + pos, f"block (type 0x{btype:08x}) trailing length differs from its leading "
                                     f"length {blen}: corrupt file; stopped reading")
                break

            if btype == _EPB:  # fields were read with the header (a short EPB fails the caplen check below)
                start = pos + 28
            elif btype == _SPB:
                wirelen = u32(buf, pos + 8)[0]
                caplen = min(wirelen, blen - 16)
                if interfaces and interfaces[0].snaplen:
                    caplen = min(caplen, interfaces[0].snaplen)
                ifid = 0
                start = pos + 12
            elif btype == _OPB:
                ifid, _drops, ts_high, ts_low, caplen, wirelen = opb_fields(buf, pos + 8)
                start = pos + 28
            else:
                if btype == _IDB:
                    if blen < 20:
                        cap.warn(base + pos, "interface description block too short; stopped reading")
                        break
                    linktype, snaplen, divisor, tsoffset = _parse_idb(buf, pos, blen, order)
                    link = LINK_DECODERS.get(linktype)
                    name = linktype_name(linktype)
                    stats.link_types.add(name)
                    stats.snaplen = max(stats.snaplen, snaplen)
                    if link is None:
                        cap.warn(base + pos, f"unsupported link type {linktype} ({name}) on interface "
                                             f"{len(interfaces)} (section {section}): its frames are skipped "
                                             "and counted")
                    interfaces.append(Interface(link, divisor, tsoffset, snaplen, linktype == 1,
                                                LINK_LAYOUTS.get(linktype)))
                elif btype == SHB_TYPE:
                    section += 1
                    interfaces = []
                    current, layout = -1, None
                pos = nxt
                continue

            stop = start + caplen
            if stop > nxt - 4 and btype != _SPB:
                cap.warn(base + pos, f"packet block claims {caplen} captured bytes but holds "
                                     f"{nxt - 4 - start}: corrupt file; stopped reading")
                break
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
            if ifid != current:
                if ifid >= len(interfaces):
                    cap.warn(base + pos, f"frame {frame} names interface {ifid}, which section {section} does "
                                         "not describe; skipped")
                    unsupported += 1
                    non_tcp += 1
                    pos = nxt
                    continue
                current = ifid
                link, divisor, tsoffset, _snaplen, fast, layout = interfaces[ifid]
                fast_min = 54 if fast else 1 << 62
            if btype != _SPB:
                last_ts = ((ts_high << 32) | ts_low) / divisor + tsoffset
            if caplen >= fast_min:
                if keyed:
                    ethertype, vihl, total, frag, proto, key, seq, doff, flags = eth_key(buf, start + 12)
                    if ethertype == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF:
                        ip_end = start + 14 + total
                        pstart = start + 34 + ((doff >> 4) << 2)
                        if ip_end <= stop and pstart <= ip_end and doff >= 0x50:
                            pos = nxt
                            add((key, last_ts, seq, flags, buf[pstart:ip_end], 0))
                            continue
                else:
                    (ethertype, vihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff,
                     flags) = eth_ip_tcp(buf, start + 12)
                    if ethertype == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF:
                        ip_end = start + 14 + total
                        pstart = start + 34 + ((doff >> 4) << 2)
                        if ip_end <= stop and pstart <= ip_end and doff >= 0x50:
                            pos = nxt
                            yield (frame, last_ts, src, sport, dst, dport, seq, ack, flags, buf[pstart:ip_end], 0)
                            continue
            if link is None:
                unsupported += 1
                non_tcp += 1
            else:
                tail = decode(link, buf, start, stop)
                if tail.__class__ is tuple:
                    pos = nxt
                    if keyed:
                        src, sport, dst, dport, seq, ack, flags, payload, missing = tail
                        add((src + dst + ports(sport, dport), last_ts, seq, flags, payload, missing))
                    else:
                        yield (frame, last_ts) + tail
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
