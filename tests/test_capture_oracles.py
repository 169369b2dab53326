"""Cross-checks against other tools: the writer against scapy and tshark, the reader on real tcpdump output."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from capture_helpers import read_segments, udp_frame

from dissectors.capture.writer import PcapngWriter, PcapWriter, tcp_frame


def mixed_frames() -> list[tuple[str, bytes]]:
    """(link, frame) pairs covering the writer's options, with distinct ports/seqs/lengths."""
    out = []
    for i, link in enumerate(("ether", "null", "loop", "sll", "sll2", "raw")):
        out.append((link, tcp_frame("10.9.8.7", "10.6.5.4", 40000 + i, 4444, 1000 + i, 5, "PA", b"q" * (10 + i),
                                    link=link)))
        out.append((link, tcp_frame("fd00::7", "fd00::4", 41000 + i, 4444, 2000 + i, 5, "PA", b"r" * (20 + i),
                                    link=link, ipv6_ext=(i % 2 == 0))))
    out.append(("ether", tcp_frame("10.9.8.7", "10.6.5.4", 42000, 4444, 3000, 0, "S", vlan=42,
                                   ip_options=b"\x01\x01\x01\x00")))
    return out


def write_mixed_pcapng(path: Path) -> None:
    with PcapngWriter(path) as w:
        ids: dict[str, int] = {}
        for i, (link, frame) in enumerate(mixed_frames()):
            if link not in ids:
                ids[link] = w.add_interface(link, tsresol=9 if len(ids) % 2 else 6)
            w.write(1000.0 + i, frame, interface=ids[link])


def expected_fields(path: Path) -> list[tuple[int, int, int, int]]:
    segments, _, _ = read_segments(path)
    return [(s.sport, s.dport, s.seq, len(s.payload)) for s in segments]


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_sees_the_same_segments(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pcapng"
    write_mixed_pcapng(path)
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport",
                          "-e", "tcp.seq_raw", "-e", "tcp.len", "-e", "ip.checksum.status"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [tuple(int(v) for v in row[:4]) for row in rows] == expected_fields(path)
    assert all(row[4] in ("", "2") for row in rows)  # 2 = good checksum (tshark enum); blank for IPv6


def test_scapy_sees_the_same_segments(tmp_path: Path) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    path = tmp_path / "mixed.pcap"
    frames = [f for link, f in mixed_frames() if link == "ether"] + [udp_frame()]
    with PcapWriter(path, big_endian=True, nanosecond=True) as w:
        for i, frame in enumerate(frames):
            w.write(5.0 + i, frame)
    packets = scapy_all.rdpcap(str(path))
    got = [(p[scapy_all.TCP].sport, p[scapy_all.TCP].dport, p[scapy_all.TCP].seq, len(p[scapy_all.TCP].payload))
           for p in packets if scapy_all.TCP in p]
    assert got == expected_fields(path)
    assert [float(p.time) for p in packets] == [5.0 + i for i in range(len(frames))]


def _tcpdump_usable() -> bool:
    return shutil.which("tcpdump") is not None and hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.skipif(not _tcpdump_usable(), reason="needs root and tcpdump")
@pytest.mark.parametrize("iface", ["lo", "any"])
def test_real_tcpdump_loopback_capture(tmp_path: Path, iface: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    path = tmp_path / f"real-{iface}.pcap"
    command = ["tcpdump", "-i", iface, "--immediate-mode", "-B", "65536", "-U", "-s", "0", "-w", str(path),
               f"tcp port {port}"]
    dump = subprocess.Popen(command,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_listening(dump, path)
        sent = os.urandom(1 << 20)  # big writes: loopback frames of up to 65,549 bytes
        received = bytearray()

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                while chunk := conn.recv(1 << 20):
                    received.extend(chunk)

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(("127.0.0.1", port)) as client:
            for start in range(0, len(sent), 128 << 10):  # paced so tcpdump's buffer keeps up
                client.sendall(sent[start:start + (128 << 10)])
                time.sleep(0.01)
        thread.join(timeout=30)
        assert bytes(received) == sent
        # let tcpdump write the last frames before it is stopped: the file holds at least what was sent and
        # stops growing (--immediate-mode and -U: each frame is written once tcpdump gets the CPU)
        deadline, last = time.monotonic() + 60, -1
        while time.monotonic() < deadline and not (last >= len(sent) and path.stat().st_size == last):
            last = path.stat().st_size
            time.sleep(0.5)
    finally:
        dump.terminate()
        dump.wait(timeout=10)
        server.close()
    segments, stats, warnings = read_segments(path)
    assert warnings == []
    to_server = [s for s in segments if s.dport == port]
    isn = next(s.seq for s in to_server if s.flags & 0x02)
    stream = bytearray(len(sent))
    covered = 0
    for s in to_server:
        if s.payload:
            assert s.missing == 0
            off = (s.seq - isn - 1) & 0xFFFFFFFF
            stream[off:off + len(s.payload)] = s.payload
            covered += len(s.payload)
    assert covered >= len(sent) and bytes(stream) == sent
    assert stats.tcp_segments == len(segments) and stats.link_types
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "tcp.len"], capture_output=True,
                             text=True, check=True, timeout=60).stdout
        assert sum(int(v) for v in out.split()) == sum(len(s.payload) for s in segments)


def _wait_for_listening(dump: subprocess.Popen[bytes], path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if dump.poll() is not None:
            pytest.skip(f"tcpdump exited: {dump.stderr.read().decode(errors='replace') if dump.stderr else ''}")
        if path.exists() and path.stat().st_size >= 24:
            time.sleep(0.3)
            return
        time.sleep(0.05)
    pytest.skip("tcpdump did not start")
