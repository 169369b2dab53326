#!/usr/bin/env python3
"""Hostile captures for the resource benchmarks and the CI resource check: written streaming, in constant
memory, from the layers (no hand-written record layouts).

    python benchmarks/attacks.py conns /tmp/c.pcap --count 100000              # closed connections, one port
    python benchmarks/attacks.py conns /tmp/o.pcap --count 20000 --open        # never closed (all alive)
    python benchmarks/attacks.py conns /tmp/h.pcap --count 20000 --payload hello  # each a 1-channel migration
    python benchmarks/attacks.py zeros /tmp/z.pcap --size 9M                  # QEVM header, then zero bytes
    python benchmarks/attacks.py zeropages /tmp/p.pcap --count 10000000       # ~90 MB of 9-byte ZERO records
    python benchmarks/attacks.py pages /tmp/n.pcap --count 22000               # ~90 MB of normal 4 KiB pages
    python benchmarks/attacks.py claims /tmp/l.pcap                           # absurd length claims, holes

Kinds:

- ``conns``: ``--count`` connections from distinct client ports to one server endpoint, each a handshake
  and a FIN exchange, one after the other (``--open``: never closed, so every one is alive at once);
  ``--payload hello`` sends a multifd hello first, ``main`` a QEVM header and EOF (each a migration).
- ``zeros``: a main channel sending the QEMU file header and then ``--size`` zero bytes (0x00 is EOF;
  the bytes after it cannot be a record sequence).
- ``zeropages``: a valid precopy main stream whose RAM part holds ``--count`` ZERO records (9 bytes
  each, CONTINUE), what a large idle guest sends.
- ``pages``: the same stream with ``--count`` normal pages (PAGE|CONTINUE word and 4096 bytes each), the
  page-header run of an ordinary precopy (not an attack: the baseline for the small-record figures).
- ``claims``: one connection per length claim: a 4 GiB VMDESCRIPTION, a PACKAGED command at its bound,
  a multifd packet claiming 4 GiB of data, an XBZRLE page claiming 64 KiB, and a 1 GiB hole in a stream.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dissectors.capture.writer import PcapWriter, tcp_frame  # noqa: E402
from dissectors.layers.commands import MAX_PACKAGED_SIZE, CmdPackaged, Command  # noqa: E402
from dissectors.layers.main_stream import (  # noqa: E402
    Eof,
    QemuFileHeader,
    SectionFooter,
    SectionPart,
    SectionStart,
)
from dissectors.layers.multifd import MultifdHello  # noqa: E402
from dissectors.layers.ram import (  # noqa: E402
    ENCODING_FLAG_XBZRLE,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
    RamRecord,
    RamZero,
)
from dissectors.layers.synth import mem_size, multifd_packet, ram_eos, ram_pages  # noqa: E402

SERVER = "10.9.0.1"
PORT = 4444
# Client ports: 57344-65535, a range no stock Wireshark dissector registers on tcp.port (checked with
# `tshark -G decodes` on 4.0.17, 4.4.19 and 4.6.9; 4444 neither), so tshark with and without the qmig
# plugin dissects no frame as some other protocol (1024-6023 sent 124 frames to X11's 6000-6063).
# Each client address takes CLIENT_PORTS connections, then the next address is used.
CLIENT_PORT0 = 57344
CLIENT_PORTS = 65536 - CLIENT_PORT0
MSS = 1448
T0 = 1_700_000_000.0


class _Flow:
    """One TCP connection written frame by frame (client index ``n`` picks the client address/port)."""

    def __init__(self, w: PcapWriter, n: int, port: int = PORT) -> None:
        self.w = w
        a = n // CLIENT_PORTS
        self.client = f"10.{10 + a // 62500}.{a // 250 % 250}.{1 + a % 250}"
        self.cport = CLIENT_PORT0 + n % CLIENT_PORTS
        self.port = port
        self.seq = [(n * 7919) & 0xFFFFFFFF, (n * 104729) & 0xFFFFFFFF]

    def put(self, ts: float, d: int, flags: str, payload: bytes = b"") -> None:
        ends = (self.client, SERVER, self.cport, self.port) if d == 0 else (SERVER, self.client, self.port, self.cport)
        self.w.write(ts, tcp_frame(ends[0], ends[1], ends[2], ends[3], self.seq[d] & 0xFFFFFFFF,
                                   self.seq[1 - d] & 0xFFFFFFFF, flags, payload))
        self.seq[d] += len(payload) + (1 if flags in ("S", "SA") or "F" in flags else 0)

    def open(self, ts: float) -> None:
        self.put(ts, 0, "S")
        self.put(ts + 1e-5, 1, "SA")
        self.put(ts + 2e-5, 0, "A")

    def send(self, ts: float, data: bytes) -> float:
        for i in range(0, len(data), MSS):
            self.put(ts, 0, "PA", data[i:i + MSS])
            ts += 1e-6
        return ts

    def stream(self, ts: float, blocks: Iterator[bytes]) -> float:
        """Send an iterator of byte blocks as full segments (a partial segment waits for the next block)."""
        rest = b""
        for block in blocks:
            rest += block
            cut = len(rest) - len(rest) % MSS
            if cut:
                ts = self.send(ts, rest[:cut])
                rest = rest[cut:]
        return self.send(ts, rest) if rest else ts

    def close(self, ts: float) -> None:
        self.put(ts, 0, "FA")
        self.put(ts + 1e-5, 1, "FA")
        self.put(ts + 2e-5, 0, "A")


def many_connections(out: Path, count: int, open_: bool = False, payload: str = "none") -> None:
    data = {"none": b"",
            "hello": bytes(MultifdHello(uuid=bytes(range(16)), id=0)),
            "main": bytes(QemuFileHeader() / Eof())}[payload]
    with PcapWriter(out) as w:
        for n in range(count):
            ts = T0 + n * 1e-3
            f = _Flow(w, n)
            f.open(ts)
            if data:
                f.send(ts + 1e-4, data)
            if not open_:
                f.close(ts + 5e-4)


def zeros(out: Path, size: int) -> None:
    with PcapWriter(out) as w:
        f = _Flow(w, 0)
        f.open(T0)
        block = bytes(64 * MSS)
        ts = f.send(T0 + 1e-3, bytes(QemuFileHeader()))

        def blocks() -> Iterator[bytes]:
            left = size
            while left > 0:
                yield block[:left]
                left -= len(block)

        f.close(f.stream(ts, blocks()) + 1e-3)


def zero_page_stream(count: int) -> Iterator[bytes]:
    """A precopy main stream whose RAM part holds ``count`` ZERO records (the first names the block)."""
    yield bytes(QemuFileHeader())
    yield bytes(SectionStart(section_id=2, idstr=b"ram", instance_id=0, version_id=4))
    yield mem_size({b"pc.ram": count * 4096}) + ram_eos() + bytes(SectionFooter(section_id=2))
    yield bytes(SectionPart(section_id=2))
    yield ram_pages(b"pc.ram", [0], zero=True)
    record = bytes(RamRecord(addr=0, flags=RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE) / RamZero())
    word = len(record) - len(RamZero())
    per = 8192
    pack = struct.Struct(">" + f"Q{len(record) - word}s" * per).pack
    flags = RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE
    fill = record[word:]
    for start in range(1, count, per):
        n = min(per, count - start)
        vals = [v for i in range(start, start + per) for v in (((i % count) << 12) | flags, fill)]
        yield pack(*vals)[:n * len(record)]
    yield ram_eos() + bytes(SectionFooter(section_id=2)) + bytes(Eof())


def page_stream(count: int) -> Iterator[bytes]:
    """A precopy main stream whose RAM part holds ``count`` normal pages (the first names the block)."""
    yield bytes(QemuFileHeader())
    yield bytes(SectionStart(section_id=2, idstr=b"ram", instance_id=0, version_id=4))
    yield mem_size({b"pc.ram": count * 4096}) + ram_eos() + bytes(SectionFooter(section_id=2))
    yield bytes(SectionPart(section_id=2))
    per = 256
    for start in range(0, count, per):
        yield ram_pages(b"pc.ram", range(start * 4096, min(count, start + per) * 4096, 4096), first_named=not start)
    yield ram_eos() + bytes(SectionFooter(section_id=2)) + bytes(Eof())


def zero_pages(out: Path, count: int, normal: bool = False) -> None:
    with PcapWriter(out) as w:
        f = _Flow(w, 0)
        f.open(T0)
        f.close(f.stream(T0 + 1e-3, page_stream(count) if normal else zero_page_stream(count)) + 1e-3)


def claims(out: Path) -> None:
    """One connection per absurd length claim."""
    header = bytes(QemuFileHeader())
    vmdesc = header + bytes(Eof()) + b"\x06" + (0xFFFFFFFF).to_bytes(4, "big") + b"{" * 100
    packaged = header + bytes(Command() / CmdPackaged(length=MAX_PACKAGED_SIZE)) + b"\x08" * 3000
    ram = (header + bytes(SectionStart(section_id=2, idstr=b"ram", instance_id=0, version_id=4))
           + bytes(RamRecord(addr=0, flags=RAM_SAVE_FLAG_XBZRLE, idstr=b"pc.ram"))
           + bytes([ENCODING_FLAG_XBZRLE]) + b"\xff\xff" + b"\x01" * 200)
    hello = bytes(MultifdHello(uuid=bytes(range(16)), id=0))
    big = bytearray(multifd_packet(1, 1))
    head = len(big) - 4096
    big = big[:head]
    with PcapWriter(out) as w:
        for n, data in enumerate([vmdesc, packaged, ram, hello + bytes(big) + b"\x55" * 5000]):
            f = _Flow(w, n)
            ts = T0 + n
            f.open(ts)
            f.close(f.send(ts + 1e-3, data) + 1e-3)
        # A 1 GiB hole: the client's sequence number jumps, then data and a close.
        f = _Flow(w, 10)
        f.open(T0 + 10)
        f.send(T0 + 10.001, header)
        f.seq[0] += 1 << 30
        f.close(f.send(T0 + 10.002, b"\x02" * 4000) + 1e-3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["conns", "zeros", "zeropages", "pages", "claims"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", default="9M", help="zeros: bytes after the header (K/M/G suffixes)")
    ap.add_argument("--open", action="store_true", help="conns: never close the connections")
    ap.add_argument("--payload", choices=["none", "hello", "main"], default="none")
    args = ap.parse_args(argv)
    if args.kind == "conns":
        many_connections(args.out, args.count, args.open, args.payload)
    elif args.kind == "zeros":
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        s = args.size.upper()
        zeros(args.out, int(float(s[:-1]) * units[s[-1]]) if s[-1] in units else int(s))
    elif args.kind in ("zeropages", "pages"):
        zero_pages(args.out, args.count, normal=args.kind == "pages")
    else:
        claims(args.out)
    print(f"{args.out}: {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
