# SPDX-License-Identifier: GPL-2.0-or-later
"""A relaying TCP proxy on loopback that can hold back one accepted connection, in one of two places.

The source QEMU connects to the proxy; each accepted connection is forwarded to the destination QEMU.

``hold_at="connect"``: holding back the upstream connect of, say, the first accepted connection (the main
channel) by about a second makes the destination accept the connections in a different order than the
source opened them, which is exactly the channel-mapping race of the October 2022 qemu-devel thread.

``hold_at="tls-finished"``: the upstream connect is made at once and the client's first TLS record (its
ClientHello) and the whole server flight pass at once, but every client byte after that first record (the
TLS 1.3 client's second flight: Certificate, CertificateVerify, Finished, and then its application data) is
held back. A TLS 1.3 client has completed its handshake once it has *sent* Finished; the server completes
only when it *receives* it. Under TLS QEMU's destination gives a channel its role when that channel's
handshake completes (TLS cannot be peeked), so holding main's second flight lets a channel the source
opens later (multifd, or 7.2's early preempt) complete first at the destination and be taken as main.
A connection whose first bytes are not a TLS handshake record is passed on unheld (``hold_note`` says so).

Every connection is logged (accept time, client port on the source leg, upstream connect time, local port
on the destination leg, bytes each way), so the truth about each connection is known afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass, field

LOOPBACK = "127.0.0.1"
CHUNK = 256 * 1024
HOLD_AT = ("connect", "tls-finished")
TLS_HANDSHAKE = 0x16  # TLS record content type of a ClientHello
TLS_HEADER = 5  # content type, legacy version (2), length (2)


class FirstRecord:
    """Sans-IO: splits a client's byte stream at the end of its first TLS record.

    ``feed(data)`` returns ``(now, later)``: the bytes up to the end of the first record, and the bytes
    after it (empty until the boundary is passed). Once the boundary is passed, or the stream does not
    start with a TLS handshake record (``not_tls``), every byte goes to ``now``.
    """

    def __init__(self) -> None:
        self.header = b""
        self.left: int | None = None  # bytes of the first record still to pass, once the header is known
        self.done = False
        self.not_tls = False
        self.record_len = 0  # the first record's size, header included

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        if self.done:
            return data, b""
        now = b""
        if self.left is None:
            need = TLS_HEADER - len(self.header)
            self.header += data[:need]
            now, data = data[:need], data[need:]
            if self.header[:1] and self.header[0] != TLS_HANDSHAKE:
                self.done = self.not_tls = True
                return now + data, b""
            if len(self.header) < TLS_HEADER:
                return now, b""
            self.left = int.from_bytes(self.header[3:5], "big")
            self.record_len = TLS_HEADER + self.left
        take = min(self.left, len(data))
        now += data[:take]
        self.left -= take
        if self.left == 0 and take < len(data):
            self.done = True
            return now, data[take:]
        return now, b""


@dataclass
class ConnectionLog:
    """What the proxy did with one accepted connection. Times are ``time.time()`` seconds."""

    index: int  # 1-based accept order on the proxy
    accepted_at: float
    client_port: int  # the source's port on the source <-> proxy leg
    held_back_s: float = 0.0
    hold_at: str | None = None  # "connect" or "tls-finished" when this connection was held
    first_record_bytes: int | None = None  # tls-finished: size of the client's first TLS record (ClientHello)
    hold_started_at: float | None = None  # tls-finished: when the first client byte after it arrived
    hold_released_at: float | None = None  # tls-finished: when those bytes were passed on
    hold_note: str | None = None  # why a connection chosen for holding was not held
    upstream_connected_at: float | None = None
    upstream_local_port: int | None = None  # the proxy's port on the proxy <-> destination leg
    upstream_order: int | None = None  # 1-based order in which upstream connects completed
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    first_reply_at: float | None = None  # when the destination's first byte came back (TLS: its ServerHello)
    closed_at: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class ProxyConfig:
    listen_port: int
    upstream_port: int
    hold_back: set[int] = field(default_factory=set)  # 1-based accept indices to hold back
    hold_delay_s: float = 1.0
    host: str = LOOPBACK
    hold_at: str = "connect"  # one of HOLD_AT

    def __post_init__(self) -> None:
        if self.hold_at not in HOLD_AT:
            raise ValueError(f"hold_at must be one of {HOLD_AT}, not {self.hold_at!r}")


class ReorderingProxy:
    """asyncio proxy: ``await start()``, then ``await stop()``; ``log`` holds one entry per connection."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.log: list[ConnectionLog] = []
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._upstream_count = 0

    @property
    def port(self) -> int:
        if self._server is None:
            return self.config.listen_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, self.config.host, self.config.listen_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def drop_all(self) -> None:
        """Abort every open connection (both legs), as a network failure would."""
        for w in list(self._writers):
            transport = w.transport
            if transport is not None:
                transport.abort()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        entry = ConnectionLog(index=len(self.log) + 1, accepted_at=time.time(), client_port=int(peer[1]))
        self.log.append(entry)
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        held = entry.index in self.config.hold_back
        try:
            if held:
                entry.held_back_s = self.config.hold_delay_s
                entry.hold_at = self.config.hold_at
            if held and self.config.hold_at == "connect":
                await asyncio.sleep(self.config.hold_delay_s)
            up_reader, up_writer = await asyncio.open_connection(self.config.host, self.config.upstream_port)
            self._writers.add(up_writer)
            self._upstream_count += 1
            entry.upstream_order = self._upstream_count
            entry.upstream_connected_at = time.time()
            entry.upstream_local_port = int(up_writer.get_extra_info("sockname")[1])
            splitter = FirstRecord() if held and self.config.hold_at == "tls-finished" else None
            await asyncio.gather(
                self._pump(reader, up_writer, entry, to_server=True, hold=splitter, delay=self.config.hold_delay_s),
                self._pump(up_reader, writer, entry, to_server=False),
            )
        except (OSError, asyncio.IncompleteReadError) as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
        finally:
            entry.closed_at = time.time()
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    @staticmethod
    async def _pump(
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        entry: ConnectionLog,
        *,
        to_server: bool,
        hold: FirstRecord | None = None,
        delay: float = 0.0,
    ) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    if hold is not None and not hold.done:
                        entry.hold_note = "the client closed before its first TLS record ended"
                    break
                if hold is not None and not hold.done:
                    data, later = hold.feed(data)
                    if hold.not_tls:
                        entry.hold_note = f"not TLS (first byte {hold.header[0]:#04x}): passed on unheld"
                        entry.held_back_s = 0.0
                    if later:
                        # The first record ended and more came: pass the record on, hold the rest.
                        entry.first_record_bytes = hold.record_len
                        dst.write(data)
                        entry.bytes_to_server += len(data)
                        await dst.drain()
                        entry.hold_started_at = time.time()
                        await asyncio.sleep(delay)
                        entry.hold_released_at = time.time()
                        data = later
                    if not data:
                        continue
                dst.write(data)
                if to_server:
                    entry.bytes_to_server += len(data)
                else:
                    if entry.first_reply_at is None:
                        entry.first_reply_at = time.time()
                    entry.bytes_to_client += len(data)
                await dst.drain()
        except (ConnectionError, OSError) as exc:
            if entry.error is None:
                entry.error = f"{type(exc).__name__}: {exc}"
        finally:
            # Half-close: pass the EOF on, so an orderly shutdown on one leg reaches the other.
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()


def hold_back_indices(role: str | None, *, multifd: int, preempt: bool) -> set[int]:
    """Which accepted connection (1-based) to hold back for a role name.

    The source always opens the main channel first, so ``main`` is connection 1; ``multifd`` and
    ``preempt`` are connection 2 (the first connection after main).
    """
    if role is None:
        return set()
    if role == "main":
        return {1}
    if role == "multifd":
        if multifd <= 0:
            raise ValueError("--hold-back multifd needs --multifd N")
        return {2}
    if role == "preempt":
        if not preempt:
            raise ValueError("--hold-back preempt needs a postcopy-preempt scenario")
        return {2}
    raise ValueError(f"unknown role to hold back: {role!r}")
