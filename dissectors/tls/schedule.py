"""TLS 1.3 traffic keys from a traffic secret (RFC 8446 section 7): HKDF-Expand-Label, the AEAD, the
per-record nonce, KeyUpdate. The primitives are ``cryptography``'s."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand


@dataclass(frozen=True)
class Suite:
    name: str
    hash: type[hashes.HashAlgorithm]
    key_len: int
    aead: type[AESGCM] | type[ChaCha20Poly1305]


#: TLS 1.3 cipher suites by code (RFC 8446 appendix B.4).
SUITES: dict[int, Suite] = {
    0x1301: Suite("TLS_AES_128_GCM_SHA256", hashes.SHA256, 16, AESGCM),
    0x1302: Suite("TLS_AES_256_GCM_SHA384", hashes.SHA384, 32, AESGCM),
    0x1303: Suite("TLS_CHACHA20_POLY1305_SHA256", hashes.SHA256, 32, ChaCha20Poly1305),
}
IV_LEN = 12
TAG_LEN = 16


def hkdf_expand_label(suite: Suite, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack(">HB", length, len(full)) + full + struct.pack(">B", len(context)) + context
    return HKDFExpand(algorithm=suite.hash(), length=length, info=info).derive(secret)


class TrafficKeys:
    """One direction's record protection: decrypts records in order (sequence numbers from 0)."""

    __slots__ = ("suite", "secret", "_aead", "_iv", "seq")

    def __init__(self, suite: Suite, secret: bytes) -> None:
        self.suite = suite
        self.secret = secret
        self._aead = suite.aead(hkdf_expand_label(suite, secret, b"key", b"", suite.key_len))
        self._iv = int.from_bytes(hkdf_expand_label(suite, secret, b"iv", b"", IV_LEN), "big")
        self.seq = 0

    def decrypt(self, header: bytes, body: bytes) -> bytes | None:
        """The record's inner plaintext (content, type, padding), or None if it fails authentication."""
        nonce = (self._iv ^ self.seq).to_bytes(IV_LEN, "big")
        try:
            out = self._aead.decrypt(nonce, body, header)
        except InvalidTag:
            return None
        self.seq += 1
        return out

    def updated(self) -> TrafficKeys:
        """The keys after a KeyUpdate (``application_traffic_secret_N+1``)."""
        size = self.suite.hash.digest_size
        return TrafficKeys(self.suite, hkdf_expand_label(self.suite, self.secret, b"traffic upd", b"", size))


def inner_content(plaintext: bytes) -> tuple[int, bytes] | None:
    """Split a TLSInnerPlaintext into (content type, content); None if it is all padding."""
    end = len(plaintext)
    while end and plaintext[end - 1] == 0:
        end -= 1
    if not end:
        return None
    return plaintext[end - 1], plaintext[:end - 1]
