"""Raw migration stream files (``migrate "exec:cat > FILE"``, ``file:FILE``) read as the main channel by
``analyze`` and ``dissect``, checked against QEMU's own counters and against the capture of the same
machine (captures/precopy-7.2)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from capture_helpers import gzip_damaged_at, zlib_most

from dissectors.cli.main import main

DATA = Path(__file__).resolve().parent / "data"
CORPUS = Path(__file__).resolve().parent.parent / "captures"
EXEC_72 = DATA / "stream-exec-7.2.qevm.gz"
FILE_10 = DATA / "stream-file-10.0.qevm.gz"
MAPPED_10 = DATA / "stream-mapped-ram-10.0.qevm.gz"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def records(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> list[dict]:
    rc, out, _ = run(capsys, "dissect", "--json", *args, str(path))
    assert rc == 0
    return [json.loads(x) for x in out.splitlines()]


@pytest.mark.parametrize("path,pages,zeros", [(EXEC_72, 1140, 7182), (FILE_10, 1143, 7179)])
def test_dissect_counts_what_qemu_said(capsys: pytest.CaptureFixture[str], path: Path, pages: int,
                                       zeros: int) -> None:
    rc, out, err = run(capsys, "dissect", "--summary", str(path))
    assert rc == 0 and not err
    assert f"main           ram.page                 {pages}\n" in out     # info migrate: normal
    assert f"main           ram.zero                 {zeros}\n" in out     # info migrate: duplicate
    assert "main           main.eof                 1\n" in out and "main.vmdesc              1" in out


def test_analyze_reports_a_complete_stream_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "analyze", str(EXEC_72))
    assert rc == 0
    assert "a raw migration stream file (QEVM version 3, no capture header), read as the main channel" in out
    assert "COMPLETE: the stream ends with QEMU_VM_EOF at offset" in out
    assert "no TCP: no connections, accept order or roles race to judge" in out
    assert "RAM: 1140 pages and 7182 zero pages (4.5 MiB) of 8322 guest pages" in out
    assert "machine pc-i440fx-7.2" in out
    rc, out, _ = run(capsys, "analyze", "--json", str(FILE_10))
    report = json.loads(out)
    assert rc == 0 and report["findings"] == 0 and report["migrations"] == []
    assert report["capture"]["format"] == "migration-stream"
    s = report["stream_file"]
    assert s["status"] == "complete" and s["ram"]["pages"] == 1143 and s["ram"]["zero_pages"] == 7179


def test_devices_match_the_capture_of_the_same_machine(capsys: pytest.CaptureFixture[str]) -> None:
    """The same machine type migrated over TCP (captures/precopy-7.2): the same device sections, in the
    same order, each with the same amount of state."""
    want = [(r["fields"]["idstr"], r["length"])
            for r in records(capsys, CORPUS / "precopy-7.2.pcap.gz", "-t", "device.state")]
    got = [(r["fields"]["idstr"], r["length"]) for r in records(capsys, EXEC_72, "-t", "device.state")]
    assert len(got) == 31 and got == want
    rc, out, _ = run(capsys, "analyze", "--json", str(EXEC_72))
    devices = json.loads(out)["stream_file"]["devices"]
    assert [(d["idstr"], d["bytes"]) for d in devices] == want


def test_stream_file_records_have_no_frames_nor_times(capsys: pytest.CaptureFixture[str]) -> None:
    recs = records(capsys, EXEC_72, "-t", "main.*", "-x")
    assert recs[0]["type"] == "main.header" and recs[0]["bytes"] == "5145564d00000003"
    assert all(r["first_frame"] is None and r["time"] is None and r["client"] is None for r in recs)
    rc, _, err = run(capsys, "dissect", "-c", "1", str(EXEC_72))
    assert rc == 2 and "a raw migration stream file has one stream, connection 0" in err


def test_a_cut_stream_file_is_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.qevm"
    cut.write_bytes(gzip.decompress(EXEC_72.read_bytes())[:2_000_000])
    rc, out, _ = run(capsys, "analyze", str(cut))
    assert rc == 1
    assert "INCOMPLETE: cut short inside a record (ram.page) starting at offset 1999531, before QEMU_VM_EOF" in out
    rc, out, _ = run(capsys, "dissect", "--summary", str(cut))
    assert rc == 1 and "truncated                1" in out


def test_mapped_ram_pages_are_counted_from_the_bitmaps(capsys: pytest.CaptureFixture[str]) -> None:
    """QEMU 10.0 ``file:`` with mapped-ram: the pages sit at fixed file offsets; each block's bitmap says
    which were written: 1143, what QEMU's ``info migrate`` said (normal pages)."""
    rc, out, _ = run(capsys, "analyze", "--json", str(MAPPED_10))
    s = json.loads(out)["stream_file"]
    assert rc == 0 and s["status"] == "complete" and s["capabilities"] == ["mapped-ram"]
    assert s["ram"] == {"pages": 1143, "zero_pages": 0, "bytes": 0, "guest_pages": 8322, "mapped_ram": True}
    assert len(s["devices"]) == 31
    rc, out, _ = run(capsys, "analyze", str(MAPPED_10))
    assert "RAM (mapped-ram): 1143 of 8322 guest pages stored at fixed file offsets" in out
    blocks = records(capsys, MAPPED_10, "-t", "ram.mem_size")[0]["fields"]["blocks"]
    assert blocks[0] == {"idstr": "pc.ram", "used_length": 32 << 20, "bitmap_offset": 141,
                         "pages_offset": 1 << 20, "pages": 1091}
    assert sum(b["pages"] for b in blocks) == 1143
    # the stream goes on after the last block's pages: the same device sections as a 10.0 stream
    want = [r["fields"]["idstr"] for r in records(capsys, FILE_10, "-t", "main.section_full")]
    got = [r["fields"]["idstr"] for r in records(capsys, MAPPED_10, "-t", "main.section_full")]
    assert got == want


def test_a_stream_file_through_a_pipe_is_told_to_come_as_a_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = gzip.decompress(EXEC_72.read_bytes())[:4096]
    res = subprocess.run([sys.executable, "-m", "dissectors.cli.main", "dissect", "-"], input=data,
                         capture_output=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 2
    assert b"magic 0x5145564d" in res.stderr and b"give it as a file, not through a pipe" in res.stderr


def test_device_state_is_decoded_in_a_stream_file_as_in_a_capture(capsys: pytest.CaptureFixture[str]) -> None:
    """``dissect --device NAME -V`` on a stream file (what analyze-migration.py reads) decodes each field
    along the VMDESCRIPTION, as on the capture of the same machine (it gave no device.vmstate at all)."""
    def decoded(path: Path) -> list[tuple[str, bool, list[str]]]:
        return [(r["fields"]["idstr"], r["fields"]["decoded"], [f["name"] for f in r["fields"]["state"]])
                for r in records(capsys, path, "-t", "device.vmstate", "--device", "cpu*")]
    got = decoded(EXEC_72)
    assert [(idstr, ok, len(names)) for idstr, ok, names in got] == [("cpu_common", True, 2), ("cpu", True, 68)]
    assert got == decoded(CORPUS / "precopy-7.2.pcap.gz")
    rc, out, _ = run(capsys, "dissect", "--device", "cpu_common", "-V", str(EXEC_72))
    assert rc == 0 and "    halted: uint32[4] @0 = " in out


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
def test_a_cut_gzip_stream_file_gives_every_byte_it_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch, inflater: str) -> None:
    """A .gz stream file cut short is inflated as a capture is (the capture room's ``GunzipStream``, zlib-ng
    where installed): every byte before the cut reaches the parser, then the file is named with the problem;
    the stdlib ``GzipFile`` dropped the last chunk it had inflated (4194304 of these 4456305 bytes)."""
    import zlib

    from zlib_ng import zlib_ng

    import dissectors.capture.gunzip as gunzip

    monkeypatch.setattr(gunzip, "_backend", zlib if inflater == "zlib" else zlib_ng)
    cut = tmp_path / "cut.qevm.gz"
    cut.write_bytes(EXEC_72.read_bytes()[:100_000])
    held = len(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut.read_bytes()))
    rc, out, _ = run(capsys, "analyze", "--json", str(cut))
    report = json.loads(out)
    assert rc == 1 and report["capture"]["bytes"] == held
    assert report["capture"]["warnings"] == [
        f"{cut}: uncompressed offset {held}: gzip stream ends early (file cut?) at compressed offset 100000; "
        "stopped reading"]
    rc, _, err = run(capsys, "dissect", "--summary", str(cut))
    assert rc == 1 and err == f"migshark: warning: {report['capture']['warnings'][0]}\n"


def test_a_gzip_stream_file_damaged_at_its_start_is_an_input_error(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Deflate data damaged before its first bytes inflate: a clear message naming the file and where zlib found
    the damage, and exit 2, not the ``zlib.error`` traceback ``GzipFile`` raised while looking for the QEVM magic
    (tests/test_capture_damage.py: the other ways a gzip file is damaged at its start)."""
    damaged = bytearray(EXEC_72.read_bytes())
    for i in range(12, 40):
        damaged[i] ^= 0x55
    path = tmp_path / "damaged.qevm.gz"
    path.write_bytes(damaged)
    for command in ("analyze", "dissect"):
        rc, out, err = run(capsys, command, str(path))
        assert rc == 2 and not out
        assert err.startswith(f"migshark: error: {path}: not a readable gzip file: gzip data corrupt at compressed "
                              f"offset {zlib_most(bytes(damaged))[1]}: ") and "Traceback" not in err


def test_damaged_gzip_data_after_the_magic_is_said_after_what_it_held(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged trailer (its CRC): the records before it are decoded, then the file is named with zlib's words and
    the offset of the byte where it found the damage; every byte inflated before it is handed over (the last
    piece inflated, lost with zlib's exception, left it 138,362 bytes short here)."""
    damaged = bytearray(EXEC_72.read_bytes())
    damaged[-5] ^= 0xFF                          # the CRC in the gzip trailer
    path = tmp_path / "crc.qevm.gz"
    path.write_bytes(damaged)
    most, fails = zlib_most(bytes(damaged))
    rc, out, _ = run(capsys, "analyze", "--json", str(path))
    report = json.loads(out)
    held = report["capture"]["bytes"]
    assert rc == 1 and held == len(most) == len(gzip.decompress(EXEC_72.read_bytes()))
    assert report["capture"]["warnings"] == [f"{path}: uncompressed offset {held}: gzip data corrupt at compressed "
                                             f"offset {fails}: Error -3 while decompressing data: incorrect data "
                                             "check; stopped reading"]
    assert report["stream_file"]["status"] != "complete"


@pytest.mark.parametrize("inflater", ["zlib", "zlib-ng"])
@pytest.mark.parametrize("at,level", [(3_000_000, 6), (400_000, 0)], ids=["first-mark", "past-a-mark"])
def test_a_gzip_stream_file_damaged_partway_gives_what_zlib_can(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch, at: int,
                                                                level: int, inflater: str) -> None:
    """A gzip'd stream file damaged partway (at compressed offset 69881, and ~400,000: past the first of the
    inflater's copies, every 256 KiB): ``FileBytes`` hands over all that feeding zlib one byte at a time
    recovers (it lost the 1 MiB read under way: 2,097,152 of 3,000,000 bytes), and the report stops there."""
    import zlib

    from zlib_ng import zlib_ng

    import dissectors.capture.gunzip as gunzip
    from dissectors.capture.source import FileBytes
    from dissectors.cli.pipeline import STREAM_FILE_CHUNK

    monkeypatch.setattr(gunzip, "_backend", zlib if inflater == "zlib" else zlib_ng)
    raw = gzip.decompress(EXEC_72.read_bytes())
    blob, damage = gzip_damaged_at(raw, at, level)
    most, fails = zlib_most(blob)
    assert fails == damage and most == raw[:at]
    path = tmp_path / "damaged.qevm.gz"
    path.write_bytes(blob)
    with FileBytes(path) as f:
        got = b"".join(iter(lambda: f.read(STREAM_FILE_CHUNK), b""))
        problem = f.problem
    assert len(got) == len(most) and got == most
    corrupt = f"gzip data corrupt at compressed offset {damage}: Error -3 while decompressing data: invalid block type"
    assert problem == corrupt
    rc, out, _ = run(capsys, "analyze", "--json", str(path))
    report = json.loads(out)
    assert rc == 1 and report["capture"]["bytes"] == at
    assert report["capture"]["warnings"] == [f"{path}: uncompressed offset {at}: {corrupt}; stopped reading"]
