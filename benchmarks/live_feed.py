"""Synthetic live feeds for the watch benchmarks: migrations framed into pcap records, written to a pipe.

Each migration is one of the seed bug's shapes from tests/synth.py: main + 2 multifd channels, either in
order (clean) or with a multifd channel accepted first (a QEMU 7.2 destination takes it as main: the
first bytes on that connection, its multifd hello, decide the misclassification). Every migration has its
own client address, so the 4-tuples never repeat.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dissectors.capture.writer import tcp_frame  # noqa: E402
from tests import synth as S  # noqa: E402

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
_RECORD = struct.Struct("<IIII")


def record(ts: float, frame: bytes) -> bytes:
    sec = int(ts)
    usec = int(round((ts - sec) * 1_000_000))
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    return _RECORD.pack(sec, usec, len(frame), len(frame)) + frame


def migration(t0: float, n: int, misread: bool, dport: int = 4444, pages: int = 4) -> tuple[list[bytes], int]:
    """Records of migration ``n`` starting at capture time ``t0`` and the index of the deciding record
    (the multifd hello on the connection accepted first when ``misread``, else -1)."""
    main = S.Conn(40000, t0 + (0.010 if misread else 0.0), dport=dport)
    m0 = S.Conn(40001, t0 + (0.0 if misread else 0.002), dport=dport)
    m1 = S.Conn(40002, t0 + (0.012 if misread else 0.003), dport=dport)
    main.send(main.syn_ts + 0.001, S.header() + S.ram_start() + S.ram_part([], flush=True))
    m0.send(m0.syn_ts + 0.001, S.multifd_hello(0))
    m1.send(m1.syn_ts + 0.001, S.multifd_hello(1))
    if misread:
        main.close(main.syn_ts + 0.003, by=1, how="R")
        for c in (m0, m1):
            c.close(main.syn_ts + 0.004, by=0)
            c.close(main.syn_ts + 0.0041, by=1)
    else:
        t = t0 + 0.05
        m0.send(t, S.multifd_packet(1, pages) + S.multifd_packet(3, 0, sync=True))
        m1.send(t, S.multifd_packet(2, pages) + S.multifd_packet(4, 0, sync=True))
        main.send(t + 0.01, S.ram_part([], end=True, flush=True) + S.eof())
        for c in (main, m0, m1):
            c.close(t + 0.02, by=0)
            c.close(t + 0.0201, by=1)
    client = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255 or 1}"
    frames: list[tuple[float, int, bytes, bool]] = []
    order = 0
    for c in (main, m0, m1):
        seq = [1000 + c.sport * 7, 5000 + c.sport * 3]
        ends = [(client, c.sport, "10.255.0.1", c.dport), ("10.255.0.1", c.dport, client, c.sport)]
        deciding = misread and c is m0

        def add(ts: float, d: int, flags: str, payload: bytes = b"", seq: list[int] = seq,
                ends: list[tuple[str, int, str, int]] = ends, mark: bool = False) -> None:
            nonlocal order
            s, sp, t, tp = ends[d]
            frames.append((ts, order, tcp_frame(s, t, sp, tp, seq[d] & 0xFFFFFFFF, seq[1 - d] & 0xFFFFFFFF,
                                                flags, payload), mark))
            order += 1

        add(c.syn_ts, 0, "S")
        seq[0] += 1
        add(c.syn_ts + 0.00001, 1, "SA")
        seq[1] += 1
        add(c.syn_ts + 0.00002, 0, "A")
        first = True
        for ts, d, data in sorted(c.events, key=lambda e: e[0]):
            if isinstance(data, str):
                add(ts, d, "FA" if data == "F" else "R")
                seq[d] += 1
                continue
            for i in range(0, len(data), S.MSS):
                chunk = data[i:i + S.MSS]
                add(ts + i * 1e-9, d, "PA", chunk, mark=deciding and first and d == 0)
                first = False
                seq[d] += len(chunk)
    frames.sort(key=lambda f: (f[0], f[1]))
    marked = next((i for i, f in enumerate(frames) if f[3]), -1)
    return [record(ts, frame) for ts, _, frame, _ in frames], marked


_TEMPLATES: dict[bool, tuple[list[tuple[float, bytes]], int]] = {}


def fast_migration(t0: float, n: int, misread: bool) -> tuple[list[bytes], int]:
    """``migration(t0, n, misread)`` from a cached template: the client address and the times patched
    (IPv4 header checksum redone; the TCP checksum is left as it was, which no reader here checks)."""
    if misread not in _TEMPLATES:
        records, deciding = migration(0.0, 1, misread)
        _TEMPLATES[misread] = ([(_ts(r), r[16:]) for r in records], deciding)
    frames, deciding = _TEMPLATES[misread]
    client = bytes([10, (n >> 16) & 255, (n >> 8) & 255, n & 255 or 1])
    out = []
    for ts, frame in frames:
        f = bytearray(frame)
        if f[26:30] == b"\x0a\xff\x00\x01":      # server -> client
            f[30:34] = client
        else:
            f[26:30] = client
        f[24:26] = b"\0\0"
        f[24:26] = _checksum(bytes(f[14:34])).to_bytes(2, "big")
        out.append(record(t0 + ts, bytes(f)))
    return out, deciding


def _ts(rec: bytes) -> float:
    sec, usec = struct.unpack_from("<II", rec)
    return sec + usec / 1e6


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
