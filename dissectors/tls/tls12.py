"""TLS 1.2 record protection for the AEAD cipher suites, from the master secret of a ``CLIENT_RANDOM``
key-log line.

The key block is ``PRF(master_secret, "key expansion", server_random + client_random)`` (RFC 5246 section
6.3), the PRF being P_SHA256, or P_SHA384 for the ``_SHA384`` suites. An AEAD suite has no MAC key, so
the block is the client's and the server's write keys, then their fixed IVs. With the extended master
secret (RFC 7627, which GnuTLS negotiates by default) only the master secret's own derivation changes; the
key log holds the resulting master secret, and the key block is derived from it the same way.

Records are ``seq_num``-numbered from 0 in each direction from that side's ChangeCipherSpec; the
additional data is ``seq_num + type + version + plaintext length``:

- AES-GCM (RFC 5288): a 4-byte fixed IV (salt) from the key block, then an 8-byte explicit nonce sent in
  front of each record's ciphertext; 16-byte tag.
- ChaCha20-Poly1305 (RFC 7905): a 12-byte fixed IV XORed with the sequence number, as in TLS 1.3;
  nothing explicit on the wire; 16-byte tag.

CBC suites (MAC-then-encrypt, an explicit IV per record, padding checks) are not decrypted: QEMU's GnuTLS
picks an AEAD suite unless told otherwise, and a CBC suite is said to be left encrypted.
The HMAC and the AEADs are ``cryptography``'s; the PRF's P_hash expansion is the few lines below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dissectors.tls.primitives import SuiteParts, crypto

TAG_LEN = 16
MASTER_SECRET_LEN = 48


@dataclass(frozen=True)
class Suite12(SuiteParts):
    """``hash`` and ``aead`` are the ``cryptography`` classes named ``hash_name`` and ``aead_name``."""

    name: str
    hash_name: str
    key_len: int
    fixed_iv_len: int                      # bytes of IV in the key block
    explicit_nonce_len: int                # bytes of nonce sent before each record's ciphertext
    aead_name: str

    @property
    def overhead(self) -> int:
        """Record bytes beyond the plaintext."""
        return self.explicit_nonce_len + TAG_LEN


def _gcm(name: str, hash_: str, key_len: int) -> Suite12:
    return Suite12(name, hash_, key_len, 4, 8, "AESGCM")


def _chacha(name: str) -> Suite12:
    return Suite12(name, "SHA256", 32, 12, 0, "ChaCha20Poly1305")


#: TLS 1.2 AEAD cipher suites by code (IANA TLS cipher suite registry).
SUITES12: dict[int, Suite12] = {
    0x009C: _gcm("TLS_RSA_WITH_AES_128_GCM_SHA256", "SHA256", 16),
    0x009D: _gcm("TLS_RSA_WITH_AES_256_GCM_SHA384", "SHA384", 32),
    0x009E: _gcm("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "SHA256", 16),
    0x009F: _gcm("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "SHA384", 32),
    0x00A2: _gcm("TLS_DHE_DSS_WITH_AES_128_GCM_SHA256", "SHA256", 16),
    0x00A3: _gcm("TLS_DHE_DSS_WITH_AES_256_GCM_SHA384", "SHA384", 32),
    0x00A8: _gcm("TLS_PSK_WITH_AES_128_GCM_SHA256", "SHA256", 16),
    0x00A9: _gcm("TLS_PSK_WITH_AES_256_GCM_SHA384", "SHA384", 32),
    0x00AA: _gcm("TLS_DHE_PSK_WITH_AES_128_GCM_SHA256", "SHA256", 16),
    0x00AB: _gcm("TLS_DHE_PSK_WITH_AES_256_GCM_SHA384", "SHA384", 32),
    0xC02B: _gcm("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "SHA256", 16),
    0xC02C: _gcm("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "SHA384", 32),
    0xC02F: _gcm("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "SHA256", 16),
    0xC030: _gcm("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "SHA384", 32),
    0xCCA8: _chacha("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCA9: _chacha("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAA: _chacha("TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAB: _chacha("TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAC: _chacha("TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAD: _chacha("TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256"),
}


def not_decrypted_why(code: int) -> str:
    """Why a TLS 1.2 suite outside ``SUITES12`` is left encrypted."""
    return (f"TLS 1.2 cipher suite 0x{code:04x} is not decrypted: only the AEAD suites (AES-GCM, "
            "ChaCha20-Poly1305) are; a CBC suite's MAC-then-encrypt records (explicit IV, padding, HMAC) "
            "are not implemented")


def prf(hash_: type, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS 1.2 PRF (RFC 5246 section 5): P_hash(secret, label + seed); ``hash_`` a ``cryptography``
    hash class."""
    hmac = crypto().hmac
    seed = label + seed
    out = bytearray()
    a = seed
    while len(out) < length:
        h = hmac.HMAC(secret, hash_())
        h.update(a)
        a = h.finalize()
        h = hmac.HMAC(secret, hash_())
        h.update(a + seed)
        out += h.finalize()
    return bytes(out[:length])


@dataclass(frozen=True)
class KeyBlock:
    keys: tuple[bytes, bytes]              # client write key, server write key
    ivs: tuple[bytes, bytes]               # client fixed IV, server fixed IV


def key_block(suite: Suite12, master_secret: bytes, client_random: bytes, server_random: bytes) -> KeyBlock:
    size = 2 * (suite.key_len + suite.fixed_iv_len)
    block = prf(suite.hash, master_secret, b"key expansion", server_random + client_random, size)
    k, v = suite.key_len, suite.fixed_iv_len
    return KeyBlock((block[:k], block[k:2 * k]), (block[2 * k:2 * k + v], block[2 * k + v:2 * k + 2 * v]))


class RecordKeys12:
    """One direction's TLS 1.2 record protection; records decrypt in order (sequence numbers from 0)."""

    __slots__ = ("suite", "_aead", "_iv", "_iv_int", "seq", "skip_tail")

    def __init__(self, suite: Suite12, key: bytes, fixed_iv: bytes) -> None:
        self.suite = suite
        self._aead = suite.aead(key)
        self._iv = fixed_iv
        self._iv_int = int.from_bytes(fixed_iv, "big")
        self.seq = 0
        #: A record's plaintext length is its length less the suite's overhead: nothing of a record whose
        #: content nobody reads needs to be seen (the content type is in the clear in TLS 1.2).
        self.skip_tail = 0

    def nonce_and_ciphertext(self, body: bytes | memoryview) -> tuple[bytes, bytes | memoryview] | None:
        n = self.suite.explicit_nonce_len
        if len(body) < n + TAG_LEN:
            return None
        if n:
            return self._iv + bytes(body[:n]), memoryview(body)[n:]     # no copy of the ciphertext
        return (self._iv_int ^ self.seq).to_bytes(len(self._iv), "big"), body

    def decrypt(self, header: bytes | memoryview, body: bytes | memoryview) -> bytes | None:
        """The record's plaintext, or None if it fails authentication (or is too short to hold a tag)."""
        split = self.nonce_and_ciphertext(body)
        if split is None:
            return None
        nonce, ciphertext = split
        aad = struct.pack(">Q", self.seq) + header[:3] + struct.pack(">H", len(ciphertext) - TAG_LEN)
        try:
            out = self._aead.decrypt(nonce, ciphertext, aad)
        except crypto().InvalidTag:
            return None
        self.seq += 1
        return out

    def encrypt(self, ctype: int, version: int, plaintext: bytes, explicit: bytes | None = None) -> bytes:
        """A whole record (header included) protecting ``plaintext``: the inverse of ``decrypt``, for tests
        and the generator. ``explicit`` is the GCM explicit nonce (default: the sequence number)."""
        n = self.suite.explicit_nonce_len
        if n:
            explicit = explicit if explicit is not None else struct.pack(">Q", self.seq)
            nonce = self._iv + explicit
        else:
            explicit = b""
            nonce = (self._iv_int ^ self.seq).to_bytes(len(self._iv), "big")
        aad = struct.pack(">QBHH", self.seq, ctype, version, len(plaintext))
        body = explicit + self._aead.encrypt(nonce, plaintext, aad)
        self.seq += 1
        return struct.pack(">BHH", ctype, version, len(body)) + body


def direction_keys(suite: Suite12, master_secret: bytes, client_random: bytes,
                   server_random: bytes) -> tuple[RecordKeys12, RecordKeys12]:
    """(client's, server's) record keys, each starting at sequence number 0."""
    kb = key_block(suite, master_secret, client_random, server_random)
    return (RecordKeys12(suite, kb.keys[0], kb.ivs[0]), RecordKeys12(suite, kb.keys[1], kb.ivs[1]))
