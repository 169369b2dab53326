# SPDX-License-Identifier: GPL-2.0-or-later
"""The parsers' skip fast path (``StreamParser.feed`` when a chunk lies inside a skipped payload).

It relies on an invariant of the engine: while bytes are left to skip, nothing is buffered and the
parser is not opaque. Checked here after every call, on chunkings that put record boundaries everywhere,
with gaps; and the records must be those of the same stream fed whole.
"""

from __future__ import annotations

import itertools
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


# -- the zero-run fast path (``RamWalker.feed``) --------------------------------------------------------

@pytest.fixture(params=["compiled", "python"])
def run_take(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each zero-run test runs with the compiled ``_ramrun.run_take`` and with ``run_take_py``."""
    from dissectors.channels import ram_walk

    if request.param == "compiled":
        if ram_walk._ramrun is None:
            pytest.skip("dissectors.channels._ramrun not built")
        monkeypatch.setattr(ram_walk, "run_take", ram_walk._ramrun.run_take)
    else:
        monkeypatch.setattr(ram_walk, "run_take", ram_walk.run_take_py)
    return str(request.param)


def _zero_run_stream(rng: random.Random) -> bytes:
    """A main stream whose RAM part mixes zero-page runs of many lengths (some with a non-zero fill byte,
    some naming a block again) with normal pages, EOS and flushes, then a device section and EOF."""
    from dissectors.layers.ram import RAM_SAVE_FLAG_CONTINUE, RAM_SAVE_FLAG_MULTIFD_FLUSH, RAM_SAVE_FLAG_ZERO
    from dissectors.layers.synth import ram_eos, ram_pages, ram_word
    from tests import synth as S

    out = bytearray(S.header() + S.ram_start())
    out += bytes([0x02]) + (2).to_bytes(4, "big")                    # SECTION_PART of the RAM section
    out += ram_pages(b"pc.ram", [0], zero=True)                        # names the block
    addr = 4096
    for _ in range(40):
        roll = rng.random()
        if roll < 0.6:
            n = rng.choice((1, 2, 3, 160, 161, 500, 5000))
            out += ram_pages(b"pc.ram", range(addr, addr + n * 4096, 4096), zero=True, first_named=rng.random() < 0.2)
            if rng.random() < 0.2:                                     # a fill byte other than 0
                out += ram_word(addr, RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE) + b"\x07"
            addr += n * 4096
        elif roll < 0.85:
            n = rng.choice((1, 2, 5))
            out += ram_pages(b"pc.ram", range(addr, addr + n * 4096, 4096), first_named=False)
            addr += n * 4096
        elif roll < 0.95:
            out += ram_word(0, RAM_SAVE_FLAG_MULTIFD_FLUSH)
        else:
            out += ram_eos() + bytes([0x7E]) + (2).to_bytes(4, "big") + bytes([0x02]) + (2).to_bytes(4, "big")
    out += ram_eos() + bytes([0x7E]) + (2).to_bytes(4, "big") + S.eof()
    return bytes(out)


def _full(recs: list[Record]) -> list[tuple[Any, ...]]:
    return [(r.kind, r.offset, r.length, r.ts, r.fields, r.raw) for r in recs]


@pytest.mark.parametrize("seed", range(8))
def test_zero_run_fast_path_gives_the_walks_records(seed: int, run_take: str) -> None:
    """Fed in TCP-sized chunks (each with its own time), with and without the fast path: the same records
    (runs, offsets, times, fields, raw bytes), counts and held bytes after every chunk."""
    from dissectors.channels.engine import StreamParser

    rng = random.Random(seed)
    data = _zero_run_stream(rng)
    fast, slow = MainParser(), MainParser()
    pos = i = 0
    taken = 0
    while pos < len(data):
        size = rng.choice((1448, 1448, 1448, 1, 8, 9, 17, 100, 4096, 4097, 9000))
        piece: Any = memoryview(data)[pos:pos + size] if i & 1 else data[pos:pos + size]
        got = fast.feed(piece, float(i))
        taken += any(r.fields.get("pages") for r in got)
        assert _full(got) == _full(StreamParser.feed(slow, piece, float(i)))
        assert bytes(fast._buf) == bytes(slow._buf) and fast.counts == slow.counts and fast.offset == slow.offset
        pos += size
        i += 1
    assert _full(fast.eof(1e6)) == _full(slow.eof(1e6))
    assert fast.counts == slow.counts and not any(k == "malformed" for k in fast.counts)
    assert taken


def test_zero_run_fast_path_is_taken_on_mss_segments(run_take: str) -> None:
    """A long run in 1448-byte chunks: after the first chunk every chunk is one run record from the fast
    path (no state call), and the pages add up."""
    from dissectors.layers.synth import ram_pages
    from tests import synth as S

    head = S.header() + S.ram_start() + bytes([0x02]) + (2).to_bytes(4, "big")
    data = head + ram_pages(b"pc.ram", range(0, 20000 * 4096, 4096), zero=True)
    parser = MainParser()
    calls = 0
    walk = parser._st_ram

    def counting(mv: memoryview, pos: int, end: int) -> int | None:
        nonlocal calls
        calls += 1
        return walk(mv, pos, end)

    records: list[Record] = []
    for i, pos in enumerate(range(0, len(data), 1448)):
        if parser._state == parser._st_ram:
            parser._state = counting  # type: ignore[assignment]
            parser._st_ram = counting  # type: ignore[method-assign]
        records += parser.feed(data[pos:pos + 1448], float(i))
    zero = [r for r in records if r.kind == "ram.zero"]
    assert sum(r.fields.get("pages", 1) for r in zero) == 20000 == parser.counts["ram.zero"]
    assert calls < 5


def _followers() -> dict[str, bytes]:
    from dissectors.layers.ram import (
        RAM_SAVE_FLAG_CONTINUE,
        RAM_SAVE_FLAG_MULTIFD_FLUSH,
        RAM_SAVE_FLAG_PAGE,
        RAM_SAVE_FLAG_ZERO,
    )
    from dissectors.layers.synth import ram_eos, ram_pages, ram_word

    return {
        "page": ram_pages(b"pc.ram", [1 << 30], first_named=False),
        "named zero": ram_pages(b"pc.bios", [0, 4096], zero=True),
        "zero, fill 7": ram_word(1 << 30, RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE) + b"\x07",
        "flush": ram_word(0, RAM_SAVE_FLAG_MULTIFD_FLUSH),
        "eos": ram_eos() + bytes([0x7E]) + (2).to_bytes(4, "big"),
        "page flag in the word's 2nd byte": ram_word(1 << 30, RAM_SAVE_FLAG_PAGE << 8 | RAM_SAVE_FLAG_CONTINUE),
        "bad flags": ram_word(1 << 30, 0x800 | RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE) + b"\0",
    }


@pytest.mark.parametrize("follower", sorted(_followers()))
def test_zero_run_fast_path_at_every_cut_around_a_run_end(follower: str, run_take: str) -> None:
    """A run followed by another record, fed in 1448-byte chunks with a chunk boundary at every offset from
    30 bytes before the run's end to 30 after: the fast path and the walk give the same records."""
    from dissectors.channels.engine import StreamParser
    from dissectors.layers.synth import ram_pages
    from tests import synth as S

    head = S.header() + S.ram_start() + bytes([0x02]) + (2).to_bytes(4, "big")
    run = ram_pages(b"pc.ram", range(0, 400 * 4096, 4096), zero=True)
    data = head + run + _followers()[follower] + ram_pages(b"pc.ram", range(0, 300 * 4096, 4096), zero=True,
                                                          first_named=False) + S.eof()
    run_end = len(head) + len(run)
    for cut in range(run_end - 30, run_end + 31):
        fast, slow = MainParser(), MainParser()
        first = cut % 1448 or 1448
        bounds = [0, *range(first, len(data), 1448), len(data)]
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            assert _full(fast.feed(data[a:b], float(i))) == _full(StreamParser.feed(slow, data[a:b], float(i)))
            assert bytes(fast._buf) == bytes(slow._buf) and fast.counts == slow.counts
        assert _full(fast.eof(1e6)) == _full(slow.eof(1e6)), cut


def test_run_take_compiled_equals_python_on_random_inputs() -> None:
    """``_ramrun.run_take`` and ``run_take_py`` agree on random bytes, layouts and lengths (runs made likely
    by drawing most bytes from the wanted values), and the helper refuses a layout it cannot read."""
    from dissectors.channels import ram_walk

    if ram_walk._ramrun is None:
        pytest.skip("dissectors.channels._ramrun not built")
    compiled = ram_walk._ramrun.run_take
    rng = random.Random(7)
    agreed = runs = 0
    for _ in range(3000):
        rs = rng.choice((2, 3, 9, 9, 9, 17))
        ws = rng.randint(1, rs)
        triples = [(rng.randrange(ws), rng.choice((0xFF, 0x0F, 0x01, 0x00)), 0) for _ in range(rng.randint(0, 3))]
        triples = [(p, m, rng.randrange(256) & m) for p, m, _ in triples]
        checks = bytes(b for t in triples for b in t)
        want = {p: (m, w) for p, m, w in triples}

        def byte(i: int, rs: int = rs, want: dict[int, tuple[int, int]] = want) -> int:
            mw = want.get(i % rs)
            if mw is not None and rng.random() < 0.995:
                return mw[1] | (rng.randrange(256) & ~mw[0] & 0xFF)
            return rng.randrange(256)

        total = rng.randint(0, 200)
        joined = bytes(byte(i) for i in range(total))
        cut = rng.randint(0, min(total, rs + 2))
        held, data = bytearray(joined[:cut]), memoryview(joined[cut:])
        expected = ram_walk.run_take_py(held, data, rs, ws, checks)
        assert compiled(held, data, rs, ws, checks) == expected
        agreed += 1
        runs += expected is not None
    assert agreed == 3000 and runs > 300
    for bad in ((9, 0, b""), (9, 10, b""), (0, 0, b""), (9, 8, b"\x08\xff\x00"), (9, 8, b"\x00\xff")):
        with pytest.raises(ValueError):
            compiled(b"", bytes(18), *bad)
