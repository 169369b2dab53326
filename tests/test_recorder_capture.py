"""The recorder's tcpdump (``dissectors.recorder.capture.Tcpdump``), the real one, on loopback: once stopped,
its file holds every packet of the connection it watched, also when tcpdump runs late (a busy machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from recorder_helpers import wait_handed_over

from dissectors.capture import TcpSegment, open_capture
from dissectors.recorder.capture import RING_TIMEOUT_S, CaptureStats, Tcpdump, wait_written

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None, reason="needs root and tcpdump")

SENT = 300_000
FIN = 0x01


def listener() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    return srv


def exchange(srv: socket.socket) -> None:
    """A connection on loopback to ``srv``: ``SENT`` bytes to it, then both sides close."""
    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while conn.recv(1 << 16):
                pass

    server = threading.Thread(target=serve)
    server.start()
    with socket.create_connection(srv.getsockname(), timeout=60) as client:
        client.sendall(bytes(SENT))
    server.join(timeout=60)
    assert not server.is_alive()


def check_every_packet_written(pcap: Path, port: int, stats: CaptureStats) -> None:
    to_server = 0
    fins = set()
    frames = 0
    with open_capture(pcap) as cap:
        for seg in map(TcpSegment._make, cap.tcp_segments()):
            frames += 1
            if seg.dport == port:
                to_server += len(seg.payload)
            if seg.flags & FIN:
                fins.add(seg.dport == port)
    assert to_server == SENT and fins == {True, False}, (to_server, fins)
    # tcpdump's own counts are its final ones (the answers to the questions asked while waiting are left out)
    assert stats.captured == frames and stats.dropped_by_kernel == 0, stats.stderr
    assert "packets captured," not in stats.stderr


@pytest.mark.parametrize("handed_over", [False, True])
def test_stopped_tcpdump_has_written_every_packet(tmp_path: Path, handed_over: bool) -> None:
    """``stop`` right after the traffic, or (``handed_over``) once tcpdump has written every packet the kernel
    took for it (twice as many taken on loopback): then it does not wait out the ring's timeout again (it
    took 1.3 s at the end of every recording, 2.5 s with the two tcpdumps of a netns path). Either way the
    file holds every packet the kernel took."""
    with listener() as srv:
        port = srv.getsockname()[1]
        dump = Tcpdump(tmp_path / "lo.pcap", [port])
        dump.start(timeout=60)
        try:
            exchange(srv)
            if handed_over:
                wait_handed_over(tmp_path / "lo.pcap")
        finally:
            started = time.monotonic()
            stats = dump.stop()
            took = time.monotonic() - started
    check_every_packet_written(tmp_path / "lo.pcap", port, stats)
    if handed_over:
        assert stats.received_by_filter == 2 * (stats.captured or 0), stats.stderr
        assert took < 0.9, took          # 1.3 s before; headroom for a loaded machine


def test_a_tcpdump_that_runs_late_still_writes_every_packet(tmp_path: Path) -> None:
    """A busy machine may not run tcpdump for a while as the migration ends: here SIGSTOP holds it back (longer
    than the ring's timeout and the fixed 1.2 s the recorder waited before) while the connection runs and
    ends. ``stop`` waits until tcpdump has run again and written every packet, then stops it."""
    with listener() as srv:
        port = srv.getsockname()[1]
        dump = Tcpdump(tmp_path / "late.pcap", [port])
        dump.start(timeout=60)
        assert dump.proc is not None
        pid = dump.proc.pid
        os.kill(pid, signal.SIGSTOP)
        resume = threading.Timer(3 * RING_TIMEOUT_S, os.kill, (pid, signal.SIGCONT))
        try:
            exchange(srv)
            resume.start()
        finally:
            try:
                stats = dump.stop()
            finally:
                resume.cancel()
                if dump.proc.poll() is None:
                    os.kill(pid, signal.SIGCONT)
    check_every_packet_written(tmp_path / "late.pcap", port, stats)


def test_a_tcpdump_that_does_not_run_is_not_taken_for_one_that_wrote_everything(tmp_path: Path) -> None:
    """Held back past the wait's bound, tcpdump has not answered: ``wait_written`` says so (the recorder then
    stops it anyway and notes it in the manifest's tcpdump_stderr)."""
    with listener() as srv:
        port = srv.getsockname()[1]
        dump = Tcpdump(tmp_path / "stopped.pcap", [port])
        dump.start(timeout=60)
        assert dump.proc is not None
        os.kill(dump.proc.pid, signal.SIGSTOP)
        try:
            exchange(srv)
            assert not wait_written(dump.proc, dump.stderr_path, dump.out, group=True, timeout=2 * RING_TIMEOUT_S)
        finally:
            os.kill(dump.proc.pid, signal.SIGCONT)
            stats = dump.stop()
    check_every_packet_written(tmp_path / "stopped.pcap", port, stats)
