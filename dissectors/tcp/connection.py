"""A tracked TCP connection: endpoints, handshake times and per-direction counters."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from .halfstream import HalfStream

#: How the client/server roles of a connection were decided.
ROLE_SYN = "syn"                    # we saw the client's SYN
ROLE_SYNACK = "synack"              # we saw the server's SYN-ACK (the SYN was before the capture)
ROLE_PORT = "port"                  # a known server port, or one port ephemeral and the other not
ROLE_FIRST_PACKET = "first-packet"  # the sender of the first segment seen is called the client

#: Linux's default ephemeral range starts here (net.ipv4.ip_local_port_range = 32768 60999).
EPHEMERAL_PORT_MIN = 32768


@lru_cache(maxsize=4096)
def _ip_text(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


def ip_text(packed: bytes) -> str:
    """Text form of a packed address (cached: a capture's connections share few addresses)."""
    return _ip_text(bytes(packed))


def endpoint_text(endpoint: tuple[str, int]) -> str:
    """``"ip:port"``, or ``"[ipv6]:port"``."""
    ip, port = endpoint
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Connection:
    """One TCP connection, in first-seen order. Per-direction values are 2-tuples (c->s, s->c)."""

    __slots__ = ("index", "client", "server", "syn_seen", "role_guess", "syn_ts", "synack_ts",
                 "handshake_ts", "first_ts", "closed_by", "halves", "sink")

    def __init__(self, index: int, client: tuple[str, int], server: tuple[str, int], role_guess: str,
                 first_ts: float, halves: tuple[HalfStream, HalfStream]) -> None:
        self.index = index
        self.client = client
        self.server = server
        self.role_guess = role_guess
        self.syn_seen = False
        self.syn_ts: float | None = None
        self.synack_ts: float | None = None
        self.handshake_ts: float | None = None   # client's ACK completing the handshake (accept queue)
        self.first_ts = first_ts
        self.closed_by: str | None = None         # "client"/"server": who sent the first FIN or RST
        self.halves = halves
        self.sink: object | None = None

    def __repr__(self) -> str:
        return (f"Connection(#{self.index} {endpoint_text(self.client)} -> {endpoint_text(self.server)}, "
                f"bytes={self.bytes}, state={self.state})")

    # ---- whole-connection views ----------------------------------------------------------------

    @property
    def last_ts(self) -> float:
        times = [h.last_ts for h in self.halves if h.last_ts is not None]
        return max(times) if times else self.first_ts

    @property
    def refused(self) -> bool:
        """The server answered the SYN with a reset: nothing listened on the port (any more), so the
        connection was never established."""
        return (self.syn_ts is not None and self.synack_ts is None and self.handshake_ts is None
                and self.halves[1].rst_ts is not None)

    @property
    def closed(self) -> bool:
        """Both directions ended (FIN both ways, RST, or superseded)."""
        return self.halves[0].ended is not None and self.halves[1].ended is not None

    @property
    def state(self) -> str:
        ends = [h.ended for h in self.halves]
        if "rst" in ends or any(h.rst_ts is not None for h in self.halves):
            return "reset"
        if ends == ["fin", "fin"]:
            return "closed"
        if any(h.fin_ts is not None for h in self.halves):
            return "closing"
        return "open" if all(e is None for e in ends) else "ended"

    @property
    def client_isn(self) -> int | None:
        return self.halves[0].isn

    @property
    def server_isn(self) -> int | None:
        return self.halves[1].isn

    # ---- per-direction views (index 0 = client->server, 1 = server->client) ----------------------

    @property
    def bytes(self) -> tuple[int, int]:
        """Stream length by sequence numbers: delivered bytes plus gaps, up to the contiguous front."""
        return self.halves[0].offset, self.halves[1].offset

    @property
    def frames(self) -> tuple[int, int]:
        return self.halves[0].frames, self.halves[1].frames

    @property
    def first_data_ts(self) -> tuple[float | None, float | None]:
        return self.halves[0].first_data_ts, self.halves[1].first_data_ts

    @property
    def last_data_ts(self) -> tuple[float | None, float | None]:
        return self.halves[0].last_data_ts, self.halves[1].last_data_ts

    @property
    def gaps(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Gap ranges (offset, length), adjacent ones merged; the first ``MAX_GAPS_KEPT`` per direction."""
        return list(self.halves[0].gaps), list(self.halves[1].gaps)

    @property
    def gap_count(self) -> tuple[int, int]:
        return self.halves[0].gap_count, self.halves[1].gap_count

    @property
    def gap_bytes(self) -> tuple[int, int]:
        return self.halves[0].gap_bytes, self.halves[1].gap_bytes

    @property
    def would_lose(self) -> tuple[int, int]:
        """Bytes not yet gaps that the end of the capture would make gaps (``HalfStream.would_lose``): with
        ``gap_bytes``, what the capture so far misses."""
        return self.halves[0].would_lose(), self.halves[1].would_lose()

    @property
    def retransmitted_bytes(self) -> tuple[int, int]:
        return self.halves[0].retransmitted_bytes, self.halves[1].retransmitted_bytes

    @property
    def overlap_conflicts(self) -> tuple[int, int]:
        """Retransmitted bytes that differ from the bytes delivered at the same offsets."""
        return self.halves[0].overlap_conflicts, self.halves[1].overlap_conflicts

    @property
    def conflict_offsets(self) -> tuple[list[int], list[int]]:
        return list(self.halves[0].conflict_offsets), list(self.halves[1].conflict_offsets)

    @property
    def ignored_bytes(self) -> tuple[int, int]:
        """Bytes after the FIN (or after an RST), before offset 0, or carried by an RST."""
        return self.halves[0].ignored_bytes, self.halves[1].ignored_bytes

    @property
    def fin_ts(self) -> tuple[float | None, float | None]:
        return self.halves[0].fin_ts, self.halves[1].fin_ts

    @property
    def rst_ts(self) -> tuple[float | None, float | None]:
        return self.halves[0].rst_ts, self.halves[1].rst_ts

    @property
    def end_how(self) -> tuple[str | None, str | None]:
        return self.halves[0].ended, self.halves[1].ended

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        directions = []
        for name, h in zip(("client->server", "server->client"), self.halves, strict=True):
            directions.append({
                "direction": name,
                "isn": h.isn,
                "bytes": h.offset,
                "frames": h.frames,
                "first_data_ts": h.first_data_ts,
                "last_data_ts": h.last_data_ts,
                "gap_count": h.gap_count,
                "gap_bytes": h.gap_bytes,
                "gaps": [list(g) for g in h.gaps],
                "retransmitted_bytes": h.retransmitted_bytes,
                "overlap_conflicts": h.overlap_conflicts,
                "conflict_offsets": list(h.conflict_offsets),
                "ignored_bytes": h.ignored_bytes,
                "pending_bytes": h.pending_bytes,
                "fin_ts": h.fin_ts,
                "rst_ts": h.rst_ts,
                "end": h.ended,
            })
        return {
            "index": self.index,
            "client": endpoint_text(self.client),
            "server": endpoint_text(self.server),
            "syn_seen": self.syn_seen,
            "role_guess": self.role_guess,
            "syn_ts": self.syn_ts,
            "synack_ts": self.synack_ts,
            "handshake_ts": self.handshake_ts,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "state": self.state,
            "closed_by": self.closed_by,
            "directions": directions,
        }
