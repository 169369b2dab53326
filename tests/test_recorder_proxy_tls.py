# SPDX-License-Identifier: GPL-2.0-or-later
"""The proxy's ``tls-finished`` hold, with real TLS 1.3 handshakes (Python's ssl) on loopback.

A TLS 1.3 client has completed its handshake once it has sent its Finished; the server only when it has
received it. Holding back every client byte after the ClientHello record must therefore let the client
finish at once and the server only after the hold, so a connection opened later (not held) completes first
at the server: the reordering QEMU's TLS destination is exposed to.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dissectors.recorder.proxy import FirstRecord, ProxyConfig, ReorderingProxy

HOLD = 1.2  # long enough that a busy machine cannot stretch a loopback TLS handshake past HOLD / 2


def _cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "migshark-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsServer:
    """Accepts TLS 1.3; notes when each handshake completed and which client (first app byte) it was."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(cert, key)
        self.completed: list[tuple[float, int]] = []  # (time, tag), in handshake-completion order
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        # asyncio's start_server(ssl=...) calls back once the server-side handshake has completed.
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = time.monotonic()
        tag = (await reader.readexactly(1))[0]
        self.completed.append((done, tag))
        writer.write(b"ok" + bytes([tag]))
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _client(port: int, tag: int, delay: float, t0: float) -> tuple[float, bytes]:
    await asyncio.sleep(delay)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    client_done = time.monotonic() - t0  # the client's handshake is complete here
    writer.write(bytes([tag]))
    await writer.drain()
    reply = await reader.read(-1)
    writer.close()
    return client_done, reply


async def _run(tmp: Path, hold_at: str) -> tuple[TlsServer, ReorderingProxy, list[tuple[float, bytes]], float]:
    cert, key = _cert(tmp)
    server = TlsServer(cert, key)
    up = await server.start()
    proxy = ReorderingProxy(ProxyConfig(0, up, {1}, HOLD, hold_at=hold_at))
    await proxy.start()
    t0 = time.monotonic()
    try:
        # Client 1 ("main") first; clients 2 and 3 start 50 and 100 ms later (after 1 has finished its side).
        results = await asyncio.wait_for(
            asyncio.gather(*(_client(proxy.port, tag, 0.05 * (tag - 1), t0) for tag in (1, 2, 3))), 10
        )
    finally:
        await proxy.stop()
        await server.stop()
    return server, proxy, list(results), t0


def test_holding_the_client_finished_reorders_server_completions(tmp_path: Path) -> None:
    server, proxy, results, t0 = asyncio.run(_run(tmp_path, "tls-finished"))
    # The held client finished its side at once (well before the hold ended) ...
    assert results[0][0] < HOLD / 2
    assert [r[1] for r in results] == [b"ok\x01", b"ok\x02", b"ok\x03"]
    # ... but the server completed the held handshake last, after the hold.
    assert [tag for _, tag in server.completed] == [2, 3, 1]
    assert server.completed[-1][0] - t0 >= HOLD
    # The upstream connects were not delayed: the server accepted in the clients' order.
    held = proxy.log[0]
    assert [c.upstream_order for c in proxy.log] == [1, 2, 3]
    assert held.hold_at == "tls-finished" and held.held_back_s == HOLD and held.hold_note is None
    assert held.first_record_bytes is not None and held.first_record_bytes > 100  # a ClientHello
    assert held.hold_started_at is not None and held.hold_released_at is not None
    assert held.hold_released_at - held.hold_started_at >= HOLD * 0.95
    assert held.upstream_connected_at is not None and held.upstream_connected_at - held.accepted_at < HOLD / 2
    assert all(c.hold_at is None for c in proxy.log[1:])


def test_connect_hold_cannot_reorder_tls_completions(tmp_path: Path) -> None:
    """The old hold (upstream connect) delays the held client's own handshake too."""
    server, proxy, results, _ = asyncio.run(_run(tmp_path, "connect"))
    assert results[0][0] >= HOLD * 0.95
    assert [tag for _, tag in server.completed] == [2, 3, 1]  # here clients 2, 3 did not wait for client 1
    assert proxy.log[0].upstream_order == 3


def test_non_tls_connection_is_passed_on_unheld() -> None:
    async def run() -> tuple[ReorderingProxy, bytes, float]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(-1))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        proxy = ReorderingProxy(ProxyConfig(0, int(server.sockets[0].getsockname()[1]), {1}, HOLD,
                                            hold_at="tls-finished"))
        await proxy.start()
        t = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"QEVM" + bytes(5000))
        writer.write_eof()
        reply = await reader.read(-1)
        writer.close()
        took = time.monotonic() - t
        await proxy.stop()
        server.close()
        await server.wait_closed()
        return proxy, reply, took

    proxy, reply, took = asyncio.run(run())
    assert reply == b"QEVM" + bytes(5000) and took < HOLD / 2
    assert proxy.log[0].hold_note is not None and "not TLS" in proxy.log[0].hold_note
    assert proxy.log[0].held_back_s == 0.0


@pytest.mark.parametrize(
    "chunks",
    [
        [b"\x16\x03\x01\x00\x03abcXYZ"],
        [b"\x16", b"\x03\x01\x00", b"\x03a", b"bc", b"XY", b"Z"],
        [b"\x16\x03\x01\x00\x03abc", b"XYZ"],
        [b"\x16\x03\x01", b"\x00\x03abcX", b"YZ"],
    ],
)
def test_first_record_split_at_any_chunking(chunks: list[bytes]) -> None:
    """As the pump uses it: bytes before the boundary go at once, the rest after the hold."""
    fr = FirstRecord()
    before, after = b"", b""
    for c in chunks:
        if fr.done:
            after += c
            continue
        now, later = fr.feed(c)
        before += now
        after += later
    assert (before, after) == (b"\x16\x03\x01\x00\x03abc", b"XYZ")
    assert fr.record_len == 8 and not fr.not_tls


def test_first_record_boundary() -> None:
    fr = FirstRecord()
    assert fr.feed(b"\x16\x03\x01\x00\x03ab") == (b"\x16\x03\x01\x00\x03ab", b"")
    assert fr.feed(b"c") == (b"c", b"")
    assert not fr.done
    assert fr.feed(b"XYZ") == (b"", b"XYZ")
    assert fr.done and fr.feed(b"more") == (b"more", b"")
    other = FirstRecord()
    assert other.feed(b"QEVM") == (b"QEVM", b"") and other.not_tls


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--scenario", "multifd4-7.2", "--hold-back", "main", "--hold-at", "tls-finished"], "needs --tls"),
        (["--scenario", "multifd-tls-7.2", "--hold-at", "tls-finished"], "needs a connection to hold"),
        (["--scenario", "tlsfin-multifd-7.2", "--hold-delay", "0"], "--hold-delay"),
        (["--scenario", "tlsfin-multifd-7.2", "--no-tls"], "needs --tls"),
    ],
)
def test_hold_options_that_cannot_work_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from dissectors.recorder.command import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_tlsfin_scenarios_hold_mains_finished() -> None:
    from dissectors.recorder.scenarios import SCENARIOS, with_overrides

    sc = SCENARIOS["tlsfin-multifd-7.2"]
    assert (sc.tls, sc.hold_back, sc.hold_at, sc.hold_delay_s, sc.multifd) == (True, "main", "tls-finished", 1.0, 2)
    over = with_overrides(SCENARIOS["multifd-tls-7.2"], hold_back="main", hold_at="tls-finished", hold_delay_s=2.5)
    assert (over.hold_back, over.hold_at, over.hold_delay_s) == ("main", "tls-finished", 2.5)
    with pytest.raises(ValueError):
        ProxyConfig(0, 1, {1}, hold_at="finished")
