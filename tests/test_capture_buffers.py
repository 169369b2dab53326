"""Reused read buffers (``capture/buffers.py``, ``source.StreamSource``): a gzip or piped capture is read into a
few buffers that are used again, and nothing that outlives a window may see its bytes change.

The capture below makes the TCP room keep views across many windows: a connection's retransmission tail (the
delivered segments, kept by reference, compared with a retransmission that comes ~1 MB later), a gather
window spanning several windows, and an out-of-order segment held across them. Read with windows of 64 KiB
from a gzip file and through a FIFO (plain and gzip'd, written in pieces of odd sizes), by the compiled
scanner and by the pure-Python reader, every delivered byte must be the one sent and the retransmission must
compare equal; and the buffers must really have been reused. With the buffers' "still referenced" check
turned off, the same reads must go wrong (the test would see a reused buffer leak into kept data).
"""

from __future__ import annotations

import gzip
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import dissectors.capture.buffers as buffers_module
import dissectors.capture.source as source_module
from dissectors.capture import open_capture
from dissectors.capture.buffers import BufferPool, exported
from dissectors.capture.scanner import compiled_scanner
from dissectors.capture.writer import PcapWriter, tcp_frame
from dissectors.cli.pipeline import reassemble
from dissectors.tcp import Connection

CHUNK = 64 << 10
A_SEG, A_COUNT = 1000, 40          # the watched connection: 40 segments of 1000 bytes
B_SEG = 1400                       # the bulk connection that fills the windows between them
GATHER_AT, GATHER = 33 * A_SEG, 5000   # after A's byte 33000, its sink asks for the next 5000 as a whole


class Capture:
    """The capture's bytes and what each connection sent."""

    def __init__(self) -> None:
        rng = random.Random(20261202)
        self.a = rng.randbytes(A_SEG * A_COUNT)
        self.b = bytearray()
        self.frames: list[tuple[float, bytes]] = []
        self._rng = rng

    def frame(self, frame: bytes) -> None:
        self.frames.append((1.0 + len(self.frames) / 1000, frame))

    def a_seg(self, i: int) -> None:
        self.frame(tcp_frame("10.0.0.1", "10.0.0.2", 40000, 4444, 1001 + i * A_SEG, 5001, "PA",
                             self.a[i * A_SEG:(i + 1) * A_SEG]))

    def bulk(self, count: int) -> None:
        for _ in range(count):
            data = self._rng.randbytes(B_SEG)
            self.frame(tcp_frame("10.0.0.3", "10.0.0.2", 40001, 4444, 7001 + len(self.b), 9001, "PA", data))
            self.b += data


def build() -> Capture:
    cap = Capture()
    for cport, cip, isn in ((40000, "10.0.0.1", 1000), (40001, "10.0.0.3", 7000)):
        cap.frame(tcp_frame(cip, "10.0.0.2", cport, 4444, isn, 0, "S"))
        cap.frame(tcp_frame("10.0.0.2", cip, 4444, cport, isn + 2000, isn + 1, "SA"))
        cap.frame(tcp_frame(cip, "10.0.0.2", cport, 4444, isn + 1, isn + 2001, "A"))
    for i in range(30):                       # A in order, ~21 KB of B between its segments
        cap.a_seg(i)
        cap.bulk(15)
    cap.a_seg(31)                             # out of order: 31 waits (copied) across windows for 30
    cap.bulk(60)
    cap.a_seg(30)
    for i in range(32, A_COUNT):              # the gather window (33000-38000) spans several windows
        cap.a_seg(i)
        cap.bulk(10)
    cap.bulk(700)                             # ~1 MB: B's early windows leave its tail and are reused
    cap.a_seg(A_COUNT - 1)                    # retransmissions: compared with A's tail, kept by reference
    cap.a_seg(A_COUNT - 2)
    cap.frame(tcp_frame("10.0.0.1", "10.0.0.2", 40000, 4444, 1001 + A_SEG * A_COUNT, 5001, "FA"))
    cap.frame(tcp_frame("10.0.0.3", "10.0.0.2", 40001, 4444, 7001 + len(cap.b), 9001, "FA"))
    return cap


@pytest.fixture(scope="module")
def sent() -> Capture:
    return build()


@pytest.fixture(scope="module")
def files(sent: Capture, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("buffers")
    plain, packed = root / "kept.pcap", root / "kept.pcap.gz"
    with PcapWriter(plain) as w:
        for ts, frame in sent.frames:
            w.write(ts, frame)
    packed.write_bytes(gzip.compress(plain.read_bytes(), 6))
    return {"plain": plain, "gzip": packed}


class Keeper:
    """A sink keeping a copy of every delivered piece; A's asks for one gather window."""

    def __init__(self, conn: Connection) -> None:
        self.index = conn.index
        self.pieces: list[tuple[int, bytes]] = []
        self.gathered: list[tuple[int, int]] = []
        self._asked = False

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
        if direction:
            return 0
        self.pieces.append((offset, bytes(data)))
        if len(data) > A_SEG:
            self.gathered.append((offset, len(data)))
        if self.index == 0 and not self._asked and offset + len(data) == GATHER_AT:
            self._asked = True
            return -GATHER
        return 0

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        self.pieces.append((offset, b"<gap %d>" % length))

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        pass

    def stream(self) -> bytes:
        out = bytearray()
        for offset, piece in self.pieces:
            assert offset == len(out), "pieces not contiguous"
            out += piece
        return bytes(out)


def _feed_fifo(fifo: Path, data: bytes) -> threading.Thread:
    """Write ``data`` into ``fifo`` in pieces of odd sizes (a live stream's arrivals), from a thread."""
    def write() -> None:
        rng = random.Random(5)
        with open(fifo, "wb", buffering=0) as f:
            pos = 0
            while pos < len(data):
                step = rng.choice((1, 24, 700, 4096, 30_000, 90_000))
                f.write(data[pos:pos + step])
                pos += step
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _read(how: str, files: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    """The path to open for ``how`` (``gzip``, ``fifo``, ``fifo-gzip``, either FIFO ``-whole``), feeding a FIFO
    while it is read."""
    if how == "gzip":
        yield str(files["gzip"])
        return
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    thread = _feed_fifo(fifo, files["gzip" if how.startswith("fifo-gzip") else "plain"].read_bytes())
    yield str(fifo)
    thread.join(timeout=30)


def analyse(how: str, files: dict[str, Path], tmp_path: Path) -> tuple[dict[int, Keeper], list, tuple[int, int]]:
    """Each connection's sink, (retransmitted, conflicting, gap) bytes of each client side, and the buffers the
    read made and reused (the pool is the process's: counted from the read's start)."""
    sinks: dict[int, Keeper] = {}

    def factory(conn: Connection) -> Keeper:
        sinks[conn.index] = Keeper(conn)
        return sinks[conn.index]

    for path in _read(how, files, tmp_path):
        with open_capture(path) as cap:
            if how.endswith("-whole"):            # as ``analyze -`` reads a pipe: whole windows
                assert cap.live is not None
                cap.live.prompt = False
            pool = cap.source.pool  # type: ignore[union-attr]
            made, reused = pool.made, pool.reused
            tracker, summary = reassemble(cap, path, factory)
            made, reused = pool.made - made, pool.reused - reused
            assert not summary["warnings"]
            halves = [(c.halves[0].retransmitted_bytes, c.halves[0].overlap_conflicts, c.halves[0].gap_bytes)
                      for c in tracker.connections]
    return sinks, halves, (made, reused)


MODES = ["compiled", "pure"] if compiled_scanner() is not None else ["pure"]


@pytest.fixture(params=MODES)
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pure":
        monkeypatch.setenv("MIGSHARK_PURE_PYTHON", "1")
    else:
        monkeypatch.delenv("MIGSHARK_PURE_PYTHON", raising=False)
    monkeypatch.setattr(source_module, "STREAM_CHUNK", CHUNK)
    return str(request.param)


@pytest.mark.parametrize("how", ["gzip", "fifo", "fifo-gzip", "fifo-whole", "fifo-gzip-whole"])
def test_kept_views_never_see_a_reused_buffer(how: str, reader: str, sent: Capture, files: dict[str, Path],
                                              tmp_path: Path) -> None:
    sinks, halves, (made, reused) = analyse(how, files, tmp_path)
    assert sinks[0].stream() == sent.a and sinks[1].stream() == sent.b
    assert sinks[0].gathered == [(GATHER_AT, GATHER)]  # the window, whole, with the segment ending at its end
    assert halves[0] == (2 * A_SEG, 0, 0)                      # retransmissions compared equal with the tail
    assert halves[1] == (0, 0, 0)
    if how == "gzip" or how.endswith("-whole"):                 # windows filled whole: not up to arrivals
        windows = files["plain"].stat().st_size // CHUNK       # 29; A's tail pins the ones holding its segments
        assert reused >= 5 and made < windows                   # so buffers were reused, and not while kept


def test_the_check_is_what_keeps_them_apart(reader: str, files: dict[str, Path], sent: Capture, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Reusing a buffer while views of it are alive (the check off) corrupts what the TCP room kept: the
    retransmission no longer compares equal, or the gathered or held bytes are not those sent."""
    monkeypatch.setattr(buffers_module, "exported", lambda buf: False)
    sinks, halves, _ = analyse("gzip", files, tmp_path)
    assert halves[0][1] > 0 or sinks[0].stream() != sent.a


@pytest.mark.parametrize("how", ["gzip", "fifo", "fifo-gzip", "fifo-whole", "fifo-gzip-whole"])
def test_small_windows_read_what_the_file_holds(how: str, reader: str, files: dict[str, Path],
                                                tmp_path: Path) -> None:
    """Every segment, payload and counter, read in 64 KiB windows, is what the plain file gives (mapped)."""
    def segments(path: str) -> tuple[list, object]:
        with open_capture(path) as cap:
            if cap.live is not None and how.endswith("-whole"):
                cap.live.prompt = False
            segs = [(k, ts, seq, fl, bytes(p), miss) for b in cap.keyed_batches() for k, ts, seq, fl, p, miss in b]
            return segs, cap.stats

    want = segments(str(files["plain"]))
    for path in _read(how, files, tmp_path):
        assert segments(path) == want


def test_a_buffer_with_a_live_view_or_a_pin_is_not_handed_out() -> None:
    pool = BufferPool(4096, keep=2)
    first, pin = pool.take(4096)
    view = pin[10:20].toreadonly()
    pin.release()                                           # done filling: only the view is left
    assert exported(first)
    second, pin2 = pool.take(4096)
    assert second is not first and pool.made == 2
    del view
    assert not exported(first) and exported(second)         # second is pinned: being filled
    third, pin3 = pool.take(4096)
    assert third is first and pool.reused == 1
    big, pin4 = pool.take(10_000)                           # a record larger than a chunk: its own buffer
    assert len(big) >= 10_000 and big is not first and big is not second and pool.made == 3
    for p in (pin2, pin3, pin4):
        p.release()
    assert pool.take(4096)[0] in (first, second) and pool.reused == 2


def test_the_pool_is_shared_by_the_reads_of_a_process(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A second capture read after the first takes the buffers the first left (check and fleet workers)."""
    monkeypatch.setattr(source_module, "STREAM_CHUNK", CHUNK)
    for _ in range(2):
        with open_capture(files["gzip"]) as cap:
            pool = cap.source.pool  # type: ignore[union-attr]
            made = pool.made
            for _ in cap.keyed_batches():
                pass
    assert pool.made == made                                # the second read made none


# ---- the inflater: zlib-ng where installed (a dependency), the standard library's zlib otherwise -------------

def _damaged(files: dict[str, Path], root: Path) -> dict[str, Path]:
    """The gzip'd capture whole, cut, with a flipped byte, as two members, and with garbage after it."""
    raw, packed = files["plain"].read_bytes(), files["gzip"].read_bytes()
    half, third = len(raw) // 2, len(packed) // 3
    forms = {"whole": packed, "cut": packed[:len(packed) // 2],
             "flipped": packed[:third] + bytes([packed[third] ^ 0x55]) + packed[third + 1:],
             "members": gzip.compress(raw[:half]) + gzip.compress(raw[half:]),
             "trailing": packed + b"not a gzip member"}
    out = {}
    for name, data in forms.items():
        out[name] = root / f"{name}.pcap.gz"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize("form", ["whole", "cut", "flipped", "members", "trailing"])
def test_zlib_ng_and_zlib_read_alike(form: str, sent: Capture, files: dict[str, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import zlib

    from zlib_ng import zlib_ng

    import dissectors.capture.gunzip as gunzip

    monkeypatch.setattr(source_module, "STREAM_CHUNK", CHUNK)
    path = _damaged(files, tmp_path)[form]
    results = []
    for module in (zlib_ng, zlib):
        monkeypatch.setattr(gunzip, "_backend", module)
        with open_capture(path) as cap:
            segs = [(k, ts, seq, fl, bytes(p), miss) for b in cap.keyed_batches() for k, ts, seq, fl, p, miss in b]
            results.append((segs, cap.stats, cap.warnings, cap.stopped))
    assert results[0] == results[1]
    segs, stats, warnings, stopped = results[0]
    if form in ("whole", "members"):
        assert not warnings and stats.frames == len(sent.frames)
    elif form == "trailing":            # bytes after the stream that are not a member: ignored, as by gzip -d
        assert len(warnings) == 1 and "trailing garbage ignored" in warnings[0] and stopped is None
        assert stats.frames == len(sent.frames)
    else:                               # the frames before the damage, then the gzip problem said
        assert "gzip" in warnings[-1] and warnings[-1].endswith("stopped reading")
        # a cut loses the frames after it; the flipped byte changes a literal, which zlib finds only at the
        # trailer's CRC, after every frame (handed over whole: the last piece inflated is no longer lost)
        assert 0 < stats.frames <= len(sent.frames) and (stats.frames < len(sent.frames)) == (form == "cut")
        if form == "flipped":
            assert warnings[-1].endswith(": incorrect data check; stopped reading")


def test_zlib_ng_inflates_where_installed() -> None:
    from dissectors.capture.gunzip import backend

    assert backend().__name__ == "zlib_ng.zlib_ng"      # a dependency (pyproject.toml): installed with migshark


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
def test_gunzip_never_waits_for_input_while_holding_output(inflater: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read as a live stream gives it (a few bytes at a time), the inflater hands over every byte the input so
    far makes before it asks for more: zlib keeps the tail of a match when a piece fills up, which would
    otherwise wait for the next arrival (a watcher's alert with it)."""
    import zlib

    from zlib_ng import zlib_ng

    import dissectors.capture.gunzip as gunzip

    module = zlib if inflater == "zlib" else zlib_ng
    monkeypatch.setattr(gunzip, "_backend", module)
    rng = random.Random(3)
    data = b"".join(rng.choice((bytes(rng.randrange(1, 3000)), rng.randbytes(rng.randrange(1, 300))))
                    for _ in range(400))
    packed = gzip.compress(data)

    class Arrivals:
        """Raw reads of 1-7 bytes; each checks that the inflater holds no output of what it was given."""

        def __init__(self) -> None:
            self.pos = 0
            self.reads = 0

        def read(self, count: int = -1) -> bytes:
            if self.pos and not stream._inflate.eof:
                assert stream._inflate.copy().decompress(b"") == b"", f"output held back at byte {self.pos}"
            step = 1 + self.reads % 7
            self.reads += 1
            piece = packed[self.pos:self.pos + min(step, count)]
            self.pos += len(piece)
            return piece

        def close(self) -> None:
            pass

    stream = gunzip.GunzipStream(Arrivals())
    out = bytearray()
    window = memoryview(bytearray(200))                     # as near a buffer's end: pieces fill up
    while True:
        got = stream.readinto(window, partial=True)
        if not got:
            break
        out += window[:got]
    assert bytes(out) == data and stream.problem is None
