"""Byte sources for the record walkers: an mmap of the whole file, or a chunked stream (gzip, pipes).

A pipe, a FIFO, a socket, a terminal or ``-`` (standard input) is read as a *live* stream (``LiveRaw``): no
seek, no size (``size`` is None), each read returns what has arrived so far instead of waiting for a full
chunk, and while nothing arrives an idle hook runs every ``idle_interval`` seconds (wall-clock judgements
of a live watcher) and a stop check can end the stream early (SIGINT / SIGTERM in ``migshark watch``).
A reader that wants nothing before the end (``analyze -``) sets ``prompt`` off: windows are then filled whole,
with blocking reads, not handed over at each arrival (a slow writer such as ``zcat`` otherwise wakes the
walker for every ~32 KiB it writes).

A walker works on a window ``buf`` (memoryview) whose first byte sits at capture offset ``base``. When a
record runs past the window it calls ``more(buf, keep_from, need)`` for a new window that starts at
``buf[keep_from]`` (so ``base += keep_from``); an mmap window already holds the whole file and never
grows. A byte once handed out in a window is never written again while any view of it is alive (a stream's
buffers are reused only when none is: ``buffers.BufferPool``), so memoryviews handed out earlier stay valid.
"""

from __future__ import annotations

import io
import mmap
import os
import select
import stat
from collections.abc import Callable
from typing import BinaryIO

from .buffers import shared_pool
from .gunzip import GunzipStream

STREAM_CHUNK = 4 << 20
_KEEP_BEHIND = 1 << 20  # stay resident behind the reader (recently yielded payloads)


class MmapSource:
    """The whole (uncompressed, regular) file mapped read-only; pages behind the reader are dropped."""

    compressed = False
    gzip_warning: str | None = None

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


class LiveRaw:
    """A file descriptor read as it fills (pipe, FIFO, socket, standard input): ``read(n)`` waits for the
    first byte, then takes whatever else is already there (up to ``n``) without waiting for more; ``b""``
    at the end of the stream or once ``should_stop()`` says so. While waiting, ``on_idle()`` runs every
    ``idle_interval`` seconds of silence. With ``prompt`` off, ``readinto`` fills its buffer whole (or to
    the end of the stream) instead: no hooks run, nothing is handed over before that."""

    def __init__(self, fd: int, name: str, idle_interval: float = 0.025) -> None:
        self.fd = fd
        self.name = name
        self.idle_interval = idle_interval
        self.on_idle: Callable[[], None] | None = None
        self.should_stop: Callable[[], bool] | None = None
        self.consumed = 0            # bytes read from the descriptor so far
        self.prompt = True           # hand over what has arrived (off: fill whole windows)
        self.stopped = False         # ended by should_stop(), not by the writer
        self._eof = False
        self._file: io.FileIO | None = None   # the descriptor as a file object, for readinto

    def _wait(self) -> bool:
        """Block until the descriptor is readable; False if told to stop first."""
        while True:
            if self.should_stop is not None and self.should_stop():
                self.stopped = True
                return False
            ready, _, _ = select.select([self.fd], [], [], self.idle_interval)
            if ready:
                return True
            if self.on_idle is not None:
                self.on_idle()

    def read(self, count: int = -1) -> bytes:
        if self._eof or count == 0:
            return b""
        count = count if count > 0 else 1 << 20
        if not self._wait():
            self._eof = True
            return b""
        parts: list[bytes] = []
        have = 0
        while have < count:
            data = os.read(self.fd, count - have)
            if not data:
                self._eof = True
                break
            parts.append(data)
            have += len(data)
            if not select.select([self.fd], [], [], 0)[0]:
                break                # nothing more has arrived: hand over what is there
        self.consumed += have
        return b"".join(parts)

    read1 = read

    def readinto(self, view: memoryview) -> int:
        """``read`` into ``view`` (no bytes object made): what has arrived, at least one byte; 0 at the end.
        With ``prompt`` off: until ``view`` is full or the stream ends."""
        size = len(view)
        if self._eof or not size:
            return 0
        prompt = self.prompt
        if prompt and not self._wait():
            self._eof = True
            return 0
        if self._file is None:
            self._file = io.FileIO(self.fd, "rb", closefd=False)
        have = 0
        while have < size:
            got = self._file.readinto(view[have:])
            if not got:
                self._eof = True
                break
            have += got
            if prompt and not select.select([self.fd], [], [], 0)[0]:
                break                # nothing more has arrived: hand over what is there
        self.consumed += have
        return have

    def tell(self) -> int:
        return self.consumed

    def close(self) -> None:
        if self._file is not None:
            self._file.close()       # closefd=False: leaves the descriptor to the line below
            self._file = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class StreamSource:
    """Sequential reads in chunks from a file object (a gzip stream or anything not mmap-able).

    ``size`` is None for a live stream (no size known); its reads hand over what has arrived.

    Windows are read-only memoryviews of reused buffers (``buffers.BufferPool``): the bytes after the
    current window's end, never handed out, are filled in place while its buffer has room (a live stream's
    small arrivals: no copy of the record left over, no new buffer); otherwise the record left over is
    copied to the start of a buffer nothing points into any more and the rest of it filled. Bytes once
    handed out in a window are never written again while any view of them is alive."""

    def __init__(self, stream: BinaryIO | GunzipStream | LiveRaw, raw: BinaryIO | LiveRaw, size: int | None,
                 head: bytes = b"") -> None:
        self.size = size
        self.compressed = isinstance(stream, GunzipStream)
        self.problem: str | None = None
        self.live = raw if isinstance(raw, LiveRaw) else None
        self.pool = shared_pool(STREAM_CHUNK)
        self._stream = stream
        self._raw = raw
        self._head = head  # bytes already read to look at the magic
        self._eof = False
        self._buf = bytearray()   # the buffer of the current window
        self._pin: memoryview | None = None   # held on _buf while it is read into (see buffers.BufferPool.take)
        self._lo = self._hi = 0   # the current window is _buf[_lo:_hi]; _buf[_hi:] was never handed out

    @property
    def gzip_problem(self) -> str | None:
        """What stopped the gzip stream so far (damage, an early end), if it is one: still there after the
        walkers took ``problem`` (the reader's message when not even the capture header inflated)."""
        stream = self._stream
        return stream.problem if isinstance(stream, GunzipStream) else None

    @property
    def gzip_warning(self) -> str | None:
        """What the gzip stream ignored at its end (trailing garbage), once read to there: lost nothing."""
        stream = self._stream
        return stream.warning if isinstance(stream, GunzipStream) else None

    def _prompt(self) -> bool:
        """Hand over what has arrived (a live stream read promptly), rather than whole windows?"""
        return self.live is not None and self.live.prompt

    def _fill(self, view: memoryview) -> int:
        """Read into ``view``: until it is full or the input ends; a live stream, what has arrived (at least
        one byte unless it ended). Returns the bytes read."""
        if self._eof or not len(view):
            return 0
        stream = self._stream
        have = 0
        try:
            if stream.__class__ is GunzipStream:
                have = stream.readinto(view, partial=self._prompt())  # type: ignore[union-attr]
            elif stream.__class__ is LiveRaw:
                have = stream.readinto(view)  # type: ignore[union-attr]
            else:
                readinto = getattr(stream, "readinto", None)
                while have < len(view):
                    if readinto is not None:
                        got = readinto(view[have:])
                    else:
                        data = stream.read(len(view) - have)
                        got = len(data)
                        view[have:have + got] = data
                    if not got:
                        break
                    have += got
        except OSError as exc:
            self.problem = f"read error: {exc}"
        if not have:
            self._eof = True
            if isinstance(stream, GunzipStream) and stream.problem:
                self.problem = stream.problem
        return have

    def _switch(self, taken: tuple[bytearray, memoryview]) -> bytearray:
        """Read into the buffer ``BufferPool.take`` gave from now on; unpin the one before."""
        if self._pin is not None:
            self._pin.release()
        self._buf, self._pin = taken
        return self._buf

    def _window(self) -> memoryview:
        assert self._pin is not None
        return self._pin[self._lo:self._hi].toreadonly()

    def first(self) -> memoryview:
        head, self._head = self._head, b""
        buf = self._switch(self.pool.take(max(STREAM_CHUNK, len(head))))
        buf[:len(head)] = head
        self._lo, self._hi = 0, len(head)
        want = 24 if self._prompt() else len(buf)   # a live stream: at least a pcap file header
        while self._hi < want:
            got = self._fill(self._pin[self._hi:])  # type: ignore[index]
            if not got:
                break
            self._hi += got
        return self._window()

    def more(self, buf: memoryview, keep_from: int, need: int) -> memoryview | None:
        """A new window: ``buf[keep_from:]`` plus at least ``need`` bytes in all if the input has them."""
        if buf.obj is not self._buf or len(buf) != self._hi - self._lo:   # not our current window: adopt it
            self._switch(self.pool.take(max(STREAM_CHUNK, len(buf))))[:len(buf)] = buf
            self._lo, self._hi = 0, len(buf)
        start = self._lo + keep_from
        if start + max(need, self._hi - start + 1) > len(self._buf):   # no room after it: another buffer
            keep = self._hi - start
            fresh, pin = self.pool.take(max(STREAM_CHUNK, need, keep + 1))
            assert self._pin is not None
            fresh[:keep] = self._pin[start:self._hi]
            self._switch((fresh, pin))
            start, self._hi = 0, keep
        self._lo = start
        target = start + need if self._prompt() else len(self._buf)
        grew = False
        while not grew or self._hi < target:
            got = self._fill(self._pin[self._hi:])  # type: ignore[index]
            if not got:
                break
            self._hi += got
            grew = True
        return self._window() if grew else None

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
        if self._pin is not None:
            self._pin.release()
            self._pin = None
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


class FileBytes:
    """A regular file's bytes read in order, gunzipped by ``GunzipStream`` (zlib-ng where installed, as a
    capture's) when the file starts with the gzip magic: for a file that is not a capture (a raw migration
    stream, ``migrate "exec:cat > FILE"``). ``read(n)`` returns ``b""`` at the end and never raises on a cut
    or damaged gzip stream nor on a read error: every byte it could recover comes first, then ``problem`` says
    what stopped it.
    ``position()`` is the offset in the file on disk (progress)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.compressed = self._raw.read(2) == GZIP_MAGIC
            self._raw.seek(0)
        except BaseException:
            self._raw.close()
            raise
        self._gunzip = GunzipStream(self._raw) if self.compressed else None
        self._problem: str | None = None

    @property
    def problem(self) -> str | None:
        return self._problem or (self._gunzip.problem if self._gunzip is not None else None)

    @property
    def warning(self) -> str | None:
        """Trailing garbage ignored after the gzip data (``GunzipStream.warning``): nothing lost."""
        return self._gunzip.warning if self._gunzip is not None else None

    def read(self, count: int) -> bytes:
        if self._problem:
            return b""
        try:
            return self._gunzip.read(count) if self._gunzip is not None else self._raw.read(count)
        except OSError as exc:
            self._problem = f"read error: {exc}"
            return b""

    def position(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> FileBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(path: str | os.PathLike[str], live: bool = False) -> tuple[ByteSource, bytes]:
    """Open ``path`` by content (gzip or not) and return the source plus its first 4 capture bytes.

    ``-`` is standard input. Anything that is not a regular file (pipe, FIFO, socket, terminal), and any
    input when ``live`` is set, is read as a live stream (``LiveRaw``) with no size."""
    name = os.fspath(path)
    if name == "-":
        fd = os.dup(0)
    else:
        fd = os.open(name, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", name)
        # a regular file of size 0 that still reads bytes (procfs, sysfs) is read as a stream too
        if live or not stat.S_ISREG(st.st_mode) or (st.st_size == 0 and os.pread(fd, 1, 0)):
            return _open_live(LiveRaw(fd, name))
        raw: BinaryIO = os.fdopen(fd, "rb")  # noqa: SIM115 - owned by the returned source
    except BaseException:
        os.close(fd)
        raise
    try:
        size = st.st_size
        raw.seek(0)
        head = raw.read(4)
        if head[:2] == GZIP_MAGIC:
            raw.seek(0)
            stream = GunzipStream(raw)
            magic = stream.read(4)
            return StreamSource(stream, raw, size, head=magic), magic
        if size >= 4:
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


def _first_bytes(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to ``n`` bytes from ``read`` (fewer only at the end of the stream): a stream's first bytes as they
    come, never seeking back."""
    head = b""
    while len(head) < n:
        data = read(n - len(head))
        if not data:
            break
        head += data
    return head


def _open_live(raw: LiveRaw) -> tuple[ByteSource, bytes]:
    """A live stream: its first bytes decide gzip or not (read as they come, never seeking back)."""
    try:
        head = _first_bytes(raw.read, 4)
        if head[:2] == GZIP_MAGIC:
            stream = GunzipStream(raw, prefix=head)
            magic = _first_bytes(stream.read1, 4)
            return StreamSource(stream, raw, None, head=magic), magic
        return StreamSource(raw, raw, None, head=head), head
    except BaseException:
        raw.close()
        raise
