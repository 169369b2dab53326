# SPDX-License-Identifier: GPL-2.0-or-later
"""TLS parser: frames the record layer, recognises a ClientHello, carries the contents opaque."""

from __future__ import annotations

from dissectors.channels.cursor import Cursor
from dissectors.channels.engine import State, StreamParser
from dissectors.channels.kinds import TLS_RECORD
from dissectors.layers.derived import TLS_CONTENT_TYPES, TLS_HANDSHAKE, TLS_HANDSHAKE_TYPES, TLS_MAX_RECORD
from dissectors.layers.unpack import named, wire_size

_REC = named("TlsRecordHeader")
_HS_TYPE = named("TlsHandshakeStart", "msg_type", "msg_type")
_HS_SIZE = wire_size("TlsHandshakeStart")   # the header has a 24-bit length: no struct format, a size


class TlsParser(StreamParser):
    """Emits one tls.record per record: content type, version, length (+ handshake type if plain)."""

    def __init__(self) -> None:
        super().__init__()
        self._plain_handshake = True  # until ChangeCipherSpec/application data, handshake types are readable

    def _initial_state(self) -> State:
        return self._st_record

    def _st_record(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        c = Cursor(mv, pos, end)
        rec = c.read(_REC)
        ctype, version, n = rec.content_type, rec.version, rec.len
        if ctype not in TLS_CONTENT_TYPES or version >> 8 != 3 or n > TLS_MAX_RECORD + 2048:
            self._malformed(off, "not a TLS record", content_type=ctype, version=version, len=n)
            return None
        fields: dict[str, object] = {"content_type": TLS_CONTENT_TYPES[ctype], "version": version, "len": n}
        if ctype == TLS_HANDSHAKE and self._plain_handshake and n >= _HS_SIZE:
            hs = c.read(_HS_TYPE).msg_type
            fields["handshake"] = TLS_HANDSHAKE_TYPES.get(hs, hs)
        elif ctype != TLS_HANDSHAKE:
            self._plain_handshake = False
        self._emit_skipping(TLS_RECORD, off, _REC.size + n, fields, n, bytes(mv[pos:pos + _REC.size]))
        return pos + _REC.size
