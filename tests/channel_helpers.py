"""Shared helpers for the channel parser tests: feed whole, feed byte by byte, compare records."""

from __future__ import annotations

from typing import Any

from dissectors.channels import Record


def key(recs: list[Record]) -> list[tuple[str, int, int, Any]]:
    """Records without their capture times (those depend on how the bytes were fed)."""
    return [(r.kind, r.offset, r.length, r.fields) for r in recs]


def whole(parser: Any, data: bytes) -> list[Record]:
    return parser.feed(data, 1.0) + parser.eof(2.0)


def bytewise(parser: Any, data: bytes) -> list[Record]:
    out: list[Record] = []
    for i in range(len(data)):
        out += parser.feed(data[i:i + 1], float(i))
    return out + parser.eof(0.0)


def kinds(recs: list[Record]) -> list[str]:
    return [r.kind for r in recs]
