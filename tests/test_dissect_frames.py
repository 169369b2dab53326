"""``migshark dissect`` frame numbers and ``-x`` bytes, against tshark's own view of the same corpus capture:
the frame said to hold a record's first byte is a segment of that connection and direction whose sequence
range holds the record's offset, and likewise for the last byte."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from dissectors.cli.main import main

CORPUS = Path(__file__).resolve().parent.parent / "captures"
pytestmark = pytest.mark.tshark


def tshark_segments(capture: Path) -> dict[int, tuple[int, int, int, int]]:
    """frame number -> (source port, destination port, relative seq, payload length) of every TCP frame."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (scripts/install-test-deps.sh)")
    out = subprocess.run([tshark, "-n", "-r", str(capture), "-Y", "tcp", "-T", "fields", "-e", "frame.number",
                          "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.seq", "-e", "tcp.len"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    frames = {}
    for line in out.splitlines():
        n, sport, dport, seq, length = line.split("\t")
        frames[int(n)] = (int(sport), int(dport), int(seq), int(length))
    return frames


def dissect_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert main(["dissect", "--json", *args]) in (0, 1)
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def holds(frame: tuple[int, int, int, int], rec: dict, byte: int) -> bool:
    """Does ``frame`` (tshark's view) carry stream offset ``byte`` of ``rec``'s direction?"""
    sport, dport, seq, length = frame
    cport, sport_ = int(rec["client"].rsplit(":", 1)[1]), int(rec["server"].rsplit(":", 1)[1])
    src, dst = (cport, sport_) if rec["direction"] == "to-server" else (sport_, cport)
    # tshark's relative sequence number of the first byte after the SYN is 1: offset = seq - 1
    return (sport, dport) == (src, dst) and seq - 1 <= byte < seq - 1 + length


@pytest.mark.parametrize("name", ["multifd-postcopy-7.2", "multifd4-postcopy-preempt-11.1"])
def test_frames_hold_the_records_bytes_in_tshark(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    capture = CORPUS / f"{name}.pcap.gz"
    frames = tshark_segments(capture)
    recs = [r for r in dissect_json(capsys, "--pages", str(capture)) if r["length"] > 0 and r["type"] != "gap"]
    assert len(recs) > 1000
    kinds = defaultdict(int)
    for rec in recs:
        first, last = rec["first_frame"], rec["last_frame"]
        assert first is not None and last is not None and first <= last, rec
        assert holds(frames[first], rec, rec["offset"]), (rec, frames[first])
        assert holds(frames[last], rec, rec["offset"] + rec["length"] - 1), (rec, frames[last])
        kinds[rec["channel"]] += 1
    assert {"main", "return-path"} <= set(kinds)
    assert any(r["first_frame"] < r["last_frame"] for r in recs)      # records spanning frames are there


def test_reordered_capture_frames_hold_the_first_byte_or_complete_it(capsys: pytest.CaptureFixture[str]) -> None:
    """A capture taken over a reordering path: a record's last frame is where its last byte became
    readable in order; it still holds bytes of the record's connection and direction."""
    capture = CORPUS / "netpath-multifd4-7.2-misorder.dst.pcap.gz"
    frames = tshark_segments(capture)
    recs = [r for r in dissect_json(capsys, str(capture)) if r["length"] > 0 and r["type"] != "gap"]
    exact = 0
    for rec in recs:
        assert rec["first_frame"] in frames and rec["last_frame"] in frames
        exact += holds(frames[rec["first_frame"]], rec, rec["offset"])
    assert exact >= 0.9 * len(recs)


def test_text_and_verbose_lines_carry_the_frames(capsys: pytest.CaptureFixture[str]) -> None:
    capture = str(CORPUS / "multifd-postcopy-7.2.pcap.gz")
    recs = dissect_json(capsys, "-t", "rp.req_pages", "--limit", "1", capture)
    first = recs[0]["first_frame"]
    assert main(["dissect", "-V", "-t", "rp.req_pages", "--limit", "1", capture]) == 0
    out = capsys.readouterr().out
    assert out.lstrip().startswith(f"{first} #0 <- return-path")
    assert f"    Frames: {first} (" in out


def test_hex_dump_shows_the_records_bytes_capped(capsys: pytest.CaptureFixture[str]) -> None:
    capture = str(CORPUS / "multifd-postcopy-7.2.pcap.gz")
    assert main(["dissect", "-x", "-t", "main.config", capture]) == 0
    out = capsys.readouterr().out
    # QEMU_VM_CONFIGURATION (7), be32 13, "pc-i440fx-7.2"
    assert "    0000  07 00 00 00 0d 70 63 2d  69 34 34 30 66 78 2d 37   .....pc-i440fx-7\n" in out
    assert "    0010  2e 32 " in out
    assert main(["dissect", "-x", "--pages", "-t", "ram.page", "--limit", "1", capture]) == 0
    out = capsys.readouterr().out
    assert "    00f0  " in out and "    0100  " not in out          # 256 bytes of a 4 KiB page
    assert "more byte(s) (first 256 bytes of a record shown)" in out
    recs = dissect_json(capsys, "-x", "--pages", "-t", "ram.page", "--limit", "3", capture)
    assert all(len(bytes.fromhex(r["bytes"])) == 256 for r in recs)
    # the page header: be64 address|flags, then the page (the block name only when it changes)
    assert all(int.from_bytes(bytes.fromhex(r["bytes"])[:8], "big") & ~0xFFF == r["fields"]["addr"] for r in recs)


def test_pcapng_frames_are_numbered_as_in_the_pcap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    editcap = shutil.which("editcap")
    if editcap is None:
        pytest.skip("editcap is not installed (wireshark-common)")
    capture = CORPUS / "multifd-postcopy-7.2.pcap.gz"
    ng = tmp_path / "m.pcapng"
    subprocess.run([editcap, "-F", "pcapng", str(capture), str(ng)], check=True, capture_output=True)
    want = [(r["offset"], r["first_frame"], r["last_frame"]) for r in dissect_json(capsys, "--pages", str(capture))]
    got = [(r["offset"], r["first_frame"], r["last_frame"]) for r in dissect_json(capsys, "--pages", str(ng))]
    assert got == want and len(want) > 1000
