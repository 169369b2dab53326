# SPDX-License-Identifier: GPL-2.0-or-later
"""RAM-record walking shared by the main channel ("ram" sections) and the preempt channel.

Zero-page runs: an idle guest's precopy is millions of 9-byte ZERO records (``RamRecord`` word with
ZERO|CONTINUE, then ``RamZero``'s fill byte), ~2 MB/s of capture one record at a time. A run of them in
the bytes at hand is recognised with a few C-level passes (the word's flag bits at each record's stride,
tested through byte tables built from the record word's size and the page mask) and emitted as ONE
``ram.zero`` record with ``fields["pages"] = n`` and the run's bytes as ``raw``; the parser's counts
still count pages. :func:`expand_zero_run` gives back the per-page records, exactly those of the walk
one record at a time (the same offsets, lengths, fields and time), for whoever shows pages.

Across TCP segments (:meth:`RamWalker.feed`): QEMU's 9-byte records straddle every segment boundary, so
a run's next segment starts with a part-record held from the one before. The held bytes and the segment
are tested as one run in a single call (``_ramrun.run_take``, the optional compiled helper, or
:func:`run_take_py`, the same in Python) and become the run record the walk would have emitted, without
the walk: no byte is looked at twice, nothing is copied but the segment.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from dissectors.channels import kinds as K
from dissectors.channels.cursor import Cursor
from dissectors.channels.engine import WHOLE_CHUNK, StreamParser
from dissectors.channels.record import Record
from dissectors.layers.derived import (
    ENCODING_FLAG_XBZRLE,
    MAPPED_RAM_HDR_VERSION,
    MEM_SIZE_MAX_BLOCKS,
    MEM_SIZE_MAX_EXTRAS,
    RAM_FLAGS_WITH_BLOCK,
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_MULTIFD_FLUSH,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
)
from dissectors.layers.rules import compress_bound
from dissectors.layers.unpack import counted_at, fixed_size, named, struct_of

try:
    from dissectors.channels import _ramrun
except ImportError:  # built without a C compiler or Python headers: run_take_py does the same
    _ramrun = None

_WORD = struct_of("RamRecord", "addr", "flags")
_WORD_SIZE = _WORD.size
_ZERO_SIZE = fixed_size("RamZero")
assert _ZERO_SIZE == 1, "ram.zero reads its fill byte directly"
_USED_LENGTH = named("RamBlockInfo", "used_length", "used_length")
_EXTRA = named("RamBlockExtra")
_MAPPED = named("MappedRamHeader")
#: A mapped-ram block's dirty bitmap is counted (pages written) when it is at most this long (1 TiB of
#: 4 KiB pages); a longer one is skipped uncounted.
MAPPED_BITMAP_MAX = 32 << 10
#: A zero page continuing the current block: its flags, and its record size (word + fill byte).
ZERO_RUN_FLAGS = RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE
ZERO_RECORD_SIZE = _WORD_SIZE + _ZERO_SIZE
#: A run record holds at most this many pages (its ``raw`` at most ~36 KiB).
ZERO_RUN_MAX = 4096
_XBZRLE = named("RamXbzrle", "encoding", "len")
_COMPRESS_LEN = named("RamCompress", "len", "len")


def run_take_py(held: bytes | bytearray, data: bytes | bytearray | memoryview, record_size: int, word_size: int,
                checks: bytes) -> tuple[int, bytes, bytes] | None:
    """``held + data`` as a run of records, or None: the pure-Python ``_ramrun.run_take`` (see its comment).
    Each record (and the tail when it holds a whole record word) must have ``byte[pos] & mask == want``
    for every ``(pos, mask, want)`` triple of ``checks``; returns ``(count, raw, tail)``."""
    joined = bytes(held) + bytes(data)
    count = len(joined) // record_size
    if count < 2:
        return None
    m = count * record_size
    raw, tail = joined[:m], joined[m:]
    for i in range(0, len(checks), 3):
        pos, mask, want = checks[i], checks[i + 1], checks[i + 2]
        column = raw[pos::record_size]
        if mask != 0xFF:
            column = column.translate(_mask_table(mask))
        if column != _repeated(want, count) or (len(tail) >= word_size and tail[pos] & mask != want):
            return None
    return count, raw, tail


@functools.cache
def _mask_table(mask: int) -> bytes:
    return bytes(b & mask for b in range(256))


def _repeated(byte: int, count: int) -> bytes:
    block = _REPEATED.get(byte)
    if block is None or len(block) < count:
        block = _REPEATED[byte] = bytes([byte]) * max(count, 1024)
    return block[:count]


_REPEATED: dict[int, bytes] = {}

run_take = run_take_py if _ramrun is None or os.environ.get("MIGSHARK_PURE_PYTHON") else _ramrun.run_take


class RamWalker(StreamParser):
    """Walks RAM records; subclasses decide what follows EOS (``_after_eos``). ``mapped_ram``: the stream
    announced the mapped-ram capability (a ``file:`` migration: each MEM_SIZE entry is followed by a
    ``MappedRamHeader`` and the block's bitmap and pages, at fixed file offsets, not in the stream)."""

    def __init__(self, page_size: int = 4096) -> None:
        self.mapped_ram = False
        self._mapped_left = 0
        self.page_size = page_size
        self._mask = page_size - 1
        self._block: str | None = None
        # Per byte of the record word holding flag bits: (position, AND table keeping those bits, the
        # byte a ZERO|CONTINUE word has there).
        self._run_checks: list[tuple[int, bytes | None, bytes]] = []
        for j in range(_WORD_SIZE):
            shift = 8 * (_WORD_SIZE - 1 - j)
            m = (self._mask >> shift) & 0xFF
            if m:
                table = None if m == 0xFF else bytes(b & m for b in range(256))
                self._run_checks.append((j, table, bytes([(ZERO_RUN_FLAGS >> shift) & m])))
        # The same as (position, mask, wanted byte) triples, for ``run_take``.
        self._run_spec = bytes(b for j, table, want in self._run_checks
                               for b in (j, table[0xFF] if table is not None else 0xFF, want[0]))
        super().__init__()

    def _after_eos(self) -> None:
        """Called after an EOS record; the default keeps walking RAM records."""

    def feed(self, data: bytes | bytearray | memoryview, ts: float) -> list[Record]:
        # Zero-run fast path: QEMU sends a run of zero pages in MSS-sized TCP segments, so a run crosses
        # every segment boundary with a part of a record held. When the held bytes (less than a record)
        # and this small chunk are whole ZERO|CONTINUE records but for a tail that cannot start another
        # record yet, emit the run record here: the same record, counts and held tail as the walk below
        # (``StreamParser.feed``'s buffer path: the chunk appended whole, one ``_zero_run`` from the held
        # bytes, the tail left waiting), with a handful of operations per segment instead of two state
        # calls and the engine's loop. Anything else goes the ordinary way.
        buf = self._buf
        if (len(buf) < ZERO_RECORD_SIZE and not self._skip and self._block is not None and self._opaque_from is None
                and self._state == self._st_ram):
            if data.__class__ is memoryview:
                n = data.nbytes
                plain = data.c_contiguous
            else:
                n = len(data)
                plain = True
            if n <= WHOLE_CHUNK and plain:
                taken = run_take(buf, data, ZERO_RECORD_SIZE, _WORD_SIZE, self._run_spec)
                if taken is not None:
                    count, raw, tail = taken
                    start = self.offset - len(buf)
                    self.offset += n
                    self._ts = ts
                    self._base = start
                    self._buf = bytearray(tail)
                    counts = self.counts
                    counts[K.RAM_ZERO] = counts.get(K.RAM_ZERO, 0) + count
                    out = self._out = [Record(K.RAM_ZERO, start, len(raw), ts,
                                              {"block": self._block, "addr": _WORD.unpack_from(raw)[0] ^ ZERO_RUN_FLAGS,
                                               "fill": raw[_WORD_SIZE], "pages": count}, raw)]
                    return out
        return StreamParser.feed(self, data, ts)

    def _st_ram(self, mv: memoryview, pos: int, end: int) -> int | None:
        if end - pos < _WORD_SIZE:
            return None
        (word,) = _WORD.unpack_from(mv, pos)
        flags = word & self._mask
        addr = word ^ flags
        kind = flags & ~RAM_SAVE_FLAG_CONTINUE
        p = pos + _WORD_SIZE
        off = self._base + pos
        block = self._block
        if kind & RAM_FLAGS_WITH_BLOCK:
            if not flags & RAM_SAVE_FLAG_CONTINUE:
                if p < end and mv[p] == 0:
                    self._malformed(off, "empty RAM block idstr")
                    return None
                named_block = counted_at(mv, p, end)
                if named_block is None:
                    return None
                name, p = named_block
                block = name.decode("latin-1")
            elif block is None:
                self._malformed(off, "CONTINUE without a previous block", flags=flags)
                return None
        if kind == RAM_SAVE_FLAG_PAGE:
            self._block = block
            self._emit_skipping(K.RAM_PAGE, off, p - pos + self.page_size, {"block": block, "addr": addr},
                                self.page_size)
            return p
        if kind == RAM_SAVE_FLAG_ZERO:
            if p >= end:
                return None
            if flags == ZERO_RUN_FLAGS and block is not None:
                k = self._zero_run(mv, pos, end)
                if k > 1:
                    n = k * ZERO_RECORD_SIZE
                    self._emit(K.RAM_ZERO, off, n, {"block": block, "addr": addr, "fill": mv[p], "pages": k},
                               bytes(mv[pos:pos + n]))
                    self.counts[K.RAM_ZERO] += k - 1
                    return pos + n
            self._block = block
            self._emit(K.RAM_ZERO, off, p + _ZERO_SIZE - pos, {"block": block, "addr": addr, "fill": mv[p]})
            return p + _ZERO_SIZE
        if kind == RAM_SAVE_FLAG_EOS and addr == 0:
            self._emit(K.RAM_EOS, off, _WORD_SIZE, {})
            self._after_eos()
            return p
        if kind == RAM_SAVE_FLAG_MULTIFD_FLUSH and addr == 0:
            self._emit(K.RAM_MULTIFD_FLUSH, off, _WORD_SIZE, {})
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
            self._emit_skipping(K.RAM_XBZRLE, off, p - pos + n, {"block": block, "addr": addr, "len": n}, n)
            return p
        if kind == RAM_SAVE_FLAG_COMPRESS_PAGE:
            if end - p < _COMPRESS_LEN.size:
                return None
            n = _COMPRESS_LEN.unpack_from(mv, p).len
            if n > compress_bound(self.page_size):
                self._malformed(off, "COMPRESS_PAGE length above compressBound(page)", len=n)
                return None
            self._block = block
            p += _COMPRESS_LEN.size
            self._emit_skipping(K.RAM_COMPRESS, off, p - pos + n, {"block": block, "addr": addr, "len": n}, n)
            return p
        self._malformed(off, "unknown RAM record flags", flags=flags, addr=addr)
        return None

    def _zero_run(self, mv: memoryview, pos: int, end: int) -> int:
        """How many ZERO|CONTINUE records follow each other from ``pos`` in the bytes at hand."""
        count = min((end - pos) // ZERO_RECORD_SIZE, ZERO_RUN_MAX)
        if count < 2:
            return count
        stop = pos + count * ZERO_RECORD_SIZE
        k = count
        for j, table, want in self._run_checks:
            column = mv[pos + j:stop:ZERO_RECORD_SIZE].tobytes()
            if table is not None:
                column = column.translate(table)
            left = len(column.lstrip(want))
            if left:
                k = min(k, count - left)
                if k < 2:
                    break
        return k

    def _mem_size(self, mv: memoryview, pos: int, end: int, total: int) -> int | None:
        """MEM_SIZE block list (``RamMemSize``): entries until their lengths add up to ``total``, each
        perhaps followed by up to two ``RamBlockExtra`` words."""
        if self.mapped_ram:
            self._hold(K.RAM_MEM_SIZE, self._base + pos, _WORD_SIZE, {"total": total, "blocks": []})
            self._mapped_left = total
            self._state = self._st_mapped_block
            return pos + _WORD_SIZE
        c = Cursor(mv, pos + _WORD_SIZE, end)
        acc = 0
        blocks: list[dict[str, Any]] = []
        while acc < total:
            if len(blocks) >= MEM_SIZE_MAX_BLOCKS:
                self._malformed(self._base + pos, "MEM_SIZE block list does not add up")
                return None
            if c.peek()[0] == 0:
                self._malformed(self._base + pos, "MEM_SIZE block with an empty idstr")
                return None
            name = c.counted().decode("latin-1")
            used = c.read(_USED_LENGTH).used_length
            acc += used
            info: dict[str, Any] = {"idstr": name, "used_length": used}
            extras: list[int] = []
            while len(extras) < MEM_SIZE_MAX_EXTRAS:
                if acc < total and c.peek()[0] != 0:
                    break                         # the next entry's idstr length
                value = _EXTRA.unpack_from(c.peek(_EXTRA.size)).value
                if value & self._mask:
                    break                         # a RAM record word: the list has ended
                extras.append(c.read(_EXTRA).value)
            if extras:
                info["extra"] = extras
            blocks.append(info)
        if acc != total:
            self._malformed(self._base + pos, "MEM_SIZE block lengths overshoot the total", total=total)
            return None
        self._emit(K.RAM_MEM_SIZE, self._base + pos, c.pos - pos, {"total": total, "blocks": blocks})
        return c.pos


    def _st_mapped_block(self, mv: memoryview, pos: int, end: int) -> int | None:
        """One MEM_SIZE entry of a mapped-ram stream, its header and its bitmap (pages counted); the
        block's pages are passed over by length up to where the stream goes on."""
        rec = self._pending
        assert rec is not None
        c = Cursor(mv, pos, end)
        if c.peek()[0] == 0:
            self._malformed(self._base + pos, "MEM_SIZE block with an empty idstr")
            return None
        name = c.counted().decode("latin-1")
        used = c.read(_USED_LENGTH).used_length
        hdr = c.read(_MAPPED)
        here = self._base + c.pos
        nxt = hdr.pages_offset + used
        if hdr.version != MAPPED_RAM_HDR_VERSION or hdr.page_size != self.page_size or used > self._mapped_left \
                or not here <= hdr.bitmap_offset <= hdr.pages_offset:
            self._malformed(self._base + pos, "mapped-ram block header does not fit", version=hdr.version,
                            page_size=hdr.page_size, bitmap_offset=hdr.bitmap_offset,
                            pages_offset=hdr.pages_offset)
            return None
        info: dict[str, Any] = {"idstr": name, "used_length": used, "bitmap_offset": hdr.bitmap_offset,
                                "pages_offset": hdr.pages_offset}
        npages = used // self.page_size
        size = (npages + 63) // 64 * 8               # BITS_TO_LONGS(pages) * sizeof(long), 64-bit hosts
        if size <= MAPPED_BITMAP_MAX and hdr.bitmap_offset + size <= hdr.pages_offset:
            start = c.pos + hdr.bitmap_offset - here
            if end < start + size:
                return None                           # the bitmap is wanted whole: wait for it
            info["pages"] = int.from_bytes(mv[start:start + size], "little").bit_count()
        rec.fields["blocks"].append(info)
        self._mapped_left -= used
        rec.length = nxt - rec.offset
        self._pass_over(nxt - here, self._st_mapped_block if self._mapped_left else self._st_mapped_done)
        return c.pos

    def _st_mapped_done(self, mv: memoryview, pos: int, end: int) -> int | None:
        self._release()
        self._state = self._st_ram
        return pos


def expand_zero_run(rec: Record) -> list[Record]:
    """The per-page ``ram.zero`` records a zero-page run stands for (a record without ``pages``: itself)."""
    pages = rec.fields.get("pages")
    if not pages or rec.raw is None:
        return [rec]
    raw, block, out = rec.raw, rec.fields["block"], []
    unpack = _WORD.unpack_from
    for i in range(pages):
        at = i * ZERO_RECORD_SIZE
        out.append(Record(rec.kind, rec.offset + at, ZERO_RECORD_SIZE, rec.ts,
                          {"block": block, "addr": unpack(raw, at)[0] ^ ZERO_RUN_FLAGS, "fill": raw[at + _WORD_SIZE]}))
    return out
