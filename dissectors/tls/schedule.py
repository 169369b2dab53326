"""TLS 1.3 traffic keys from a traffic secret (RFC 8446 section 7): HKDF-Expand-Label, the AEAD, the
per-record nonce, KeyUpdate. The primitives are ``cryptography``'s, imported when keys are first made
(``primitives``)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dissectors.tls.primitives import SuiteParts, crypto


@dataclass(frozen=True)
class Suite(SuiteParts):
    """``hash`` and ``aead`` are the ``cryptography`` classes named ``hash_name`` and ``aead_name``."""

    name: str
    hash_name: str
    key_len: int
    aead_name: str


#: TLS 1.3 cipher suites by code (RFC 8446 appendix B.4).
SUITES: dict[int, Suite] = {
    0x1301: Suite("TLS_AES_128_GCM_SHA256", "SHA256", 16, "AESGCM"),
    0x1302: Suite("TLS_AES_256_GCM_SHA384", "SHA384", 32, "AESGCM"),
    0x1303: Suite("TLS_CHACHA20_POLY1305_SHA256", "SHA256", 32, "ChaCha20Poly1305"),
}
IV_LEN = 12
TAG_LEN = 16
#: Encrypted bytes read at the end of a record whose content is not decrypted (``TrafficKeys.tail``): they
#: hold its inner content type and (up to this length, less one) its zero padding.
TAIL_LEN = 48


def hkdf_expand_label(suite: Suite, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack(">HB", length, len(full)) + full + struct.pack(">B", len(context)) + context
    return crypto().HKDFExpand(algorithm=suite.hash(), length=length, info=info).derive(secret)


class TrafficKeys:
    """One direction's record protection: decrypts records in order (sequence numbers from 0)."""

    __slots__ = ("suite", "secret", "_key", "_aead", "_iv", "seq", "skip_tail", "_ecb")

    def __init__(self, suite: Suite, secret: bytes) -> None:
        self.suite = suite
        self.secret = secret
        self._key = hkdf_expand_label(suite, secret, b"key", b"", suite.key_len)
        self._aead = suite.aead(self._key)
        self._iv = int.from_bytes(hkdf_expand_label(suite, secret, b"iv", b"", IV_LEN), "big")
        self.seq = 0
        #: Bytes at a record's end that :meth:`tail` needs to frame its content without decrypting it.
        self.skip_tail = TAIL_LEN + TAG_LEN
        c = crypto()
        self._ecb = c.Cipher(c.algorithms.AES(self._key), c.modes.ECB()).encryptor() if suite.aead is c.AESGCM else None

    def decrypt(self, header: bytes | memoryview, body: bytes | memoryview) -> bytes | None:
        """The record's inner plaintext (content, type, padding), or None if it fails authentication."""
        nonce = (self._iv ^ self.seq).to_bytes(IV_LEN, "big")
        try:
            out = self._aead.decrypt(nonce, body, header)
        except crypto().InvalidTag:
            return None
        self.seq += 1
        return out

    def tail(self, seq: int, ciphertext: bytes, start: int) -> bytes:
        """The plaintext of ``ciphertext``, the encrypted bytes at ``start`` of record ``seq``'s content,
        from the cipher's keystream alone: nothing is authenticated. For a record whose content nobody
        reads: its last bytes give its inner content type and padding, so its plaintext length."""
        nonce = (self._iv ^ seq).to_bytes(IV_LEN, "big")
        n = len(ciphertext)
        if self._ecb is not None:         # AES-GCM: counter blocks nonce || be32(2 + block number)
            first, last = start >> 4, (start + n - 1) >> 4
            blocks = b"".join(nonce + (b + 2).to_bytes(4, "big") for b in range(first, last + 1))
            skip = start - (first << 4)
            stream = self._ecb.update(blocks)[skip:skip + n]
        else:                             # ChaCha20-Poly1305: 64-byte blocks, the content from counter 1
            first = start >> 6
            c = crypto()
            gen = c.Cipher(c.algorithms.ChaCha20(self._key, (first + 1).to_bytes(4, "little") + nonce), None)
            skip = start - (first << 6)
            stream = gen.encryptor().update(bytes(skip + n))[skip:]
        return (int.from_bytes(stream, "big") ^ int.from_bytes(ciphertext, "big")).to_bytes(n, "big")

    @property
    def counter_mode(self) -> bool:
        """AES-GCM: :meth:`last_bytes` reads many records' last bytes with one call."""
        return self._ecb is not None

    def last_bytes(self, records: list[tuple[int, int, int]]) -> list[int]:
        """The plaintext of the last encrypted byte of each record ``(seq, content length, that byte)``,
        from one block of AES-GCM keystream each, all in one call. Not authenticated."""
        assert self._ecb is not None
        iv = self._iv
        stream = self._ecb.update(b"".join([(iv ^ seq).to_bytes(IV_LEN, "big") + (((n - 1) >> 4) + 2).to_bytes(4, "big")
                                            for seq, n, _ in records]))
        return [stream[(i << 4) + ((n - 1) & 15)] ^ byte for i, (_, n, byte) in enumerate(records)]

    def updated(self) -> TrafficKeys:
        """The keys after a KeyUpdate (``application_traffic_secret_N+1``)."""
        size = self.suite.hash.digest_size
        return TrafficKeys(self.suite, hkdf_expand_label(self.suite, self.secret, b"traffic upd", b"", size))


def inner_content(plaintext: bytes) -> tuple[int, bytes | memoryview] | None:
    """Split a TLSInnerPlaintext into (content type, content: a view of ``plaintext``); None if it is all
    padding."""
    end = len(plaintext) if plaintext and plaintext[-1] else len(plaintext.rstrip(b"\0"))
    if not end:
        return None
    return plaintext[end - 1], memoryview(plaintext)[:end - 1]
