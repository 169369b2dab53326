# SPDX-License-Identifier: GPL-2.0-or-later
"""RAM-record walking shared by the main channel ("ram" sections) and the preempt channel."""

from __future__ import annotations

from typing import Any

from dissectors.channels.engine import StreamParser
from dissectors.layers.ram import (
    ENCODING_FLAG_XBZRLE,
    RAM_FLAGS_WITH_BLOCK,
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_MULTIFD_FLUSH,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
    RamBlockInfo,
    RamCompress,
    RamRecord,
    RamXbzrle,
    compress_bound,
)
from dissectors.layers.structs import struct_of

_WORD = struct_of(RamRecord, "addr", "flags")
_USED_LENGTH = struct_of(RamBlockInfo, "used_length", "used_length")
_XBZRLE = struct_of(RamXbzrle, "encoding", "len")
_COMPRESS_LEN = struct_of(RamCompress, "len", "len")
_MAX_MEM_SIZE_BLOCKS = 4096


class RamWalker(StreamParser):
    """Walks RAM records; subclasses decide what follows EOS (``_after_eos``)."""

    def __init__(self, page_size: int = 4096) -> None:
        self.page_size = page_size
        self._mask = page_size - 1
        self._block: str | None = None
        super().__init__()

    def _after_eos(self) -> None:
        """Called after an EOS record; the default keeps walking RAM records."""

    def _block_name(self, mv: memoryview, p: int, n: int) -> str:
        return bytes(mv[p:p + n]).decode("latin-1")

    def _st_ram(self, mv: memoryview, pos: int, end: int) -> int | None:
        if end - pos < 8:
            return None
        (word,) = _WORD.unpack_from(mv, pos)
        flags = word & self._mask
        addr = word ^ flags
        kind = flags & ~RAM_SAVE_FLAG_CONTINUE
        p = pos + 8
        off = self._base + pos
        block = self._block
        if kind & RAM_FLAGS_WITH_BLOCK:
            if not flags & RAM_SAVE_FLAG_CONTINUE:
                if p >= end:
                    return None
                n = mv[p]
                if n == 0:
                    self._malformed(off, "empty RAM block idstr")
                    return None
                if end - p < 1 + n:
                    return None
                block = self._block_name(mv, p + 1, n)
                p += 1 + n
            elif block is None:
                self._malformed(off, "CONTINUE without a previous block", flags=flags)
                return None
        if kind == RAM_SAVE_FLAG_PAGE:
            self._block = block
            self._emit_skipping("ram.page", off, p - pos + self.page_size, {"block": block, "addr": addr},
                                self.page_size)
            return p
        if kind == RAM_SAVE_FLAG_ZERO:
            if p >= end:
                return None
            self._block = block
            self._emit("ram.zero", off, p + 1 - pos, {"block": block, "addr": addr, "fill": mv[p]})
            return p + 1
        if kind == RAM_SAVE_FLAG_EOS and addr == 0:
            self._emit("ram.eos", off, 8, {})
            self._after_eos()
            return p
        if kind == RAM_SAVE_FLAG_MULTIFD_FLUSH and addr == 0:
            self._emit("ram.multifd_flush", off, 8, {})
            return p
        if kind == RAM_SAVE_FLAG_MEM_SIZE:
            return self._mem_size(mv, pos, end, addr)
        if kind == RAM_SAVE_FLAG_XBZRLE:
            if end - p < _XBZRLE.size:
                return None
            enc, n = _XBZRLE.unpack_from(mv, p)
            if enc != ENCODING_FLAG_XBZRLE:
                self._malformed(off, "bad XBZRLE encoding byte", encoding=enc)
                return None
            self._block = block
            p += _XBZRLE.size
            self._emit_skipping("ram.xbzrle", off, p - pos + n, {"block": block, "addr": addr, "len": n}, n)
            return p
        if kind == RAM_SAVE_FLAG_COMPRESS_PAGE:
            if end - p < _COMPRESS_LEN.size:
                return None
            (n,) = _COMPRESS_LEN.unpack_from(mv, p)
            if n > compress_bound(self.page_size):
                self._malformed(off, "COMPRESS_PAGE length above compressBound(page)", len=n)
                return None
            self._block = block
            p += _COMPRESS_LEN.size
            self._emit_skipping("ram.compress", off, p - pos + n, {"block": block, "addr": addr, "len": n}, n)
            return p
        self._malformed(off, "unknown RAM record flags", flags=flags, addr=addr)
        return None

    def _mem_size(self, mv: memoryview, pos: int, end: int, total: int) -> int | None:
        """MEM_SIZE block list; an optional be64 after a block (postcopy page size, ignore-shared address)
        is recognised because an idstr length is never 0 and a record word always has flag bits."""
        p = pos + 8
        acc = 0
        blocks: list[dict[str, Any]] = []
        while acc < total:
            if len(blocks) >= _MAX_MEM_SIZE_BLOCKS:
                self._malformed(self._base + pos, "MEM_SIZE block list does not add up")
                return None
            if p >= end:
                return None
            n = mv[p]
            if n == 0:
                self._malformed(self._base + pos, "MEM_SIZE block with an empty idstr")
                return None
            if end - p < 1 + n + 8:
                return None
            name = self._block_name(mv, p + 1, n)
            (used,) = _USED_LENGTH.unpack_from(mv, p + 1 + n)
            p += 1 + n + 8
            acc += used
            info: dict[str, Any] = {"idstr": name, "used_length": used}
            extras: list[int] = []
            while len(extras) < 2:
                if acc < total:
                    if p >= end:
                        return None
                    if mv[p] != 0:
                        break
                if end - p < 8:
                    return None
                (value,) = _WORD.unpack_from(mv, p)
                if value & self._mask:
                    break
                extras.append(value)
                p += 8
            if extras:
                info["extra"] = extras
            blocks.append(info)
        if acc != total:
            self._malformed(self._base + pos, "MEM_SIZE block lengths overshoot the total", total=total)
            return None
        self._emit("ram.mem_size", self._base + pos, p - pos, {"total": total, "blocks": blocks})
        return p
