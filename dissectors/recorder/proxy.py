# SPDX-License-Identifier: GPL-2.0-or-later
"""A relaying TCP proxy on loopback that can hold back the upstream connect of one accepted connection.

The source QEMU connects to the proxy; each accepted connection is forwarded to the destination QEMU.
Holding back the upstream connect of, say, the first accepted connection (the main channel) by about a
second makes the destination accept the connections in a different order than the source opened them,
which is exactly the channel-mapping race of the October 2022 qemu-devel thread.

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


@dataclass
class ConnectionLog:
    """What the proxy did with one accepted connection. Times are ``time.time()`` seconds."""

    index: int  # 1-based accept order on the proxy
    accepted_at: float
    client_port: int  # the source's port on the source <-> proxy leg
    held_back_s: float = 0.0
    upstream_connected_at: float | None = None
    upstream_local_port: int | None = None  # the proxy's port on the proxy <-> destination leg
    upstream_order: int | None = None  # 1-based order in which upstream connects completed
    bytes_to_server: int = 0
    bytes_to_client: int = 0
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
        try:
            if entry.index in self.config.hold_back:
                entry.held_back_s = self.config.hold_delay_s
                await asyncio.sleep(self.config.hold_delay_s)
            up_reader, up_writer = await asyncio.open_connection(self.config.host, self.config.upstream_port)
            self._writers.add(up_writer)
            self._upstream_count += 1
            entry.upstream_order = self._upstream_count
            entry.upstream_connected_at = time.time()
            entry.upstream_local_port = int(up_writer.get_extra_info("sockname")[1])
            await asyncio.gather(
                self._pump(reader, up_writer, entry, to_server=True),
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
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, entry: ConnectionLog, *, to_server: bool
    ) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                dst.write(data)
                if to_server:
                    entry.bytes_to_server += len(data)
                else:
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
