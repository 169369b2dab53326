"""Device state decoded along the VMDESCRIPTION (dissectors.vmstate, channels.device_state, dissect
--device): against QEMU's scripts/analyze-migration.py on real streams, without a description, and on
hostile descriptions and bodies."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from channel_helpers import bytewise, key, whole
from vmstate_helpers import analyze_shape

from dissectors.channels import ChannelSink, MainParser, Record
from dissectors.channels import device_state as ds
from dissectors.cli.pipeline import reassemble_file
from dissectors.layers.main_stream import Subsection
from dissectors.layers.synth import postcopy_package, precopy_stream
from dissectors.vmstate import DescriptionError, decode_device, parse_description
from dissectors.vmstate import decode as dec
from dissectors.vmstate import description as vd

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "captures"
DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "vmstate"


def capture_device_records(name: str) -> list[Record]:
    out: list[Record] = []

    def factory(conn: Any) -> ChannelSink:
        return ChannelSink(lambda d, recs: out.extend(r for r in recs if r.kind == "device.vmstate"),
                           device_state=True)

    reassemble_file(str(CORPUS / f"{name}.pcap.gz"), factory)
    return out


def stream_device_records(data: bytes) -> list[Record]:
    p = MainParser()
    p.keep_device_state()
    return [r for r in whole(p, data) if r.kind == "device.vmstate"]


def as_analyze_migration(records: list[Record]) -> dict[str, Any]:
    return {f"{r.fields['idstr']} ({r.fields['section_id']})": analyze_shape(r.fields["state"], r.raw or b"")
            for r in records if r.fields["decoded"]}


def by_idstr(records: list[Record]) -> dict[str, Record]:
    return {f"{r.fields['idstr']}/{r.fields['instance_id']}": r for r in records}


def values(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in entries}


# -- against analyze-migration.py ---------------------------------------------------------------------

GOLDEN_CAPTURES = ["precopy-7.2", "precopy-10.0", "precopy-11.1"]


@pytest.mark.parametrize("name", GOLDEN_CAPTURES)
def test_every_device_equals_analyze_migration(name: str) -> None:
    """Every field of every device of the capture's main channel, as analyze-migration.py printed it for
    the same stream (its -d state output, RAM left out; tests/data/vmstate/)."""
    recs = capture_device_records(name)
    want = json.loads(gzip.decompress((GOLDEN / f"analyze-migration-{name}.json.gz").read_bytes()))
    got = as_analyze_migration(recs)
    assert len(got) == 31 and list(got) == list(want)
    assert got == want
    assert not any(r.fields.get("problems") for r in recs)


def test_real_stream_with_vga_e1000_slirp_equals_analyze_migration() -> None:
    """The raw QEMU 7.2 stream of tests/data (34 devices, 36,140 values: VGA, e1000, slirp, parallel...)."""
    data = gzip.decompress((DATA / "qemu72-precopy-pc-i440fx.mig.gz").read_bytes())
    recs = stream_device_records(data)
    want = json.loads(gzip.decompress((GOLDEN / "analyze-migration-qemu72-precopy-pc-i440fx.json.gz").read_bytes()))
    assert as_analyze_migration(recs) == want
    assert {"0000:00:02.0/vga", "0000:00:03.0/e1000", "slirp"} <= {r.fields["idstr"] for r in recs}


# Values read off analyze-migration.py's output, per QEMU version.
CHECKED = {
    "precopy-7.2": {"timer": 0x9A4B3B21, "eip": 0x100343, "rax": 0x51F090, "apic_section": 7},
    "precopy-10.0": {"timer": 0x5FCDA099, "eip": 0x100314, "rax": 0, "apic_section": 6},
    "precopy-11.1": {"timer": 0x6493B380, "eip": 0x10031B, "rax": 0x5F, "apic_section": 6},
}


@pytest.mark.parametrize("name", GOLDEN_CAPTURES)
def test_checked_values(name: str) -> None:
    want = CHECKED[name]
    devs = by_idstr(capture_device_records(name))
    assert values(devs["timer/0"].fields["state"])["cpu_clock_offset"] == want["timer"]
    cpu = values(devs["cpu/0"].fields["state"])
    assert cpu["env.eip"] == want["eip"] and cpu["env.regs"][0] == want["rax"]
    assert len(cpu["env.regs"]) == 16
    apic = devs["apic/0"]
    assert apic.fields["section_id"] == want["apic_section"]
    a = values(apic.fields["state"])
    assert a["apicbase"] == 0xFEE00900 and a["timer_expiry"] == -1 and a["lvt"][3] == 0x8700
    assert values(values(devs["serial/0"].fields["state"])["state"])["lcr"] == 3
    assert values(devs["i8259/0"].fields["state"])["imr"] == 0xB8
    glob = values(devs["globalstate/0"].fields["state"])
    assert bytes.fromhex(glob["runstate"]).rstrip(b"\0") == b"running"
    if name == "precopy-7.2":            # QEMU 7.2's globalstate: a 100-byte runstate, no suspended flag
        assert len(glob["runstate"]) == 200 and "has_vm_was_suspended" not in glob
    else:
        assert len(glob["runstate"]) == 64 and glob["has_vm_was_suspended"] == 1
    # subsections are named entries carrying their version
    subs = [e for e in devs["cpu/0"].fields["state"] if e["type"] == "subsection"]
    assert subs and subs[0]["name"] == "cpu/poll_control_msr" and subs[0]["version_id"] == 1


def test_better_than_analyze_migration() -> None:
    """Types the script leaves as hex (or reads with the wrong byte order) are decoded."""
    devs = by_idstr(capture_device_records("precopy-10.0"))
    pm = devs["0000:00:01.3/piix4_pm/0"].fields["state"]
    flat = _flatten(pm)
    assert any(t == "pci irq state" and isinstance(v, list) and len(v) == 4 for t, v in flat)
    tmp = [e for e in _walk(devs["cpu/0"].fields["state"]) if e["type"] == "tmp"]
    assert tmp and isinstance(tmp[0]["value"], list) and tmp[0]["value"]       # a tmp struct walked
    le = [e for e in _walk([e for r in devs.values() for e in r.fields.get("state", [])]) if e["type"] == "int32 le"]
    assert le and all(isinstance(e["value"], int) for e in le)


def _walk(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        out.append(e)
        v = e.get("value")
        if isinstance(v, list) and v and isinstance(v[0], dict):
            out += _walk(v)
        elif isinstance(v, list) and v and isinstance(v[0], list) and v[0] and isinstance(v[0][0], dict):
            for el in v:
                out += _walk(el)
    return out


def _flatten(entries: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(e["type"], e.get("value")) for e in _walk(entries)]


# -- no description -----------------------------------------------------------------------------------

def test_postcopy_says_no_description_and_keeps_sizes() -> None:
    recs = capture_device_records("postcopy-7.2")
    assert recs and all(not r.fields["decoded"] for r in recs)
    assert all(r.fields["reason"] == ds.NO_DESCRIPTION_POSTCOPY for r in recs)
    timer = by_idstr(recs)["timer/0"]
    assert timer.length == 24 and timer.raw is not None and len(timer.raw) == 24


def test_stream_cut_before_the_description() -> None:
    data = gzip.decompress((DATA / "qemu72-precopy-pc-i440fx.mig.gz").read_bytes())
    cut = data[:data.rindex(b"\x00\x06\x00")]     # up to the EOF before the VMDESCRIPTION
    recs = stream_device_records(cut)
    assert len(recs) == 34 and all(r.fields["reason"] == ds.NO_DESCRIPTION for r in recs)
    assert sum(r.length for r in recs) == sum(len(r.raw or b"") for r in recs) > 0


def test_gaps_in_a_body_and_in_the_description() -> None:
    body = struct.pack(">qI6H", -2, 7, *range(6))
    data = _stream([(b"timer", body), (b"cpu", b"\x7e" * 40)], {"page_size": 4096, "devices": [TIMER_DESC]})
    at = data.index(body) + 4                   # 4 bytes of the timer's body never captured
    p = MainParser()
    p.keep_device_state()
    recs = p.feed(data[:at], 1.0) + p.gap(4, 1.0) + p.feed(data[at + 4:], 1.0) + p.eof(2.0)
    dev = [r for r in recs if r.kind == "device.vmstate"]
    assert [r.fields["reason"] for r in dev] == ["not kept: bytes of the section were not captured"]
    at = data.rindex(b'"devices"')               # inside the VMDESCRIPTION's JSON
    p = MainParser()
    p.keep_device_state()
    recs = p.feed(data[:at], 1.0) + p.gap(4, 1.0) + p.feed(data[at + 4:], 1.0) + p.eof(2.0)
    dev = {r.fields["idstr"]: r for r in recs if r.kind == "device.vmstate"}
    assert dev["timer"].fields["reason"] == ds.NO_DESCRIPTION_GAP and dev["timer"].raw == body


def test_postcopy_package_synthetic() -> None:
    p = MainParser()
    p.keep_device_state()
    from dissectors.layers.main_stream import QemuFileHeader
    recs = whole(p, bytes(QemuFileHeader()) + postcopy_package())
    dev = [r for r in recs if r.kind == "device.vmstate"]
    assert [r.fields["idstr"] for r in dev] == ["timer"] and dev[0].fields["reason"] == ds.NO_DESCRIPTION_POSTCOPY


# -- synthetic streams: chunking, bounds ---------------------------------------------------------------

TIMER_DESC = {"name": "timer", "instance_id": 0, "vmsd_name": "timer", "version": 2,
              "fields": [{"name": "a", "type": "int64", "size": 8}, {"name": "b", "type": "uint32", "size": 4},
                         {"name": "arr", "type": "uint16", "size": 2, "array_len": 6}]}


def _stream(devices: list[tuple[bytes, bytes]], desc: Any) -> bytes:
    text = desc if isinstance(desc, bytes) else json.dumps(desc).encode()
    return precopy_stream(devices=devices, vmdesc=text)


def test_synthetic_decode_and_chunking() -> None:
    body = struct.pack(">qI6H", -2, 0x7E000000, *range(6))      # holds 0x7e bytes, as bodies do
    data = _stream([(b"timer", body), (b"cpu", b"\x7e" * 40)], {"page_size": 4096, "devices": [TIMER_DESC]})
    p1, p2 = MainParser(), MainParser()
    p1.keep_device_state()
    p2.keep_device_state()
    a, b = whole(p1, data), bytewise(p2, data)
    assert key(a) == key(b)
    dev = {r.fields["idstr"]: r for r in a if r.kind == "device.vmstate"}
    assert values(dev["timer"].fields["state"]) == {"a": -2, "b": 0x7E000000, "arr": [0, 1, 2, 3, 4, 5]}
    assert dev["cpu"].fields == {"section_id": 11, "idstr": "cpu", "instance_id": 0, "version_id": 1,
                                 "decoded": False, "reason": "not in the VMDESCRIPTION"}
    plain = MainParser()
    assert [r for r in whole(plain, data) if r.kind == "device.vmstate"] == []   # only when asked


def test_body_bound_keeps_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "MAX_KEPT_BYTES", 30)
    data = _stream([(b"timer", b"\1" * 26), (b"cpu", b"\2" * 40)], {"page_size": 4096, "devices": [TIMER_DESC]})
    p = MainParser()
    p.keep_device_state()
    dev = {r.fields["idstr"]: r for r in whole(p, data) if r.kind == "device.vmstate"}
    assert dev["timer"].fields["decoded"] is True
    assert dev["cpu"].length == 40 and dev["cpu"].raw is None
    assert "above the 30-byte bound" in dev["cpu"].fields["reason"]


def test_oversized_description_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dissectors.channels.main.MAX_DESCRIPTION", 10)
    data = _stream([(b"timer", b"\1" * 26)], {"page_size": 4096, "devices": [TIMER_DESC]})
    p = MainParser()
    p.keep_device_state()
    recs = whole(p, data)
    assert "main.vmdesc" in [r.kind for r in recs]
    dev = [r for r in recs if r.kind == "device.vmstate"]
    assert "VMDESCRIPTION of 266 bytes is above the" in dev[0].fields["reason"]
    assert not [r for r in recs if r.kind == "malformed"]


# -- hostile descriptions and bodies --------------------------------------------------------------------

@pytest.mark.parametrize("text,why", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"devices": 3}', "no 'devices' list"),
    (b'{"devices": [7]}', "device #0 is not an object"),
    (b'{"devices": [{"name": 1, "instance_id": 0}]}', "no name or instance_id"),
    (b"[" * 200_000 + b"]" * 200_000, "nests too deeply"),
    (b'{"devices": [' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"]}", "nests too deeply"),
])
def test_bad_description_is_a_message(text: bytes, why: str) -> None:
    with pytest.raises(DescriptionError, match=why):
        parse_description(text)
    if not text.startswith(b"{"):     # the main parser only takes a VMDESCRIPTION that opens a JSON object
        return
    recs = stream_device_records(_stream([(b"timer", b"\0" * 24)], text))
    assert len(recs) == 1 and why in recs[0].fields["reason"] and recs[0].fields["reason"].startswith(
        "VMDESCRIPTION unusable")


def test_description_size_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vd, "MAX_DESCRIPTION", 8)
    with pytest.raises(DescriptionError, match="above the 8-byte bound"):
        parse_description(b'{"devices": []}')


def _decode(fields: list[Any], body: bytes, **extra: Any) -> dec.DecodedDevice:
    return decode_device(body, {"name": "d", "instance_id": 0, "fields": fields, **extra})


def test_sizes_that_do_not_add_up() -> None:
    got = _decode([{"name": "x", "type": "uint32", "size": 4}, {"name": "y", "type": "uint64", "size": 8}],
                  b"\0\0\0\5\1\2")
    assert got.fields[0]["value"] == 5
    assert got.fields[1]["error"] == "field y (uint64) needs 8 bytes at offset 4, 2 left in the section"
    assert got.problems == [got.fields[1]["error"]] and got.consumed == 4
    more = _decode([{"name": "x", "type": "uint8", "size": 1}], b"\1\2\3")
    assert more.problems == ["2 bytes after the described fields, at offset 1"]
    st = _decode([{"name": "s", "type": "struct", "size": 3,
                   "struct": {"vmsd_name": "s", "fields": [{"name": "z", "type": "uint8", "size": 1}]}}], b"\1")
    assert st.problems == ["field s: 1 bytes decoded, description says 3"]


def test_unknown_types_hex_and_odd_entries() -> None:
    got = _decode([{"name": "u", "type": "frobnicator", "size": 3}, {"name": "b", "type": "bool", "size": 1},
                   {"name": "n", "type": "nullptr", "size": 1}, {"name": "f", "type": "float64", "size": 8},
                   {"name": "le", "type": "int32 le", "size": 4}, {"name": "c", "type": "capability", "size": 0},
                   {"name": "i", "type": "uint16", "size": 2, "array_len": 0}],
                  b"\xab\xcd\xef\x01" + b"0" + struct.pack(">d", 1.5) + struct.pack("<i", -3) + b"\3xyz")
    assert values(got.fields) == {"u": "abcdef", "b": True, "n": None, "f": 1.5, "le": -3, "c": "xyz", "i": []}
    assert not got.problems
    nan = _decode([{"name": "f", "type": "float64", "size": 8}], struct.pack(">d", float("nan")))
    json.dumps(nan.fields, allow_nan=False)                       # JSON has no NaN: shown as text
    for bad in ([{"name": "x", "type": "uint8"}], [5], [{"name": "x", "type": "uint8", "size": -1}],
                [{"name": "x", "type": "uint8", "size": 1, "array_len": "many"}]):
        res = _decode(bad, b"\0")
        assert res.problems and res.consumed == 0
    assert _decode("nope", b"").problems == ["'fields' of ? is not a list"]     # type: ignore[arg-type]
    assert decode_device(b"", {"name": "d"}).problems == ["the description has no fields for this device"]


def test_subsections() -> None:
    sub = bytes(Subsection(idstr=b"d/sub", version_id=3))
    desc = {"subsections": [{"vmsd_name": "d/sub", "fields": [{"name": "v", "type": "uint8", "size": 1}]}]}
    got = _decode([{"name": "x", "type": "uint8", "size": 1}], b"\7" + sub + b"\x09", **desc)
    assert got.fields[1]["name"] == "d/sub" and got.fields[1]["version_id"] == 3
    assert values(got.fields[1]["value"]) == {"v": 9} and not got.problems
    missing = _decode([{"name": "x", "type": "uint8", "size": 1}], b"\7\0", **desc)
    assert missing.problems == ["subsection d/sub not found at offset 1"]
    other = bytes(Subsection(idstr=b"d/other", version_id=1))
    wrong = _decode([], other + b"\1", **desc)
    assert wrong.problems == ["subsection d/other at offset 0, the description expects d/sub"]


def test_deep_nesting_and_huge_arrays_are_bounded() -> None:
    inner: dict[str, Any] = {"vmsd_name": "leaf", "fields": [{"name": "v", "type": "uint8", "size": 1}]}
    for i in range(vd.MAX_DEPTH + 5):
        inner = {"vmsd_name": f"s{i}", "fields": [{"name": f"f{i}", "type": "struct", "size": 1, "struct": inner}]}
    got = _decode(inner["fields"], b"\1")
    assert got.problems and "nested deeper than" in got.problems[0]
    t0 = time.monotonic()
    huge = _decode([{"name": "z", "type": "unused_buffer", "size": 0, "array_len": 10**12}], b"")
    assert huge.problems == [f"more than {dec.MAX_VALUES_PER_DEVICE} values in one device"]
    budget = dec.Budget(left=10)
    capped = decode_device(b"\0" * 100, {"fields": [{"name": "a", "type": "uint8", "size": 1, "array_len": 100}]},
                           budget)
    assert capped.problems == [f"more than {dec.MAX_VALUES_PER_STREAM} values in the stream"]
    assert time.monotonic() - t0 < 5


def test_sections_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "MAX_KEPT_SECTIONS", 1)
    data = _stream([(b"timer", b"\1" * 26), (b"cpu", b"\2" * 40)], {"page_size": 4096, "devices": [TIMER_DESC]})
    recs = stream_device_records(data)
    assert [r.fields["idstr"] for r in recs] == ["timer", None]
    assert recs[1].fields["reason"] == "1 more device sections past the bound of 1 not listed"


# -- the command line ---------------------------------------------------------------------------------

def _dissect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dissectors.cli.main", "dissect", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_cli_device_filter_verbose_and_json() -> None:
    cap = str(CORPUS / "precopy-11.1.pcap.gz")
    res = _dissect(cap, "--device", "se*", "-V")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any("device.vmstate" in ln and "idstr=serial" in ln and "decoded=True" in ln for ln in lines)
    assert "        lcr: uint8[1] @5 = 3" in lines
    assert not any("ram." in ln or "idstr=timer" in ln for ln in lines)
    res = _dissect(cap, "--device", "apic", "--json")
    recs = [json.loads(ln) for ln in res.stdout.splitlines()]
    vm = [r for r in recs if r["type"] == "device.vmstate"]
    assert len(vm) == 1 and {r["type"] for r in recs} == {"device.state", "device.vmstate"}
    state = {e["name"]: e for e in vm[0]["fields"]["state"]}
    assert state["apicbase"] == {"name": "apicbase", "type": "uint32", "offset": 0, "size": 4, "value": 0xFEE00900}
    assert state["lvt"]["array_len"] == 6 and state["lvt"]["size"] == 24
    res = _dissect(cap, "--device", "nosuch*")
    assert "no device section matches --device nosuch*" in res.stderr and "apic" in res.stderr
