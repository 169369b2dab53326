"""Issue 9: the fast channel parsers must not drift from the Scapy layers, the single spelling of every
QEMU migration wire structure. Every record's parsed fields must equal the layer's decode of the same
bytes (the record's bytes cut out of the stream by offset and length, whether or not it kept ``raw``),
on synthetic streams, on a real QEMU stream, on every capture of the corpus (through the pipeline, a
deterministic sample of each kind) and on damaged synthetic streams. What is compared and how derived
fields map to layer fields: ``drift_helpers``."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path
from typing import Any

import pytest
from drift_helpers import (
    NO_LAYER_KINDS,
    PARSERS,
    REPORT_KINDS,
    SYNTHETIC,
    DriftChecker,
    StreamContext,
    check_capture,
    check_stream,
    main_precopy,
    multifd_stream,
    mutated,
    return_path_stream,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors.channels import MainParser, MultifdParser, Record, ReturnPathParser, TlsParser
from dissectors.channels.kinds import KINDS
from dissectors.channels.ram_walk import expand_zero_run
from dissectors.layers import commands as C
from dissectors.layers import main_stream as M
from dissectors.layers import synth as L

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = sorted((ROOT / "captures").glob("*.pcap.gz"))
REAL_STREAM = Path(__file__).parent / "data" / "qemu72-precopy-pc-i440fx.mig.gz"

#: Per capture and kind: every record of the first FIRST, then every STRIDE-th, at most CAP decoded.
FIRST, STRIDE, CAP = 128, 32, 1000


# -- synthetic and real streams -----------------------------------------------------------------------

@pytest.mark.parametrize("name,factory,build", SYNTHETIC, ids=[s[0] for s in SYNTHETIC])
def test_synthetic_stream_records_equal_their_layers(name: str, factory: Any, build: Any) -> None:
    report = check_stream(name, factory(), build())
    assert report.checked and not report.without_bytes
    assert not report.mismatches, "\n" + report.text()


def test_synthetic_streams_cover_every_record_kind() -> None:
    """A kind added to kinds.py without a synthetic record is a kind nobody compares with its layer."""
    checked: set[str] = set()
    for name, factory, build in SYNTHETIC:
        checked |= set(check_stream(name, factory(), build()).checked)
    declared = {k for k, kind in KINDS.items() if kind.layer is not None} | set(NO_LAYER_KINDS)
    assert declared - REPORT_KINDS <= checked, sorted(declared - REPORT_KINDS - checked)


@pytest.mark.skipif(not REAL_STREAM.exists(), reason="real stream not present")
def test_real_qemu_stream_records_equal_their_layers() -> None:
    data = gzip.decompress(REAL_STREAM.read_bytes())
    report = check_stream(REAL_STREAM.name, MainParser(), data)
    assert report.checked["ram.page"] == 120 and report.checked["device.state"] == 34
    assert not report.mismatches, "\n" + report.text()


# -- the corpus ---------------------------------------------------------------------------------------

def test_corpus_is_there() -> None:
    assert len(CAPTURES) >= 15, "captures/ lost its corpus: the drift test below checks nothing"


@pytest.mark.parametrize("cap", CAPTURES, ids=[c.name.split(".pcap")[0] for c in CAPTURES])
def test_capture_records_equal_their_layers(cap: Path) -> None:
    report = check_capture(str(cap), first=FIRST, stride=STRIDE, cap=CAP)
    assert sum(report.checked.values()) >= 10, dict(report.seen)
    assert not report.mismatches, "\n" + report.text()


# -- the checker catches drift (so that a passing test above means something) --------------------------

def _problems(parser: Any, data: bytes, kind: str, tamper: Any) -> list[str]:
    """Mismatches found in ``data``'s records once ``tamper`` changed the first record of ``kind``
    (``kind#n``: its n-th record)."""
    kind, _, nth = kind.partition("#")
    left = int(nth or 0)
    checker = DriftChecker("tampered")
    ctx = StreamContext()
    done = False
    for rec in (r for run in parser.feed(data, 0.0) + parser.eof(1.0) for r in expand_zero_run(run)):
        if rec.kind == kind and not done:
            if not left:
                rec = tamper(dataclasses.replace(rec, fields=dict(rec.fields)))
                done = True
            left -= 1
        checker.record("", rec, data, ctx)
    assert done, kind
    return checker.report.mismatches


def _set(**changes: Any) -> Any:
    def tamper(rec: Record) -> Record:
        rec.fields.update(changes)
        return rec
    return tamper


def _drop(name: str) -> Any:
    def tamper(rec: Record) -> Record:
        del rec.fields[name]
        return rec
    return tamper


TAMPERED = [
    ("main.cmd#1", _set(value=2), "value: parsed 2 != layer 1"),                 # PING 1
    ("main.cmd", _set(cmd="PONG"), "cmd: parsed 'PONG'"),
    ("main.cmd", _set(new_field=1), "new_field: parsed 1 is neither a layer field nor in DERIVED"),
    ("main.config", _set(machine="pc"), "machine: parsed 'pc'"),
    ("main.section_start", _set(idstr="ram2"), "idstr: parsed 'ram2'"),
    ("main.section_part", _set(idstr="cpu"), "idstr: parsed 'cpu'"),
    ("main.subsection", _set(target_page_bits=13), "target_page_bits: parsed 13"),
    ("ram.page", _set(addr=0x2000), "addr: parsed 8192 != layer 0"),
    ("ram.page", _set(block="pc.rom"), "block: parsed 'pc.rom'"),
    ("ram.zero", _set(fill=1), "fill: parsed 1 != layer 0"),
    ("ram.mem_size", _set(total=1), "total: parsed 1"),
    ("ram.eos", lambda r: dataclasses.replace(r, kind="ram.multifd_flush"), "kind: RAM flags 0x10"),
    ("ram.page", lambda r: dataclasses.replace(r, length=r.length + 1), "length: the layer leaves 1 of"),
    ("main.cmd", lambda r: dataclasses.replace(r, raw=b"\x08\x00\x02"), "raw 080002 is not the record's"),
    ("main.cmd", lambda r: dataclasses.replace(r, fields={**r.fields, "packaged": True}),
     "packaged: parsed True, expected no such field"),
]


@pytest.mark.parametrize("kind,tamper,expected", TAMPERED,
                         ids=[f"{t[0].split('#')[0]}-{i}" for i, t in enumerate(TAMPERED)])
def test_checker_catches_a_drifted_main_record(kind: str, tamper: Any, expected: str) -> None:
    assert not _problems(MainParser(), main_precopy(), kind, lambda r: r)
    problems = _problems(MainParser(), main_precopy(), kind, tamper)
    assert any(expected in p for p in problems), problems


def test_checker_catches_drifted_multifd_and_return_path_records() -> None:
    mf = multifd_stream()
    assert any("first_offset: missing" in p for p in _problems(MultifdParser(), mf, "multifd.packet",
                                                                 _drop("first_offset")))
    assert any("block: parsed 'pc.rom'" in p for p in _problems(MultifdParser(), mf, "multifd.packet",
                                                                 _set(block="pc.rom")))
    assert any("uuid: parsed" in p for p in _problems(MultifdParser(), mf, "multifd.hello", _set(uuid="0")))
    assert any("flags 0x0 select multifd.packet" in p
               for p in _problems(MultifdParser(), mf, "multifd.packet",
                                  lambda r: dataclasses.replace(r, kind="multifd.sync")))
    rp = return_path_stream()
    assert any("start: parsed 1" in p for p in _problems(ReturnPathParser(), rp, "rp.req_pages", _set(start=1)))
    assert any("len: parsed 1 != layer 4096" in p
               for p in _problems(ReturnPathParser(), rp, "rp.req_pages", _set(len=1)))
    assert any("type: parsed 'PONG'" in p for p in _problems(ReturnPathParser(), rp, "rp.shut", _set(type="PONG")))
    assert any("bitmap_size: parsed 0" in p
               for p in _problems(ReturnPathParser(), rp, "rp.recv_bitmap", _set(bitmap_size=0)))


# -- damaged streams ----------------------------------------------------------------------------------

def _footer_past_package_end() -> bytes:
    """A PACKAGED stream 5 bytes too short for its device section: the footer lies after its end."""
    nested = bytes(C.Command(cmd=C.MIG_CMD_POSTCOPY_LISTEN)) + L.device_section(20, b"timer", bytes(24))
    return (bytes(M.QemuFileHeader()) + bytes(C.Command() / C.CmdPackaged(length=len(nested) - 5)) + nested
            + bytes(C.Command() / C.CmdPing(value=3)) + bytes(C.Command(cmd=C.MIG_CMD_POSTCOPY_RUN)))


def _vmdesc_inside_package() -> bytes:
    nested = bytes(C.Command(cmd=C.MIG_CMD_POSTCOPY_LISTEN)) + bytes(M.VmDescription(json=b"{}"))
    return bytes(M.QemuFileHeader()) + bytes(C.Command() / C.CmdPackaged() / nested)


def _capabilities(count: int) -> bytes:
    caps = [M.Capability(capability=f"cap{i}".encode()) for i in range(count)]
    return bytes(M.QemuFileHeader()) + bytes(M.Subsection(idstr=b"configuration/capabilities", version_id=1)
                                            / M.ConfigCapabilities(caps=caps))


def _discard(count: int) -> bytes:
    """QEMU sends at most 12 ranges per command (MAX_DISCARDS_PER_COMMAND); the parser takes any number."""
    ranges = [C.DiscardRange(start=i << 12, length=1 << 12) for i in range(count)]
    return bytes(M.QemuFileHeader()) + bytes(C.Command(cmd=C.MIG_CMD_POSTCOPY_RAM_DISCARD)
                                            / C.CmdRamDiscard(block=b"pc.ram", ranges=ranges))


#: Damaged streams on which a parser's record once disagreed with its layer (found by the property below).
DAMAGED = [
    ("footer-past-package-end", MainParser, _footer_past_package_end()),
    ("vmdesc-inside-package", MainParser, _vmdesc_inside_package()),
    ("tls-handshake-record-of-1-byte", TlsParser, bytes.fromhex("160301000101")),
    ("tls-handshake-record-of-5-bytes", TlsParser, bytes.fromhex("16030100050100000103")),
    ("101-capabilities", MainParser, _capabilities(101)),
    ("ram-discard-of-101-ranges", MainParser, _discard(101)),
]


@pytest.mark.parametrize("name,factory,data", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_damaged_stream_records_equal_their_layers(name: str, factory: Any, data: bytes) -> None:
    report = check_stream(name, factory(), data)
    assert not report.mismatches, "\n" + report.text()


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st_data=st.data())
def test_mutated_stream_records_equal_their_layers(name: str, st_data: st.DataObject) -> None:
    """Whatever a parser accepts from a damaged stream, it reads as the layer does."""
    data = st_data.draw(mutated(name))
    report = check_stream(name, PARSERS[name](), data)
    assert not report.mismatches, f"\nstream {data.hex()}\n" + report.text()
