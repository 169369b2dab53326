"""Build TLS 1.2 connections with a known master secret (the encrypting side of dissectors.tls for the
AEAD suites, made with ``cryptography`` through ``RecordKeys12.encrypt``), for tests."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import synth as S
from tls_synth import handshake, record

from dissectors.layers import tls as T
from dissectors.layers.multifd import MultifdHello
from dissectors.layers.structs import named
from dissectors.layers.synth import multifd_stream, precopy_stream
from dissectors.tls.tls12 import SUITES12, direction_keys

AES128_GCM, AES256_GCM, CHACHA20 = 0xC02F, 0xC030, 0xCCA8
AES256_CBC_SHA = 0xC014                  # TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: not decrypted
EXT_EXTENDED_MASTER_SECRET = 23


def client_hello12(random: bytes, suites: tuple[int, ...] = (AES256_GCM, AES128_GCM, CHACHA20)) -> bytes:
    body = struct.pack(">H", 0x0303) + random + b"\x00" + struct.pack(">H", 2 * len(suites)) \
        + b"".join(struct.pack(">H", s) for s in suites) + b"\x01\x00" + struct.pack(">H", 0)
    return record(T.TLS_HANDSHAKE, handshake(T.TLS_CLIENT_HELLO, body))


def server_hello12(random: bytes, suite: int) -> bytes:
    """A TLS 1.2 ServerHello (no supported_versions; extended master secret, as GnuTLS answers)."""
    ext = struct.pack(">HH", EXT_EXTENDED_MASTER_SECRET, 0)
    body = struct.pack(">H", 0x0303) + random + b"\x00" + struct.pack(">H", suite) + b"\x00" \
        + struct.pack(">H", len(ext)) + ext
    return record(T.TLS_HANDSHAKE, handshake(T.TLS_SERVER_HELLO, body))


CCS = record(T.TLS_CHANGE_CIPHER_SPEC, b"\x01")


@dataclass
class Tls12Session:
    """A TLS 1.2 client and server with a random master secret: their byte streams and the key log line."""

    suite_code: int = AES256_GCM
    random: bytes = field(default_factory=lambda: os.urandom(32))
    server_random: bytes = field(default_factory=lambda: os.urandom(32))
    master: bytes = field(default_factory=lambda: os.urandom(48))

    def __post_init__(self) -> None:
        suite = SUITES12.get(self.suite_code)
        self.keys = list(direction_keys(suite, self.master, self.random, self.server_random)) if suite else []

    def keylog(self) -> str:
        return f"CLIENT_RANDOM {self.random.hex()} {self.master.hex()}\n"

    def protect(self, direction: int, ctype: int, content: bytes) -> bytes:
        if not self.keys:
            # a CBC suite with HMAC-SHA1: explicit 16-byte IV, then content + MAC + padding in 16-byte blocks
            size = 16 + (len(content) + 20 + 1 + 15) // 16 * 16
            return struct.pack(">BHH", ctype, 0x0303, size) + os.urandom(size)
        return self.keys[direction].encrypt(ctype, 0x0303, content)

    def opening(self) -> tuple[bytes, bytes, bytes]:
        """(ClientHello, the server's first flight, the client's second flight up to its Finished); the
        server's CCS and Finished are ``server_finished()``."""
        server = server_hello12(self.server_random, self.suite_code) + record(
            T.TLS_HANDSHAKE, handshake(11, b"cert" * 50) + handshake(12, b"kx" * 40) + handshake(13, b"\x01\x01")
            + handshake(14, b""))
        client = record(T.TLS_HANDSHAKE, handshake(11, b"ccrt" * 40) + handshake(16, b"k" * 66)
                        + handshake(15, b"v" * 72)) + CCS \
            + self.protect(0, T.TLS_HANDSHAKE, handshake(T.TLS_FINISHED, b"F" * 12))
        return client_hello12(self.random), server, client

    def server_finished(self) -> bytes:
        return CCS + self.protect(1, T.TLS_HANDSHAKE, handshake(T.TLS_FINISHED, b"f" * 12))

    def data(self, direction: int, payload: bytes, chunk: int = 1 << 14) -> bytes:
        return b"".join(self.protect(direction, T.TLS_APPLICATION_DATA, payload[i:i + chunk])
                        for i in range(0, len(payload), chunk))

    def close_notify(self, direction: int) -> bytes:
        return self.protect(direction, T.TLS_ALERT, b"\x01\x00")


def tls12_conn(port: int, syn: float, writes: list[bytes], sessions: list[Tls12Session], suite: int) -> S.Conn:
    """One TLS 1.2 connection: the handshake, each write in records of its own (a multifd hello alone),
    a close_notify, then the source's close."""
    s = Tls12Session(suite)
    sessions.append(s)
    hello, server, client = s.opening()
    conn = S.Conn(port, syn).send(syn + 0.001, hello)
    conn.reply(syn + 0.002, server)
    conn.send(syn + 0.003, client)
    conn.reply(syn + 0.004, s.server_finished())
    conn.send(syn + 0.01, b"".join(s.data(0, w) for w in writes) + s.close_notify(0))
    return conn.close(syn + 0.5)


def write_tls12_migration(path: Path, suite: int) -> str:
    """A precopy TLS 1.2 migration with two multifd channels; returns the key log's path (beside it)."""
    sessions: list[Tls12Session] = []
    hello = named(MultifdHello).size
    conns = [tls12_conn(50000, 1.0, [precopy_stream()], sessions, suite)]
    conns += [tls12_conn(50001 + i, 1.005 + i * 0.001, [m[:hello], m[hello:]], sessions, suite)
              for i, m in enumerate(multifd_stream(channel_id=i) for i in range(2))]
    S.write_capture(str(path), conns)
    keylog = path.with_suffix(".keylog")
    keylog.write_text("".join(s.keylog() for s in sessions))
    return str(keylog)
