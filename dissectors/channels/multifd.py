# SPDX-License-Identifier: GPL-2.0-or-later
"""Multifd channel parser: 64-byte hello, then RAM packets, SYNC packets and device-state packets.

The packet data (next_packet_size bytes) is skipped by length; compressed data is carried opaque.
After a gap the parser scans for the packet magic + version and a plausible header.
"""

from __future__ import annotations

from typing import Any

from dissectors.channels.engine import State, StreamParser
from dissectors.layers.multifd import (
    MULTIFD_COMPRESSION,
    MULTIFD_FLAG_COMPRESSION_MASK,
    MULTIFD_FLAG_DEVICE_STATE,
    MULTIFD_FLAG_SYNC,
    MULTIFD_MAGIC,
    MULTIFD_VERSION,
    MultifdDeviceStatePacket,
    MultifdHello,
    MultifdPacketHdr,
    MultifdRamPacket,
    multifd_page_count,
)
from dissectors.layers.structs import item_struct, struct_of

_HELLO = struct_of(MultifdHello)
_HDR = struct_of(MultifdPacketHdr)
_RAM = struct_of(MultifdRamPacket, None, "ramblock")
_DEV = struct_of(MultifdDeviceStatePacket)
_OFFSET = item_struct(MultifdRamPacket, "offsets")
_MAGIC_BYTES = _HDR.pack(MULTIFD_MAGIC, MULTIFD_VERSION, 0)[:8]
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
        self.header_size = _RAM.size + 8 * self.page_count
        self._resync_from = 0
        super().__init__()

    def _initial_state(self) -> State:
        return self._st_hello

    def _resync_state(self) -> State | None:
        return self._st_resync

    def _st_hello(self, mv: memoryview, pos: int, end: int) -> int | None:
        if end - pos < _HELLO.size:
            return None
        magic, version, uuid, cid, _, _ = _HELLO.unpack_from(mv, pos)
        off = self._base + pos
        if magic != MULTIFD_MAGIC or version != MULTIFD_VERSION:
            self._malformed(off, "bad multifd initial packet", magic=magic, version=version)
            return None
        self._emit("multifd.hello", off, _HELLO.size, {"version": version, "uuid": format_uuid(uuid), "id": cid},
                   bytes(mv[pos:pos + _HELLO.size]))
        self._state = self._st_packet
        return pos + _HELLO.size

    def _check_ram(self, values: tuple[Any, ...]) -> str | None:
        _, _, flags, alloc, normal, size, _, zero, *_ = values
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
        magic, version, flags = _HDR.unpack_from(mv, pos)
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
        _, _, flags, alloc, normal, size, num, zero, _, _, block = values
        fields = {
            "flags": flags, "packet_num": num, "pages_alloc": alloc, "normal_pages": normal, "zero_pages": zero,
            "block": _cstr(block), "next_packet_size": size,
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
        kind = "multifd.sync" if flags & MULTIFD_FLAG_SYNC else "multifd.packet"
        self._emit_skipping(kind, off, self.header_size + data, fields, data)
        return pos + self.header_size

    def _device_state(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        if end - pos < _DEV.size:
            return None
        _, _, flags, idstr, instance_id, size = _DEV.unpack_from(mv, pos)
        if size > MAX_DEVICE_STATE_BLOB or flags & ~_KNOWN_FLAGS:
            self._malformed(off, "implausible device-state packet", flags=flags, next_packet_size=size)
            return None
        fields = {"flags": flags, "idstr": _cstr(idstr), "instance_id": instance_id, "next_packet_size": size}
        if size == 0 or flags & MULTIFD_FLAG_SYNC:
            fields["invalid"] = "QEMU rejects empty or SYNC device-state packets"
        self._emit_skipping("multifd.device_state", off, _DEV.size + size, fields, size)
        return pos + _DEV.size

    def _st_resync(self, mv: memoryview, pos: int, end: int) -> int | None:
        chunk = bytes(mv[pos:end])
        i = chunk.find(_MAGIC_BYTES)
        while i >= 0:
            if len(chunk) - i < self.header_size:
                return pos + i if i else None
            values = _RAM.unpack_from(chunk, i)
            plausible = (values[2] & MULTIFD_FLAG_DEVICE_STATE) or self._check_ram(values) is None
            if plausible:
                found = self._base + pos + i
                if found > self._resync_from:
                    self._emit("opaque", self._resync_from, found - self._resync_from,
                               {"reason": "skipped while resynchronising after a gap"})
                self._state = self._st_packet
                return pos + i
            i = chunk.find(_MAGIC_BYTES, i + 1)
        keep = max(pos, end - (len(_MAGIC_BYTES) - 1))
        return keep if keep > pos else None
