# SPDX-License-Identifier: GPL-2.0-or-later
"""MainParser and PreemptParser: synthetic and real streams, whole vs byte-at-a-time, damage."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from channel_helpers import bytewise, key, kinds, whole
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors.channels import MainParser, PreemptParser, Record
from dissectors.layers.commands import CmdPing, CmdPostcopyAdvise, CmdRamDiscard, Command, DiscardRange
from dissectors.layers.main_stream import (
    ConfigTargetPageBits,
    ConfigUuid,
    QemuFileHeader,
    SectionFooter,
    SectionPart,
    Subsection,
    VmDescription,
)
from dissectors.layers.ram import RamCompress, RamRecord, RamXbzrle
from dissectors.layers.synth import device_section, postcopy_package, precopy_stream, ram_eos, ram_pages

REAL = Path(__file__).parent / "data" / "qemu72-precopy-pc-i440fx.mig.gz"








def _first_page(data: bytes) -> int:
    """Offset of the first page payload (the second "pc.ram" idstr; the first is in MEM_SIZE)."""
    return data.index(b"\x06pc.ram", data.index(b"\x06pc.ram") + 1) + 7




def test_precopy_stream_records() -> None:
    p = MainParser()
    recs = whole(p, precopy_stream(pages=3, zero_pages=2, return_path=True))
    assert p.counts["ram.page"] == 3 and p.counts["ram.zero"] == 2 and p.counts["device.state"] == 2
    assert "malformed" not in p.counts and "truncated" not in p.counts
    assert kinds(recs)[:5] == ["main.header", "main.config", "main.cmd", "main.cmd", "main.section_start"]
    page = next(r for r in recs if r.kind == "ram.page")
    assert page.fields == {"block": "pc.ram", "addr": 0} and page.length == 8 + 7 + 4096
    cpu = [r for r in recs if r.kind == "device.state"][1]
    assert cpu.fields["idstr"] == "cpu" and cpu.length == 40  # body full of 0x7e bytes
    mem = next(r for r in recs if r.kind == "ram.mem_size")
    assert [b["idstr"] for b in mem.fields["blocks"]] == ["pc.ram", "pc.bios"]
    assert recs[-1].kind == "main.vmdesc" and p.offset == sum(r.length for r in recs)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536])
def test_chunking_gives_same_records(chunk: int) -> None:
    data = precopy_stream(pages=3, zero_pages=2, return_path=True) + b""
    ref = key(whole(MainParser(), data))
    p = MainParser()
    got: list[Record] = []
    for i in range(0, len(data), chunk):
        got += p.feed(memoryview(data)[i:i + chunk], 0.0)
    assert key(got + p.eof(0.0)) == ref


def test_bytewise_with_commands_and_package() -> None:
    data = (bytes(QemuFileHeader()) + bytes(Command(cmd=1)) + bytes(Command() / CmdPing(value=1))
            + bytes(Command() / CmdPostcopyAdvise())
            + bytes(Command() / CmdRamDiscard(block=b"pc.ram", ranges=[DiscardRange(start=1, length=2)]))
            + postcopy_package() + bytes(Command() / CmdPing(value=4)))
    ref = whole(MainParser(), data)
    assert key(bytewise(MainParser(), data)) == key(ref)
    cmds = [r.fields["cmd"] for r in ref if r.kind == "main.cmd"]
    assert cmds == ["OPEN_RETURN_PATH", "PING", "POSTCOPY_ADVISE", "POSTCOPY_RAM_DISCARD", "PACKAGED",
                    "POSTCOPY_LISTEN", "PING", "POSTCOPY_RUN", "PING"]
    assert [r.fields.get("packaged", False) for r in ref if r.kind == "main.cmd"][-4:] == [True, True, True, False]
    discard = next(r for r in ref if r.fields.get("cmd") == "POSTCOPY_RAM_DISCARD")
    assert discard.fields["ranges"] == [(1, 2)] and discard.fields["block"] == "pc.ram"
    assert ref[1].layer() is not None and ref[1].layer().cmd == 1


def test_configuration_subsections() -> None:
    data = (bytes(QemuFileHeader()) + bytes(Subsection(idstr=b"configuration/target-page-bits")
                                           / ConfigTargetPageBits(target_page_bits=12))
            + bytes(Subsection(idstr=b"configuration/uuid") / ConfigUuid(uuid=bytes(16))))
    recs = whole(MainParser(), data)
    subs = [r.fields for r in recs if r.kind == "main.subsection"]
    assert subs[0]["target_page_bits"] == 12 and subs[1]["uuid"] == "00" * 16


def test_other_ram_record_types() -> None:
    body = (ram_pages(b"pc.ram", [0x1000])
            + bytes(RamRecord(addr=0x2000, flags="XBZRLE+CONTINUE") / RamXbzrle(data=b"abc"))
            + bytes(RamRecord(addr=0x3000, flags="COMPRESS_PAGE", idstr=b"pc.rom") / RamCompress(data=b"z" * 30))
            + bytes(RamRecord(addr=0, flags="MULTIFD_FLUSH")) + ram_eos())
    data = bytes(QemuFileHeader()) + device_section(2, b"ram", b"")[:-5]  # a FULL "ram" header, no footer
    data = data + body + bytes(SectionFooter(section_id=2))
    p = MainParser()
    recs = whole(p, data)
    assert "malformed" not in p.counts
    x = next(r for r in recs if r.kind == "ram.xbzrle")
    c = next(r for r in recs if r.kind == "ram.compress")
    assert x.fields == {"block": "pc.ram", "addr": 0x2000, "len": 3}
    assert c.fields["block"] == "pc.rom" and c.length == 8 + 7 + 4 + 30
    assert p.counts["ram.multifd_flush"] == 1
    assert key(bytewise(MainParser(), data)) == key(recs)


def test_recovered_main_channel() -> None:
    from dissectors.layers.commands import CmdRecvBitmap

    data = bytes(Command() / CmdRecvBitmap(block=b"pc.ram")) + bytes(Command(cmd=9))
    recs = whole(MainParser(), data)
    assert [(r.kind, r.fields["cmd"]) for r in recs] == [("main.cmd", "RECV_BITMAP"), ("main.cmd", "POSTCOPY_RESUME")]


def test_absurd_vmdesc_length_is_malformed_without_allocation() -> None:
    data = bytes(QemuFileHeader()) + bytes([0x06]) + (0xFFFFFFF0).to_bytes(4, "big") + b"{" * 100
    p = MainParser()
    recs = whole(p, data)
    assert kinds(recs) == ["main.header", "malformed", "opaque"]
    assert recs[1].offset == 8 and recs[2].offset == 8 and recs[2].length == len(data) - 8


def test_garbage_and_bad_magic() -> None:
    recs = whole(MainParser(), b"GET / HTTP/1.1\r\n\r\n")
    assert kinds(recs) == ["malformed", "opaque"]
    recs = whole(MainParser(), bytes(QemuFileHeader()) + b"\x42" + b"\0" * 10)
    assert kinds(recs) == ["main.header", "malformed", "opaque"] and recs[1].fields["type"] == 0x42


def test_truncated_page_and_header() -> None:
    data = precopy_stream(pages=3, zero_pages=0, devices=(), vmdesc=b"")
    cut = _first_page(data) + 100  # inside the first page
    p = MainParser()
    recs = whole(p, data[:cut])
    assert recs[-1].kind == "truncated" and recs[-1].fields["expected"] == "ram.page"
    recs = whole(MainParser(), data[:12])
    assert kinds(recs) == ["main.header", "truncated"] and recs[-1].offset == 8


def test_gap_inside_page_keeps_sync_and_gap_elsewhere_goes_opaque() -> None:
    data = precopy_stream(pages=3, zero_pages=0, devices=(), vmdesc=b"")
    first = _first_page(data)  # first page payload starts here
    p = MainParser()
    recs = p.feed(data[:first + 10], 0.0) + p.gap(100, 1.0) + p.feed(data[first + 110:], 2.0) + p.eof(3.0)
    assert "malformed" not in p.counts and p.counts["ram.page"] == 3 and p.counts["gap"] == 1
    assert next(r for r in recs if r.kind == "ram.page").fields["gap"] is True
    p = MainParser()
    recs = p.feed(data[:first + 4096 + 3], 0.0) + p.gap(20, 1.0) + p.feed(data[first + 4096 + 23:], 2.0) + p.eof(3.0)
    assert kinds(recs)[-3:] == ["gap", "truncated", "opaque"]
    assert recs[-1].offset == first + 4096 + 23 and recs[-1].offset + recs[-1].length == p.offset


def test_device_without_footer_within_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import dissectors.channels.main as main_mod

    monkeypatch.setattr(main_mod, "MAX_DEVICE_STATE", 1000)
    data = bytes(QemuFileHeader()) + device_section(9, b"blob", b"\x01" * 5000)[:-5]
    recs = whole(MainParser(), data)
    assert kinds(recs)[-2:] == ["malformed", "opaque"]
    assert recs[-2].fields["reason"] == "no section footer found within the bound"


def test_device_section_ending_the_stream() -> None:
    data = bytes(QemuFileHeader()) + device_section(3, b"timer", b"\0" * 8)
    recs = whole(MainParser(), data)
    assert kinds(recs) == ["main.header", "main.section_full", "device.state", "main.footer"]


def test_vmdesc_json_skipped_across_feeds() -> None:
    js = b'{"x": "' + b"a" * 100000 + b'"}'
    data = bytes(QemuFileHeader()) + bytes(VmDescription(json=js))
    p = MainParser()
    recs = whole(p, data)
    assert recs[-1].kind == "main.vmdesc" and recs[-1].length == 5 + len(js) and not p._buf


def test_preempt_channel() -> None:
    data = ram_pages(b"pc.ram", [0x5000, 0x6000]) + ram_pages(b"pc.rom", [0]) + ram_eos()
    p = PreemptParser()
    recs = whole(p, data)
    assert kinds(recs) == ["ram.page", "ram.page", "ram.page", "ram.eos"]
    assert [r.fields["block"] for r in recs[:3]] == ["pc.ram", "pc.ram", "pc.rom"]
    assert key(bytewise(PreemptParser(), data)) == key(recs)
    bad = ram_pages(b"pc.ram", [0x5000], first_named=False)
    assert kinds(whole(PreemptParser(), bad)) == ["malformed", "opaque"]


def test_part_section_of_unknown_id_is_scanned_as_device() -> None:
    data = bytes(QemuFileHeader()) + bytes(SectionPart(section_id=77)) + b"abc" + bytes(SectionFooter(section_id=77))
    recs = whole(MainParser(), data + b"\x00")
    assert kinds(recs) == ["main.header", "main.section_part", "device.state", "main.footer", "main.eof"]


@pytest.mark.skipif(not REAL.exists(), reason="real stream not present")
def test_real_qemu72_precopy_stream() -> None:
    data = gzip.decompress(REAL.read_bytes())
    p = MainParser()
    recs = whole(p, data)
    assert not {"malformed", "truncated", "opaque", "gap"} & set(p.counts)
    # query-migrate said: normal 120, duplicate 12378 (QEMU 7.2.22, -M pc, 32 MiB, exec: migration)
    assert p.counts["ram.page"] == 120 and p.counts["ram.zero"] == 12378
    assert p.counts["device.state"] == 34 and p.counts["main.eof"] == 1 and recs[-1].kind == "main.vmdesc"
    assert recs[1].fields == {"machine": "pc-i440fx-7.2"}
    q = MainParser()
    got: list[Record] = []
    for i in range(0, len(data), 1000):
        got += q.feed(data[i:i + 1000], 0.0)
    assert key(got + q.eof(0.0)) == key(recs)


# -- footer candidates inside device bodies (a real 11.1 timer section held 7e 00 00 00 00 + zeros) -----

TIMER_BODY = bytes.fromhex("00000001a9d1787e") + bytes(16)


def _devices_stream(bodies: list[bytes], vmdesc: bool = True) -> bytes:
    devices = [(b"timer", bodies[0])] + [(f"dev{i}".encode(), b) for i, b in enumerate(bodies[1:])]
    return precopy_stream(pages=2, zero_pages=1, devices=devices,
                          vmdesc=b'{"devices": []}' if vmdesc else b"")


def _device_lengths(recs: list[Record]) -> list[int]:
    return [r.length for r in recs if r.kind == "device.state"]


@pytest.mark.parametrize("vmdesc", [True, False])
def test_timer_body_holding_a_footer_and_eof(vmdesc: bool) -> None:
    # section ids start at 10 in precopy_stream; the timer gets id 10, so spell its footer into the body
    body = bytes.fromhex("00000001a9d1787e") + b"\x00\x00\x00\x0a" + bytes(12)
    data = precopy_stream(pages=2, zero_pages=1, devices=[(b"timer", body)],
                          vmdesc=b'{"devices": []}' if vmdesc else b"")
    for recs in (whole(MainParser(), data), bytewise(MainParser(), data)):
        assert _device_lengths(recs) == [len(body)]
        assert kinds(recs).count("main.eof") == 1
        assert "malformed" not in kinds(recs) and "truncated" not in kinds(recs)


def test_eof_confirmed_at_stream_end_keeps_its_time() -> None:
    data = precopy_stream(pages=1, zero_pages=0, devices=[(b"timer", bytes(24))], vmdesc=b"")
    p = MainParser()
    recs = p.feed(data, 1.0) + p.eof(9.0)
    eof = next(r for r in recs if r.kind == "main.eof")
    dev = next(r for r in recs if r.kind == "device.state")
    assert eof.ts == 1.0 and dev.ts == 1.0 and eof.offset == len(data) - 1


def test_bytes_after_eof_are_one_malformed_record() -> None:
    data = precopy_stream(pages=1, zero_pages=0, vmdesc=b"") + bytes(1 << 20)
    recs = whole(MainParser(), data)
    assert kinds(recs).count("main.eof") == 1
    assert [r.fields["reason"] for r in recs if r.kind == "malformed"] == [
        "bytes after the end of the migration stream (EOF)"]


_TOKENS = st.sampled_from([b"\x7e\x00\x00\x00\x0a", b"\x7e\x00\x00\x00\x0b", b"\x7e\x00\x00\x00\x00",
                           b"\x00", b"\x7e", b"\x06", b"\x05", b"\xff", b"\x06\x00\x00\x00\x10"])


@settings(max_examples=150, deadline=None)
@given(bodies=st.lists(st.lists(_TOKENS, max_size=30).map(b"".join), min_size=1, max_size=3),
       chunk=st.sampled_from([1, 3, 64, 1 << 16]), vmdesc=st.booleans())
def test_device_bodies_full_of_footer_like_bytes(bodies: list[bytes], chunk: int, vmdesc: bool) -> None:
    """Bodies of footer candidates, EOF bytes and VMDESCRIPTION-like bytes that no real record confirms:
    every body comes out whole, one EOF, nothing malformed, whatever the chunking."""
    data = _devices_stream(bodies, vmdesc)
    p = MainParser()
    recs: list[Record] = []
    for i in range(0, len(data), chunk):
        recs += p.feed(data[i:i + chunk], 0.0)
    recs += p.eof(0.0)
    assert _device_lengths(recs) == [len(b) for b in bodies]
    assert kinds(recs).count("main.eof") == 1
    assert not {"malformed", "truncated", "opaque"} & set(kinds(recs))
