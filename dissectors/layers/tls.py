# SPDX-License-Identifier: GPL-2.0-or-later
"""The TLS record layer (RFC 8446 section 5.1) and the start of a handshake message.

Migration channels with ``tls-creds`` start with a ClientHello from the source; everything after
that is carried opaque, record by record. Only the fields needed to recognise and frame are declared.
"""

from __future__ import annotations

from scapy.fields import (
    ByteEnumField,
    ShortField,
    ThreeBytesField,
    XShortField,
    XStrFixedLenField,
)
from scapy.packet import Packet, bind_layers

TLS_CHANGE_CIPHER_SPEC = 20
TLS_ALERT = 21
TLS_HANDSHAKE = 22
TLS_APPLICATION_DATA = 23

TLS_CONTENT_TYPES: dict[int, str] = {
    TLS_CHANGE_CIPHER_SPEC: "change_cipher_spec",
    TLS_ALERT: "alert",
    TLS_HANDSHAKE: "handshake",
    TLS_APPLICATION_DATA: "application_data",
}

TLS_HANDSHAKE_TYPES: dict[int, str] = {1: "client_hello", 2: "server_hello"}

#: Largest record length allowed (2^14 plaintext + 256 expansion, RFC 8446 section 5.2).
TLS_MAX_RECORD = (1 << 14) + 256


class TlsRecordHeader(Packet):
    name = "TLS record"
    fields_desc = [
        ByteEnumField("content_type", TLS_HANDSHAKE, TLS_CONTENT_TYPES),
        XShortField("version", 0x0303),
        ShortField("len", None),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.len is None:
            pkt = pkt[:3] + len(pay).to_bytes(2, "big")
        return pkt + pay


class TlsHandshakeStart(Packet):
    """A handshake message's header (``msg_type``, 24-bit length); a ClientHello or ServerHello goes on
    with :class:`TlsHelloStart`."""

    name = "TLS handshake"
    fields_desc = [
        ByteEnumField("msg_type", 1, TLS_HANDSHAKE_TYPES),
        ThreeBytesField("length", 0),
    ]


class TlsHelloStart(Packet):
    """The start of a ClientHello / ServerHello: legacy version and the 32-byte random (what matches a
    connection to its key-log secrets)."""

    name = "TLS hello"
    fields_desc = [
        XShortField("legacy_version", 0x0303),
        XStrFixedLenField("random", b"\0" * 32, length=32),
    ]


bind_layers(TlsRecordHeader, TlsHandshakeStart, content_type=TLS_HANDSHAKE)
bind_layers(TlsHandshakeStart, TlsHelloStart, msg_type=1)
bind_layers(TlsHandshakeStart, TlsHelloStart, msg_type=2)
