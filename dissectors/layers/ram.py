# SPDX-License-Identifier: GPL-2.0-or-later
"""RAM records: the payload of the "ram" section on the main channel and the whole preempt channel.

Each record starts with a be64 word ``offset-in-block | flags`` (``save_page_header`` in
``migration/ram.c``); the flags sit below the target page bits. An idstr follows unless CONTINUE is set
(only for records that name a page). Declared here for 4 KiB target pages (x86): 52 + 12 bits.
"""

from __future__ import annotations

from typing import Any

from scapy.fields import (
    ByteField,
    ConditionalField,
    FieldLenField,
    FlagsField,
    IntField,
    LongField,
    PacketListField,
    StrFixedLenField,
    StrLenField,
    XBitField,
    XLongField,
)
from scapy.packet import Packet

from dissectors.layers.main_stream import MainRecord
from dissectors.layers.rules import compress_bound  # noqa: F401 - part of this layer's API
from dissectors.layers.strings import counted_string

TARGET_PAGE_BITS = 12
TARGET_PAGE_SIZE = 1 << TARGET_PAGE_BITS

RAM_SAVE_FLAG_FULL = 0x01
RAM_SAVE_FLAG_ZERO = 0x02
RAM_SAVE_FLAG_MEM_SIZE = 0x04
RAM_SAVE_FLAG_PAGE = 0x08
RAM_SAVE_FLAG_EOS = 0x10
RAM_SAVE_FLAG_CONTINUE = 0x20
RAM_SAVE_FLAG_XBZRLE = 0x40
RAM_SAVE_FLAG_HOOK = 0x80
RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100
RAM_SAVE_FLAG_MULTIFD_FLUSH = 0x200
#: ``MAPPED_RAM_HDR_VERSION``
MAPPED_RAM_HDR_VERSION = 1

#: Flag names by bit position (bit 0 = 0x01).
RAM_FLAG_NAMES: list[str] = [
    "FULL", "ZERO", "MEM_SIZE", "PAGE", "EOS", "CONTINUE", "XBZRLE", "HOOK", "COMPRESS_PAGE",
    "MULTIFD_FLUSH", "bit10", "bit11",
]

#: Record types that name a page and therefore carry an idstr unless CONTINUE is set.
RAM_FLAGS_WITH_BLOCK = (RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_XBZRLE
                        | RAM_SAVE_FLAG_COMPRESS_PAGE)

#: XBZRLE encoding byte (``ENCODING_FLAG_XBZRLE``).
ENCODING_FLAG_XBZRLE = 0x01


class PageOffsetField(XBitField):
    """The high bits of the record word, shown and set as a byte offset (low bits are the flags)."""

    __slots__ = ["shift"]

    def __init__(self, name: str, default: int, size: int, shift: int) -> None:
        super().__init__(name, default, size)
        self.shift = shift

    def i2m(self, pkt: Any, x: int | None) -> int:
        return (x or 0) >> self.shift

    def m2i(self, pkt: Any, x: int) -> int:
        return x << self.shift


def _has_idstr(pkt: Packet) -> bool:
    flags = int(pkt.flags)
    return bool(flags & RAM_FLAGS_WITH_BLOCK) and not flags & RAM_SAVE_FLAG_CONTINUE


class RamRecord(Packet):
    name = "RAM record"
    fields_desc = [
        PageOffsetField("addr", 0, 64 - TARGET_PAGE_BITS, TARGET_PAGE_BITS),
        FlagsField("flags", RAM_SAVE_FLAG_PAGE, TARGET_PAGE_BITS, RAM_FLAG_NAMES),
        *(ConditionalField(f, _has_idstr) for f in counted_string("idstr", "idlen")),
    ]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        kind = int(self.flags) & ~RAM_SAVE_FLAG_CONTINUE
        if kind == RAM_SAVE_FLAG_EOS:
            return MainRecord  # the section footer follows
        return RAM_PAYLOADS.get(kind, RamRecord)


class _NextRam(Packet):
    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return RamRecord


class RamZero(_NextRam):
    name = "RAM ZERO payload"
    fields_desc = [ByteField("fill", 0)]


class RamPage(_NextRam):
    name = "RAM PAGE payload"
    fields_desc = [StrFixedLenField("data", b"\0" * TARGET_PAGE_SIZE, length=TARGET_PAGE_SIZE)]


class RamXbzrle(_NextRam):
    name = "RAM XBZRLE payload"
    fields_desc = [
        ByteField("encoding", ENCODING_FLAG_XBZRLE),
        FieldLenField("len", None, length_of="data", fmt="!H"),
        StrLenField("data", b"", length_from=lambda pkt: pkt.len),
    ]


class RamCompress(_NextRam):
    """``be32 len`` + a complete zlib stream (deflateReset + Z_FINISH per page), QEMU <= 9.0."""

    name = "RAM COMPRESS_PAGE payload"
    fields_desc = [
        FieldLenField("len", None, length_of="data", fmt="!I"),
        StrLenField("data", b"", length_from=lambda pkt: pkt.len),
    ]


class RamBlockInfo(Packet):
    """One MEM_SIZE entry (without the optional postcopy page size / ignore-shared address)."""

    name = "RAM block"
    fields_desc = [*counted_string("idstr", "idlen"), LongField("used_length", 0)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class MappedRamHeader(Packet):
    """After each MEM_SIZE entry of a mapped-ram stream (``migration/ram.c`` ``MappedRamHeader``, packed,
    big-endian; ``mapped_ram_setup_ramblock``): the block's dirty bitmap (host-endian unsigned longs, one
    bit per target page, written at the end) lies at ``bitmap_offset`` and its pages at ``pages_offset +
    page address``, both absolute file offsets; the stream goes on at ``pages_offset + used_length``."""

    name = "mapped-ram block header"
    fields_desc = [
        IntField("version", MAPPED_RAM_HDR_VERSION),
        LongField("page_size", 4096),
        XLongField("bitmap_offset", 0),
        XLongField("pages_offset", 0),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class RamBlockExtra(Packet):
    """An optional be64 after a MEM_SIZE entry: the block's page size (postcopy, when it is not the
    host's) or its address (ignore-shared). Told apart from the next entry because an idstr length is
    never 0 and a RAM record word always has flag bits."""

    name = "RAM block extra"
    fields_desc = [LongField("value", 0)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


#: At most this many RAM blocks in a MEM_SIZE list (each with up to two extra words) are decoded.
MEM_SIZE_MAX_BLOCKS = 4096
MEM_SIZE_MAX_EXTRAS = 2


def _next_block(pkt: Packet, lst: list[Packet], cur: Packet | None, remain: bytes) -> type[Packet] | None:
    """The next entry of a MEM_SIZE list: a block until the lengths add up to the total, each block
    followed by up to two extra words. An extra is a page-aligned be64 (a RAM record word always has
    flag bits) where the next block would start with its idstr length, never 0."""
    total = pkt.underlayer.addr if pkt.underlayer is not None else 0
    entries = [*lst, cur] if cur is not None else list(lst)
    done = sum(e.used_length for e in entries if isinstance(e, RamBlockInfo))
    extras = 0
    for e in reversed(entries):
        if not isinstance(e, RamBlockExtra):
            break
        extras += 1
    if not remain:
        return None
    if entries and extras < MEM_SIZE_MAX_EXTRAS and len(remain) >= 8 and (done >= total or remain[0] == 0):
        if not int.from_bytes(remain[:8], "big") & (TARGET_PAGE_SIZE - 1):
            return RamBlockExtra
    return RamBlockInfo if done < total else None


class RamMemSize(_NextRam):
    """Block list following a MEM_SIZE word; it ends when the lengths add up to the word's total."""

    name = "RAM MEM_SIZE payload"
    fields_desc = [PacketListField("blocks", [], next_cls_cb=_next_block,
                                   max_count=MEM_SIZE_MAX_BLOCKS * (1 + MEM_SIZE_MAX_EXTRAS))]


RAM_PAYLOADS: dict[int, type[Packet]] = {
    RAM_SAVE_FLAG_ZERO: RamZero,
    RAM_SAVE_FLAG_PAGE: RamPage,
    RAM_SAVE_FLAG_XBZRLE: RamXbzrle,
    RAM_SAVE_FLAG_COMPRESS_PAGE: RamCompress,
    RAM_SAVE_FLAG_MEM_SIZE: RamMemSize,
}
