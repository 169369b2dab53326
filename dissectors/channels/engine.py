# SPDX-License-Identifier: GPL-2.0-or-later
"""Sans-IO streaming engine shared by every channel parser.

A parser is a set of *state functions* ``state(mv, pos, end) -> int | None``: parse one record
starting at ``mv[pos]`` and return the position after what it consumed, or None (or raise
``cursor.NeedMore``, what a ``Cursor`` read past ``end`` does) when more bytes are needed. Only
partial headers are buffered (bounded); payloads are skipped by length across feeds without copying
(``self._skip`` + a pending record emitted when the skip completes).

Skip window: while a payload is being skipped, :attr:`StreamParser.skip_ahead` says how many upcoming
bytes the parser does not need to see; a caller that lets those bytes pass unseen (a TCP sink returning
it as its skip count, see ``dissectors.tcp.sink``) accounts for them with :meth:`StreamParser.skipped`,
which has the same effect as feeding them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dissectors.channels.cursor import NeedMore
from dissectors.channels.kinds import GAP, MALFORMED, OPAQUE, TRUNCATED
from dissectors.channels.record import Record

State = Callable[[memoryview, int, int], int | None]

#: A partial record never needs more than this many buffered bytes (largest header: a 64 KiB command).
MAX_BUFFER = 256 * 1024
#: A chunk this small is appended whole to a partial record held in the buffer and walked there.
WHOLE_CHUNK = 4096


class StreamParser:
    """Base class: ``feed``/``gap``/``eof``, buffering, payload skipping, opaque mode, counts."""

    def __init__(self) -> None:
        self.offset = 0
        self.counts: dict[str, int] = {}
        self._buf = bytearray()
        self._base = 0
        self._skip = 0
        self._pending: Record | None = None
        self._skip_then: State | None = None
        self._out: list[Record] = []
        self._ts = 0.0
        self._opaque_from: int | None = None
        self._opaque_reason = ""
        #: Where the bytes after the last gap start (a resynchronising state reports what it skipped).
        self.resync_from = 0
        self._state: State = self._initial_state()

    # -- subclass hooks -------------------------------------------------------------------------

    def _initial_state(self) -> State:
        raise NotImplementedError

    def _resync_state(self) -> State | None:
        """State that resynchronises after a gap, or None to give up (opaque)."""
        return None

    def _eof_hook(self) -> bool:
        """At the stream's end (buffered bytes or none): finish a record that may legitimately end there;
        True if the buffer was used up."""
        return False

    # -- public API -----------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview, ts: float) -> list[Record]:
        # Fast path: the whole chunk lies inside a payload being skipped (most TCP segments of a RAM or
        # multifd stream); nothing is emitted, so no view, no state call. Same effect as the full path.
        # (``_skip > 0`` implies an empty ``_buf`` and no opaque mode: ``_run`` only returns with a skip
        # left after consuming its whole input, ``gap`` only keeps one with nothing buffered, and going
        # opaque clears it.)
        n = data.nbytes if data.__class__ is memoryview else len(data)
        skip = self._skip
        if skip > n:
            self._skip = skip - n
            self.offset += n
            self._ts = ts
            out = self._out = []
            return out
        out = self._out = []
        self._ts = ts
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        n = len(mv)
        start = self.offset
        self.offset += n
        if self._opaque_from is not None or not n:
            return out
        pos = 0
        while pos < n:
            if self._buf:
                held = len(self._buf)
                # A small chunk goes through the buffer whole: one walk over it (a segment of 9-byte zero
                # pages is then one run, not a run to the 512th byte and another from there); a large one
                # only up to where the held record surely ends, the rest parsed in place.
                whole = n - pos <= WHOLE_CHUNK
                take = n - pos if whole else min(n - pos, max(held, 512))
                self._buf += mv[pos:pos + take]
                pos += take
                self._base = start + pos - len(self._buf)
                bmv = memoryview(self._buf)
                try:
                    used = self._run(bmv, 0, len(bmv))
                finally:
                    bmv.release()
                if self._opaque_from is not None:
                    self._buf.clear()
                    break
                if used >= held and not self._skip and not whole:
                    # The held bytes are used up: the rest of the copy is this chunk's own bytes, parsed
                    # in place from here on (the buffer only ever carries a record across feeds).
                    pos -= len(self._buf) - used
                    self._buf.clear()
                    continue
                del self._buf[:used]
                if len(self._buf) > MAX_BUFFER:
                    self._malformed(self._base + used, "record header larger than the buffer bound")
                    self._buf.clear()
                    break
                continue
            self._base = start
            used = self._run(mv, pos, n)
            if self._opaque_from is None and used < n:
                self._buf += mv[used:n]
            pos = n
        return out

    def close(self) -> None:
        """Done with (the stream ended): drop the state functions, bound methods of this parser (a cycle
        the collector would otherwise have to find). Nothing may be fed after."""
        self._state = None  # type: ignore[assignment]
        self._skip_then = None

    @property
    def skip_ahead(self) -> int:
        """How many upcoming bytes the parser does not need to see: the rest of a payload being skipped
        (0 when a partial header is buffered, in opaque mode, or when no payload is being skipped)."""
        if self._buf or self._opaque_from is not None:
            return 0
        return self._skip

    def skipped(self, n: int, ts: float | None = None) -> list[Record]:
        """``n`` bytes (``0 <= n <= skip_ahead``) went past without being fed: the same effect as feeding
        them. The offset advances; when the skip ends exactly here, the pending record completes (with
        ``ts``, by default the time of the last chunk fed) and is returned."""
        skip = self._skip if not self._buf and self._opaque_from is None else 0   # skip_ahead, inlined
        if not 0 <= n <= skip:
            raise ValueError(f"skipped({n}) outside the skip window ({skip} bytes)")
        out = self._out = []
        if ts is not None:
            self._ts = ts
        if n:
            self.offset += n
            self._skip = skip - n
            if not self._skip:
                self._finish_skip()
        return out

    def gap(self, length: int, ts: float) -> list[Record]:
        out = self._out = []
        self._ts = ts
        off = self.offset
        self.offset += length
        if self._opaque_from is not None or length <= 0:
            return out
        self._emit(GAP, off, length, {})
        if self._skip and not self._buf:
            if length <= self._skip:
                self._skip -= length
                if self._pending is not None:
                    self._pending.fields["gap"] = True
                    if not self._skip:
                        self._finish_skip()
                return out
        if self._pending is not None or self._buf:
            start = self._pending.offset if self._pending is not None else off - len(self._buf)
            self._emit(TRUNCATED, start, off - start, {"reason": "gap"})
        self._pending = None
        self._skip = 0
        self._skip_then = None
        self._buf.clear()
        state = self._resync_state()
        if state is None:
            self._go_opaque(off + length, "gap: cannot resynchronise")
        else:
            self._state = state
            self.resync_from = off + length
        return out

    def eof(self, ts: float) -> list[Record]:
        out = self._out = []
        self._ts = ts
        if self._opaque_from is None:
            if self._eof_hook():
                self._buf.clear()
            if self._pending is not None:
                rec = self._pending
                self._emit(TRUNCATED, rec.offset, self.offset - rec.offset,
                           {"expected": rec.kind, "missing": self._skip})
            elif self._buf:
                start = self.offset - len(self._buf)
                self._emit(TRUNCATED, start, len(self._buf), {"state": self._state.__name__.strip("_")})
            self._pending = None
            self._skip = 0
            self._buf.clear()
        if self._opaque_from is not None and self.offset > self._opaque_from:
            self._emit(OPAQUE, self._opaque_from, self.offset - self._opaque_from,
                       {"reason": self._opaque_reason})
            self._opaque_from = self.offset
        return out

    # -- helpers for state functions ------------------------------------------------------------

    def _run(self, mv: memoryview, pos: int, end: int) -> int:
        while True:
            if self._skip:
                avail = end - pos
                if avail < self._skip:
                    self._skip -= avail
                    return end
                pos += self._skip
                self._skip = 0
                self._finish_skip()
                continue
            if pos >= end:
                return pos
            try:
                new = self._state(mv, pos, end)
            except NeedMore:
                new = None
            if self._opaque_from is not None:
                return end
            if new is None:
                return pos
            pos = new

    def _finish_skip(self) -> None:
        if self._skip_then is not None:
            self._state = self._skip_then
            self._skip_then = None
        elif self._pending is not None:
            rec = self._pending
            self._pending = None
            rec.ts = self._ts
            self._out.append(rec)
            self.counts[rec.kind] = self.counts.get(rec.kind, 0) + 1

    def _emit(self, kind: str, offset: int, length: int, fields: dict[str, Any],
              raw: bytes | None = None) -> Record:
        rec = Record(kind, offset, length, self._ts, fields, raw)
        self._out.append(rec)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return rec

    def _emit_skipping(self, kind: str, offset: int, length: int, fields: dict[str, Any], skip: int,
                       raw: bytes | None = None) -> None:
        """Emit a record whose last ``skip`` bytes (its payload) are skipped, possibly across feeds."""
        if skip:
            self._pending = Record(kind, offset, length, self._ts, fields, raw)
            self._skip = skip
        else:
            self._emit(kind, offset, length, fields, raw)

    def _hold(self, kind: str, offset: int, length: int, fields: dict[str, Any], raw: bytes | None = None) -> Record:
        """Start a record that later states complete (:meth:`_release`); reported truncated if the stream
        ends or breaks first."""
        rec = self._pending = Record(kind, offset, length, self._ts, fields, raw)
        return rec

    def _pass_over(self, n: int, then: State) -> None:
        """Skip the next ``n`` bytes by length (across feeds, inside the skip window), then go on in
        state ``then``; a held record stays held."""
        if n:
            self._skip = n
            self._skip_then = then
        else:
            self._state = then

    def _release(self) -> None:
        """Emit the held record (with the current feed's time)."""
        rec = self._pending
        assert rec is not None
        self._pending = None
        self._emit(rec.kind, rec.offset, rec.length, rec.fields, rec.raw)

    def _malformed(self, offset: int, reason: str, **fields: Any) -> None:
        self._emit(MALFORMED, offset, 0, {"reason": reason, **fields})
        self._go_opaque(offset, reason)

    def _go_opaque(self, offset: int, reason: str) -> None:
        self._opaque_from = offset
        self._opaque_reason = reason
        self._pending = None
        self._skip = 0
        self._skip_then = None

    def _count(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n
