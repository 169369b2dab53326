"""Every input the fuzzers ever crashed on (fuzz/crashes/TARGET/*) stays fixed, and each target runs on
inputs built here (an attack of each kind), without atheris: fuzz/targets.py is plain Python."""

from __future__ import annotations

from pathlib import Path

import pytest

from dissectors.layers.main_stream import Eof, QemuFileHeader
from dissectors.layers.synth import multifd_stream, precopy_stream
from fuzz.targets import TARGETS

CRASHES = Path(__file__).resolve().parent.parent / "fuzz" / "crashes"
KEPT = sorted(p for p in CRASHES.glob("*/*") if p.is_file() and p.parent.name in TARGETS)


@pytest.mark.parametrize("path", KEPT, ids=[f"{p.parent.name}/{p.name}" for p in KEPT])
def test_kept_crash_input_is_fixed(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())


def test_every_crash_folder_names_a_target() -> None:
    assert all(p.name in TARGETS for p in CRASHES.iterdir() if p.is_dir())


INPUTS = {
    "parser-main": [b"\x05" + precopy_stream(pages=3, zero_pages=40),
                    b"\x01" + bytes(QemuFileHeader() / Eof()) + bytes(5000),
                    b"\x03" + bytes(QemuFileHeader()) + b"\x06\xff\xff\xff\xff{" * 3],
    "parser-main-devstate": [b"\x05" + precopy_stream(devices=[(b"timer", bytes(24))], vmdesc=b'{"page_size": 4096, '
                             b'"devices": [{"name": "timer", "instance_id": 0, "fields": [{"name": "a", '
                             b'"type": "struct", "size": 9, "array_len": 99999999, "struct": {"fields": []}}]}]}'),
                             b"\x02" + precopy_stream(vmdesc=b"{" + b'"a":[' * 50000)],
    "vmstate": [b'{"devices": [{"name": "d", "instance_id": 0, "fields": [{"name": "x", "type": "uint64", '
                b'"size": 8, "array_len": 1000000000}]}]}\0' + bytes(20),
                b'{"devices": [{"name": "d", "instance_id": 0, "fields": [{"name": "x", "type": "tmp", "size": 1, '
                b'"fields": 5}], "subsections": [{"vmsd_name": "d/s", "fields": []}]}]}\0\x05\x03d/s',
                b"[" * 100000 + b"\0"],
    "parser-multifd": [b"\x07" + multifd_stream(packets=3, pages_per_packet=4), b"\x02" + bytes(3000)],
    "parser-preempt": [b"\x01" + bytes(2000)],
    "parser-return-path": [b"\x09" + bytes(range(256)) * 4],
    "parser-tls": [b"\x04" + b"\x16\x03\x01\xff\xff" + bytes(100)],
    "tcp": [b"\x0a\0\0\0\x0a\0\0\0" + b"\x08\x7f\xff\x10" + bytes(16) + b"\x09\x80\x00\x04abcd" * 20],
    "reader": [b"\xd4\xc3\xb2\xa1" + bytes(40), b"\x0a\x0d\x0d\x0a" + bytes(60)],
    "pipeline": [b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(8) + b"\xff\xff\x00\x00\x01\x00\x00\x00" + bytes(100)],
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_takes_hostile_inputs(name: str) -> None:
    for data in INPUTS.get(name, [b""]):
        TARGETS[name](data)


def test_need_more_keeps_no_frames_across_raises() -> None:
    """The parsers' one NeedMore instance must not collect a traceback entry per raise (the fuzzer's
    out-of-memory finding: every record header split across feeds kept its frames alive)."""
    from dissectors.channels import PreemptParser
    from dissectors.channels.cursor import _NEED_MORE
    from dissectors.layers.synth import mem_size

    data = mem_size({b"pc.ram": 1 << 20, b"pc.bios": 1 << 18, b"/rom@etc/acpi/tables": 1 << 16})
    p = PreemptParser()
    for i in range(len(data)):
        p.feed(data[i:i + 1], 1.0)
    depth, tb = 0, _NEED_MORE.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth < 10
