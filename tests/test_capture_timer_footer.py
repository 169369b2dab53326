"""A real stream whose timer section holds a section footer look-alike (issue 17, point 4).

``captures/timer-footer-11.1`` was recorded by ``migshark record --scenario timer-footer-11.1``: QEMU 11.1
migrating a stopped source whose ``cpu_ticks_offset`` the recorder froze on a value ending in 0x7e
(recorder/timer_probe.py). The timer section (id 0) then carries ``.. .. 7e | 00 00 00 00 00 00 00 00 | ..``:
``7e 00 00 00 00`` is the footer of section 0 and the zero after it reads as EOF, which is where a footer
scan without confirmation cut the stream. The truth comes from QEMU: the VMDESCRIPTION it appends to the
stream (every device section it saved, with its fields' sizes) and its own ``query-migrate`` counters in
the manifest.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from dissectors.channels.main import MainParser
from dissectors.channels.record import Record
from dissectors.cli.check import sibling
from dissectors.cli.pipeline import analyze_file, reassemble_file
from dissectors.layers.synth import precopy_stream
from dissectors.recorder.timer_probe import TimerProbe, timer_body
from tests.tcp_helpers import Recorder, Recorders

CAPTURE = Path(__file__).resolve().parent.parent / "captures" / "timer-footer-11.1.pcap.gz"
FOOTER_OF_SECTION_0 = bytes.fromhex("7e00000000")

needs_capture = pytest.mark.skipif(not CAPTURE.exists(), reason="capture corpus not present")


@cache
def manifest() -> dict[str, Any]:
    return json.loads(sibling(CAPTURE, ".manifest.json").read_text())


@cache
def main_stream() -> Recorder:
    """The main channel as the capture delivered it (one connection, no gap)."""
    recs = Recorders()
    reassemble_file(str(CAPTURE), recs)
    (rec,) = recs
    assert not rec.gaps(0)
    return rec


@cache
def records() -> list[Record]:
    """The main-channel parser fed segment by segment, as the capture's reassembly hands the bytes over."""
    p = MainParser()
    out: list[Record] = []
    for _kind, _off, data in main_stream().pieces[0]:
        out += p.feed(data, 0.0)
    return out + p.eof(0.0)


@cache
def vmdesc() -> dict[str, Any]:
    """QEMU's own description of the device sections it saved (the JSON after EOF)."""
    stream = main_stream().stream(0)
    (vd,) = [r for r in records() if r.kind == "main.vmdesc"]
    return json.loads(stream[vd.offset + 5:vd.offset + vd.length])


def timer() -> Record:
    (rec,) = [r for r in records() if r.kind == "device.state" and r.fields["idstr"] == "timer"]
    return rec


@needs_capture
def test_the_recording_froze_the_pattern():
    probe = manifest()["timer_probe"]
    assert probe["found"] and probe["want_low_byte"] == "0x7e"
    assert manifest()["outcome"] == "completed"
    assert manifest()["run_state"]["source"]["status"] == "postmigrate"   # it never ran during the migration


@needs_capture
def test_timer_is_one_record_with_its_full_body():
    stream = main_stream().stream(0)
    rec = timer()
    assert rec.fields["section_id"] == 0 and rec.length == 24
    # QEMU's vmdesc: cpu_ticks_offset (8), unused (8), cpu_clock_offset (8), no subsection
    (desc,) = [d for d in vmdesc()["devices"] if d["name"] == "timer"]
    assert "subsections" not in desc
    assert rec.length == sum(f["size"] * f.get("array_len", 1) for f in desc["fields"]) == 24
    body = stream[rec.offset:rec.offset + rec.length]
    assert body.hex() == manifest()["timer_probe"]["timer_body_hex"]
    # the trap is really there: footer of section 0 at body offset 7, followed by a zero (EOF) byte
    assert body.find(FOOTER_OF_SECTION_0) == 7 and body[12] == 0
    # and the real footer follows the whole body
    footers = [r for r in records() if r.kind == "main.footer" and r.fields["section_id"] == 0]
    assert [f.offset for f in footers] == [rec.offset + 24]


@needs_capture
def test_device_sections_are_the_ones_qemu_saved():
    devices = [r for r in records() if r.kind == "device.state"]
    sections = {r.fields["section_id"]: r.fields["idstr"] for r in records() if r.kind == "main.section_full"}
    assert [r.fields["idstr"] for r in devices] == [d["name"] for d in vmdesc()["devices"]]
    assert len(devices) == len(sections) == 31


@needs_capture
def test_exactly_one_eof_at_the_end_and_nothing_malformed():
    recs = records()
    kinds = [r.kind for r in recs]
    assert kinds.count("main.eof") == 1
    assert kinds[-2:] == ["main.eof", "main.vmdesc"]
    assert not {"malformed", "opaque", "truncated", "gap"} & set(kinds)
    assert sum(r.length for r in recs) == len(main_stream().stream(0))


@needs_capture
def test_the_report_counts_what_qemu_reported():
    report = analyze_file(str(CAPTURE)).report
    (m,) = report["migrations"]
    (ch,) = m["channels"]
    counts = ch["records"]
    ram = manifest()["query_migrate"]["source"]["ram"]
    assert m["outcome"]["status"] == "completed"
    assert counts["device.state"] == len(vmdesc()["devices"])
    assert counts["main.eof"] == 1
    assert counts.get("ram.page", 0) == ram["normal"] and counts.get("ram.zero", 0) == ram["duplicate"]
    assert ch["bytes_to_server"] == ram["transferred"]     # QEMU counts every byte of the stream
    assert not {"malformed", "opaque", "truncated", "gap"} & set(counts) and not ch["malformed"]


# -- the recorder's probe (recorder/timer_probe.py) on synthetic streams ------------------------------------


@pytest.mark.parametrize("vmdesc", [b"", b'{"devices": []}'])
def test_probe_reads_the_timer_body_even_with_the_footer_look_alike(vmdesc: bytes):
    # precopy_stream numbers device sections from 10: the timer (second) is section 11, so its look-alike
    # is 7e 00 00 00 0b, followed by zeros (EOF bytes), as section 0's is in the real capture
    body = bytes.fromhex("000000025480b17e" "0000000b00000000" "00000000e56c7a26")
    stream = precopy_stream(pages=1, zero_pages=1, devices=[(b"apic", b"\x01" * 9), (b"timer", body),
                                                            (b"cpu", bytes(40))], vmdesc=vmdesc)
    assert timer_body(stream) == body
    probe = TimerProbe(0x7E, cpu_ticks_offset=int.from_bytes(body[:8], "big", signed=True))
    assert probe.found and probe.to_dict()["cpu_ticks_offset_hex"] == "0x000000025480b17e"
    assert not TimerProbe(0x7F, cpu_ticks_offset=probe.cpu_ticks_offset).found
    assert not TimerProbe(0x7E).found                 # nothing probed yet


def test_probe_without_a_timer_section():
    assert timer_body(precopy_stream(pages=1, zero_pages=0, devices=[(b"apic", bytes(4))])) is None
