"""Property tests of the channel parsers: whatever the bytes (arbitrary, or valid streams bit-flipped,
cut, spliced), however they are chunked (1-byte chunks included), with gaps, skip windows and EOF
anywhere, no parser raises, every record lies inside the bytes taken in and its kind is declared; and a
valid stream gives the same records whatever its chunking."""

from __future__ import annotations

from typing import Any

import pytest
from drift_helpers import BOUNDS, PARSERS, VALID, mutated, records_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors.channels import Record
from dissectors.channels.kinds import KINDS
from dissectors.channels.ram_walk import expand_zero_run

# -- strategies -------------------------------------------------------------------------------------

@st.composite
def plans(draw: st.DrawFn, gaps: bool = True, skips: bool = True, eof: bool | None = None) -> dict[str, Any]:
    """How to feed a stream: chunk sizes (cycled; ``[1]`` is byte by byte), gaps inserted before some
    chunks, skip windows used or not, bytes or memoryviews, EOF or not."""
    sizes = draw(st.one_of(
        st.just([1]),
        st.just([1 << 30]),
        st.lists(st.one_of(st.integers(1, 16), st.integers(1, 5000)), min_size=1, max_size=6),
    ))
    holes = draw(st.dictionaries(st.integers(0, 60), st.one_of(st.integers(1, 64), st.integers(1, 1 << 20)),
                                 max_size=3)) if gaps else {}
    return {
        "sizes": sizes,
        "gaps": holes,
        "skip": draw(st.booleans()) if skips else False,
        "view": draw(st.booleans()),
        "eof": draw(st.booleans()) if eof is None else eof,
    }


def drive(parser: Any, data: bytes, plan: dict[str, Any]) -> tuple[list[Record], int]:
    """Feed ``data`` as ``plan`` says; return the records and the stream length taken in (bytes fed,
    skipped and lost in gaps)."""
    out: list[Record] = []
    sizes, holes = plan["sizes"], plan["gaps"]
    pos = i = total = 0
    ts = 0.0
    mv = memoryview(data)
    while pos < len(data) or i in holes:
        ts += 0.001
        if i in holes:
            out += parser.gap(holes[i], ts)
            total += holes[i]
        if pos >= len(data):
            break
        chunk = mv[pos:pos + sizes[i % len(sizes)]]
        pos += len(chunk)
        total += len(chunk)
        i += 1
        if plan["skip"]:
            k = min(parser.skip_ahead, len(chunk))
            if k:
                out += parser.skipped(k, ts)
                chunk = chunk[k:]
        if len(chunk):
            out += parser.feed(chunk if plan["view"] else bytes(chunk), ts)
    if plan["eof"]:
        out += parser.eof(ts + 1.0)
    return out, total


def check_records(parser: Any, records: list[Record], total: int) -> None:
    assert parser.offset == total
    for rec in records:
        assert isinstance(rec, Record)
        assert rec.kind in KINDS, f"undeclared record kind {rec.kind!r}"
        assert rec.offset >= 0 and rec.length >= 0, rec
        assert rec.offset + rec.length <= total, (rec, total)
        if rec.raw is not None:
            assert len(rec.raw) <= rec.length, rec
            rec.layer()          # what ``dissect -V`` shows: the layer must take the bytes the parser kept


@st.composite
def arbitrary(draw: st.DrawFn, name: str) -> bytes:
    """Random bytes, alone or after the start of a valid stream (to reach the parser's deeper states)."""
    tail = draw(st.binary(max_size=3000))
    if draw(st.booleans()):
        return tail
    original = draw(st.sampled_from(VALID[name]))
    cut = draw(st.sampled_from(BOUNDS[original]))
    return original[:cut] + tail


SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


# -- properties ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=120, deadline=None, suppress_health_check=SLOW_OK)
@given(st_data=st.data())
def test_arbitrary_bytes_never_raise(name: str, st_data: st.DataObject) -> None:
    data = st_data.draw(arbitrary(name))
    plan = st_data.draw(plans())
    parser = PARSERS[name]()
    records, total = drive(parser, data, plan)
    check_records(parser, records, total)


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=150, deadline=None, suppress_health_check=SLOW_OK)
@given(st_data=st.data())
def test_mutated_streams_never_raise(name: str, st_data: st.DataObject) -> None:
    data = st_data.draw(mutated(name))
    plan = st_data.draw(plans())
    parser = PARSERS[name]()
    records, total = drive(parser, data, plan)
    check_records(parser, records, total)


def _key(records: list[Record]) -> list[tuple[Any, ...]]:
    """Records, zero-page runs as their pages (a run is made from the bytes at hand)."""
    return [(r.kind, r.offset, r.length, r.fields, r.raw) for rec in records for r in expand_zero_run(rec)]


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=60, deadline=None, suppress_health_check=SLOW_OK)
@given(st_data=st.data())
def test_valid_streams_same_records_whatever_the_chunking(name: str, st_data: st.DataObject) -> None:
    data = st_data.draw(st.sampled_from(VALID[name]))
    plan = st_data.draw(plans(gaps=False))
    whole = PARSERS[name]()
    ref = whole.feed(data, 0.0) + (whole.eof(1.0) if plan["eof"] else [])
    assert not {"malformed", "truncated", "opaque", "gap"} & {r.kind for r in ref}
    parser = PARSERS[name]()
    records, total = drive(parser, data, plan)
    check_records(parser, records, total)
    assert _key(records) == _key(ref)


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=80, deadline=None, suppress_health_check=SLOW_OK)
@given(st_data=st.data())
def test_mutated_streams_same_records_whatever_the_chunking(name: str, st_data: st.DataObject) -> None:
    """Damaged streams too: what a parser reports must not depend on how TCP cut the bytes."""
    data = st_data.draw(mutated(name))
    plan = st_data.draw(plans(gaps=False))
    whole = PARSERS[name]()
    ref = whole.feed(data, 0.0) + (whole.eof(1.0) if plan["eof"] else [])
    parser = PARSERS[name]()
    records, total = drive(parser, data, plan)
    check_records(parser, records, total)
    assert _key(records) == _key(ref)


def test_valid_streams_are_valid() -> None:
    """The streams the properties start from parse cleanly (else the mutations start from noise)."""
    for name, streams in VALID.items():
        for data in streams:
            recs = records_of(PARSERS[name](), data)
            assert recs and not {"malformed", "truncated", "opaque", "gap"} & {r.kind for r in recs}, name
