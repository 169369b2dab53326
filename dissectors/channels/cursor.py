# SPDX-License-Identifier: GPL-2.0-or-later
"""Bounded reads for cold records: one "need more" check (as aioquic's Buffer and h11's ReceiveBuffer).

A state function reads a whole record through a :class:`Cursor` over ``mv[pos:end]``; any read past
``end`` raises :class:`NeedMore`, which the parser engine turns into "wait for more bytes" (the state is
called again on the same position with more bytes). So read everything before emitting or changing
state. Hot paths (RAM pages, multifd packets) keep their hand-inlined checks.
"""

from __future__ import annotations

from typing import Any

from dissectors.layers.unpack import Layout, counted_at


class NeedMore(Exception):
    """The record goes on past the bytes at hand."""


#: One instance, raised again and again: its traceback is reset at each raise (``raise`` appends the
#: raising frames to an exception's existing traceback, so a reused instance would keep every frame of
#: every earlier raise alive: found by the fuzzer as ~90 KB more memory per parse).
_NEED_MORE = NeedMore()


class Cursor:
    __slots__ = ("mv", "pos", "end")

    def __init__(self, mv: memoryview, pos: int, end: int) -> None:
        self.mv = mv
        self.pos = pos
        self.end = end

    def need(self, n: int) -> int:
        """Take ``n`` bytes: their start position (NeedMore if they are not all here)."""
        p = self.pos
        if self.end - p < n:
            raise _NEED_MORE.with_traceback(None)
        self.pos = p + n
        return p

    def peek(self, n: int = 1) -> memoryview:
        """The next ``n`` bytes without taking them."""
        if self.end - self.pos < n:
            raise _NEED_MORE.with_traceback(None)
        return self.mv[self.pos:self.pos + n]

    def read(self, layout: Layout) -> Any:
        """The fields of ``layout`` (a named tuple)."""
        return layout.unpack_from(self.mv, self.need(layout.size))

    def u8(self) -> int:
        return self.mv[self.need(1)]

    def take(self, n: int) -> bytes:
        p = self.need(n)
        return bytes(self.mv[p:p + n])

    def counted(self) -> bytes:
        """A QEMU counted string (``layers.strings.counted_string``)."""
        got = counted_at(self.mv, self.pos, self.end)
        if got is None:
            raise _NEED_MORE.with_traceback(None)
        value, self.pos = got
        return value

    def counted_within(self) -> bytes | None:
        """A counted string that must end within the cursor's bytes (a length-prefixed message's body):
        None when it does not."""
        got = counted_at(self.mv, self.pos, self.end)
        if got is None:
            return None
        value, self.pos = got
        return value

    def raw_from(self, start: int) -> bytes:
        """The bytes read since ``start`` (a record's raw bytes)."""
        return bytes(self.mv[start:self.pos])
