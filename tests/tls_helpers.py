"""Helpers for the TLS differential tests: the decrypted application bytes of every TLS connection of a
capture, once as tshark recovers them (the oracle) and once as migshark does.

Both give ``{(client port, server port): (client-to-server bytes, server-to-client bytes)}``.

tshark's ``-q -z follow,tls,raw,N`` output (tshark 4.0), one block per ``-z`` (blocks come out in
reverse order of the ``-z`` options, so they are matched by their ``Filter:`` line)::

    <empty line>
    ===================================================================
    Follow: tls,raw
    Filter: tcp.stream eq 0
    Node 0: 127.0.0.1:49605
    Node 1: :0
    \t5145564d00000003...          <- one line per decrypted application-data record, lowercase hex
    \t...
    ===================================================================

A line starting with a tab was sent by the endpoint that is *not* Node 0; a line without one by Node 0.
Node 0 is not the TCP client: it is the sender of the first packet in which tshark decrypted any record
(handshake records count), which in TLS 1.3 is the server (its encrypted EncryptedExtensions) - so the
client's bytes are the tabbed lines there. Node 1 is not filled in by 4.0's TLS follow tap (``:0``). The
direction is therefore taken from Node 0's address, never from the tab alone.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

Plaintexts = dict[tuple[int, int], tuple[bytes, bytes]]

TSHARK = shutil.which("tshark")
SEPARATOR = "=" * 67


class TsharkError(RuntimeError):
    pass


def _tshark(capture: Path, keylog: Path, *args: str) -> str:
    if TSHARK is None:
        raise TsharkError("tshark is not installed")
    cmd = [TSHARK, "-n", "-r", str(capture),
           "-o", f"tls.keylog_file:{keylog}",
           "-o", "tcp.desegment_tcp_streams:TRUE",
           "-o", "tcp.reassemble_out_of_order:TRUE",
           # tshark 4.0's RDP multi-transport heuristic throws on a decrypted return path and leaves the
           # rest of that direction encrypted: keep it off (captures/README.md)
           "--disable-heuristic", "rdpmt_tls_",
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise TsharkError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _endpoint(text: str) -> tuple[str, int]:
    """``127.0.0.1:49605`` or ``[::1]:49605`` -> (address, port)."""
    addr, _, port = text.strip().rpartition(":")
    return addr.strip("[]"), int(port or 0)


@dataclass
class TsharkStream:
    """One TCP stream tshark saw a ClientHello on."""

    stream: int
    client: tuple[str, int]
    server: tuple[str, int]
    client_random: bytes


def tshark_tls_streams(capture: str | Path, keylog: str | Path) -> tuple[list[TsharkStream], list[str]]:
    """The TCP streams tshark saw a ClientHello on (cached per capture); see ``_tshark_tls_streams``."""
    return _tshark_tls_streams(Path(capture).resolve(), Path(keylog).resolve())


@cache
def _tshark_tls_streams(capture: Path, keylog: Path) -> tuple[list[TsharkStream], list[str]]:
    """The TCP streams carrying a TLS ClientHello, with the client's and server's endpoints, and the
    ``-d`` options used to find them.

    The servers' ports come from the SYNs and are decoded as TLS (``-d``), so finding the ClientHellos
    does not rest on tshark's heuristics alone."""
    syn = _tshark(capture, keylog, "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0", "-T", "fields",
                  "-e", "tcp.dstport")
    ports = sorted({int(p) for p in syn.split()})
    decode_as = [a for p in ports for a in ("-d", f"tcp.port=={p},tls")]
    out = _tshark(capture, keylog, *decode_as, "-Y", "tls.handshake.type == 1", "-T", "fields",
                  "-E", "occurrence=f", "-e", "tcp.stream", "-e", "ip.src", "-e", "ipv6.src",
                  "-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport",
                  "-e", "tls.handshake.random")
    streams: dict[int, TsharkStream] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        stream, src4, src6, sport, dst4, dst6, dport, random = line.split("\t")
        n = int(stream)
        if n not in streams:       # a retransmitted ClientHello lists the stream again
            streams[n] = TsharkStream(n, (src4 or src6, int(sport)), (dst4 or dst6, int(dport)),
                                      bytes.fromhex(random.replace(":", "")))
    return [streams[n] for n in sorted(streams)], decode_as


@dataclass
class FollowBlock:
    stream: int
    node0: tuple[str, int]
    node1: tuple[str, int]
    untabbed: bytearray = field(default_factory=bytearray)
    tabbed: bytearray = field(default_factory=bytearray)
    records: int = 0


def parse_follow_raw(text: str) -> dict[int, FollowBlock]:
    """Every ``follow,tls,raw`` block of tshark's output, by TCP stream number."""
    blocks: dict[int, FollowBlock] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i] != "Follow: tls,raw":
            i += 1
            continue
        head = lines[i + 1:i + 4]
        if not (head[0].startswith("Filter: tcp.stream eq ") and head[1].startswith("Node 0: ")
                and head[2].startswith("Node 1: ")):
            raise TsharkError(f"unexpected follow header: {head!r}")
        block = FollowBlock(int(head[0].rsplit(" ", 1)[1]), _endpoint(head[1][8:]), _endpoint(head[2][8:]))
        i += 4
        while i < len(lines) and lines[i] != SEPARATOR:
            line = lines[i]
            side = block.tabbed if line.startswith("\t") else block.untabbed
            side += bytes.fromhex(line.lstrip("\t"))
            block.records += 1
            i += 1
        if i == len(lines):
            raise TsharkError(f"follow block of stream {block.stream} has no closing separator")
        if block.stream in blocks:
            raise TsharkError(f"two follow blocks for stream {block.stream}")
        blocks[block.stream] = block
        i += 1
    return blocks


@cache
def _tshark_tls_plaintext(capture: Path, keylog: Path) -> Plaintexts:
    streams, decode_as = tshark_tls_streams(capture, keylog)
    if not streams:
        return {}
    follows = [a for s in streams for a in ("-z", f"follow,tls,raw,{s.stream}")]
    blocks = parse_follow_raw(_tshark(capture, keylog, *decode_as, "-q", *follows))
    result: Plaintexts = {}
    for s in streams:
        block = blocks.get(s.stream)
        if block is None:
            raise TsharkError(f"tshark printed no follow block for stream {s.stream}")
        key = (s.client[1], s.server[1])
        if key in result:
            raise TsharkError(f"two TLS streams with ports {key} (port reuse): key them some other way")
        result[key] = directions(block, s)
    return result


def directions(block: FollowBlock, stream: TsharkStream) -> tuple[bytes, bytes]:
    """(client-to-server, server-to-client) of a follow block: untabbed lines are Node 0's."""
    if block.node0 == stream.client:
        return bytes(block.untabbed), bytes(block.tabbed)
    if block.node0 == stream.server:
        return bytes(block.tabbed), bytes(block.untabbed)
    if block.records == 0:
        return b"", b""
    raise TsharkError(f"stream {stream.stream}: Node 0 {block.node0} is neither the client {stream.client} "
                      f"nor the server {stream.server}")


def tshark_tls_plaintext(capture: str | Path, keylog: str | Path) -> Plaintexts:
    """tshark's decrypted application data of every TLS TCP stream of ``capture`` (cached per capture)."""
    return _tshark_tls_plaintext(Path(capture).resolve(), Path(keylog).resolve())


# ---- migshark's side ---------------------------------------------------------------------------------


class PlaintextRecorder:
    """The inner sink under a ``TlsStreamSink``: keeps each direction's plaintext (data calls
    concatenated in offset order), its gaps and its end; checks the StreamSink contract on the way."""

    def __init__(self) -> None:
        self.parts = (bytearray(), bytearray())
        self.fronts = [0, 0]
        self.gaps: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        self.jumps: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])   # data past the front
        self.ends: list[tuple[int, str] | None] = [None, None]
        self.problems: list[str] = []

    def _at(self, direction: int, offset: int, what: str) -> None:
        if self.ends[direction] is not None:
            self.problems.append(f"direction {direction}: {what} at {offset} after end")
        if offset < self.fronts[direction]:
            self.problems.append(f"direction {direction}: {what} at {offset} goes back before "
                                 f"{self.fronts[direction]}")
        elif offset > self.fronts[direction]:
            self.jumps[direction].append((self.fronts[direction], offset - self.fronts[direction]))

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> None:
        self._at(direction, offset, "data")
        self.parts[direction].extend(data)
        self.fronts[direction] = offset + len(data)

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        self._at(direction, offset, "gap")
        self.gaps[direction].append((offset, length))
        self.fronts[direction] = offset + length

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        if self.ends[direction] is not None:
            self.problems.append(f"direction {direction}: second end")
        self.ends[direction] = (offset, how)


@dataclass
class MigsharkConnection:
    index: int
    client: tuple[str, int]
    server: tuple[str, int]
    sink: object                  # the TlsStreamSink
    recorder: PlaintextRecorder

    @property
    def key(self) -> tuple[int, int]:
        return (self.client[1], self.server[1])

    @property
    def status(self) -> object:
        return self.sink.status  # type: ignore[attr-defined]

    @property
    def decrypted(self) -> bool:
        return status_decrypted(self.status)

    @property
    def plaintext(self) -> tuple[bytes, bytes]:
        return (bytes(self.recorder.parts[0]), bytes(self.recorder.parts[1]))


def status_decrypted(status: object) -> bool:
    """Whether a ``TlsStreamSink.status`` says the connection was decrypted."""
    return bool(status.decrypted)  # type: ignore[attr-defined]


@cache
def _migshark_tls_connections(capture: Path, keylog: Path) -> tuple[MigsharkConnection, ...]:
    from dissectors.cli.pipeline import reassemble_file
    from dissectors.tls import KeyLog, TlsStreamSink

    keys = KeyLog.load(str(keylog))
    made: list[MigsharkConnection] = []

    def factory(conn):
        rec = PlaintextRecorder()
        sink = TlsStreamSink(rec, keys)
        made.append(MigsharkConnection(conn.index, tuple(conn.client), tuple(conn.server), sink, rec))
        return sink

    reassemble_file(str(capture), factory)
    return tuple(made)


def migshark_tls_connections(capture: str | Path, keylog: str | Path) -> tuple[MigsharkConnection, ...]:
    """Every TCP connection of ``capture`` run through a ``TlsStreamSink`` with ``keylog`` (cached)."""
    return _migshark_tls_connections(Path(capture).resolve(), Path(keylog).resolve())


def migshark_tls_plaintext(capture: str | Path, keylog: str | Path) -> Plaintexts:
    """migshark's decrypted application data of every connection it decrypted, keyed like tshark's."""
    result: Plaintexts = {}
    for c in migshark_tls_connections(capture, keylog):
        if c.decrypted:
            if c.key in result:
                raise AssertionError(f"two decrypted connections with ports {c.key} (port reuse)")
            result[c.key] = c.plaintext
    return result


def first_difference(a: bytes, b: bytes) -> int | None:
    """The first offset where ``a`` and ``b`` differ (the shorter one's length if one is a prefix)."""
    if a == b:
        return None
    n = min(len(a), len(b))
    lo, hi = 0, n          # a[:lo] == b[:lo]; find the first mismatch by halving (the streams are MBs)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
