"""One direction of a TCP connection: absolute offsets, out-of-order buffer, gaps, retransmission checks.

Offsets are absolute 64-bit stream positions: offset 0 is the first byte after the SYN (or, without a
SYN, the first byte of the first segment seen). ``offset`` is the *front*: every byte below it has been
handed to the sink as data or declared a gap, and nothing below it is ever delivered again.

Segments above the front wait in ``pending`` (a list sorted by start offset, copies of the payload)
until the hole before them is filled, until they exceed ``ooo_limit`` bytes, or until the stream ends;
then the hole is declared a gap and the waiting data delivered. The last ``tail_segments`` delivered
pieces are kept *by reference* (no copy: the capture reader's buffers stay valid) so that retransmissions
can be compared with what was delivered; a gap empties that tail, the stream's end drops it.

Ends: a FIN's sequence number is the stream's final length (``fin_offset``); bytes beyond it are ignored,
holes below it wait to be filled. A reset (either side's RST) makes what the direction has carried so far
(its front, or the end of what waits out of order) its final length the same way (:meth:`HalfStream.reset`):
on a path that reorders, segments sent before the reset arrive after it and fill holes; the tracker gives
up on them ``RESET_GRACE`` later. The RST's sender's own direction ends at the RST's sequence number
instead when that is further (it is the sender's SND.NXT: the segments it wrote last were not captured,
or were lost and never retransmitted), but by at most ``ooo_limit``: a stray or forged RST's sequence
number is random. Behind what was carried (an RST answering a segment takes its ACK), or after a FIN
(whose offset stays the end), it adds nothing.

Snaplen-cut segments: the captured bytes are data, the bytes that were not captured become a gap as
soon as they reach the front. If the full bytes were buffered from another copy of the segment before
that, the copy wins; if they arrive after, they count as retransmitted.

Skip window: when ``sink.data`` returns ``k > 0``, the sink does not need the ``k`` bytes after that
chunk; ``skip_until`` is the offset where the window ends. In-order data wholly below it is accounted
for exactly as usual (offsets, counters, times, tail for retransmission checks) but not delivered; a
piece crossing it is delivered from ``skip_until`` on. Gaps are always delivered, at their own offset:
a consumer skipping bytes by length still has to know that some of them were lost.

Gather window: when ``sink.data`` returns ``-g < 0``, the sink needs the next ``g`` bytes, but only as a
whole (a TLS record: nothing can be done with part of one). They are kept (by reference, in ``gather``)
as a skip window's are accounted for, and handed over in one call as soon as the window's last byte is
there: with the piece crossing the window's end, or when a piece ends exactly at it (a sender writing
whole records, as QEMU does, ends most of them at a segment's end), at that piece's time, which is the
time they would have completed at one by one. (Waiting for the next piece instead dated a record at
the next segment: the last record before a pause, a page a postcopy request waited for, came as late as
the connection's FIN.) A gap or the end of the stream inside the window hands over what was gathered
first, and the window closes.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from operator import itemgetter
from typing import TYPE_CHECKING

from .flags import SEQ_MASK, unwrap
from .sink import END_FIN, END_RST, StreamSink

if TYPE_CHECKING:
    from .connection import Connection

#: How many gap ranges and conflict offsets are kept per direction (counters stay exact).
MAX_GAPS_KEPT = 1000
MAX_CONFLICTS_KEPT = 16
#: Out-of-order pieces buffered at most per direction, whatever their size: tiny segments would
#: otherwise cost ~150 bytes of bookkeeping each and a linear insertion (docs/limits.md).
MAX_PENDING_PIECES = 4096

_DATA = 0
_HOLE = 1
# pending entries: (start, kind, end, data); data bytes are the copy for _DATA, b"" for _HOLE.
_ORDER = itemgetter(0, 1)
#: The tail of a direction that delivers nothing (yet, or any more): shared, appending to it keeps nothing.
_EMPTY: tuple[()] = ()
_NO_TAIL: deque[memoryview | bytes] = deque(maxlen=0)


class HalfStream:
    """Reassembly state and counters for one direction (0 = client->server, 1 = server->client)."""

    __slots__ = (
        "direction", "conn", "sink", "deliver", "isn", "base", "next_seq", "offset", "pending",
        "pending_bytes", "ooo_limit", "tail", "fin_offset", "ended", "awaiting_handshake",
        "frames", "last_ts", "first_data_ts", "last_data_ts", "gaps", "gap_count", "gap_bytes",
        "retransmitted_bytes", "overlap_conflicts", "conflict_offsets", "ignored_bytes",
        "fin_ts", "rst_ts", "skip_until", "tail_len", "gather", "gather_from", "close_how", "reset_ts",
    )

    def __init__(self, direction: int, ooo_limit: int, tail_segments: int) -> None:
        self.direction = direction
        self.conn: Connection | None = None   # set by the tracker right after construction
        self.sink: StreamSink | None = None
        self.deliver = None  # sink.data, bound once; None when nothing is delivered
        self.isn: int | None = None          # sequence number of our SYN, if seen
        self.base: int | None = None         # sequence number of offset 0
        self.next_seq = -1                   # fast-path cache (base + offset); -1 forces the slow path
        self.offset = 0
        self.pending: list[tuple[int, int, int, bytes]] = []
        self.pending_bytes = 0
        self.ooo_limit = ooo_limit
        self.tail_len = tail_segments
        self.tail = _NO_TAIL            # delivered pieces, ending at the front: made when data can flow
        self.fin_offset: int | None = None   # where the stream stops: its FIN, or what it carried at a reset
        self.close_how = END_FIN             # how it ends on reaching ``fin_offset``
        self.reset_ts: float | None = None   # when the connection was reset while this direction had holes
        self.ended: str | None = None        # how the stream ended, once it has
        self.awaiting_handshake = False      # client side between SYN and the ACK completing it
        self.frames = 0
        self.last_ts: float | None = None
        self.first_data_ts: float | None = None
        self.last_data_ts: float | None = None
        self.gaps: list[tuple[int, int]] = _EMPTY  # type: ignore[assignment]   # a list once there is one
        self.gap_count = 0
        self.gap_bytes = 0
        self.retransmitted_bytes = 0
        self.overlap_conflicts = 0
        self.conflict_offsets: list[int] = _EMPTY  # type: ignore[assignment]   # a list once there is one
        self.ignored_bytes = 0               # before offset 0, after the FIN/RST end, or in an RST
        self.fin_ts: float | None = None
        self.rst_ts: float | None = None
        self.skip_until = 0                  # data below this offset is not delivered (the sink's window)
        self.gather: list[memoryview | bytes] | None = None  # a gather window's pieces so far (from gather_from)
        self.gather_from = 0

    # ---- state used by the tracker -------------------------------------------------------------

    def attach(self, sink: StreamSink | None) -> None:
        self.sink = sink
        self.deliver = sink.data if sink is not None else None

    def refresh(self) -> None:
        """Re-arm or disarm the tracker's fast path for this direction."""
        if (self.base is None or self.pending or self.fin_offset is not None or self.ended is not None
                or self.awaiting_handshake):
            self.next_seq = -1
        else:
            self.next_seq = (self.base + self.offset) & SEQ_MASK
            if self.tail is _NO_TAIL:
                self.tail = deque(maxlen=self.tail_len)

    def offset_of(self, seq: int) -> int:
        """Absolute offset of sequence number ``seq`` (base must be known)."""
        assert self.base is not None
        return unwrap(seq, self.base, self.offset)

    # ---- data ------------------------------------------------------------------------------------

    def accept(self, seq: int, payload: memoryview | bytes, missing: int, ts: float) -> None:
        """A segment whose first byte has sequence number ``seq``: ``payload`` captured, ``missing`` not."""
        n = len(payload)
        off = self.offset_of(seq)
        end = off + n + missing
        if off < 0:                                   # before the start of the stream
            cut = -off
            if cut >= n + missing:
                self.ignored_bytes += n + missing
                return
            self.ignored_bytes += cut
            if cut <= n:
                payload, n = payload[cut:], n - cut
            else:
                missing -= cut - n
                payload, n = payload[n:], 0
            off = 0
        limit = self.fin_offset if self.fin_offset is not None else (
            self.offset if self.ended is not None else None)
        if limit is not None and end > limit:         # beyond the FIN (or after the stream ended)
            if off >= limit:
                self.ignored_bytes += n + missing
                return
            keep = limit - off
            self.ignored_bytes += end - limit
            if keep <= n:
                payload, n, missing = payload[:keep], keep, 0
            else:
                missing = keep - n
            end = limit
        front = self.offset
        if off < front:                               # retransmission (maybe partial)
            dup = min(end, front) - off
            self.retransmitted_bytes += dup
            if n:
                self._compare(off, payload[:dup])
            if end <= front:
                return
            if dup <= n:
                payload, n = payload[dup:], n - dup
            else:
                missing -= dup - n
                payload, n = payload[n:], 0
            off = front
        if off == front:
            if n:
                self._deliver(payload, ts)
            if missing:
                self._gap(missing, ts)
            if self.pending:
                self._drain(ts)
            self._reach_fin(ts)
        else:
            self._buffer(off, payload, missing, ts)

    def _deliver(self, data: memoryview | bytes, ts: float) -> None:
        off = self.offset
        self.offset = off + len(data)
        if self.first_data_ts is None:
            self.first_data_ts = ts
        self.last_data_ts = ts
        if self.tail is _NO_TAIL and self.ended is None:
            self.tail = deque(maxlen=self.tail_len)
        self.tail.append(data)
        if self.deliver is not None and off + len(data) > self.skip_until:
            self.hand_over(off, data, ts)
        elif self.gather is not None:
            self.gather.append(data)
            if off + len(data) == self.skip_until:  # the window's last byte: complete now, not with the next
                self.hand_gathered(ts)

    def in_order(self, seq: int, ts: float, payload: memoryview | bytes) -> None:
        """Take the next in-order data segment (``seq == next_seq``, ``payload`` not empty, its frame
        counted by the caller): account for it, and deliver it, skip it in the sink's skip window, or keep
        it in a gather window."""
        n = len(payload)
        off = self.offset
        self.offset = off + n
        self.next_seq = (seq + n) & SEQ_MASK
        if self.first_data_ts is None:
            self.first_data_ts = ts
        self.last_data_ts = ts
        self.tail.append(payload)
        if off >= self.skip_until:             # at or beyond the end of the sink's skip window
            if self.gather is not None:        # a gather window ends here: its pieces with it
                self.hand_over(off, payload, ts)
            elif self.deliver is not None:
                k = self.deliver(self.direction, off, payload, ts)
                if k:
                    self.window(off + n, k)
        elif off + n > self.skip_until:        # crossing its end; wholly inside: not delivered
            self.hand_over(off, payload, ts)
        elif self.gather is not None:          # (but kept, in a gather window)
            self.gather.append(payload)
            if off + n == self.skip_until:     # the window's last byte: complete now, not with the next
                self.hand_gathered(ts)

    def hand_over(self, off: int, data: memoryview | bytes, ts: float) -> None:
        """Deliver the piece ``[off, off + len(data))`` (already accounted for) from ``skip_until`` on,
        and open the window the sink asks for. The caller checked that the piece ends above
        ``skip_until`` and that there is a sink."""
        end = off + len(data)
        skip = self.skip_until
        if self.gather is not None:                 # a gather window: its pieces, then this one's
            parts = self.gather
            parts.append(data)
            data = b"".join(parts)
            off = self.gather_from
            self.gather = None
        elif off < skip:
            data = memoryview(data)[skip - off:]
            off = skip
        assert self.deliver is not None
        k = self.deliver(self.direction, off, data, ts)
        if k:
            self.window(end, k)

    def window(self, end: int, k: int) -> None:
        """Open the window ``sink.data`` asked for with ``k`` after a chunk ending at ``end`` (skip for
        ``k > 0``, gather for ``k < 0``)."""
        if k > 0:
            self.skip_until = end + k
        else:
            self.skip_until = end - k
            self.gather = []
            self.gather_from = end

    def hand_gathered(self, ts: float) -> None:
        """Hand over what the gather window holds, and close it: its last byte has come (a piece ended exactly
        at its end; the tracker's fast paths call this too), or a gap or the end came inside it."""
        parts, self.gather = self.gather, None
        self.skip_until = self.offset
        if parts and self.deliver is not None:
            k = self.deliver(self.direction, self.gather_from, b"".join(parts), ts)
            if k:
                self.window(self.offset, k)

    def _gap(self, length: int, ts: float) -> None:
        if self.gather is not None:
            self.hand_gathered(ts)
        off = self.offset
        self.offset = off + length
        self.gap_count += 1
        self.gap_bytes += length
        gaps = self.gaps
        if gaps and gaps[-1][0] + gaps[-1][1] == off:
            gaps[-1] = (gaps[-1][0], gaps[-1][1] + length)
            self.gap_count -= 1
        elif len(gaps) < MAX_GAPS_KEPT:
            if not gaps:
                gaps = self.gaps = []
            gaps.append((off, length))
        self.tail.clear()                             # the tail must end at the front, contiguously
        if self.sink is not None:
            self.sink.gap(self.direction, off, length, ts)

    def _compare(self, off: int, data: memoryview | bytes) -> None:
        """Compare retransmitted ``data`` at ``off`` with the delivered tail, where it is still kept."""
        stop = off + len(data)
        piece_end = self.offset
        for piece in reversed(self.tail):
            piece_start = piece_end - len(piece)
            lo, hi = max(off, piece_start), min(stop, piece_end)
            if lo < hi:
                old = piece[lo - piece_start:hi - piece_start]
                new = data[lo - off:hi - off]
                if old != new:
                    differing = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
                    self.overlap_conflicts += len(differing)
                    if not self.conflict_offsets:
                        self.conflict_offsets = []
                    if len(self.conflict_offsets) < MAX_CONFLICTS_KEPT:
                        self.conflict_offsets.append(lo + differing[0])
            if piece_start <= off:
                break
            piece_end = piece_start

    def _buffer(self, off: int, payload: memoryview | bytes, missing: int, ts: float) -> None:
        n = len(payload)
        if n:
            insort(self.pending, (off, _DATA, off + n, bytes(payload)), key=_ORDER)
            self.pending_bytes += n
        if missing:
            insort(self.pending, (off + n, _HOLE, off + n + missing, b""), key=_ORDER)
        while self.pending_bytes > self.ooo_limit or len(self.pending) > MAX_PENDING_PIECES:
            self._give_up_front(ts)

    def _give_up_front(self, ts: float) -> None:
        """Declare the hole before the first buffered segment a gap and deliver what follows it."""
        start = self.pending[0][0]
        if start > self.offset:
            self._gap(start - self.offset, ts)
        self._drain(ts)

    def _drain(self, ts: float) -> None:
        pending = self.pending
        used = 0
        for start, kind, end, data in pending:
            front = self.offset
            if start > front:
                break
            used += 1
            if kind == _DATA:
                self.pending_bytes -= len(data)
            if end <= front:
                self.retransmitted_bytes += end - start
                if kind == _DATA:
                    self._compare(start, data)
                continue
            dup = front - start
            if dup:
                self.retransmitted_bytes += dup
                if kind == _DATA:
                    self._compare(start, data[:dup])
            if kind == _DATA:
                self._deliver(memoryview(data)[dup:] if dup else data, ts)
            else:
                self._gap(end - front, ts)
        del pending[:used]

    # ---- ends ------------------------------------------------------------------------------------

    def fin(self, fin_offset: int, ts: float) -> None:
        """A FIN whose sequence number maps to ``fin_offset`` (the stream's final length)."""
        if self.fin_ts is None:
            self.fin_ts = ts
        if self.fin_offset is not None or self.ended is not None:
            return
        fin_offset = max(fin_offset, self.offset)
        self.fin_offset = fin_offset
        if self.pending and max(p[2] for p in self.pending) > fin_offset:   # (sorted by start, not end)
            kept = []
            for start, kind, end, data in self.pending:
                if kind == _DATA:
                    self.pending_bytes -= len(data)
                if start >= fin_offset:
                    self.ignored_bytes += end - start
                    continue
                if end > fin_offset:
                    self.ignored_bytes += end - fin_offset
                    end, data = fin_offset, data[:fin_offset - start]
                if kind == _DATA:
                    self.pending_bytes += len(data)
                kept.append((start, kind, end, data))
            self.pending[:] = kept
        self._reach_fin(ts)

    def _reach_fin(self, ts: float) -> None:
        if self.fin_offset is not None and self.offset == self.fin_offset and self.ended is None:
            self.end(self.close_how, ts)

    def reset(self, ts: float, sent: int | None = None) -> bool:
        """The connection was reset (by either side). Nothing beyond what this direction has carried so far
        (its front, or the end of what waits out of order) is data any more, but the holes below that
        still are: a segment sent before the reset can arrive after it on a path that reorders, and fills
        one. Without holes the direction ends here (``end`` with ``END_RST``); else it ends when they are
        filled, or when :meth:`flush` gives up on them. Returns whether it is still waiting for holes.

        ``sent`` is the offset of the RST's sequence number when this direction sent it: its sender's
        SND.NXT, so everything below it was sent, and what the capture missed of it is a hole too. It
        counts only if ahead of what was carried by at most ``ooo_limit`` (:meth:`_sent_end`)."""
        if self.ended is not None:
            return False
        if self.fin_offset is None:                   # a FIN seen before: its offset stays the stream's end
            carried = max(self.offset, max((p[2] for p in self.pending), default=0))
            self.fin_offset = self._sent_end(carried, sent)
            self.close_how = END_RST
        if self.offset == self.fin_offset:
            self.end(self.close_how, ts)
            return False
        self.reset_ts = ts
        self.refresh()
        return True

    def _sent_end(self, carried: int, sent: int | None) -> int:
        """The stream's final length at a reset: what it ``carried``, or the offset its own RST was
        ``sent`` at when that is ahead by no more than ``ooo_limit``. An RST answering a segment takes that
        segment's ACK (at or behind what was carried, unless the capture missed bytes that were acknowledged:
        a loss too); one a few segments ahead says the capture (or the path, the reset then cancelling their
        retransmission) lost what it sent last. The offset comes from ``offset_of`` (nearest the front
        across 32-bit wraps): a sequence number 2 GiB or more ahead maps behind, adding nothing.
        Bytes in flight are bounded by the receiver's window, which Linux's default ``tcp_rmem`` max
        (6 MiB) keeps below the tracker's own bound on what may wait ahead of the front (``ooo_limit``, 8 MiB
        by default); a window of up to 1 GiB is possible but a forged or stray RST's random sequence number
        must not invent that much loss: it lands within the bound once in 512 times, and then adds at most
        ``ooo_limit`` of gap."""
        if sent is None or not carried < sent <= carried + self.ooo_limit:
            return carried
        return sent

    def would_lose(self) -> int:
        """The bytes :meth:`flush` would declare gaps now: the holes before and between the pieces waiting out
        of order, the bytes a snaplen cut left out of them, and what is missing up to the FIN (or the reset's
        end). What the end of the capture would count as lost, for a judgement of the capture so far; the
        holes themselves stay open (a late segment may still fill them). Walks ``pending``, which is short
        (``MAX_PENDING_PIECES``) and empty on the tracker's fast path."""
        lost = 0
        front = self.offset
        for start, kind, end, _ in self.pending:      # as _give_up_front and _drain walk them
            if start > front:
                lost += start - front
                front = start
            if end > front:
                if kind == _HOLE:
                    lost += end - front
                front = end
        if self.fin_offset is not None and front < self.fin_offset and self.ended is None:
            lost += self.fin_offset - front
        return lost

    def flush(self, ts: float) -> None:
        """No more bytes will come: declare every hole a gap and deliver everything buffered."""
        while self.pending:
            self._give_up_front(ts)
        if self.fin_offset is not None and self.offset < self.fin_offset and self.ended is None:
            self._gap(self.fin_offset - self.offset, ts)
        self._reach_fin(ts)

    def end(self, how: str, ts: float) -> None:
        """Close this direction (once); the sink hears ``end`` at the front."""
        if self.ended is not None:
            return
        if self.gather is not None:
            self.hand_gathered(ts)
        self.ended = how
        self.reset_ts = None
        self.next_seq = -1
        # Shrink to the summary: drop the tail's references, and the sink's bound method; an empty
        # out-of-order list becomes one shared empty tuple (nothing is buffered once the direction ended).
        self.tail = _NO_TAIL
        self.deliver = None
        if not self.pending:
            self.pending = _EMPTY  # type: ignore[assignment]
        if self.sink is not None:
            self.sink.end(self.direction, self.offset, ts, how)
