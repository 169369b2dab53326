# SPDX-License-Identifier: GPL-2.0-or-later
"""TLS parser: frames the record layer, recognises a ClientHello, carries the contents opaque."""

from __future__ import annotations

from dissectors.channels.engine import State, StreamParser
from dissectors.layers.structs import struct_of
from dissectors.layers.tls import (
    TLS_CONTENT_TYPES,
    TLS_HANDSHAKE,
    TLS_HANDSHAKE_TYPES,
    TLS_MAX_RECORD,
    TlsHandshakeStart,
    TlsRecordHeader,
)

_REC = struct_of(TlsRecordHeader)
_HS_TYPE = struct_of(TlsHandshakeStart, "msg_type", "msg_type")


class TlsParser(StreamParser):
    """Emits one tls.record per record: content type, version, length (+ handshake type if plain)."""

    def __init__(self) -> None:
        super().__init__()
        self._plain_handshake = True  # until ChangeCipherSpec/application data, handshake types are readable

    def _initial_state(self) -> State:
        return self._st_record

    def _st_record(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        if end - pos < _REC.size:
            return None
        ctype, version, n = _REC.unpack_from(mv, pos)
        if ctype not in TLS_CONTENT_TYPES or version >> 8 != 3 or n > TLS_MAX_RECORD + 2048:
            self._malformed(off, "not a TLS record", content_type=ctype, version=version, len=n)
            return None
        fields: dict[str, object] = {"content_type": TLS_CONTENT_TYPES[ctype], "version": version, "len": n}
        if ctype == TLS_HANDSHAKE and self._plain_handshake and n:
            if end - pos < _REC.size + _HS_TYPE.size:
                return None
            (hs,) = _HS_TYPE.unpack_from(mv, pos + _REC.size)
            fields["handshake"] = TLS_HANDSHAKE_TYPES.get(hs, hs)
        elif ctype != TLS_HANDSHAKE:
            self._plain_handshake = False
        self._emit_skipping("tls.record", off, _REC.size + n, fields, n, bytes(mv[pos:pos + _REC.size]))
        return pos + _REC.size
