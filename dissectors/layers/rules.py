# SPDX-License-Identifier: GPL-2.0-or-later
"""Size rules of the wire that are arithmetic rather than layout, declared once for the layers and the fast
parsers (no Scapy here, so the parsers' import path stays free of it)."""

from __future__ import annotations

#: ``MULTIFD_PACKET_SIZE``: bytes of guest RAM one multifd packet can describe.
MULTIFD_PACKET_BYTES = 512 * 1024


def multifd_page_count(page_size: int) -> int:
    """Page offsets a multifd RAM packet header declares (``multifd_ram_page_count()``)."""
    return MULTIFD_PACKET_BYTES // page_size


def compress_bound(size: int) -> int:
    """zlib's ``compressBound``: the receiver rejects larger COMPRESS_PAGE lengths."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13
