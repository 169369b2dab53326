"""Synthetic migration captures for edge cases: streams built with our own Scapy layers (most of them by
dissectors.layers.synth), framed into TCP connections with the project's capture writer. Real captures
(captures/) remain the truth."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from dissectors.capture.writer import PcapWriter, tcp_frame
from dissectors.layers import commands as C
from dissectors.layers import main_stream as M
from dissectors.layers import multifd as F
from dissectors.layers import ram as R
from dissectors.layers import return_path as RP
from dissectors.layers import synth as L

PAGE = 4096
MSS = 1448
UUID = bytes.fromhex("0123456789abcdef0123456789abcdef")


# -- streams ----------------------------------------------------------------------------------------
def header(machine: str = "pc-i440fx-7.2") -> bytes:
    return bytes(M.QemuFileHeader()) + bytes(M.Configuration(machine=machine.encode()))


def command(cmd: int, payload: bytes = b"") -> bytes:
    return bytes(M.record_class(M.QEMU_VM_COMMAND)(cmd=cmd, len=len(payload))) + payload


def ping(value: int) -> bytes:
    return bytes(C.Command(cmd=C.MIG_CMD_PING) / C.CmdPing(value=value))


def ram_start(section_id: int = 2, total: int = 64 << 20, block: bytes = b"pc.ram") -> bytes:
    return (bytes(M.SectionStart(section_id=section_id, idstr=b"ram", instance_id=0, version_id=4))
            + L.mem_size({block: total}) + L.ram_eos() + bytes(M.SectionFooter(section_id=section_id)))


def ram_part(addrs: list[int], section_id: int = 2, end: bool = False, flush: bool = False) -> bytes:
    cls = M.SectionEnd if end else M.SectionPart
    body = L.ram_pages(b"pc.ram", addrs) if addrs else b""
    if flush:
        body += bytes(R.RamRecord(addr=0, flags=R.RAM_SAVE_FLAG_MULTIFD_FLUSH))
    return bytes(cls(section_id=section_id)) + body + L.ram_eos() + bytes(M.SectionFooter(section_id=section_id))


def eof() -> bytes:
    return bytes(M.Eof())


def multifd_hello(channel: int, uuid: bytes = UUID) -> bytes:
    return bytes(F.MultifdHello(uuid=uuid, id=channel))


def multifd_packet(num: int, pages: int, sync: bool = False, offsets: list[int] | None = None) -> bytes:
    return L.multifd_packet(num, pages, flags=F.MULTIFD_FLAG_SYNC if sync else 0, offsets=offsets)


def rp_pong(value: int) -> bytes:
    return bytes(RP.RpMessage() / RP.RpPong(value=value))


def rp_req_pages(start: int, block: bytes | None = b"pc.ram") -> bytes:
    if block is None:
        return bytes(RP.RpMessage(type=RP.MIG_RP_MSG_REQ_PAGES) / RP.RpReqPages(start=start, len=PAGE))
    return bytes(RP.RpMessage(type=RP.MIG_RP_MSG_REQ_PAGES_ID) / RP.RpReqPagesId(start=start, len=PAGE, block=block))


def preempt_page(addr: int, first: bool) -> bytes:
    return L.ram_pages(b"pc.ram", [addr], first_named=first)


# -- connections and captures -----------------------------------------------------------------------
@dataclass
class Conn:
    sport: int
    syn_ts: float
    events: list[tuple[float, int, bytes | str]] = field(default_factory=list)
    dport: int = 4444
    handshake: bool = True          # False: the capture starts after the connection opened
    synack_delay: float = 0.00001   # SYN to SYN-ACK, as the capture sees it
    ack_delay: float = 0.00001      # SYN-ACK to the ACK that completes the handshake
    refused: bool = False           # the server's kernel answers the SYN with a reset (nothing listens)

    def send(self, ts: float, data: bytes) -> Conn:
        self.events.append((ts, 0, data))
        return self

    def reply(self, ts: float, data: bytes) -> Conn:
        self.events.append((ts, 1, data))
        return self

    def close(self, ts: float, by: int = 0, how: str = "F") -> Conn:
        self.events.append((ts, by, how))
        return self


def write_capture(path: str, conns: list[Conn], client: str = "127.0.0.1", server: str = "127.0.0.1",
                  snaplen: int = 262144) -> None:
    frames: list[tuple[float, int, bytes]] = []
    order = 0
    for c in conns:
        seq = [1000 + c.sport * 7, 5000 + c.sport * 3]
        ends = [(client, c.sport, server, c.dport), (server, c.dport, client, c.sport)]

        def add(ts: float, d: int, flags: str, payload: bytes = b"", seq=seq, ends=ends) -> None:
            nonlocal order
            s, sp, t, tp = ends[d]
            frames.append((ts, order, tcp_frame(s, t, sp, tp, seq[d] & 0xFFFFFFFF, seq[1 - d] & 0xFFFFFFFF,
                                                flags, payload)))
            order += 1

        if c.refused:
            add(c.syn_ts, 0, "S")
            seq[0] += 1
            add(c.syn_ts + c.synack_delay, 1, "R")
            continue
        if c.handshake:
            add(c.syn_ts, 0, "S")
            seq[0] += 1
            add(c.syn_ts + c.synack_delay, 1, "SA")
            seq[1] += 1
            add(c.syn_ts + c.synack_delay + c.ack_delay, 0, "A")
        else:           # the SYNs happened before the capture started
            seq[0] += 1
            seq[1] += 1
        for ts, d, data in sorted(c.events, key=lambda e: e[0]):
            if isinstance(data, str):
                add(ts, d, "FA" if data == "F" else "R")
                seq[d] += 1
                continue
            for i in range(0, len(data), MSS):
                chunk = data[i:i + MSS]
                add(ts + i * 1e-9, d, "PA", chunk)
                seq[d] += len(chunk)
    frames.sort(key=lambda f: (f[0], f[1]))
    with PcapWriter(path, snaplen=snaplen) as w:
        for ts, _, frame in frames:
            w.write(ts, frame)


def retime(path: str, ts: float, new_ts: float | None) -> None:
    """Rewrite a capture of ``write_capture``'s with its one frame captured at ``ts`` moved to ``new_ts`` (a
    segment reordered on the path, arriving late), or dropped (``None``: a segment the capture missed)."""
    data = Path(path).read_bytes()
    (snaplen,) = struct.unpack_from("<I", data, 16)
    frames: list[tuple[float, bytes, int]] = []
    pos = 24                                         # the pcap file header
    while pos < len(data):
        sec, usec, caplen, wire = struct.unpack_from("<IIII", data, pos)
        frames.append((sec + usec / 1e6, data[pos + 16:pos + 16 + caplen], wire))
        pos += 16 + caplen
    hits = [f for f in frames if abs(f[0] - ts) < 5e-7]
    assert len(hits) == 1, f"{len(hits)} frames at {ts}"
    frames.remove(hits[0])
    if new_ts is not None:
        frames.append((new_ts, *hits[0][1:]))
    frames.sort(key=lambda f: f[0])                  # (stable: frames at one time keep their order)
    with PcapWriter(path, snaplen=snaplen) as w:
        for t, frame, wire in frames:
            w.write(t, frame, wire)
