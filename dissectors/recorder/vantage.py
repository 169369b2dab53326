# SPDX-License-Identifier: GPL-2.0-or-later
"""What one vantage point's capture says about the migration connections' set-up.

For every TCP connection to the destination's port: when its SYN, SYN-ACK and the client's first ACK
passed this vantage, what its first bytes say it is (``QEVM`` = main, the multifd magic = multifd with
its channel id, nothing at all = silent, a TLS ClientHello = tls (role encrypted), other bytes = no-magic,
as the postcopy preempt channel's page headers), and who closed it and when. At the destination's vantage the
order in which the client's handshake-completing ACKs arrived is the order the kernel queued the
connections for ``accept()``: the destination's accept order. At the source's vantage the SYN order is
the connect order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dissectors.capture import open_capture

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
QEVM = b"QEVM"
TLS_HANDSHAKE = b"\x16"  # TLS record content type handshake, then the record version 03 0x
MULTIFD_MAGIC = bytes.fromhex("11223344")
MULTIFD_ID_OFFSET = 24  # magic, version, uuid[16], then the channel id (u8)


@dataclass
class Conn:
    client_port: int
    syn: float | None = None
    synack: float | None = None
    established: float | None = None  # first client ACK after the SYN-ACK (handshake done at this vantage)
    isn: int | None = None
    first_bytes: bytes = b""
    first_data: float | None = None
    fin_by: list[str] | None = None
    rst_by: list[str] | None = None
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    closed_at: float | None = None  # first FIN or RST, either way

    def role(self) -> str:
        if self.first_bytes.startswith(QEVM):
            return "main"
        if self.first_bytes.startswith(MULTIFD_MAGIC):
            if len(self.first_bytes) > MULTIFD_ID_OFFSET:
                return f"multifd #{self.first_bytes[MULTIFD_ID_OFFSET]}"
            return "multifd"
        if not self.first_bytes:
            return "silent"
        if self.first_bytes[:1] == TLS_HANDSHAKE and self.first_bytes[1:2] == b"\x03":
            return "tls"  # a ClientHello record: the role is encrypted (the key log and the analyser read it)
        return "no-magic"  # e.g. a postcopy preempt channel: its first bytes are a page header

    def to_dict(self, t0: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 6)

        return {
            "client_port": self.client_port,
            "role": self.role(),
            "first_bytes": self.first_bytes[:8].hex(),
            "syn": rel(self.syn),
            "synack": rel(self.synack),
            "established": rel(self.established),
            "first_data": rel(self.first_data),
            "fin_by": self.fin_by or [],
            "rst_by": self.rst_by or [],
            "bytes_to_server": self.bytes_to_server,
            "bytes_to_client": self.bytes_to_client,
            "first_fin_or_rst": rel(self.closed_at),
        }


def connections(pcap: Path, server: str, port: int) -> list[Conn]:
    """The connections to ``server:port`` in ``pcap``, first SYN first."""
    srv = ipaddress.ip_address(server).packed
    conns: dict[int, Conn] = {}
    with open_capture(pcap) as cap:
        for _, ts, src, sport, dst, dport, seq, _ack, flags, payload, _ in cap.tcp_segments():
            if dst == srv and dport == port:
                c = conns.get(sport)
                if flags & SYN and not flags & ACK:
                    if c is None or c.synack is not None:  # a new connection (or port reuse)
                        c = conns[sport] = Conn(sport)
                    if c.syn is None:
                        c.syn, c.isn = ts, seq
                    continue
                if c is None:
                    continue
                if flags & ACK and c.synack is not None and c.established is None:
                    c.established = ts
                if payload:
                    c.bytes_to_server += len(payload)
                    if c.isn is not None and seq == (c.isn + 1) & 0xFFFFFFFF and not c.first_bytes:
                        c.first_bytes, c.first_data = bytes(payload[:32]), ts
                if flags & (FIN | RST) and c.closed_at is None:
                    c.closed_at = ts
                if flags & FIN:
                    c.fin_by = sorted({*(c.fin_by or []), "client"})
                if flags & RST:
                    c.rst_by = sorted({*(c.rst_by or []), "client"})
            elif src == srv and sport == port:
                c = conns.get(dport)
                if c is None:
                    continue
                if flags & SYN and flags & ACK and c.synack is None:
                    c.synack = ts
                c.bytes_to_client += len(payload)
                if flags & (FIN | RST) and c.closed_at is None:
                    c.closed_at = ts
                if flags & FIN:
                    c.fin_by = sorted({*(c.fin_by or []), "server"})
                if flags & RST:
                    c.rst_by = sorted({*(c.rst_by or []), "server"})
    return sorted(conns.values(), key=lambda c: (c.syn or 0.0, c.client_port))


def vantage_summary(pcap: Path, server: str, port: int, vantage: str) -> dict[str, Any]:
    """Connect order, handshake-completion order and (at the destination) the accept order."""
    conns = connections(pcap, server, port)
    if not conns:
        return {"vantage": vantage, "connections": [], "connect_order": [], "established_order": []}
    t0 = min(c.syn for c in conns if c.syn is not None) if any(c.syn for c in conns) else 0.0
    done = sorted((c for c in conns if c.established is not None), key=lambda c: c.established or 0.0)
    out: dict[str, Any] = {
        "vantage": vantage,
        "time_zero": t0,
        "connect_order": [c.role() for c in conns],
        "established_order": [c.role() for c in done],
        "connections": [c.to_dict(t0) for c in conns],
    }
    if vantage == "destination":
        out["accept_order"] = out["established_order"]
        roles = out["accept_order"]
        out["main_accept_position"] = roles.index("main") if "main" in roles else None
        # TLS: QEMU gives a channel its role when its TLS handshake completes, not at accept, and the
        # roles are encrypted here: the TCP accept order cannot say whether main came first.
        out["main_accepted_first"] = None if "tls" in roles else bool(roles) and roles[0] == "main"
    return out
