"""TCP header flag bits and 32-bit sequence-number arithmetic."""

from __future__ import annotations

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10

#: Any of these flags sends a segment down the tracker's slow path.
CONTROL = FIN | SYN | RST

SEQ_MASK = 0xFFFFFFFF
_HALF = 1 << 31


def seq_delta(seq: int, ref: int) -> int:
    """Signed distance from ``ref`` to ``seq`` in 32-bit sequence space, in ``[-2**31, 2**31)``."""
    return ((seq - ref + _HALF) & SEQ_MASK) - _HALF


def unwrap(seq: int, base: int, near: int) -> int:
    """Absolute stream offset of ``seq`` (offset 0 is sequence number ``base``), chosen closest to ``near``.

    ``near`` is an absolute offset already known (the contiguous front), so the result is right across
    any number of 32-bit wraps as long as the segment lies within 2 GiB of it.
    """
    return near + seq_delta(seq, (base + near) & SEQ_MASK)
