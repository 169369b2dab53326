"""Build TLS 1.3 connections with known secrets (the encrypting side of dissectors.tls, for tests)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import synth as S

from dissectors.layers import tls as T
from dissectors.layers.multifd import MultifdHello
from dissectors.layers.structs import named
from dissectors.layers.synth import multifd_stream, precopy_stream
from dissectors.tls.schedule import IV_LEN, SUITES, Suite, hkdf_expand_label

LABELS = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
          "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")


def record(ctype: int, body: bytes) -> bytes:
    return bytes(T.TlsRecordHeader(content_type=ctype, version=0x0303, len=len(body))) + body


def handshake(msg_type: int, body: bytes) -> bytes:
    return struct.pack(">B", msg_type) + len(body).to_bytes(3, "big") + body


def client_hello(random: bytes) -> bytes:
    body = struct.pack(">H", 0x0303) + random + b"\x00" + struct.pack(">H", 2) + b"\x13\x02" + b"\x01\x00" \
        + struct.pack(">H", 0)
    return record(T.TLS_HANDSHAKE, handshake(T.TLS_CLIENT_HELLO, body))


def server_hello(suite: int, version: int = 0x0304) -> bytes:
    ext = struct.pack(">HH", T.TLS_EXT_SUPPORTED_VERSIONS, 2) + struct.pack(">H", version)
    body = struct.pack(">H", 0x0303) + os.urandom(32) + b"\x00" + struct.pack(">H", suite) + b"\x00" \
        + struct.pack(">H", len(ext)) + ext
    return record(T.TLS_HANDSHAKE, handshake(T.TLS_SERVER_HELLO, body))


class Protector:
    """Encrypts one direction's records under a traffic secret."""

    def __init__(self, suite: Suite, secret: bytes) -> None:
        self.suite, self.secret = suite, secret
        self.aead = suite.aead(hkdf_expand_label(suite, secret, b"key", b"", suite.key_len))
        self.iv = int.from_bytes(hkdf_expand_label(suite, secret, b"iv", b"", IV_LEN), "big")
        self.seq = 0

    def protect(self, ctype: int, content: bytes, padding: int = 0) -> bytes:
        inner = content + bytes([ctype]) + bytes(padding)
        header = struct.pack(">BHH", T.TLS_APPLICATION_DATA, 0x0303, len(inner) + 16)
        nonce = (self.iv ^ self.seq).to_bytes(IV_LEN, "big")
        self.seq += 1
        return header + self.aead.encrypt(nonce, inner, header)

    def update(self) -> None:
        size = self.suite.hash.digest_size
        nxt = hkdf_expand_label(self.suite, self.secret, b"traffic upd", b"", size)
        self.__init__(self.suite, nxt)  # type: ignore[misc]


@dataclass
class TlsSession:
    """A client and a server with random secrets: the two byte streams and the key log lines."""

    suite_code: int = 0x1302
    random: bytes = field(default_factory=lambda: os.urandom(32))
    secrets: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = SUITES[self.suite_code].hash.digest_size
        for label in LABELS:
            self.secrets.setdefault(label, os.urandom(size))
        suite = SUITES[self.suite_code]
        self.hs = [Protector(suite, self.secrets[LABELS[0]]), Protector(suite, self.secrets[LABELS[1]])]
        self.app = [Protector(suite, self.secrets[LABELS[2]]), Protector(suite, self.secrets[LABELS[3]])]

    def keylog(self, labels: tuple[str, ...] = LABELS) -> str:
        return "".join(f"{label} {self.random.hex()} {self.secrets[label].hex()}\n" for label in labels)

    def opening(self) -> tuple[bytes, bytes]:
        """(client's flight up to its Finished, server's flight up to its Finished)."""
        ccs = record(T.TLS_CHANGE_CIPHER_SPEC, b"\x01")
        server = server_hello(self.suite_code) + ccs + self.hs[1].protect(
            T.TLS_HANDSHAKE, handshake(8, b"\x00\x00") + handshake(11, b"cert" * 50) + handshake(15, b"v" * 40)
            + handshake(T.TLS_FINISHED, b"f" * 48))
        client = client_hello(self.random) + ccs + self.hs[0].protect(T.TLS_HANDSHAKE,
                                                                        handshake(T.TLS_FINISHED, b"F" * 48))
        return client, server

    def data(self, direction: int, payload: bytes, chunk: int = 1 << 14, padding: int = 0) -> bytes:
        out = b""
        for i in range(0, len(payload), chunk):
            out += self.app[direction].protect(T.TLS_APPLICATION_DATA, payload[i:i + chunk], padding)
        return out

    def key_update(self, direction: int) -> bytes:
        out = self.app[direction].protect(T.TLS_HANDSHAKE, handshake(T.TLS_KEY_UPDATE, b"\x00"))
        self.app[direction].update()
        return out


# -- whole TLS migrations in a capture (tests/synth.py's connections) -------------------------------
def tls_conn(port: int, syn: float, writes: list[bytes], sessions: list[TlsSession],
             finished_delay: float = 0.0) -> S.Conn:
    """One connection: the handshake (the client's Finished ``finished_delay`` late, as a relay holding
    it back would make it), then each write of ``writes`` in records of its own (as QEMU writes a multifd
    hello on its own before the packets), then the source's close."""
    s = TlsSession()
    sessions.append(s)
    c_open, s_open = s.opening()
    conn = S.Conn(port, syn).send(syn + 0.001, c_open[:len(client_hello(s.random))])
    conn.reply(syn + 0.002, s_open)
    conn.send(syn + 0.003 + finished_delay, c_open[len(client_hello(s.random)):])
    return conn.send(syn + 0.01 + finished_delay, b"".join(s.data(0, w) for w in writes)).close(syn + 0.5
                                                                                              + finished_delay)


def write_tls_migration(path: Path, multifd_first: bool, main_finished_delay: float = 0.0) -> str:
    """A precopy TLS migration with two multifd channels (the multifd ones accepted first if asked, main's
    Finished held back by ``main_finished_delay``); returns the key log's path (written beside it)."""
    sessions: list[TlsSession] = []
    main = precopy_stream()
    mfd = [multifd_stream(channel_id=i) for i in range(2)]
    hello = named(MultifdHello).size
    conns = [tls_conn(50000, 1.0 + (0.02 if multifd_first else 0), [main], sessions, main_finished_delay)]
    conns += [tls_conn(50001 + i, 1.005 + i * 0.001 - (0.01 if multifd_first else 0), [m[:hello], m[hello:]],
                       sessions)
              for i, m in enumerate(mfd)]
    S.write_capture(str(path), conns)
    keylog = path.with_suffix(".keylog")
    keylog.write_text("".join(s.keylog() for s in sessions))
    return str(keylog)
