# SPDX-License-Identifier: GPL-2.0-or-later
"""The TLS record layer (RFC 8446 section 5.1), handshake message headers, and the parts of the hellos
that decryption needs (the client's random, the server's cipher suite and selected version).

Migration channels with ``tls-creds`` start with a ClientHello from the source. Only the fields needed
to recognise, frame and decrypt are declared.
"""

from __future__ import annotations

from scapy.fields import (
    ByteEnumField,
    ByteField,
    FieldLenField,
    ShortField,
    StrLenField,
    ThreeBytesField,
    XShortField,
    XStrFixedLenField,
)
from scapy.packet import Packet, bind_layers

from dissectors.layers.strings import counted_string

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

TLS_CLIENT_HELLO = 1
TLS_SERVER_HELLO = 2
TLS_FINISHED = 20
TLS_KEY_UPDATE = 24
TLS_HANDSHAKE_TYPES: dict[int, str] = {
    TLS_CLIENT_HELLO: "client_hello", TLS_SERVER_HELLO: "server_hello", 4: "new_session_ticket",
    8: "encrypted_extensions", 11: "certificate", 12: "server_key_exchange", 13: "certificate_request",
    14: "server_hello_done", 15: "certificate_verify", 16: "client_key_exchange",
    TLS_FINISHED: "finished", TLS_KEY_UPDATE: "key_update",
}
#: Extension carrying the version a TLS 1.3 ServerHello selects (RFC 8446 section 4.2.1).
TLS_EXT_SUPPORTED_VERSIONS = 43
TLS_VERSIONS: dict[int, str] = {0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}

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


class TlsServerHelloRest(Packet):
    """What follows a ServerHello's random: the echoed session id, the chosen cipher suite, the
    compression method and the extensions (the selected version is in ``supported_versions``)."""

    name = "TLS server hello"
    fields_desc = [
        *counted_string("session_id", "session_id_len"),
        XShortField("cipher_suite", 0x1302),
        ByteField("compression", 0),
        FieldLenField("extensions_len", None, length_of="extensions", fmt="!H"),
        StrLenField("extensions", b"", length_from=lambda pkt: pkt.extensions_len),
    ]


class TlsExtension(Packet):
    name = "TLS extension"
    fields_desc = [
        ShortField("type", 0),
        FieldLenField("len", None, length_of="data", fmt="!H"),
        StrLenField("data", b"", length_from=lambda pkt: pkt.len),
    ]


class TlsKeyUpdate(Packet):
    """KeyUpdate's body: whether the peer is asked to update too."""

    name = "TLS key update"
    fields_desc = [ByteField("request_update", 0)]


bind_layers(TlsRecordHeader, TlsHandshakeStart, content_type=TLS_HANDSHAKE)
bind_layers(TlsHandshakeStart, TlsHelloStart, msg_type=1)
bind_layers(TlsHandshakeStart, TlsHelloStart, msg_type=2)
