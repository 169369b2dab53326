#!/usr/bin/env python3
"""Generate a QEMU-shaped migration capture for benchmarks, streaming to disk in constant memory.

5 TCP connections to port 4444 (1 main + 4 multifd), full-size 1514-byte Ethernet frames, a server ACK
every second data segment, ~0.07 % retransmitted and ~0.05 % reordered segments, FIN at the end.

    python benchmarks/gen_capture.py /tmp/a.pcap --size 1G

``--size`` is the total TCP payload to carry (the file is ~8 % bigger). The bytes each connection carries
come from a pluggable ``payload_source(conn_index) -> Iterator[bytes]`` (``--payload module:function``);
the default fills the main channel with a stream starting b"QEVM\\0\\0\\0\\3" and each multifd channel
with its 64-byte hello, then filler. It is not a valid QEMU stream past those first bytes.

``--tls KEYLOG`` runs every connection over TLS 1.3 (TLS_AES_256_GCM_SHA384, as QEMU negotiates here): the
client's hello and Finished, the server's flight after the TCP handshake, then the payload in 16 KiB
application records; the secrets go to KEYLOG (NSS format) so ``migshark analyze --keylog`` reads it.
``--size`` then counts the TLS bytes. With ``--tls12`` the sessions are TLS 1.2
(TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, ``CLIENT_RANDOM`` lines): the server's flight, its
ChangeCipherSpec and Finished after the TCP handshake, the client's hello, its second flight and Finished,
then 16 KiB records (explicit nonce and tag: 24 bytes each).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import random
import struct
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dissectors.capture.writer import PcapWriter, tcp_frame  # noqa: E402

PayloadSource = Callable[[int], Iterator[bytes]]

CLIENT = "192.168.122.1"
SERVER = "192.168.122.2"
SERVER_PORT = 4444
CONNECTIONS = 5                  # index 0 = main, 1..4 = multifd
WEIGHTS = (1, 4, 4, 4, 4)        # share of data segments per connection
MSS = 1448                       # 1514-byte frames: 14 Ethernet + 20 IPv4 + 32 TCP (timestamps) + 1448
MULTIFD_MAGIC = 0x11223344
MULTIFD_VERSION = 1
_FILLER = bytes(range(256)) * 256   # 64 KiB


def default_payload_source(conn_index: int) -> Iterator[bytes]:
    """Stand-in stream: QEMU file header on main, a multifd hello on the others, then filler."""
    if conn_index == 0:
        yield b"QEVM\0\0\0\3"
    else:
        channel_uuid = uuid.UUID(int=0x5EED_0000 + conn_index).bytes
        yield struct.pack(">II16sB", MULTIFD_MAGIC, MULTIFD_VERSION, channel_uuid, conn_index - 1).ljust(64, b"\0")
    while True:
        yield _FILLER


TLS_RECORD = 1 << 14


def tls_wrapped(source: PayloadSource, keylog: list[str],
                tls12: bool = False) -> tuple[PayloadSource, Callable[[int], bytes]]:
    """The client streams of ``source`` inside TLS 1.3 (or 1.2) sessions with random secrets (appended to
    ``keylog``), and each connection's server flight."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import tls_synth as X
    if tls12:
        return _tls12_wrapped(source, keylog)

    sessions: dict[int, tuple[X.TlsSession, bytes, bytes]] = {}

    def session(i: int) -> tuple[X.TlsSession, bytes, bytes]:
        if i not in sessions:              # opening() protects the Finished messages: once per session
            s = X.TlsSession()
            sessions[i] = (s, *s.opening())
            keylog.append(s.keylog())
        return sessions[i]

    def client(i: int) -> Iterator[bytes]:
        s, hello, _ = session(i)
        yield hello
        pending = bytearray()
        for block in source(i):
            pending += block
            while len(pending) >= TLS_RECORD:
                yield s.app[0].protect(X.T.TLS_APPLICATION_DATA, bytes(pending[:TLS_RECORD]))
                del pending[:TLS_RECORD]

    return client, lambda i: session(i)[2]


def _tls12_wrapped(source: PayloadSource, keylog: list[str]) -> tuple[PayloadSource, Callable[[int], bytes]]:
    import tls12_synth as Y

    sessions: dict[int, tuple[Y.Tls12Session, bytes, bytes, bytes]] = {}

    def session(i: int) -> tuple[Y.Tls12Session, bytes, bytes, bytes]:
        if i not in sessions:              # the Finished messages are protected: once per session
            s = Y.Tls12Session(Y.AES256_GCM)
            hello, server, client = s.opening()
            sessions[i] = (s, hello + client, server + s.server_finished(), b"")
            keylog.append(s.keylog())
        return sessions[i]

    def client(i: int) -> Iterator[bytes]:
        s, opening, _, _ = session(i)
        yield opening
        pending = bytearray()
        for block in source(i):
            pending += block
            while len(pending) >= TLS_RECORD:
                yield s.protect(0, Y.T.TLS_APPLICATION_DATA, bytes(pending[:TLS_RECORD]))
                del pending[:TLS_RECORD]

    return client, lambda i: session(i)[2]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def load_source(spec: str) -> PayloadSource:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "payload_source")


class _Chunker:
    """Cuts an iterator of byte blocks into MSS-sized segments without holding more than one block."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n <= len(self._buf):
            self._pos += n
            return self._buf[self._pos - n:self._pos]
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        while have < n:
            block = next(self._blocks, b"")
            if not block:
                break
            parts.append(block)
            have += len(block)
        joined = b"".join(parts)
        self._buf, self._pos = joined[n:], 0
        return joined[:n]


def generate(out: Path, size: int, *, seed: int = 1, retrans: float = 0.0007, reorder: float = 0.0005,
             payload_source: PayloadSource = default_payload_source, snaplen: int = 262144,
             server_flight: Callable[[int], bytes] | None = None) -> dict[str, int]:
    """``server_flight``: bytes each connection's server sends right after the TCP handshake (TLS)."""
    rng = random.Random(seed)
    ts = 1_700_000_000.0
    cports = [50_000 + i for i in range(CONNECTIONS)]
    cisn = [rng.getrandbits(32) for _ in range(CONNECTIONS)]
    cisn[1] = (1 << 32) - 10 * MSS            # one channel wraps its sequence numbers early on
    sisn = [rng.getrandbits(32) for _ in range(CONNECTIONS)]
    ssent = [0] * CONNECTIONS                 # bytes the server sent, per connection
    sent = [0] * CONNECTIONS                  # stream offset of the next new byte, per connection
    chunkers = [_Chunker(payload_source(i)) for i in range(CONNECTIONS)]
    recent: list[deque[tuple[int, bytes]]] = [deque(maxlen=64) for _ in range(CONNECTIONS)]
    held: list[tuple[int, bytes] | None] = [None] * CONNECTIONS
    unacked = [0] * CONNECTIONS
    counts = {"frames": 0, "data_segments": 0, "retransmitted": 0, "reordered": 0, "payload": 0}
    schedule = list(itertools.chain.from_iterable([i] * w for i, w in enumerate(WEIGHTS)))

    with PcapWriter(out, linktype="ether", snaplen=snaplen) as w:
        def put(i: int, to_server: bool, seq: int, ack: int, flags: str, payload: bytes = b"") -> None:
            nonlocal ts
            ts += 1.2e-6
            if to_server:
                frame = tcp_frame(CLIENT, SERVER, cports[i], SERVER_PORT, seq, ack, flags,
                                  b"\x01\x01\x08\x0a" + bytes(8) + payload)  # fake timestamp option
                frame = _with_options(frame)
            else:
                frame = tcp_frame(SERVER, CLIENT, SERVER_PORT, cports[i], seq, ack, flags, payload)
            w.write(ts, frame)
            counts["frames"] += 1

        def data(i: int, off: int, part: bytes) -> None:
            put(i, True, cisn[i] + 1 + off, sisn[i] + 1 + ssent[i], "PA", part)
            counts["data_segments"] += 1
            unacked[i] += 1
            if unacked[i] >= 2:
                unacked[i] = 0
                put(i, False, sisn[i] + 1 + ssent[i], cisn[i] + 1 + sent[i], "A")

        for i in range(CONNECTIONS):
            put(i, True, cisn[i], 0, "S")
            put(i, False, sisn[i], cisn[i] + 1, "SA")
            put(i, True, cisn[i] + 1, sisn[i] + 1, "A")
            flight = server_flight(i) if server_flight else b""
            for k in range(0, len(flight), MSS):
                put(i, False, sisn[i] + 1 + k, cisn[i] + 1, "PA", flight[k:k + MSS])
            ssent[i] = len(flight)

        total = 0
        for i in itertools.cycle(schedule):
            if total >= size:
                break
            part = chunkers[i].take(min(MSS, size - total))
            if not part:
                break
            off = sent[i]
            sent[i] += len(part)
            total += len(part)
            counts["payload"] += len(part)
            if held[i] is not None:                 # the held segment goes out after this one
                data(i, off, part)
                data(i, *held[i])
                held[i] = None
            elif rng.random() < reorder:
                held[i] = (off, part)
                counts["reordered"] += 1
                continue
            else:
                data(i, off, part)
            recent[i].append((off, part))
            if rng.random() < retrans:
                data(i, *recent[i][rng.randrange(len(recent[i]))])
                counts["retransmitted"] += 1

        for i in range(CONNECTIONS):
            if held[i] is not None:
                data(i, *held[i])
            put(i, True, cisn[i] + 1 + sent[i], sisn[i] + 1 + ssent[i], "FA")
            put(i, False, sisn[i] + 1 + ssent[i], cisn[i] + 2 + sent[i], "FA")
            put(i, True, cisn[i] + 2 + sent[i], sisn[i] + 2 + ssent[i], "A")
    return counts


def _with_options(frame: bytes) -> bytes:
    """Turn the first 12 payload bytes into TCP options (data offset 8): a 1514-byte frame like Linux's."""
    tcp = 14 + 20
    doff_flags = frame[tcp + 12]
    assert doff_flags == 0x50
    return frame[:tcp + 12] + b"\x80" + frame[tcp + 13:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", default="100M", help="total TCP payload, e.g. 100M, 1G (default 100M)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--retrans", type=float, default=0.0007, help="fraction of segments retransmitted")
    ap.add_argument("--reorder", type=float, default=0.0005, help="fraction of segments reordered")
    ap.add_argument("--snaplen", type=int, default=262144, help="cut frames to this length (e.g. 96)")
    ap.add_argument("--payload", help="module:function returning Iterator[bytes] per connection index")
    ap.add_argument("--tls", type=Path, metavar="KEYLOG", help="TLS 1.3 on every connection; secrets to KEYLOG")
    ap.add_argument("--tls12", action="store_true", help="with --tls: TLS 1.2 (AES-256-GCM) instead")
    args = ap.parse_args(argv)
    source = load_source(args.payload) if args.payload else default_payload_source
    flight = None
    keylog: list[str] = []
    if args.tls:
        source, flight = tls_wrapped(source, keylog, args.tls12)
    counts = generate(args.out, parse_size(args.size), seed=args.seed, retrans=args.retrans,
                      reorder=args.reorder, payload_source=source, snaplen=args.snaplen, server_flight=flight)
    if args.tls:
        args.tls.write_text("".join(keylog))
    print(" ".join(f"{k}={v}" for k, v in counts.items()), f"file={args.out.stat().st_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
