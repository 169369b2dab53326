"""Byte sources for the record walkers: an mmap of the whole file, or a chunked stream (gzip, pipes).

A walker works on a window ``buf`` (memoryview) whose first byte sits at capture offset ``base``. When a
record runs past the window it calls ``more(buf, keep_from, need)`` for a new window that starts at
``buf[keep_from]`` (so ``base += keep_from``); an mmap window already holds the whole file and never
grows. Old windows are never modified, so memoryviews handed out earlier stay valid.
"""

from __future__ import annotations

import mmap
import os
import stat
from typing import BinaryIO

from .gunzip import GunzipStream

STREAM_CHUNK = 4 << 20
_KEEP_BEHIND = 1 << 20  # stay resident behind the reader (recently yielded payloads)


class MmapSource:
    """The whole (uncompressed, regular) file mapped read-only; pages behind the reader are dropped."""

    compressed = False

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        self.problem: str | None = None
        self._map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        if hasattr(mmap, "MADV_SEQUENTIAL"):
            self._map.madvise(mmap.MADV_SEQUENTIAL)
        self._view: memoryview | None = memoryview(self._map)
        self._released = 0

    def first(self) -> memoryview:
        assert self._view is not None
        self._released = 0
        return self._view

    def more(self, buf: memoryview, keep_from: int, need: int) -> memoryview | None:
        return None

    def position(self, offset: int) -> int:
        return offset

    def release_behind(self, offset: int) -> None:
        """Drop already-read pages from this process's resident set (they stay in the page cache)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        upto = (offset - _KEEP_BEHIND) & ~(mmap.PAGESIZE - 1)
        if upto > self._released:
            self._map.madvise(mmap.MADV_DONTNEED, self._released, upto - self._released)
            self._released = upto

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        try:
            self._map.close()
        except BufferError:
            pass  # segments still referenced by the caller; the mapping goes when they do


class StreamSource:
    """Sequential reads in chunks from a file object (a gzip stream or anything not mmap-able)."""

    def __init__(self, stream: BinaryIO | GunzipStream, raw: BinaryIO, size: int, head: bytes = b"") -> None:
        self.size = size
        self.compressed = isinstance(stream, GunzipStream)
        self.problem: str | None = None
        self._stream = stream
        self._raw = raw
        self._head = head  # bytes already read to look at the magic
        self._eof = False

    def _read(self, count: int) -> bytes:
        if self._eof:
            return b""
        try:
            data = self._stream.read(count)
        except OSError as exc:
            self.problem = f"read error: {exc}"
            data = b""
        if not data:
            self._eof = True
            if isinstance(self._stream, GunzipStream) and self._stream.problem:
                self.problem = self._stream.problem
        return data

    def first(self) -> memoryview:
        head, self._head = self._head, b""
        return memoryview(head + self._read(STREAM_CHUNK))

    def more(self, buf: memoryview, keep_from: int, need: int) -> memoryview | None:
        """A new window: ``buf[keep_from:]`` plus at least ``need`` bytes in all if the input has them."""
        parts = [bytes(buf[keep_from:])]
        have = len(parts[0])
        grew = False
        while not grew or have < need:
            data = self._read(max(STREAM_CHUNK, need - have))
            if not data:
                break
            parts.append(data)
            have += len(data)
            grew = True
        return memoryview(b"".join(parts)) if grew else None

    def position(self, offset: int) -> int:
        if not self.compressed:
            return offset
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def release_behind(self, offset: int) -> None:
        pass

    def close(self) -> None:
        self._stream.close()
        if self._raw is not self._stream:
            self._raw.close()


ByteSource = MmapSource | StreamSource

GZIP_MAGIC = b"\x1f\x8b"


def stream_source(raw: BinaryIO) -> tuple[ByteSource, bytes]:
    """A source over an already open binary file object (a remote file through fsspec, a pipe): read
    sequentially in chunks, gzip recognised by content. Its size (for progress) is the object's ``size``
    attribute or its file's, 0 when unknown. The source closes ``raw``."""
    size = getattr(raw, "size", None)
    if not isinstance(size, int):
        try:
            size = os.fstat(raw.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            size = 0
    try:
        head = raw.read(4)
        if head[:2] == GZIP_MAGIC:
            try:
                raw.seek(0)
                stream = GunzipStream(raw)
            except (OSError, AttributeError, ValueError):
                stream = GunzipStream(_Prefixed(head, raw))
            magic = stream.read(4)
            return StreamSource(stream, raw, size, head=magic), magic
        return StreamSource(raw, raw, size, head=head), head
    except BaseException:
        raw.close()
        raise


class _Prefixed:
    """``head`` (already read from a stream that cannot seek back) followed by the rest of ``raw``."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def read(self, count: int = -1) -> bytes:
        if not self._head:
            return self._raw.read(count)
        out, self._head = self._head, b""
        if count < 0:
            return out + self._raw.read()
        return out[:count] + (self._raw.read(count - len(out)) if count > len(out) else b"")

    def close(self) -> None:
        self._raw.close()


def open_source(path: str | os.PathLike[str]) -> tuple[ByteSource, bytes]:
    """Open ``path`` by content (gzip or not) and return the source plus its first 4 capture bytes."""
    raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - owned by the returned source
    try:
        size = os.fstat(raw.fileno()).st_size
        head = raw.read(4)
        if head[:2] == GZIP_MAGIC:
            raw.seek(0)
            stream = GunzipStream(raw)
            magic = stream.read(4)
            return StreamSource(stream, raw, size, head=magic), magic
        if size >= 4 and stat.S_ISREG(os.fstat(raw.fileno()).st_mode):
            try:
                msrc = MmapSource(raw.fileno(), size)
            except (OSError, ValueError):
                raw.seek(0)
                return StreamSource(raw, raw, size, head=head), head
            raw.close()
            return msrc, head
        return StreamSource(raw, raw, size, head=head), head
    except BaseException:
        raw.close()
        raise
