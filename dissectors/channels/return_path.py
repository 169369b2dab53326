# SPDX-License-Identifier: GPL-2.0-or-later
"""Return-path parser (destination -> source on the main connection)."""

from __future__ import annotations

from typing import Any

from dissectors.channels.cursor import Cursor
from dissectors.channels.engine import State, StreamParser
from dissectors.channels.kinds import RP_KINDS, RP_RECV_BITMAP
from dissectors.layers.derived import (
    MIG_RP_MSG_PONG,
    MIG_RP_MSG_RECV_BITMAP,
    MIG_RP_MSG_REQ_PAGES,
    MIG_RP_MSG_REQ_PAGES_ID,
    MIG_RP_MSG_RESUME_ACK,
    MIG_RP_MSG_SHUT,
    RECV_BITMAP_ENDING,
    RP_LENGTHS,
    RP_TYPES,
)
from dissectors.layers.unpack import named

_HEAD = named("RpMessage")
_SHUT = named("RpShut")
_PONG = named("RpPong")
_ACK = named("RpResumeAck")
_REQ = named("RpReqPages")
_BITMAP_SIZE = named("RecvBitmapDump", "size", "size")
_BITMAP_END = named("RecvBitmapDump", "ending", "ending")
#: A received-pages bitmap above this (1 bit per 4 KiB page of 32 TiB) is reported malformed.
MAX_BITMAP = 1 << 30


def _text(b: bytes) -> str:
    return b.decode("latin-1")


class ReturnPathParser(StreamParser):
    """Emits rp.* records; REQ_PAGES take their block from the previous REQ_PAGES_ID."""

    def __init__(self) -> None:
        super().__init__()
        self._block: str | None = None

    def _initial_state(self) -> State:
        return self._st_message

    def _st_message(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        c = Cursor(mv, pos, end)
        head = c.read(_HEAD)
        typ, n = head.type, head.len
        name = RP_TYPES.get(typ)
        want = RP_LENGTHS.get(typ, -1)
        if name is None or typ == 0 or (want is not None and want != n):
            self._malformed(off, "bad return-path message header", type=typ, len=n)
            return None
        body = Cursor(mv, c.need(n), c.pos)        # the message's own bytes, all here
        raw = c.raw_from(pos)
        fields: dict[str, Any] = {"type": name, "len": n}
        if typ == MIG_RP_MSG_SHUT:
            fields["status"] = body.read(_SHUT).status
        elif typ == MIG_RP_MSG_PONG:
            fields["value"] = body.read(_PONG).value
        elif typ == MIG_RP_MSG_RESUME_ACK:
            fields["value"] = body.read(_ACK).value
        elif typ in (MIG_RP_MSG_REQ_PAGES, MIG_RP_MSG_REQ_PAGES_ID):
            if n < _REQ.size:
                self._malformed(off, "bad REQ_PAGES length", len=n)
                return None
            req = body.read(_REQ)
            fields["start"], fields["len"] = req.start, req.len
            if typ == MIG_RP_MSG_REQ_PAGES_ID:
                block = body.counted_within() if n > _REQ.size + 1 else None
                if block is None or body.pos != body.end:
                    self._malformed(off, "bad REQ_PAGES length", len=n)
                    return None
                self._block = _text(block)
            fields["block"] = self._block
        elif typ == MIG_RP_MSG_RECV_BITMAP:
            block = body.counted_within()
            if body.pos != body.end:
                block = None
            if block is None:
                self._malformed(off, "bad RECV_BITMAP length", len=n)
                return None
            fields["block"] = _text(block)
            self._hold(RP_RECV_BITMAP, off, c.pos - pos, fields, raw)
            self._state = self._st_bitmap_size
            return c.pos
        self._emit(RP_KINDS[typ], off, c.pos - pos, fields, raw)
        return c.pos

    def _st_bitmap_size(self, mv: memoryview, pos: int, end: int) -> int | None:
        size = Cursor(mv, pos, end).read(_BITMAP_SIZE).size
        if size > MAX_BITMAP or size % 8:
            self._malformed(self._base + pos, "absurd received-bitmap size", size=size)
            return None
        rec = self._pending
        assert rec is not None
        rec.fields["bitmap_size"] = size
        rec.length += _BITMAP_SIZE.size + size + _BITMAP_END.size
        self._pass_over(size, self._st_bitmap_end)
        return pos + _BITMAP_SIZE.size

    def _st_bitmap_end(self, mv: memoryview, pos: int, end: int) -> int | None:
        ending = Cursor(mv, pos, end).read(_BITMAP_END).ending
        if ending != RECV_BITMAP_ENDING:
            self._malformed(self._base + pos, "bad received-bitmap end mark", ending=ending)
            return None
        self._release()
        self._state = self._st_message
        return pos + _BITMAP_END.size
