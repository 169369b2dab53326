"""Incremental gzip decompression that keeps every byte it could recover.

``gzip.GzipFile.read`` raises on a cut stream and drops what it had decompressed of the last chunk; this
reader returns the recoverable data first and reports the problem afterwards via ``problem``. It also
bounds each output chunk, so a decompression bomb cannot allocate more than one chunk at a time.

``readinto`` inflates into a caller's buffer (a reused read window, ``buffers.BufferPool``) in pieces of
``_PIECE`` bytes from ``_RAW_CHUNK`` bytes of compressed input at a time: both small enough that zlib's output
and the compressed reads come from the allocator's free lists (no fresh pages to fault in), and that the input
left over when a piece is full (``unconsumed_tail``, a copy at every call) stays short on captures that
compress 50-100 to 1 (guest RAM mostly zero pages).

Damage: zlib's ``decompress`` raises without the bytes it inflated in that call before it met the damage (up
to a whole piece; 1 MiB for ``FileBytes``' reads). So a copy of the inflater (``decompressobj.copy()``) is
kept every ``_MARK_EVERY`` compressed bytes with the input fed since; on damage that input is inflated again
from the copy, in ever smaller steps down to one byte, which hands over every byte before the one where zlib
found the damage (what feeding zlib one compressed byte at a time recovers) and names that byte's offset in
the compressed file. A copy (zlib's state and its 32 KiB window) per 256 KiB of compressed input costs little
next to the inflating; the replay runs once, on damage, over at most ``_MARK_EVERY`` + ``_RAW_CHUNK`` bytes.

Inflating is done by zlib-ng (PyPI ``zlib-ng``, a dependency: the standard library's ``zlib`` interface over
zlib-ng, which inflates such captures ~5 times faster than zlib: 0.16 s of CPU for a 1.16 GB capture against
0.87 s), or by the standard library's ``zlib`` where it is not installed or ``MIGSHARK_STDLIB_ZLIB`` is set
(``backend``; benchmarks/bench_reassembly.py compares them); both give the same bytes and the same messages
(tests/test_capture_buffers.py).
"""

from __future__ import annotations

import os
import zlib
from types import ModuleType
from typing import Any, BinaryIO, Protocol

_RAW_CHUNK = 16 << 10
_PIECE = 32 << 10   # zlib's first output block: a piece that fills it is handed over without a copy
_MARK_EVERY = 256 << 10   # compressed bytes between copies of the inflater (what a replay re-inflates at most)
_REPLAY_STEP = 4 << 10    # a replay's first steps (compressed bytes); the step that fails is redone bytewise


class _Readable(Protocol):
    def read(self, count: int = -1) -> bytes: ...

    def close(self) -> None: ...
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_GZIP_MAGIC = b"\x1f\x8b"
_backend: ModuleType | None = None


def backend() -> ModuleType:
    """The module that inflates: ``zlib_ng.zlib_ng`` where installed, else (or with ``MIGSHARK_STDLIB_ZLIB``
    set) ``zlib``; imported on first use, so that reading a plain capture pays nothing for it."""
    global _backend
    if _backend is None:
        module: ModuleType = zlib
        if not os.environ.get("MIGSHARK_STDLIB_ZLIB"):
            try:
                from zlib_ng import zlib_ng as module
            except ImportError:
                pass
        _backend = module
    return _backend


class GunzipStream:
    """``read(n)`` returns up to ``n`` decompressed bytes, ``b""`` at the end (check ``problem``, and
    ``warning`` for trailing garbage after the last member: ignored, as ``gzip -d`` does)."""

    def __init__(self, raw: BinaryIO | _Readable, prefix: bytes = b"") -> None:
        self._raw = raw
        self._prefix = prefix        # compressed bytes already read from ``raw`` (a live stream's magic)
        self._zlib = backend()
        self._inflate = self._zlib.decompressobj(_GZIP_WBITS)
        self._raw_eof = False
        self._done = False
        self._full = False           # the last piece filled its limit: zlib may hold more output already
        self._consumed = 0           # compressed bytes taken from ``raw`` (and ``prefix``)
        self._mark: Any = None       # a copy of the inflater (None: a fresh one, at the member's start)
        self._mark_at = 0            # the compressed offset the mark stands at
        self._fed: list[bytes] = []  # compressed bytes given to the inflater since the mark
        self._fed_len = 0
        self._out_since = 0          # bytes inflated (and handed over) since the mark
        self._held = b""             # after damage: the bytes recovered before it, still to hand over
        self.problem: str | None = None
        self.warning: str | None = None   # a problem that lost nothing: trailing garbage after the data

    def read(self, count: int) -> bytes:
        out: list[bytes] = []
        have = 0
        while have < count and not self._done:
            chunk = self._step(count - have)
            if chunk:
                out.append(chunk)
                have += len(chunk)
        return b"".join(out)

    def read1(self, count: int) -> bytes:
        """Up to ``count`` decompressed bytes, returning as soon as there are some (a live stream: the
        raw reads hand over what has arrived)."""
        while not self._done:
            chunk = self._step(count)
            if chunk:
                return chunk
        return b""

    def readinto(self, view: memoryview, partial: bool = False) -> int:
        """Inflate into ``view``: until it is full or the stream ends, or (``partial``, a live stream) until the
        compressed bytes that have arrived are used up, once some are inflated. Returns the bytes written."""
        have = 0
        size = len(view)
        while have < size and not self._done:
            chunk = self._step(min(size - have, _PIECE))
            if chunk:
                got = len(chunk)
                view[have:have + got] = chunk
                have += got
                if partial and not self._inflate.unconsumed_tail:
                    break
        return have

    def _raw_read(self) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
        else:
            data = self._raw.read(_RAW_CHUNK)
        self._consumed += len(data)
        return data

    def _feed(self, data: bytes) -> None:
        """Note ``data`` (fresh compressed input) as given to the inflater, first moving the mark up to here
        once ``_MARK_EVERY`` bytes were given since it."""
        if self._fed_len >= _MARK_EVERY:
            self._mark = self._inflate.copy()
            self._mark_at += self._fed_len
            self._fed, self._fed_len, self._out_since = [], 0, 0
        self._fed.append(data)
        self._fed_len += len(data)

    def _step(self, limit: int) -> bytes:
        if self.problem is not None:  # damage found: first the bytes recovered before it
            if not self._held:
                self._done = True
                return b""
            out, self._held = self._held[:limit], self._held[limit:]
            return out
        inflate = self._inflate
        if inflate.eof:  # member finished: what follows (if anything) is the next gzip member
            data = inflate.unused_data
            at = self._consumed - len(data)
            while len(data) < 2 and (more := self._raw_read()):   # the next member's magic, if any
                data += more
            if not data:
                self._done = True
                return b""
            if data[:2] != _GZIP_MAGIC and (len(data) >= 2 or data == b"\0"):   # 1 byte: a member cut short
                self._trailing(data, at)
                return b""
            self._inflate = inflate = self._zlib.decompressobj(_GZIP_WBITS)
            self._mark, self._mark_at = None, at
            self._fed, self._fed_len, self._out_since = [data], len(data), 0
        else:
            data = inflate.unconsumed_tail  # input left over when the last call hit its output limit
            if not data and self._full:
                pass                        # first what zlib holds of the input it took (a match's tail): a
                                            # live stream must not wait for more input with it undelivered
            elif not data:
                data = self._raw_read()
                if not data:
                    self._done = True
                    self.problem = f"gzip stream ends early (file cut?) at compressed offset {self._consumed}"
                    return b""
                self._feed(data)
        try:
            out = inflate.decompress(data, limit)
        except self._zlib.error as exc:
            self._held, at = self._replay()
            self.problem = f"gzip data corrupt at compressed offset {at}: {exc}"
            return self._step(limit)
        self._full = len(out) == limit
        self._out_since += len(out)
        return out

    def _trailing(self, data: bytes, at: int) -> None:
        """End the data at ``at`` (the compressed offset where the last whole member ends), ``data`` being the
        first bytes after it, which do not start a gzip member. As ``gzip -d``: zeros to the end of the file
        (padding to a block size by dd, a tape, a copy tool) end it silently; anything else (a copy tool's
        junk, an appended checksum, zeros then junk, even a member after zeros) is trailing garbage, ignored
        with a warning (``warning``), the data before it whole. A single byte (not a zero) after a member, or
        bytes that start with the magic and then fail, are read as a member, a damaged one: gzip's error too."""
        self._done = True
        while data and not data.strip(b"\0"):
            data = self._raw_read()
        if data:
            self.warning = (f"trailing garbage ignored: the bytes from compressed offset {at} on are not a gzip "
                            "member (gzip -d: \"decompression OK, trailing garbage ignored\")")

    def _replay(self) -> tuple[bytes, int]:
        """Inflate the input fed since the mark again, from a copy of the mark, in steps of ``_REPLAY_STEP``
        compressed bytes, the step that fails again byte by byte. Returns the bytes inflated before the
        damage that were not handed over yet, and the compressed offset of the byte zlib failed on."""
        zlib_error = self._zlib.error
        inflate = self._mark.copy() if self._mark is not None else self._zlib.decompressobj(_GZIP_WBITS)
        fed = b"".join(self._fed)
        skip = self._out_since
        got: list[bytes] = []
        pos = 0
        step = _REPLAY_STEP
        while pos < len(fed) and not inflate.eof:
            before = inflate.copy() if step > 1 else None
            try:
                out = inflate.decompress(fed[pos:pos + step])
            except zlib_error:
                if before is None:
                    break                       # this byte: zlib found the damage here
                inflate, step = before, 1
                continue
            pos += step
            if skip:
                cut = min(skip, len(out))
                out, skip = out[cut:], skip - cut
            if out:
                got.append(out)
        return b"".join(got), self._mark_at + min(pos, len(fed))

    def close(self) -> None:
        self._raw.close()
