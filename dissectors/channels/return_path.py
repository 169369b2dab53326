# SPDX-License-Identifier: GPL-2.0-or-later
"""Return-path parser (destination -> source on the main connection)."""

from __future__ import annotations

from typing import Any

from dissectors.channels.engine import State, StreamParser
from dissectors.channels.record import Record
from dissectors.layers.return_path import (
    MIG_RP_MSG_PONG,
    MIG_RP_MSG_RECV_BITMAP,
    MIG_RP_MSG_REQ_PAGES,
    MIG_RP_MSG_REQ_PAGES_ID,
    MIG_RP_MSG_RESUME_ACK,
    MIG_RP_MSG_SHUT,
    RECV_BITMAP_ENDING,
    RP_LENGTHS,
    RP_TYPES,
    RecvBitmapDump,
    RpMessage,
    RpPong,
    RpReqPages,
    RpResumeAck,
    RpShut,
)
from dissectors.layers.structs import struct_of

_HEAD = struct_of(RpMessage)
_SHUT = struct_of(RpShut)
_PONG = struct_of(RpPong)
_ACK = struct_of(RpResumeAck)
_REQ = struct_of(RpReqPages)
_BITMAP_SIZE = struct_of(RecvBitmapDump, "size", "size")
_BITMAP_END = struct_of(RecvBitmapDump, "ending", "ending")
#: A received-pages bitmap above this (1 bit per 4 KiB page of 32 TiB) is reported malformed.
MAX_BITMAP = 1 << 30


class ReturnPathParser(StreamParser):
    """Emits rp.* records; REQ_PAGES take their block from the previous REQ_PAGES_ID."""

    def __init__(self) -> None:
        super().__init__()
        self._block: str | None = None

    def _initial_state(self) -> State:
        return self._st_message

    def _st_message(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        if end - pos < _HEAD.size:
            return None
        typ, n = _HEAD.unpack_from(mv, pos)
        name = RP_TYPES.get(typ)
        want = RP_LENGTHS.get(typ, -1)
        if name is None or typ == 0 or (want is not None and want != n):
            self._malformed(off, "bad return-path message header", type=typ, len=n)
            return None
        p = pos + _HEAD.size
        stop = p + n
        if end < stop:
            return None
        fields: dict[str, Any] = {"type": name, "len": n}
        raw = bytes(mv[pos:stop])
        if typ == MIG_RP_MSG_SHUT:
            (fields["status"],) = _SHUT.unpack_from(mv, p)
        elif typ == MIG_RP_MSG_PONG:
            (fields["value"],) = _PONG.unpack_from(mv, p)
        elif typ == MIG_RP_MSG_RESUME_ACK:
            (fields["value"],) = _ACK.unpack_from(mv, p)
        elif typ in (MIG_RP_MSG_REQ_PAGES, MIG_RP_MSG_REQ_PAGES_ID):
            if n < _REQ.size or (typ == MIG_RP_MSG_REQ_PAGES_ID and (n < _REQ.size + 2
                                                                   or mv[p + _REQ.size] + _REQ.size + 1 != n)):
                self._malformed(off, "bad REQ_PAGES length", len=n)
                return None
            fields["start"], fields["len"] = _REQ.unpack_from(mv, p)
            if typ == MIG_RP_MSG_REQ_PAGES_ID:
                self._block = bytes(mv[p + _REQ.size + 1:stop]).decode("latin-1")
            fields["block"] = self._block
        elif typ == MIG_RP_MSG_RECV_BITMAP:
            if n < 1 or mv[p] + 1 != n:
                self._malformed(off, "bad RECV_BITMAP length", len=n)
                return None
            fields["block"] = bytes(mv[p + 1:stop]).decode("latin-1")
            self._pending = Record("rp.recv_bitmap", off, stop - pos, self._ts, fields, raw)
            self._state = self._st_bitmap_size
            return stop
        kind = "rp.req_pages" if typ in (MIG_RP_MSG_REQ_PAGES, MIG_RP_MSG_REQ_PAGES_ID) else "rp." + name.lower()
        self._emit(kind, off, stop - pos, fields, raw)
        return stop

    def _st_bitmap_size(self, mv: memoryview, pos: int, end: int) -> int | None:
        if end - pos < _BITMAP_SIZE.size:
            return None
        (size,) = _BITMAP_SIZE.unpack_from(mv, pos)
        rec = self._pending
        assert rec is not None
        if size > MAX_BITMAP or size % 8:
            self._malformed(self._base + pos, "absurd received-bitmap size", size=size)
            return None
        rec.fields["bitmap_size"] = size
        rec.length += _BITMAP_SIZE.size + size + _BITMAP_END.size
        self._skip = size
        self._skip_then = self._st_bitmap_end
        if not size:
            self._skip_then = None
            self._state = self._st_bitmap_end
        return pos + _BITMAP_SIZE.size

    def _st_bitmap_end(self, mv: memoryview, pos: int, end: int) -> int | None:
        if end - pos < _BITMAP_END.size:
            return None
        (ending,) = _BITMAP_END.unpack_from(mv, pos)
        if ending != RECV_BITMAP_ENDING:
            self._malformed(self._base + pos, "bad received-bitmap end mark", ending=ending)
            return None
        rec = self._pending
        assert rec is not None
        self._pending = None
        self._emit(rec.kind, rec.offset, rec.length, rec.fields, rec.raw)
        self._state = self._st_message
        return pos + _BITMAP_END.size
