# SPDX-License-Identifier: GPL-2.0-or-later
"""Multifd channel structures: the 64-byte hello (``MultiFDInit_t``) and the packet headers.

Source: ``migration/multifd.h`` / ``multifd.c`` (see docs/wire-format.md for the commits). The RAM
packet header is ``320 + 8 * page_count`` bytes; page_count = 512 KiB / target page size (128 for 4 KiB).
7.2-8.2 sent ``unused[4]`` where 9.0+ sends ``zero_pages`` + reserved words: both are declared.
"""

from __future__ import annotations

from typing import Any

from scapy.fields import (
    ByteField,
    FieldListField,
    FlagsField,
    IntField,
    LongField,
    StrFixedLenField,
    XIntField,
    XLongField,
    XStrFixedLenField,
)
from scapy.packet import Packet, Raw

from dissectors.layers.rules import MULTIFD_PACKET_BYTES, multifd_page_count  # noqa: F401 - this layer's API
from dissectors.layers.structs import fixed_size, item_struct, struct_of

MULTIFD_MAGIC = 0x11223344
MULTIFD_VERSION = 1

MULTIFD_FLAG_SYNC = 0x01
MULTIFD_FLAG_COMPRESSION_MASK = 0x3E
MULTIFD_FLAG_DEVICE_STATE = 0x40

#: Flag names by bit position; bits 1-5 are the compression method (a single bit each, 0 = nocomp).
MULTIFD_FLAG_NAMES: list[str] = ["SYNC", "ZLIB", "ZSTD", "QPL", "UADK", "QATZIP", "DEVICE_STATE"]

MULTIFD_COMPRESSION: dict[int, str] = {
    0x00: "nocomp", 0x02: "zlib", 0x04: "zstd", 0x08: "qpl", 0x10: "uadk", 0x20: "qatzip",
}

#: Page offsets declared in a header for 4 KiB target pages (multifd_ram_page_count()).
PAGE_COUNT_4K = multifd_page_count(4096)


class MultifdHello(Packet):
    """``MultiFDInit_t``: first 64 bytes of every multifd connection."""

    name = "multifd initial packet"
    fields_desc = [
        XIntField("magic", MULTIFD_MAGIC),
        IntField("version", MULTIFD_VERSION),
        XStrFixedLenField("uuid", b"\0" * 16, length=16),
        ByteField("id", 0),
        XStrFixedLenField("unused1", b"\0" * 7, length=7),
        XStrFixedLenField("unused2", b"\0" * 32, length=32),
    ]


class MultifdPacketHdr(Packet):
    """The common 12-byte start (``MultiFDPacketHdr_t``); ``MultifdPacketHdr(raw)`` dispatches."""

    name = "multifd packet"
    fields_desc = [
        XIntField("magic", MULTIFD_MAGIC),
        IntField("version", MULTIFD_VERSION),
        FlagsField("flags", 0, 32, MULTIFD_FLAG_NAMES),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        if _pkt and len(_pkt) >= fixed_size(MultifdPacketHdr):
            (flags,) = struct_of(MultifdPacketHdr, "flags", "flags").unpack_from(
                _pkt, fixed_size(MultifdPacketHdr, None, "version"))
            if flags & MULTIFD_FLAG_DEVICE_STATE:
                return MultifdDeviceStatePacket
            return MultifdRamPacket
        return cls


class _MultifdRam(Packet):
    page_count = PAGE_COUNT_4K

    def header_size(self) -> int:
        """The fixed fields before ``offsets``, then ``page_count`` offsets (``320 + 8 * page_count``)."""
        cls = type(self)
        names = [f.name for f in cls.fields_desc]
        before = names[names.index("offsets") - 1]
        return fixed_size(cls, None, before) + item_struct(cls, "offsets").size * self.page_count

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        want = self.header_size()
        return pkt + b"\0" * (want - len(pkt)) + pay if len(pkt) < want else pkt + pay

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return Raw


class MultifdRamPacket(_MultifdRam):
    """9.0+ RAM packet header (normal offsets first, then zero-page offsets; unused slots zero)."""

    name = "multifd RAM packet"
    fields_desc = [
        *MultifdPacketHdr.fields_desc,
        IntField("pages_alloc", 0),
        IntField("normal_pages", 0),
        IntField("next_packet_size", 0),
        LongField("packet_num", 0),
        IntField("zero_pages", 0),
        IntField("unused32", 0),
        XStrFixedLenField("unused64", b"\0" * 24, length=24),
        StrFixedLenField("ramblock", b"", length=256),
        FieldListField("offsets", [], XLongField("", 0), count_from=lambda pkt: pkt.page_count,
                       max_count=1 << 20),
    ]


class MultifdRamPacketV1(_MultifdRam):
    """7.2-8.2 RAM packet header: ``unused[4]`` (be64) where 9.0 put ``zero_pages``."""

    name = "multifd RAM packet (7.2-8.2)"
    fields_desc = [
        *MultifdRamPacket.fields_desc[:7],
        XStrFixedLenField("unused", b"\0" * 32, length=32),
        *MultifdRamPacket.fields_desc[10:],
    ]


class MultifdDeviceStatePacket(Packet):
    """10.0+ ``MultiFDPacketDeviceState_t`` (276 bytes); next_packet_size bytes of blob follow."""

    name = "multifd device-state packet"
    fields_desc = [
        *MultifdPacketHdr.fields_desc,
        StrFixedLenField("idstr", b"", length=256),
        IntField("instance_id", 0),
        IntField("next_packet_size", 0),
    ]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return Raw
