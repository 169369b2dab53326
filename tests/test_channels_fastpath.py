# SPDX-License-Identifier: GPL-2.0-or-later
"""The parsers' skip fast path (``StreamParser.feed`` when a chunk lies inside a skipped payload).

It relies on an invariant of the engine: while bytes are left to skip, nothing is buffered and the
parser is not opaque. Checked here after every call, on chunkings that put record boundaries everywhere,
with gaps; and the records must be those of the same stream fed whole.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from dissectors.channels import MainParser, MultifdParser, Record
from dissectors.channels.ram_walk import expand_zero_run
from dissectors.layers.synth import multifd_stream, precopy_stream


def _key(recs: list[Record]) -> list[tuple[str, int, int, Any]]:
    return [(r.kind, r.offset, r.length, r.fields) for rec in recs for r in expand_zero_run(rec)]


def _check(parser: Any) -> None:
    if parser._skip:
        assert not parser._buf and parser._opaque_from is None


def _chunked(parser: Any, data: bytes, sizes: list[int], view: bool) -> list[Record]:
    out: list[Record] = []
    pos = 0
    mv = memoryview(data)
    for size in sizes:
        piece = mv[pos:pos + size] if view else data[pos:pos + size]
        out += parser.feed(piece, 1.0)
        _check(parser)
        pos += size
        if pos >= len(data):
            break
    out += parser.feed(data[pos:], 1.0)
    return out + parser.eof(2.0)


STREAMS = {
    "main": (MainParser, lambda: precopy_stream(pages=40, zero_pages=5)),
    "multifd": (MultifdParser, lambda: multifd_stream(packets=6, pages_per_packet=16)),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("seed", range(6))
def test_any_chunking_keeps_the_invariant_and_the_records(name: str, seed: int) -> None:
    factory, build = STREAMS[name]
    data = build()
    whole = factory()
    expected = _key(whole.feed(data, 1.0) + whole.eof(2.0))
    rng = random.Random(seed)
    sizes = [rng.choice((1, 7, 64, 1448, 4096, 9000)) for _ in range(len(data))]
    parser = factory()
    assert _key(_chunked(parser, data, sizes, view=bool(seed & 1))) == expected
    assert parser.offset == len(data)


@pytest.mark.parametrize("seed", range(4))
def test_gaps_keep_the_invariant(seed: int) -> None:
    data = multifd_stream(packets=8, pages_per_packet=16)
    rng = random.Random(seed)
    parser = MultifdParser()
    pos = 0
    while pos < len(data):
        size = min(rng.choice((100, 1448, 5000)), len(data) - pos)
        if rng.random() < 0.05:
            parser.gap(size, 1.0)
        else:
            parser.feed(data[pos:pos + size], 1.0)
        _check(parser)
        pos += size
    parser.eof(2.0)
    assert parser.offset == pos
