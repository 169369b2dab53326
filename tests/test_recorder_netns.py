# SPDX-License-Identifier: GPL-2.0-or-later
"""The namespace path (recorder/netns.py) and the jittered L2 relay (recorder/delay_relay.py).

The sans-IO queue is tested everywhere; the rest builds real namespaces (root and ``ip`` needed, skipped
otherwise): frames get through, are delayed by about the delay, overtake each other under jitter, and the
relay stops by itself at its deadline. Nothing is left behind: the tests check the namespaces are gone.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recorder_helpers import live_recording_unavailable, wait_handed_over

from dissectors.capture import TcpSegment, open_capture
from dissectors.recorder.capture import Tcpdump
from dissectors.recorder.delay_relay import DelayQueue, RelayConfig, RelayProcess
from dissectors.recorder.netns import NetnsPath, list_namespaces

REPO = Path(__file__).resolve().parents[1]


def _namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, raw sockets)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"msk-probe-{os.getpid()}"
    proc = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


needs_netns = pytest.mark.skipif(_namespaces_unavailable() is not None, reason=str(_namespaces_unavailable()))


# -- the sans-IO queue ----------------------------------------------------------------------------------
def test_queue_without_jitter_keeps_order_and_delay() -> None:
    q = DelayQueue(5.0, 0.0, random.Random(1))
    for i in range(10):
        assert q.push(i * 0.001, "a_to_b", bytes([i])) == pytest.approx(i * 0.001 + 0.005)
    assert q.pop_due(0.0049) == []
    out = q.pop_due(1.0)
    assert [f for _, f in out] == [bytes([i]) for i in range(10)]
    assert q.stats["a_to_b"].reordered == 0 and len(q) == 0


def test_queue_with_jitter_reorders_by_release_time() -> None:
    q = DelayQueue(5.0, 3.0, random.Random(7))
    releases = [q.push(i * 0.0001, "a_to_b", i.to_bytes(2, "big")) for i in range(200)]
    out = [int.from_bytes(f, "big") for _, f in q.pop_due(10.0)]
    assert out == sorted(range(200), key=lambda i: (releases[i], i))
    assert out != list(range(200))
    st = q.stats["a_to_b"]
    assert st.reordered > 0 and st.received == 200
    assert st.delay_min_ms is not None and st.delay_min_ms >= 0.0
    assert 3.5 < st.delay_sum_ms / st.received < 6.5


def test_queue_clamps_negative_delays_and_is_seeded() -> None:
    a = DelayQueue(1.0, 5.0, random.Random(3))
    b = DelayQueue(1.0, 5.0, random.Random(3))
    ra = [a.push(0.0, "b_to_a", b"x") for _ in range(100)]
    rb = [b.push(0.0, "b_to_a", b"x") for _ in range(100)]
    assert ra == rb
    assert min(ra) == 0.0 and a.stats["b_to_a"].clamped_to_zero > 0
    assert a.drain() == 100 and a.stats["b_to_a"].left_in_queue == 100


# -- real namespaces --------------------------------------------------------------------------------------
@needs_netns
def test_netns_path_is_made_and_removed() -> None:
    with NetnsPath() as p:
        names = set(list_namespaces())
        assert {p.src_ns, p.mid_ns, p.dst_ns} <= names
        addr = subprocess.run([*p.src_prefix, "ip", "-4", "addr", "show", "dev", p.src_if],
                              capture_output=True, text=True, check=True).stdout
        assert "198.18.0.1/15" in addr
        assert all(s == "off" for s in p.offloads[p.src_if].values()), p.offloads
    assert not p.exists()


@needs_netns
def test_netns_path_is_removed_on_error() -> None:
    with pytest.raises(RuntimeError), NetnsPath() as p:
        raise RuntimeError("boom")
    assert not p.exists()


_ECHO = r"""
import socket, sys, time
role, addr = sys.argv[1], sys.argv[2]
PINGS, SIZE = 20, 64
if role == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 7777)); s.listen(); print("listening", flush=True)
    c, _ = s.accept()
    for _ in range(PINGS):
        got = b""
        while len(got) < SIZE:
            got += c.recv(SIZE - len(got))
        c.sendall(got)
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    c.sendall(str(n).encode()); c.close()
else:
    c = socket.create_connection((addr, 7777), timeout=30)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for i in range(PINGS):
        t = time.monotonic(); c.sendall(b"p" * SIZE); got = b""
        while len(got) < SIZE:
            got += c.recv(SIZE - len(got))
        rtts.append((time.monotonic() - t) * 1000)
    c.sendall(b"x" * 3_000_000); c.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = c.recv(64)
        if not d:
            break
        reply += d
    print(min(rtts), sorted(rtts)[len(rtts) // 2], int(reply), flush=True)
"""


def _relay(p: NetnsPath, tmp: Path, delay: float, jitter: float, deadline: float = 60.0) -> RelayProcess:
    relay = RelayProcess(p.mid_prefix, RelayConfig(p.mid_src_if, p.mid_dst_if, delay, jitter, 11, deadline),
                         tmp / "relay.json")
    relay.start()
    return relay


def _echo(p: NetnsPath) -> tuple[float, float, int]:
    """(fastest, median) round trip in ms over 20 pings, and the bytes the server counted."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([*p.dst_prefix, sys.executable, "-c", _ECHO, "server", p.dst_addr],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        out = subprocess.run([*p.src_prefix, sys.executable, "-c", _ECHO, "client", p.dst_addr],
                             capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        fastest, median, n = out.stdout.split()
        return float(fastest), float(median), int(n)
    finally:
        server.kill()
        server.wait()


@needs_netns
def test_relay_delivers_and_delays(tmp_path: Path) -> None:
    with NetnsPath() as p:
        relay = _relay(p, tmp_path, 20.0, 0.0)
        fastest, _, echoed = _echo(p)
        stats = relay.stop()
    assert not p.exists()
    assert echoed == 3_000_000
    # two frames of 20 ms each, one each way: no round trip is faster than 40 ms, and one without scheduling
    # delays (the fastest; a busy machine only adds to the others) is not much slower
    assert 38.0 <= fastest <= 80.0
    assert stats is not None and stats["stop_reason"] == "SIGTERM"
    assert stats["frames_forwarded"] > 2000 and stats["frames_reordered"] == 0
    assert stats["frames_oversize"] == 0  # offloads are off: every frame fits the MTU
    assert stats["directions"]["a_to_b"]["delay_mean_ms"] == pytest.approx(20.0)


@needs_netns
def test_relay_reorders_under_jitter_and_captures_see_it(tmp_path: Path) -> None:
    with NetnsPath() as p:
        relay = _relay(p, tmp_path, 5.0, 3.0)
        pcap = tmp_path / "dst.pcap"
        # the recorder's tcpdump: started once it says it listens, stopped after its ring buffer's timeout
        dump = Tcpdump(pcap, [7777], interface=p.dst_if, prefix=p.dst_prefix)
        dump.start(timeout=60)
        try:
            fastest, median, echoed = _echo(p)
        finally:
            dump.stop()
        stats = relay.stop()
    assert echoed == 3_000_000
    # 5 +- 3 ms each way: a median round trip of about 10 ms (a busy machine only adds to it), and the
    # fastest far below 40 ms
    assert median >= 4.0 and fastest <= 40.0
    assert stats is not None and stats["frames_reordered"] > 100
    assert stats["frames_oversize"] == 0 and stats["directions"]["a_to_b"]["send_errors"] == 0
    seqs = []
    with open_capture(pcap) as cap:
        for seg in cap.tcp_segments():
            if seg[5] == 7777 and len(seg[9]) > 0:
                seqs.append(seg[6])
                assert len(seg[9]) <= 1460
    later_first = [(b - a) & 0xFFFFFFFF > 0x7FFFFFFF for a, b in zip(seqs, seqs[1:], strict=False)]
    assert any(later_first), "no segment overtook another at the destination"


@needs_netns
def test_both_vantages_are_stopped_at_once_with_every_packet_written(tmp_path: Path) -> None:
    """On a veth end the kernel takes each packet once: once tcpdump has written as many as it took, ``stop``
    does not wait out the ring's timeout again (the two tcpdumps of a netns path took 2.5 s), and each file
    holds every packet its kernel took: the whole connection, both FINs."""
    with NetnsPath() as p:
        relay = _relay(p, tmp_path, 5.0, 3.0)
        dumps = {"src": Tcpdump(tmp_path / "src.pcap", [7777], interface=p.src_if, prefix=p.src_prefix),
                 "dst": Tcpdump(tmp_path / "dst.pcap", [7777], interface=p.dst_if, prefix=p.dst_prefix)}
        for dump in dumps.values():
            dump.start(timeout=60)
        try:
            echoed = _echo(p)[2]
            for dump in dumps.values():
                wait_handed_over(dump.out)
        finally:
            started = time.monotonic()
            stats = {vantage: dump.stop() for vantage, dump in dumps.items()}
            took = time.monotonic() - started
            relay.stop()
    assert echoed == 3_000_000
    for vantage, st in stats.items():
        assert st.dropped_by_kernel == 0 and st.captured == st.received_by_filter, st.stderr
        with open_capture(tmp_path / f"{vantage}.pcap") as cap:
            segs = list(map(TcpSegment._make, cap.tcp_segments()))
        assert len(segs) == st.captured
        assert {seg.dport == 7777 for seg in segs if seg.flags & 0x01} == {True, False}, vantage  # FIN each way
    assert took < 2.0, took          # 2.6 s before; headroom for a loaded machine


@needs_netns
def test_relay_stops_by_itself_at_its_deadline(tmp_path: Path) -> None:
    with NetnsPath() as p:
        relay = _relay(p, tmp_path, 1.0, 0.0, deadline=1.0)
        assert relay.proc is not None
        relay.proc.wait(timeout=10)
        stats = relay.stop()
    assert stats is not None and stats["stop_reason"] == "deadline"


def test_relay_refuses_a_missing_interface(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (raw sockets)")
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.recorder.delay_relay", "--a", "msk-nonexistent0", "--b",
         "msk-nonexistent1", "--deadline-s", "1", "--stats", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )
    assert proc.returncode != 0
    assert json.loads((tmp_path / "s.json").read_text())["frames_forwarded"] == 0



# -- the driver's "stalled after an error" rule ------------------------------------------------------------
class _FakeSide:
    def __init__(self, statuses: list[tuple[str, int]], alive: bool = True) -> None:
        self.statuses = statuses
        self._alive = alive

    def alive(self) -> bool:
        return self._alive

    async def try_execute(self, command: str, arguments: object = None, *, log: bool = True) -> object:
        status, transferred = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"status": status, "ram": {"transferred": transferred}}


@pytest.mark.parametrize(
    ("source", "dst_alive", "stalled"),
    [
        ([("active", 100)], True, True),  # nothing moves after the error: a stall
        ([("completed", 100)], True, False),  # loopback holdback-multifd-7.2: the source had completed
        ([("active", 100), ("failed", 100)], True, False),  # the source saw the broken pipe
        ([("active", n) for n in range(0, 10_000, 10)], True, False),  # still moving: a failure
        ([("active", 100)], False, False),  # the destination exited
    ],
)
def test_stalled_after_error_rule(source: list[tuple[str, int]], dst_alive: bool, stalled: bool,
                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import asyncio

    pytest.importorskip("qemu.qmp")
    from dissectors.recorder import driver
    from dissectors.recorder.scenarios import SCENARIOS

    monkeypatch.setattr(driver, "STALL_QUIET_S", 0.3)
    # a stall is 0.3 s without progress inside the 3 s watched (10x: a busy machine may hold this process back)
    monkeypatch.setattr(driver, "STALL_CONFIRM_S", 3.0)
    monkeypatch.setattr(driver, "POLL_S", 0.02)
    run = driver.Run(SCENARIOS["netpath-multifd4-7.2"], tmp_path, "x")
    got = asyncio.run(run._stalled_after_error(_FakeSide(source), _FakeSide([("active", 0)], dst_alive)))  # type: ignore[arg-type]
    assert got is stalled


# -- one live recording over the path ---------------------------------------------------------------------
def _live_skip_reason() -> str | None:
    return _namespaces_unavailable() or live_recording_unavailable()


@pytest.mark.live
def test_live_netpath_multifd_recording(tmp_path: Path) -> None:
    reason = _live_skip_reason()
    if reason:
        pytest.skip(reason)
    # the recorder bounds each of its steps itself (a few minutes in all at worst, ~10 s when quiet); a busy
    # machine stretches them, and a recorder killed by this timeout would leave its QEMUs and namespaces behind
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.recorder", "--scenario", "netpath-multifd4-7.2", "--out", str(tmp_path),
         "--name", "np", "--gzip", "--json"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    manifest = json.loads(Path(result["manifest"]).read_text())
    net = manifest["netpath"]
    # this run's namespaces are gone (others', e.g. a parallel recording's, are not this test's business)
    assert len(set(net["namespaces"].values())) == 3
    assert not set(net["namespaces"].values()) & set(list_namespaces()), "namespaces left behind"
    # completes, or (the accept race lost) stalls or fails on the destination's bad-magic error (whether the
    # source sees a failure depends on timing; seen in CI); never a failure for another reason
    if result["outcome"] in ("stalled", "failed"):
        assert net["destination_bad_magic"] and "magic" in result["reason"]
    else:
        assert result["outcome"] == "completed", result["reason"]
        assert net["accept_order_destination"][0] == "main"
    assert manifest["captures"] == {"source": "np.src.pcap.gz", "destination": "np.dst.pcap.gz"}
    for vantage in ("source", "destination"):
        v = net["vantages"][vantage]
        assert (tmp_path / v["file"]).is_file() and v["packets_dropped_by_kernel"] == 0
        assert sorted(v["handshakes"]["connect_order"]) == ["main", *[f"multifd #{i}" for i in range(4)]]
    assert (tmp_path / "np.src.manifest.json").is_file() and (tmp_path / "np.dst.manifest.json").is_file()
    relay = net["relay"]["stats"]
    # the relay lost nothing and forwarded every frame the destination saw (a lost accept race ends the
    # migration after a few hundred frames, so no fixed count; ARP frames make it >=)
    assert relay["frames_oversize"] == 0 and relay["kernel_drops"] == {"a": 0, "b": 0}
    for d in relay["directions"].values():
        assert d["forwarded"] == d["received"] and d["send_errors"] == 0 and d["left_in_queue"] == 0
    assert relay["frames_forwarded"] >= net["vantages"]["destination"]["packets_captured"] > 100
    if result["outcome"] == "completed":
        assert relay["frames_forwarded"] > 1000
    assert net["addresses"] == {"source": "198.18.0.1", "destination": "198.18.0.2", "prefix_len": 15}
    assert manifest["qemu"]["source"]["command_line"][:3] == [shutil.which("ip"), "netns", "exec"]


def test_vantage_roles_name_tls_and_leave_main_first_open() -> None:
    """A TLS channel's first bytes are a ClientHello record: its role is encrypted, so the vantage says
    "tls" (not "no-magic", a preempt channel's page header) and does not claim main was accepted first."""
    from dissectors.recorder.vantage import Conn

    assert Conn(1, first_bytes=bytes.fromhex("1603010200010001fc0303")).role() == "tls"
    assert Conn(1, first_bytes=bytes.fromhex("0000000000001000")).role() == "no-magic"
    assert Conn(1, first_bytes=b"QEVM\x00\x00\x00\x03").role() == "main"
