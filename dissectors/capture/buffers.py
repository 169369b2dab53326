"""Read buffers a chunked stream reuses once nothing handed out points into them any more.

A stream (gzip, a pipe, standard input) is read in windows of a few MiB. A fresh ``bytes`` per window makes
the allocator map new pages for every chunk, and the kernel fault each of them in (on a gzip'd capture, one
fault per 4 KiB read). ``BufferPool`` keeps a few ``bytearray`` buffers instead and hands one out again only
when no view of it is alive: payload memoryviews sliced from a window, kept by whoever reads the capture (the
TCP room's retransmission tail and gather windows, a batch a consumer holds on to), pin their buffer, which
is then not reused (a new one is made while they do). The test is the buffer protocol's own: a ``bytearray``
with exports cannot be resized (``exported``), so no bookkeeping of the views is needed and none can be
forgotten.

The pool is shared by every stream of the process (``shared_pool``): ``check`` and fleet workers read many
captures one after the other, and a small capture would otherwise make (and fault in) its buffers anew. A
reader holds a *pin* (a memoryview) on the buffer it is filling, so that no other reader, in another thread,
takes it; ``take`` checks and pins under a lock.
"""

from __future__ import annotations

import os
import threading

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
        self._lock = threading.Lock()

    def take(self, size: int) -> tuple[bytearray, memoryview]:
        """A buffer of at least ``size`` bytes that nothing points into, its contents undefined, and a pin on
        it (a view of it: release it when done filling the buffer, so that it can be handed out again)."""
        with self._lock:
            kept = self._kept
            if size <= self.chunk:
                for i, buf in enumerate(kept):
                    if not exported(buf):
                        del kept[i]
                        kept.append(buf)
                        self.reused += 1
                        return buf, memoryview(buf)
            buf = bytearray(max(size, self.chunk))
            buf.append(0)                   # grow once now, so that ``exported`` never reallocates it
            del buf[-1]
            self.made += 1
            if len(buf) == self.chunk:
                kept.append(buf)
                if len(kept) > self.keep:   # forget the oldest (all are pinned): it goes when its views do
                    del kept[0]
            return buf, memoryview(buf)


_pools: dict[int, BufferPool] = {}
_pools_lock = threading.Lock()


def shared_pool(chunk: int) -> BufferPool:
    """The process's pool of ``chunk``-byte buffers."""
    with _pools_lock:
        pool = _pools.get(chunk)
        if pool is None:
            pool = _pools[chunk] = BufferPool(chunk)
        return pool


def _after_fork() -> None:
    """A forked child (a fleet worker from the fork server) starts with locks that no thread of its holds."""
    global _pools_lock
    _pools_lock = threading.Lock()
    for pool in _pools.values():
        pool._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
