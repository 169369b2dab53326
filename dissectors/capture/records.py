"""What the capture reader hands out: the TCP segment tuple layout and the per-file statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class TcpSegment(NamedTuple):
    """Field order of the plain tuples yielded by ``Capture.tcp_segments()`` (for tests and docs).

    ``payload`` holds the captured TCP payload only (never link padding); ``missing`` counts payload
    bytes the IP header announces but the capture did not keep (snaplen cut).
    """

    frame: int
    ts: float
    src: bytes
    sport: int
    dst: bytes
    dport: int
    seq: int
    ack: int
    flags: int
    payload: memoryview | bytes
    missing: int


class KeyedSegment(NamedTuple):
    """Field order of the leaner tuples yielded by ``Capture.keyed_segments()``.

    ``key`` is the IP source address, the IP destination address, then the two ports as big-endian
    16-bit numbers, all in one ``bytes`` (12 bytes for IPv4, 36 for IPv6): the layout an IPv4 header
    without options and the TCP header after it have on the wire, so the plain Ethernet/IPv4/TCP path
    takes it as one slice. One hashable object per segment, instead of two addresses and two ports.
    The frame number and the acknowledgment number are left out; the other fields are as in
    ``TcpSegment``.
    """

    key: bytes
    ts: float
    seq: int
    flags: int
    payload: memoryview | bytes
    missing: int


@dataclass
class CaptureStats:
    """Counters of one pass over a capture file.

    ``frames`` = ``tcp_segments`` + ``non_tcp``; the ``non_tcp`` frames are broken down further into
    ``ip_fragments`` (not reassembled), ``unsupported_link`` (link type not understood) and ``short_frames``
    (headers cut or malformed). ``bytes`` counts capture bytes walked (uncompressed for gzip input).
    """

    frames: int = 0
    tcp_segments: int = 0
    non_tcp: int = 0
    truncated_frames: int = 0
    bytes: int = 0
    link_types: set[str] = field(default_factory=set)
    snaplen: int = 0
    ip_fragments: int = 0
    unsupported_link: int = 0
    short_frames: int = 0
    format: str = ""
