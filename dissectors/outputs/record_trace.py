"""Where a record's bytes came from, for ``migshark dissect``: capture frame numbers and the bytes themselves.

:class:`TracingSink` sits between the TCP room (or TLS decryption) and a connection's ``ChannelSink``. The
reader's walk sets :attr:`FrameClock.frame` to the number of the frame being fed (1-based, every frame of the
file counted, as Wireshark numbers them); each delivered piece of a direction's stream is noted with that
frame, so a record maps to the frames holding its first and its last byte. The frame of a piece is the
frame whose arrival made it readable in order: the segment itself in order, the segment that filled the
hole for a reordered one, the segment completing the TLS record for decrypted plaintext.

Memory stays bounded per direction: pieces before the records already printed are dropped, and at most
:data:`MAX_PIECES` are kept (older ones dropped first; their records then have no first frame). With
``keep`` the first ``keep`` bytes of the record being assembled are kept too: :data:`HEX_BYTES` for ``-x``,
:data:`TREE_BYTES` for ``-V`` of records whose parser kept no bytes (a multifd packet's header, a page's).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from dataclasses import dataclass

#: Pieces (delivered chunks) remembered per direction at most.
MAX_PIECES = 1 << 18
#: Bytes of each record kept for the ``-x`` hex dump (the rest of a large record, a RAM page or a multifd
#: packet's data, is counted, not shown).
HEX_BYTES = 256
#: Bytes of each record kept for the ``-V`` tree of a record the parser kept no bytes of (a page record's
#: header and its 4 KiB page; a multifd packet's header and offsets take 1344 bytes with 128 pages).
TREE_BYTES = 4096 + 256


@dataclass
class FrameClock:
    """The number of the capture frame being fed (0 before the first; None where there are no frames)."""

    frame: int | None = 0
    first_ts: float | None = None       # time of the capture's first TCP segment: text times are relative to it


class DirectionTrace:
    """One direction's delivered pieces (start offset, frame) and the bytes at the record being assembled."""

    __slots__ = ("starts", "ends", "frames", "keep", "head_at", "head", "chunk_at", "chunk")

    def __init__(self, keep: int = 0) -> None:
        self.starts = array("q")
        self.ends = array("q")
        self.frames = array("q")
        self.keep = keep
        self.head_at = 0                # stream offset of head[0]: where the next record starts
        self.head = bytearray()         # up to ``keep`` bytes from head_at
        self.chunk_at = 0
        self.chunk: bytes | memoryview = b""    # the piece being delivered

    def add(self, offset: int, data: bytes | memoryview, frame: int | None) -> None:
        n = len(data)
        if not n:
            return
        if frame is not None:
            if self.frames and self.frames[-1] == frame and self.ends[-1] == offset:
                self.ends[-1] = offset + n          # the same frame going on (a TLS record's pieces)
            else:
                if len(self.starts) >= MAX_PIECES:
                    self._drop(len(self.starts) // 2)
                self.starts.append(offset)
                self.ends.append(offset + n)
                self.frames.append(frame)
        keep = self.keep
        if keep:
            self.chunk_at, self.chunk = offset, data
            head = self.head
            if not head and self.head_at < offset:     # the bytes before were never delivered (a gap)
                self.head_at = offset
            if len(head) < keep and self.head_at + len(head) == offset:
                head += data[:keep - len(head)]

    def frames_of(self, offset: int, length: int) -> tuple[int | None, int | None]:
        """The frames holding the first and the last byte of ``[offset, offset + length)`` (None: not known)."""
        starts = self.starts
        if not starts:
            return None, None
        last_byte = offset + max(length, 1) - 1
        i = bisect_right(starts, offset) - 1
        if i < 0:
            first = None if offset < starts[0] else self.frames[0]
        elif offset < self.ends[i]:
            first = self.frames[i]
        else:                                        # in a gap: the first frame after it
            first = self.frames[i + 1] if i + 1 < len(starts) and starts[i + 1] <= last_byte else self.frames[i]
        j = bisect_right(starts, last_byte) - 1
        last = self.frames[j] if j >= 0 else None
        if first is None and last is not None and offset >= starts[0]:
            first = last
        return first, last

    def bytes_of(self, offset: int, length: int, cap: int = HEX_BYTES) -> bytes:
        """The record's first bytes still at hand (at most ``cap``; fewer where a gap cut them)."""
        want = min(length, cap, self.keep)
        out = bytearray()
        if self.head_at <= offset < self.head_at + len(self.head):
            out += self.head[offset - self.head_at:offset - self.head_at + want]
        at = offset + len(out)
        if len(out) < want and self.chunk_at <= at < self.chunk_at + len(self.chunk):
            out += self.chunk[at - self.chunk_at:at - self.chunk_at + want - len(out)]
        return bytes(out)

    def done_upto(self, first_offset: int, end: int) -> None:
        """Records from ``first_offset`` up to ``end`` have been handed out: forget what lies before."""
        k = bisect_right(self.ends, first_offset)
        if k > 1024:                       # in steps, not per record
            self._drop(k)
        if self.keep and end > self.head_at:
            self.head_at = end
            self.head = bytearray()
            if self.chunk_at <= end < self.chunk_at + len(self.chunk):
                self.head += self.chunk[end - self.chunk_at:end - self.chunk_at + self.keep]

    def _drop(self, k: int) -> None:
        del self.starts[:k]
        del self.ends[:k]
        del self.frames[:k]


class TracingSink:
    """A StreamSink noting each delivered piece (:class:`DirectionTrace`) before handing it to ``inner``.
    It never asks for a skip window: every byte is seen, so a record's last frame is known."""

    __slots__ = ("inner", "clock", "traces")

    def __init__(self, inner: object, clock: FrameClock, keep: int = 0) -> None:
        self.inner = inner
        self.clock = clock
        self.traces = (DirectionTrace(keep), DirectionTrace(keep))

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
        self.traces[direction].add(offset, data, self.clock.frame)
        self.inner.data(direction, offset, data, ts)  # type: ignore[attr-defined]
        return 0

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        self.inner.gap(direction, offset, length, ts)  # type: ignore[attr-defined]

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        self.inner.end(direction, offset, ts, how)  # type: ignore[attr-defined]
