# SPDX-License-Identifier: GPL-2.0-or-later
"""Multifd channel parser: 64-byte hello, then RAM packets, SYNC packets and device-state packets.

The packet data (next_packet_size bytes) is skipped by length; compressed data is carried opaque.
After a gap the parser scans for the packet magic + version and a plausible header.
"""

from __future__ import annotations

from typing import Any

from dissectors.channels.cursor import Cursor
from dissectors.channels.engine import State, StreamParser
from dissectors.channels.kinds import MULTIFD_DEVICE_STATE, MULTIFD_HELLO, MULTIFD_PACKET, MULTIFD_SYNC, OPAQUE
from dissectors.layers.derived import (
    MULTIFD_COMPRESSION,
    MULTIFD_FLAG_COMPRESSION_MASK,
    MULTIFD_FLAG_DEVICE_STATE,
    MULTIFD_FLAG_SYNC,
    MULTIFD_MAGIC,
    MULTIFD_VERSION,
)
from dissectors.layers.rules import multifd_page_count
from dissectors.layers.unpack import item_struct, named

_HELLO = named("MultifdHello")
_HDR = named("MultifdPacketHdr")
_RAM = named("MultifdRamPacket", None, "ramblock")
_DEV = named("MultifdDeviceStatePacket")
_OFFSET = item_struct("MultifdRamPacket", "offsets")
_MAGIC_BYTES = named("MultifdPacketHdr", "magic", "version").pack(MULTIFD_MAGIC, MULTIFD_VERSION)
_KNOWN_FLAGS = MULTIFD_FLAG_SYNC | MULTIFD_FLAG_COMPRESSION_MASK | MULTIFD_FLAG_DEVICE_STATE
#: Device-state blobs above this are reported malformed.
MAX_DEVICE_STATE_BLOB = 1 << 30


def format_uuid(b: bytes) -> str:
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("latin-1")


class MultifdParser(StreamParser):
    """Emits multifd.hello, multifd.packet, multifd.sync, multifd.device_state; counts pages."""

    def __init__(self, page_size: int = 4096) -> None:
        self.page_size = page_size
        self.page_count = multifd_page_count(page_size)
        self.header_size = _RAM.size + _OFFSET.size * self.page_count
        super().__init__()

    def _initial_state(self) -> State:
        return self._st_hello

    def _resync_state(self) -> State | None:
        return self._st_resync

    def _st_hello(self, mv: memoryview, pos: int, end: int) -> int | None:
        hello = Cursor(mv, pos, end).read(_HELLO)
        off = self._base + pos
        if hello.magic != MULTIFD_MAGIC or hello.version != MULTIFD_VERSION:
            self._malformed(off, "bad multifd initial packet", magic=hello.magic, version=hello.version)
            return None
        self._emit(MULTIFD_HELLO, off, _HELLO.size,
                   {"version": hello.version, "uuid": format_uuid(hello.uuid), "id": hello.id},
                   bytes(mv[pos:pos + _HELLO.size]))
        self._state = self._st_packet
        return pos + _HELLO.size

    def _check_ram(self, values: Any) -> str | None:
        flags, alloc, normal, size, zero = (values.flags, values.pages_alloc, values.normal_pages,
                                            values.next_packet_size, values.zero_pages)
        if flags & ~_KNOWN_FLAGS:
            return "unknown multifd flags"
        if flags & MULTIFD_FLAG_COMPRESSION_MASK not in MULTIFD_COMPRESSION:
            return "more than one compression flag"
        if alloc > self.page_count or normal > self.page_count or zero > self.page_count - normal:
            return "page counts above the header capacity"
        if normal and flags & MULTIFD_FLAG_COMPRESSION_MASK and size > normal * self.page_size * 2 + 4096:
            return "next_packet_size far above normal_pages x page_size"
        return None

    def _data_length(self, flags: int, normal: int, size: int) -> int:
        """Bytes after the header, as the receiver reads them. Without compression that is the normal
        pages (next_packet_size is not used, and QEMU 7.2-8.2 leave a stale value in it when a packet
        has no pages); with compression next_packet_size, and nothing when there are no normal pages."""
        if not normal:
            return 0
        if flags & MULTIFD_FLAG_COMPRESSION_MASK:
            return size
        return normal * self.page_size

    def _st_packet(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        if end - pos < _HDR.size:
            return None
        magic, version, flags = _HDR.struct.unpack_from(mv, pos)      # hot path: no named tuple
        if magic != MULTIFD_MAGIC or version != MULTIFD_VERSION:
            self._malformed(off, "bad multifd packet magic/version", magic=magic, version=version)
            return None
        if flags & MULTIFD_FLAG_DEVICE_STATE:
            return self._device_state(mv, pos, end)
        if end - pos < self.header_size:
            return None
        values = _RAM.unpack_from(mv, pos)
        problem = self._check_ram(values)
        if problem:
            self._malformed(off, problem, flags=flags)
            return None
        normal, size, zero = values.normal_pages, values.next_packet_size, values.zero_pages
        fields = {
            "flags": flags, "packet_num": values.packet_num, "pages_alloc": values.pages_alloc,
            "normal_pages": normal, "zero_pages": zero, "block": _cstr(values.ramblock), "next_packet_size": size,
            "compression": MULTIFD_COMPRESSION[flags & MULTIFD_FLAG_COMPRESSION_MASK],
        }
        data = self._data_length(flags, normal, size)
        if data != size:
            fields["next_packet_size_ignored"] = True
        if normal:
            # The first and last page of the packet: enough to see QEMU 7.2 queue a page twice
            # (analysis.repeats); the other offsets are not needed on the bulk path.
            offsets = pos + _RAM.size
            fields["first_offset"] = _OFFSET.unpack_from(mv, offsets)[0]
            fields["last_offset"] = _OFFSET.unpack_from(mv, offsets + _OFFSET.size * (normal - 1))[0]
            self._count("multifd.normal_pages", normal)
        if zero:
            self._count("multifd.zero_pages", zero)
        kind = MULTIFD_SYNC if flags & MULTIFD_FLAG_SYNC else MULTIFD_PACKET
        self._emit_skipping(kind, off, self.header_size + data, fields, data)
        return pos + self.header_size

    def _device_state(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        dev = Cursor(mv, pos, end).read(_DEV)
        flags, size = dev.flags, dev.next_packet_size
        if size > MAX_DEVICE_STATE_BLOB or flags & ~_KNOWN_FLAGS:
            self._malformed(off, "implausible device-state packet", flags=flags, next_packet_size=size)
            return None
        fields = {"flags": flags, "idstr": _cstr(dev.idstr), "instance_id": dev.instance_id, "next_packet_size": size}
        if size == 0 or flags & MULTIFD_FLAG_SYNC:
            fields["invalid"] = "QEMU rejects empty or SYNC device-state packets"
        self._emit_skipping(MULTIFD_DEVICE_STATE, off, _DEV.size + size, fields, size)
        return pos + _DEV.size

    def _st_resync(self, mv: memoryview, pos: int, end: int) -> int | None:
        chunk = bytes(mv[pos:end])
        i = chunk.find(_MAGIC_BYTES)
        while i >= 0:
            if len(chunk) - i < self.header_size:
                return pos + i if i else None
            values = _RAM.unpack_from(chunk, i)
            plausible = (values.flags & MULTIFD_FLAG_DEVICE_STATE) or self._check_ram(values) is None
            if plausible:
                found = self._base + pos + i
                if found > self.resync_from:
                    self._emit(OPAQUE, self.resync_from, found - self.resync_from,
                               {"reason": "skipped while resynchronising after a gap"})
                self._state = self._st_packet
                return pos + i
            i = chunk.find(_MAGIC_BYTES, i + 1)
        keep = max(pos, end - (len(_MAGIC_BYTES) - 1))
        return keep if keep > pos else None
