"""Incremental gzip decompression that keeps every byte it could recover.

``gzip.GzipFile.read`` raises on a cut stream and drops what it had decompressed of the last chunk; this
reader returns the recoverable data first and reports the problem afterwards via ``problem``. It also
bounds each output chunk, so a decompression bomb cannot allocate more than one chunk at a time.

``readinto`` inflates into a caller's buffer (a reused read window, ``buffers.BufferPool``) in pieces of
``_PIECE`` bytes from ``_RAW_CHUNK`` bytes of compressed input at a time: both small enough that zlib's output
and the compressed reads come from the allocator's free lists (no fresh pages to fault in), and that the input
left over when a piece is full (``unconsumed_tail``, a copy at every call) stays short on captures that
compress 50-100 to 1 (guest RAM mostly zero pages).

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
from typing import BinaryIO, Protocol

_RAW_CHUNK = 16 << 10
_PIECE = 32 << 10   # zlib's first output block: a piece that fills it is handed over without a copy


class _Readable(Protocol):
    def read(self, count: int = -1) -> bytes: ...

    def close(self) -> None: ...
_GZIP_WBITS = 16 + zlib.MAX_WBITS
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
    """``read(n)`` returns up to ``n`` decompressed bytes, ``b""`` at the end (check ``problem``)."""

    def __init__(self, raw: BinaryIO | _Readable, prefix: bytes = b"") -> None:
        self._raw = raw
        self._prefix = prefix        # compressed bytes already read from ``raw`` (a live stream's magic)
        self._zlib = backend()
        self._inflate = self._zlib.decompressobj(_GZIP_WBITS)
        self._raw_eof = False
        self._done = False
        self._full = False           # the last piece filled its limit: zlib may hold more output already
        self.problem: str | None = None

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
            return data
        return self._raw.read(_RAW_CHUNK)

    def _step(self, limit: int) -> bytes:
        inflate = self._inflate
        if inflate.eof:  # member finished: what follows (if anything) is the next gzip member
            data = inflate.unused_data or self._raw_read()
            if not data:
                self._done = True
                return b""
            self._inflate = inflate = self._zlib.decompressobj(_GZIP_WBITS)
        else:
            data = inflate.unconsumed_tail  # input left over when the last call hit its output limit
            if not data and self._full:
                pass                        # first what zlib holds of the input it took (a match's tail): a
                                            # live stream must not wait for more input with it undelivered
            elif not data:
                data = self._raw_read()
                if not data:
                    self._done = True
                    self.problem = "gzip stream ends early (file cut?)"
                    return b""
        try:
            out = inflate.decompress(data, limit)
        except self._zlib.error as exc:
            self._done = True
            self.problem = f"gzip data corrupt: {exc}"
            return b""
        self._full = len(out) == limit
        return out

    def close(self) -> None:
        self._raw.close()
