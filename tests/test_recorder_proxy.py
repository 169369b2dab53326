# SPDX-License-Identifier: GPL-2.0-or-later
"""The reordering proxy, with real sockets on loopback."""

from __future__ import annotations

import asyncio
import os

import pytest

from dissectors.recorder.proxy import ProxyConfig, ReorderingProxy, hold_back_indices


class Upstream:
    """A destination stand-in: records accept order (by the first byte each client sends) and echoes."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.received: dict[int, bytes] = {}
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(1)
        self.order.append(first[0])
        data = first + await reader.read(-1)
        self.received[first[0]] = data
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _client(port: int, tag: int, payload: bytes, delay: float) -> bytes:
    await asyncio.sleep(delay)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes([tag]) + payload)
    await writer.drain()
    writer.write_eof()
    reply = await reader.read(-1)
    writer.close()
    return reply


async def _run(hold: set[int], hold_delay: float, payload: bytes) -> tuple[Upstream, ReorderingProxy, list[bytes]]:
    up = Upstream()
    up_port = await up.start()
    proxy = ReorderingProxy(ProxyConfig(0, up_port, hold, hold_delay))
    await proxy.start()
    try:
        # Clients 1, 2, 3 connect 50 ms apart, in that order.
        replies = await asyncio.wait_for(
            asyncio.gather(*(_client(proxy.port, tag, payload, 0.05 * (tag - 1)) for tag in (1, 2, 3))), 10
        )
    finally:
        await proxy.stop()
        await up.stop()
    return up, proxy, list(replies)


def test_without_hold_back_order_is_kept_and_bytes_are_intact() -> None:
    payload = os.urandom(300_000)
    up, proxy, replies = asyncio.run(_run(set(), 0.0, payload))
    assert up.order == [1, 2, 3]
    for tag, reply in zip((1, 2, 3), replies, strict=True):
        sent = bytes([tag]) + payload
        assert up.received[tag] == sent
        assert reply == sent[::-1]
    assert [c.index for c in proxy.log] == [1, 2, 3]
    assert all(c.bytes_to_server == len(payload) + 1 for c in proxy.log)
    assert all(c.bytes_to_client == len(payload) + 1 for c in proxy.log)


def test_holding_back_the_first_connection_reorders_accepts_upstream() -> None:
    up, proxy, replies = asyncio.run(_run({1}, 0.5, b"hello"))
    assert up.order == [2, 3, 1]
    first = proxy.log[0]
    assert first.held_back_s == 0.5
    assert first.upstream_order == 3
    assert first.upstream_connected_at is not None
    assert first.upstream_connected_at - first.accepted_at >= 0.45
    assert all(c.upstream_local_port and c.client_port for c in proxy.log)
    assert replies[0] == b"\x01hello"[::-1]


def test_hold_back_roles() -> None:
    assert hold_back_indices(None, multifd=0, preempt=False) == set()
    assert hold_back_indices("main", multifd=4, preempt=False) == {1}
    assert hold_back_indices("multifd", multifd=4, preempt=False) == {2}
    assert hold_back_indices("preempt", multifd=0, preempt=True) == {2}
    with pytest.raises(ValueError):
        hold_back_indices("multifd", multifd=0, preempt=True)
    with pytest.raises(ValueError):
        hold_back_indices("preempt", multifd=2, preempt=False)
