"""Shared helpers for the channel parser tests: feed whole, feed byte by byte, compare records."""

from __future__ import annotations

from typing import Any

from dissectors.channels import Record
from dissectors.channels.ram_walk import expand_zero_run


def per_page(recs: list[Record]) -> list[Record]:
    """Zero-page runs (one record standing for n pages, made from the bytes at hand) as their pages: what
    the records are, whatever the chunking."""
    return [one for r in recs for one in expand_zero_run(r)]


def key(recs: list[Record]) -> list[tuple[str, int, int, Any]]:
    """Records without their capture times (those depend on how the bytes were fed), runs as pages."""
    return [(r.kind, r.offset, r.length, r.fields) for r in per_page(recs)]


def whole(parser: Any, data: bytes) -> list[Record]:
    return per_page(parser.feed(data, 1.0) + parser.eof(2.0))


def bytewise(parser: Any, data: bytes) -> list[Record]:
    out: list[Record] = []
    for i in range(len(data)):
        out += parser.feed(data[i:i + 1], float(i))
    return per_page(out + parser.eof(0.0))


def kinds(recs: list[Record]) -> list[str]:
    return [r.kind for r in recs]
