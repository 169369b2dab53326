"""Read buffers a chunked stream reuses once nothing handed out points into them any more.

A stream (gzip, a pipe, standard input) is read in windows of a few MiB. A fresh ``bytes`` per window makes
the allocator map new pages for every chunk, and the kernel fault each of them in (on a gzip'd capture, one
fault per 4 KiB read). ``BufferPool`` keeps a few ``bytearray`` buffers instead and hands one out again only
when no view of it is alive: payload memoryviews sliced from a window, kept by whoever reads the capture (the
TCP room's retransmission tail and gather windows, a batch a consumer holds on to), pin their buffer, which
is then not reused (a new one is made while they do). The test is the buffer protocol's own: a ``bytearray``
with exports cannot be resized (``exported``), so no bookkeeping of the views is needed and none can be
forgotten.
"""

from __future__ import annotations

#: How many buffers a pool keeps for reuse (each ``chunk`` bytes); more may be alive while views pin them.
POOL_KEEP = 8


def exported(buf: bytearray) -> bool:
    """Does any memoryview (or other buffer export) of ``buf`` exist? CPython refuses to resize a bytearray
    with exports (``BufferError``); the resize tried here is undone at once and, on a buffer made by
    ``BufferPool`` (which leaves it room to grow by one), never moves or copies its bytes."""
    try:
        buf.append(0)
    except BufferError:
        return True
    del buf[-1]
    return False


class BufferPool:
    """Buffers of ``chunk`` bytes (larger ones for records that need them, not kept), reused when free."""

    def __init__(self, chunk: int, keep: int = POOL_KEEP) -> None:
        self.chunk = chunk
        self.keep = keep
        self.made = 0                       # buffers allocated so far (a figure for tests and benchmarks)
        self.reused = 0                     # times a kept buffer was handed out again
        self._kept: list[bytearray] = []    # least recently handed out first

    def take(self, size: int, busy: bytearray | None = None) -> bytearray:
        """A buffer of at least ``size`` bytes that nothing points into (``busy``, the one being read from,
        excluded), its contents undefined."""
        kept = self._kept
        if size <= self.chunk:
            for i, buf in enumerate(kept):
                if buf is not busy and not exported(buf):
                    del kept[i]
                    kept.append(buf)
                    self.reused += 1
                    return buf
        buf = bytearray(max(size, self.chunk))
        buf.append(0)                       # grow once now, so that ``exported`` never reallocates it
        del buf[-1]
        self.made += 1
        if len(buf) == self.chunk:
            kept.append(buf)
            if len(kept) > self.keep:       # forget the oldest pinned one: it goes when its views do
                for i, old in enumerate(kept):
                    if old is not busy and old is not buf:
                        del kept[i]
                        break
        return buf
