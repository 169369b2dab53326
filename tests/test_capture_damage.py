"""Bad input: not a capture, empty, truncated, garbage in the middle, absurd lengths, fragments, gzip."""

from __future__ import annotations

import gzip
import json
import os
import struct
import threading
from pathlib import Path

import pytest
from capture_helpers import gzip_damaged_at, ipv4_fragment_frame, ipv6_fragment_frame, read_segments, zlib_most

from dissectors.capture import open_capture
from dissectors.capture.gunzip import GunzipStream
from dissectors.capture.source import open_source
from dissectors.capture.writer import PcapngWriter, PcapWriter, tcp_frame
from dissectors.cli.main import main
from dissectors.errors import InputError

CORPUS = Path(__file__).resolve().parent.parent / "captures"
STREAM_72 = Path(__file__).resolve().parent / "data" / "stream-exec-7.2.qevm.gz"   # a raw migration stream file


def frames(count: int) -> list[bytes]:
    return [tcp_frame("10.0.0.1", "10.0.0.2", 1, 4444, 1000 * i, payload=bytes([i]) * 1000) for i in range(count)]


def write_pcap(path: Path, items: list[bytes]) -> Path:
    with PcapWriter(path) as w:
        for i, frame in enumerate(items):
            w.write(float(i), frame)
    return path


def write_pcapng(path: Path, items: list[bytes]) -> Path:
    with PcapngWriter(path) as w:
        w.add_interface("ether")
        for i, frame in enumerate(items):
            w.write(float(i), frame)
    return path


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"Hello, this is not a capture\n" * 10)
    with pytest.raises(InputError) as err:
        open_capture(path)
    assert "not a pcap or pcapng file (magic 0x48656c6c)" in str(err.value)
    assert err.value.path == str(path) and err.value.offset == 0


def test_empty_and_tiny_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.pcap").write_bytes(b"")
    (tmp_path / "tiny.pcap").write_bytes(b"\xd4\xc3")
    for name in ("empty.pcap", "tiny.pcap", "absent.pcap"):
        with pytest.raises(InputError):
            open_capture(tmp_path / name)


def test_gzip_of_garbage_is_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"garbage" * 100))
    with pytest.raises(InputError, match="not a pcap or pcapng file"):
        open_capture(path)


@pytest.mark.parametrize("writer", [write_pcap, write_pcapng])
@pytest.mark.parametrize("cut", [1, 7, 16, 300])
def test_truncated_file_keeps_what_was_read(tmp_path: Path, writer, cut: int) -> None:  # noqa: ANN001
    path = writer(tmp_path / "t.cap", frames(5))
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    segments, stats, warnings = read_segments(path)
    assert [s.payload[:1] for s in segments] == [bytes([i]) for i in range(4)]
    assert len(warnings) == 1 and "truncated" in warnings[0] and str(path) in warnings[0]
    last_record_offset = len(data) - (len(data) - 24) // 5 if writer is write_pcap else None
    if last_record_offset is not None:
        assert f"offset {last_record_offset}:" in warnings[0]


@pytest.mark.parametrize("writer", [write_pcap, write_pcapng])
def test_garbage_in_the_middle_stops_with_offset(tmp_path: Path, writer) -> None:  # noqa: ANN001
    head = writer(tmp_path / "a.cap", frames(3)).read_bytes()
    tail = writer(tmp_path / "b.cap", frames(3)).read_bytes()
    path = tmp_path / "g.cap"
    skip = 24 if writer is write_pcap else 0
    garbage = b"\xff\xee\xdd\xcc" * 8
    path.write_bytes(head + garbage + tail[skip:])
    segments, _, warnings = read_segments(path)
    assert len(segments) == 3
    assert len(warnings) == 1 and f"offset {len(head)}:" in warnings[0]


def test_huge_claimed_record_is_never_allocated(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "h.pcap", frames(2))
    with open(path, "ab") as f:
        f.write(struct.pack("<IIII", 0, 0, 0x7FFFFFFF, 0x7FFFFFFF) + b"x" * 100)
    segments, _, warnings = read_segments(path)
    assert len(segments) == 2 and "64 MiB" in warnings[0]
    gz = tmp_path / "h.pcap.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    segments, _, warnings = read_segments(gz)
    assert len(segments) == 2 and "64 MiB" in warnings[0]


def test_huge_pcapng_block_length(tmp_path: Path) -> None:
    path = write_pcapng(tmp_path / "h.pcapng", frames(2))
    with open(path, "ab") as f:
        f.write(struct.pack("<II", 6, 0x7FFFFFF0) + bytes(64))
    segments, _, warnings = read_segments(path)
    assert len(segments) == 2 and "invalid block length" in warnings[0]


@pytest.mark.parametrize("writer", [write_pcap, write_pcapng])
def test_gzip_reads_like_plain(tmp_path: Path, writer) -> None:  # noqa: ANN001
    plain = writer(tmp_path / "p.cap", frames(50))
    packed = tmp_path / "anything.bin"  # detected by content, not by name
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    expected = read_segments(plain)
    got = read_segments(packed)
    assert got[0] == expected[0] and got[2] == []
    assert got[1].bytes == expected[1].bytes == plain.stat().st_size
    with open_capture(packed) as cap:
        assert cap.size == packed.stat().st_size
        for _ in cap.tcp_segments():
            pass
        assert 0 < cap.position <= cap.size


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    plain = write_pcap(tmp_path / "p.pcap", frames(50))
    packed = tmp_path / "p.pcap.gz"
    blob = gzip.compress(plain.read_bytes())
    packed.write_bytes(blob[: len(blob) // 2])
    segments, _, warnings = read_segments(packed)
    assert 0 < len(segments) < 50 and warnings and all(str(packed) in w for w in warnings)


def use_inflater(monkeypatch: pytest.MonkeyPatch, inflater: str) -> None:
    """Inflate with ``zlib`` or ``zlib-ng`` (``gunzip.backend``): both must recover alike."""
    import zlib

    from zlib_ng import zlib_ng

    import dissectors.capture.gunzip as gunzip

    monkeypatch.setattr(gunzip, "_backend", zlib if inflater == "zlib" else zlib_ng)


def damaged_at_start(blob: bytes, how: str) -> bytes:
    """A gzip file ``blob`` damaged before anything of it inflates."""
    if how == "garbage":             # a bare 10-byte header (no name), then 200 bytes of garbage for deflate data
        plain = gzip.compress(gzip.decompress(blob)[:1 << 20], compresslevel=1, mtime=0)
        return plain[:10] + b"\xff" * 200 + plain[210:]
    if how == "garbage-in-name":     # the corpus file's own header (FNAME set): garbage from byte 10 on
        return blob[:10] + b"\xff" * 200 + blob[210:]
    if how == "flags":               # the magic right, reserved header flags set
        return blob[:3] + b"\xe0" + blob[4:]
    return blob[:30]                 # cut inside the header's name / the first deflate bytes


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
@pytest.mark.parametrize("how", ["garbage", "garbage-in-name", "flags", "cut"])
@pytest.mark.parametrize("source", [CORPUS / "precopy-7.2.pcap.gz", STREAM_72], ids=["pcap", "stream-file"])
def test_gzip_damaged_at_its_start_is_said_to_be(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch, source: Path, how: str,
                                                 inflater: str) -> None:
    """A .pcap.gz or a gzip'd stream file damaged at its start: one line naming the file, saying the gzip data is
    corrupt (at the compressed offset where zlib fails) or cut short, exit 2 (bad input), from ``analyze`` and
    ``dissect`` alike. It was "the gzip stream ends after 0 uncompressed byte(s), before a capture header",
    which reads as a capture too short, not as damage."""
    use_inflater(monkeypatch, inflater)
    blob = damaged_at_start(source.read_bytes(), how)
    path = tmp_path / f"damaged{''.join(source.suffixes)}"
    path.write_bytes(blob)
    _, fails = zlib_most(blob)
    if how == "cut":
        assert fails is None
        said = "gzip stream ends early (file cut?) at compressed offset 30"
    else:
        said = f"gzip data corrupt at compressed offset {fails}: Error -3 while decompressing data: "
    for command in ("analyze", "dissect"):
        assert main([command, str(path)]) == 2
        out, err = capsys.readouterr()
        assert not out and err.startswith(f"migshark: error: {path}: ") and err.count("\n") == 1, err
        assert said in err and "Traceback" not in err, err


def pcap_cut_record(raw: bytes, end: int) -> tuple[int, int]:
    """Where the last pcap record of ``raw`` that ``raw[:end]`` holds whole ends, and the captured length the
    record after it announces."""
    pos = 24
    while True:
        length = struct.unpack_from("<I", raw, pos + 8)[0]
        if pos + 16 + length > end:
            return pos, length
        pos += 16 + length


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
@pytest.mark.parametrize("at,level", [(5_000_000, 6), (18_000_000, 1)], ids=["first-mark", "past-a-mark"])
def test_gzip_damaged_partway_gives_what_zlib_can(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int,
                                                  level: int, inflater: str) -> None:
    """A .pcap.gz damaged partway (at compressed offset 85940, and 427755: past the first of the inflater's
    copies, every 256 KiB): the byte source hands over all that feeding zlib one byte at a time recovers (it
    lost zlib's last piece, up to 32 KiB), and the reader's warning counts the last record's bytes up to
    the damage and gives its compressed offset."""
    use_inflater(monkeypatch, inflater)
    raw = gzip.decompress((CORPUS / "precopy-7.2.pcap.gz").read_bytes())
    blob, damage = gzip_damaged_at(raw, at, level)
    most, fails = zlib_most(blob)
    assert fails == damage and most == raw[:at]
    path = tmp_path / "damaged.pcap.gz"
    path.write_bytes(blob)
    source, _ = open_source(path)
    try:
        window = source.first()
        got = [bytes(window)]
        while (window := source.more(window, len(window), 1)) is not None:
            got.append(bytes(window))
        problem = source.problem
    finally:
        source.close()
    assert len(b"".join(got)) == len(most) and b"".join(got) == most
    corrupt = f"gzip data corrupt at compressed offset {damage}: Error -3 while decompressing data: invalid block type"
    assert problem == corrupt
    _, _, warnings = read_segments(path)
    last, announced = pcap_cut_record(raw, at)
    assert warnings == [f"{path}: uncompressed offset {last}: truncated record: {announced} captured bytes announced, "
                        f"{at - last - 16} present; cause: {corrupt}; stopped reading"]


def test_fragments_counted_and_warned_once(tmp_path: Path) -> None:
    items = [ipv4_fragment_frame(0, True), ipv4_fragment_frame(3, False), ipv6_fragment_frame(0, True),
             ipv6_fragment_frame(5, False), tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, payload=b"ok")]
    segments, stats, warnings = read_segments(write_pcap(tmp_path / "f.pcap", items))
    assert [s.payload for s in segments] == [b"ok"]
    assert stats.ip_fragments == 4 and stats.non_tcp == 4
    assert len(warnings) == 1 and "fragment" in warnings[0] and "offset 24:" in warnings[0]


def test_second_pass_restarts(tmp_path: Path) -> None:
    path = tmp_path / "r.pcap.gz"
    path.write_bytes(gzip.compress(write_pcap(tmp_path / "r.pcap", frames(3)).read_bytes()))
    with open_capture(path) as cap:
        assert len(list(cap.tcp_segments())) == 3
        assert len(list(cap.tcp_segments())) == 3
        assert cap.stats.frames == 3


def test_stopping_early_still_publishes_stats(tmp_path: Path) -> None:
    with open_capture(write_pcap(tmp_path / "e.pcap", frames(10))) as cap:
        segments = cap.tcp_segments()
        next(segments)
        next(segments)
        segments.close()
        assert cap.stats.frames == 2 and cap.position > 24


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
def test_zeros_after_the_gzip_data_are_padding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], inflater: str) -> None:
    """A .pcap.gz padded with zeros to a block size (dd, a tape, some copy tools) reads whole, as gzip -t
    finds it: no "capture cut short", the exit code of the capture itself; garbage after the zeros is
    trailing garbage, as for gzip -d (test_trailing_garbage_after_the_gzip_data_is_ignored)."""
    use_inflater(monkeypatch, inflater)
    source = CORPUS / "precopy-7.2.pcap.gz"
    assert main(["analyze", "--json", str(source)]) == 0
    clean = capsys.readouterr().out.replace(str(source), "CAPTURE")
    padded = tmp_path / "padded.pcap.gz"
    padded.write_bytes(source.read_bytes() + bytes(70_000))           # more than one raw read of zeros
    assert main(["analyze", "--json", str(padded)]) == 0
    got = capsys.readouterr().out.replace(str(padded), "CAPTURE")
    assert got.replace(str(padded.stat().st_size), "SIZE") == clean.replace(str(source.stat().st_size), "SIZE")


JUNK = bytes(range(1, 256)) * 4   # not a gzip member: it does not start with the magic 1f 8b


def two_members(blob: bytes) -> bytes:
    """``blob``'s data as two gzip members (a concatenation, ``cat a.gz b.gz``)."""
    raw = gzip.decompress(blob)
    half = len(raw) // 2
    return gzip.compress(raw[:half], 1) + gzip.compress(raw[half:], 1)


TRAILING = {                       # what follows the gzip data -> (the bytes, where the garbage starts)
    "junk": lambda blob: (blob + JUNK, len(blob)),
    "checksum": lambda blob: (blob + b"3f1d9c2e  capture.pcap.gz\n", len(blob)),
    "zeros-then-junk": lambda blob: (blob + bytes(512) + b"\x01junk", len(blob)),
    "member-after-zeros": lambda blob: (blob + bytes(512) + blob, len(blob)),   # gzip -d ignores it too
    "two-members-then-junk": lambda blob: (two_members(blob) + JUNK, len(two_members(blob))),
}


def trailing_warning(path: Path, at: int) -> str:
    return (f"{path}: uncompressed offset 19425727: trailing garbage ignored: the bytes from compressed offset {at} on "
            'are not a gzip member (gzip -d: "decompression OK, trailing garbage ignored")')


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
@pytest.mark.parametrize("case", sorted(TRAILING))
def test_trailing_garbage_after_the_gzip_data_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], inflater: str,
                                                        case: str) -> None:
    """Bytes after the last gzip member that are not a member (a copy tool's junk, an appended checksum, zeros
    then anything): ``gzip -d`` writes all the data and warns "decompression OK, trailing garbage ignored"
    (exit 2, its warning). The capture is analysed whole, with the exit code of the capture itself (a
    warning, not a finding: 0 here), and a warning naming the file and the compressed offset where the
    garbage starts. It was "capture cut short: gzip data corrupt", exit 1."""
    use_inflater(monkeypatch, inflater)
    source = CORPUS / "precopy-10.0.pcap.gz"
    assert main(["analyze", "--json", str(source)]) == 0
    clean = json.loads(capsys.readouterr().out)
    path = tmp_path / "trailing.pcap.gz"
    blob, at = TRAILING[case](source.read_bytes())
    path.write_bytes(blob)
    assert main(["analyze", "--json", str(path)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["capture"].pop("warnings") == [trailing_warning(path, at)]
    assert "stopped" not in got["capture"]
    assert got["capture"].pop("file") == str(path) and clean["capture"].pop("file") == str(source)
    del clean["capture"]["warnings"]
    assert got == clean
    assert main(["analyze", str(path)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"warning: {trailing_warning(path, at)}" in text and "cut short" not in text


def fifo_of(tmp_path: Path, blob: bytes) -> tuple[Path, threading.Thread]:
    """A FIFO that a thread writes ``blob`` into (a pipe: read as a live stream, ``LiveRaw``)."""
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as f:
            try:
                f.write(blob)
            except BrokenPipeError:
                pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return fifo, writer


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
@pytest.mark.parametrize("case", ["junk", "two-members-then-junk"])
def test_trailing_garbage_through_a_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], inflater: str, case: str) -> None:
    """The same through a pipe (``cat FILE.pcap.gz | migshark analyze -``), whose reads hand over what has
    arrived: a warning, the capture whole, exit 0."""
    use_inflater(monkeypatch, inflater)
    blob, at = TRAILING[case]((CORPUS / "precopy-10.0.pcap.gz").read_bytes())
    fifo, writer = fifo_of(tmp_path, blob)
    assert main(["analyze", "--json", str(fifo)]) == 0
    writer.join(5)
    got = json.loads(capsys.readouterr().out)
    assert got["capture"]["warnings"] == [trailing_warning(fifo, at)] and "stopped" not in got["capture"]
    assert got["capture"]["frames"] == 745


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
@pytest.mark.parametrize("tail,said", [
    (b"\x1f\x8b" + JUNK, "gzip data corrupt at compressed offset 356809: Error -3 while decompressing data: unknown "
                          "compression method"),
    (b"\x1f\x8b\x08\x00" + JUNK, "gzip data corrupt at compressed offset 356816: Error -3 while decompressing "
                                  "data: invalid block type"),
    (b"\x1f", "gzip stream ends early (file cut?) at compressed offset 356807"),
    (b"\x01", "gzip stream ends early (file cut?) at compressed offset 356807"),
], ids=["magic-then-junk", "magic-deflate-then-junk", "one-byte-of-magic", "one-byte"])
def test_a_damaged_member_after_the_data_is_still_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], inflater: str,
                                                         tail: bytes, said: str) -> None:
    """What starts like a gzip member (1f 8b) and then fails, or a single byte after the data, is an error for
    gzip -d too ("unknown method 35", "invalid compressed data--format violated", "unexpected end of file";
    exit 1): a capture cut short, exit 1, as before."""
    use_inflater(monkeypatch, inflater)
    source = CORPUS / "precopy-10.0.pcap.gz"
    path = tmp_path / "damaged.pcap.gz"
    path.write_bytes(source.read_bytes() + tail)
    assert main(["analyze", "--json", str(path)]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["capture"]["stopped"]["reason"] == said and got["capture"]["frames"] == 745


class _Trickle:
    """A raw stream that hands over one byte per read (a slow pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, count: int = -1) -> bytes:
        out, self._data = self._data[:1], self._data[1:]
        return out

    def close(self) -> None:
        pass


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
@pytest.mark.parametrize("tail,warned,problem", [
    (b"ab", True, False), (b"\0", False, False), (b"\0\0\0x", True, False), (b"\x1f", False, True),
    (b"", False, False)])
def test_what_follows_a_member_read_a_byte_at_a_time(monkeypatch: pytest.MonkeyPatch, inflater: str, tail: bytes,
                                                     warned: bool, problem: bool) -> None:
    """The bytes after a member arriving one per read: the two of a magic are waited for before deciding."""
    use_inflater(monkeypatch, inflater)
    data = bytes(range(256)) * 64
    blob = gzip.compress(data)
    stream = GunzipStream(_Trickle(blob + tail))
    got = stream.read(1 << 20)
    assert got == data and stream.read(1) == b""
    assert (stream.warning is not None) == warned and (stream.problem is not None) == problem
    if warned:
        assert f"from compressed offset {len(blob)} on" in stream.warning


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
def test_trailing_garbage_after_a_gzipd_stream_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], inflater: str) -> None:
    """A gzip'd raw migration stream file with junk after it: complete, exit 0, the warning in the report (it
    was a finding: status "incomplete", exit 1) and on ``dissect``'s stderr."""
    use_inflater(monkeypatch, inflater)
    blob = STREAM_72.read_bytes()
    path = tmp_path / "stream.qevm.gz"
    path.write_bytes(blob + JUNK)
    warning = (f"{path}: uncompressed offset 4855875: trailing garbage ignored: the bytes from compressed offset "
               f'{len(blob)} on are not a gzip member (gzip -d: "decompression OK, trailing garbage ignored")')
    assert main(["analyze", "--json", str(path)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["stream_file"]["status"] == "complete" and got["findings"] == 0
    assert got["capture"]["warnings"] == [warning]
    assert main(["analyze", str(path)]) == 0
    assert f"  warning: {warning}\n" in capsys.readouterr().out
    assert main(["dissect", str(path)]) == 0
    assert f"migshark: warning: {warning}\n" in capsys.readouterr().err


@pytest.mark.parametrize("writer", [write_pcap, write_pcapng])
def test_trailing_garbage_pcap_and_pcapng(tmp_path: Path, writer) -> None:  # noqa: ANN001
    """Both record walkers say it, after every record, at the uncompressed end."""
    plain = writer(tmp_path / "p.cap", frames(50))
    packed = tmp_path / "p.cap.gz"
    blob = gzip.compress(plain.read_bytes())
    packed.write_bytes(blob + JUNK)
    segments, _, warnings = read_segments(packed)
    assert len(segments) == 50
    assert warnings == [f"{packed}: uncompressed offset {plain.stat().st_size}: trailing garbage ignored: the bytes "
                        f'from compressed offset {len(blob)} on are not a gzip member (gzip -d: "decompression OK, '
                        'trailing garbage ignored")']
