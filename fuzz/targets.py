"""Fuzz targets: one per entry point a capture's bytes reach. Each takes ``bytes`` and raises only on a bug.

Used by ``fuzz/run.py`` (atheris, coverage-guided) and by ``tests/test_fuzz_regressions.py`` (every kept
crash input and seed replayed without atheris). What counts as a bug: any exception other than the
documented ``InputError`` from the capture reader / pipeline, a parser whose records depend on how its
bytes were chunked, a stream offset that disagrees with the bytes fed, and records or time growing faster
than the input (checked by :data:`RECORDS_PER_BYTE`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from dissectors.analysis.engine import Analyzer
from dissectors.capture import open_capture
from dissectors.channels import MainParser, MultifdParser, PreemptParser, Record, ReturnPathParser, TlsParser
from dissectors.channels.engine import StreamParser
from dissectors.channels.ram_walk import expand_zero_run
from dissectors.cli.pipeline import reassemble
from dissectors.errors import InputError
from dissectors.tcp import TcpTracker
from dissectors.vmstate import DescriptionError, decode_device, parse_description
from dissectors.vmstate.decode import Budget

#: At most this many records per input byte from a parser (a record per byte of garbage is the bug that
#: issue 14 found; real streams give far fewer than one per byte).
RECORDS_PER_BYTE = 0.5

def _main_keeping_device_state() -> MainParser:
    p = MainParser()
    p.keep_device_state()
    return p


PARSERS: dict[str, Callable[[], StreamParser]] = {
    "main": MainParser,
    "main-devstate": _main_keeping_device_state,
    "multifd": MultifdParser,
    "preempt": PreemptParser,
    "return-path": ReturnPathParser,
    "tls": TlsParser,
}


def _key(recs: list[Record]) -> list[tuple[Any, ...]]:
    return [(r.kind, r.offset, r.length, repr(r.fields)) for rec in recs for r in expand_zero_run(rec)]


def _parse(make: Callable[[], StreamParser], data: bytes, cuts: list[int]) -> tuple[list[Record], int]:
    p = make()
    out: list[Record] = []
    pos = 0
    for c in [*cuts, len(data)]:
        if c > pos:
            out += p.feed(memoryview(data)[pos:c], 1.0)
            pos = c
    out += p.eof(2.0)
    return out, p.offset


def parser_target(name: str) -> Callable[[bytes], None]:
    make = PARSERS[name]

    def target(data: bytes) -> None:
        # The first byte picks a chunking; the rest is the stream, parsed whole and chunked.
        step = (data[0] % 61) + 1 if data else 1
        body = data[1:]
        whole, off = _parse(make, body, [])
        assert off == len(body), f"offset {off} after feeding {len(body)} bytes"
        chunked, _ = _parse(make, body, list(range(step, len(body), step)))
        assert _key(whole) == _key(chunked), "records depend on the chunking"
        limit = 8 + RECORDS_PER_BYTE * len(body)
        assert len(whole) <= limit, f"{len(whole)} records from {len(body)} bytes"

    target.__name__ = f"parser_{name}"
    return target


def _segments(data: bytes) -> list[tuple[bytes, float, int, int, bytes, int]]:
    """Keyed segments decoded from fuzz bytes: per segment a control byte (direction, flags), a sequence
    delta and a payload length, then the payload."""
    keys = (b"\x0a\0\0\x01\x0a\0\0\x02\x9c\x40\x11\x5c", b"\x0a\0\0\x02\x0a\0\0\x01\x11\x5c\x9c\x40")
    seq = [1000, 5000]
    out = []
    i, ts = 0, 1.0
    while i + 4 <= len(data):
        ctl, delta, n = data[i], int.from_bytes(data[i + 1:i + 3], "big", signed=True), data[i + 3] % 64
        i += 4
        d = ctl & 1
        flags = (ctl >> 1) & 0x1F              # FIN SYN RST PSH ACK
        payload = data[i:i + n]
        i += n
        seq[d] = (seq[d] + delta) & 0xFFFFFFFF
        out.append((keys[d], ts, seq[d], flags | 0x10, payload, (ctl >> 6) * 7))
        seq[d] = (seq[d] + len(payload) + (1 if flags & 0x03 else 0)) & 0xFFFFFFFF
        ts += 0.001
    return out


class _Checking:
    """A TCP sink that checks the tracker's promises: offsets contiguous per direction, nothing after end."""

    def __init__(self) -> None:
        self.front = [0, 0]
        self.ended = [False, False]

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
        assert not self.ended[direction], "data after end"
        assert offset == self.front[direction], f"data at {offset}, front {self.front[direction]}"
        self.front[direction] = offset + len(data)
        return 0

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        assert not self.ended[direction], "gap after end"
        assert offset == self.front[direction] and length > 0
        self.front[direction] = offset + length

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        assert not self.ended[direction], "two ends"
        assert offset == self.front[direction]
        self.ended[direction] = True


def tcp_target(data: bytes) -> None:
    sinks: list[_Checking] = []

    def factory(conn: Any) -> _Checking:
        sinks.append(_Checking())
        return sinks[-1]

    t = TcpTracker(factory, ooo_limit=4096)
    t.feed_keyed(_segments(data))
    t.finish()
    for conn, sink in zip(t.connections, sinks, strict=True):
        assert sink.ended == [True, True]
        assert tuple(sink.front) == conn.bytes


def _with_file(data: bytes, fn: Callable[[str], None]) -> None:
    fd, path = tempfile.mkstemp(suffix=".pcap", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        os.write(fd, data)
        os.close(fd)
        fn(path)
    finally:
        os.unlink(path)


def reader_target(data: bytes) -> None:
    def run(path: str) -> None:
        try:
            with open_capture(path) as cap:
                for _ in cap.tcp_segments():
                    pass
        except InputError:
            pass

    _with_file(data, run)


def pipeline_target(data: bytes) -> None:
    def run(path: str) -> None:
        analyzer = Analyzer()
        try:
            with open_capture(path) as cap:
                _, capture = reassemble(cap, path, analyzer.sink_for)
        except InputError:
            return
        report = analyzer.finish(capture).report
        assert report["findings"] >= 0

    _with_file(data, run)


def vmstate_target(data: bytes) -> None:
    """A VMDESCRIPTION's JSON, a zero byte, then a device body: every described device decoded from that
    body. Bad JSON is a DescriptionError; a body that does not fit is a problem, never an exception."""
    text, _, body = data.partition(b"\0")
    try:
        desc = parse_description(text)
    except DescriptionError:
        return
    budget = Budget()
    for dev in list(desc.devices.values())[:64]:
        got = decode_device(body, dev, budget)
        assert 0 <= got.consumed <= len(body)
        assert got.consumed == len(body) or got.problems, "undecoded bytes without a problem"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "reader": reader_target,
    "tcp": tcp_target,
    **{f"parser-{name}": parser_target(name) for name in PARSERS},
    "pipeline": pipeline_target,
    "vmstate": vmstate_target,
}
