"""``--tls-verify``: every record decrypted and authenticated. By default a record holding only page
contents is framed, not decrypted, so damage inside it goes unnoticed (as on a plain capture); with
``--tls-verify`` the same damage is a failed authentication named in ``capture.keylog.problems``."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

from dissectors.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "multifd-tls-10.0.pcap.gz"
KEYLOG = ROOT / "captures" / "multifd-tls-10.0.keylog"


def _flip_one_page_byte(src: Path, dst: Path) -> int:
    """Copy the (classic pcap, Ethernet, IPv4) capture with one byte flipped in the middle of the TCP
    payload of the middle full-sized client segment of the connection carrying the most client bytes
    (a multifd channel: page contents). Returns the frame number changed."""
    raw = bytearray(gzip.decompress(src.read_bytes()))
    assert struct.unpack_from("<I", raw)[0] == 0xA1B2C3D4
    frames: list[tuple[int, int, int, int]] = []          # (frame, payload offset, payload length, sport)
    sent: dict[int, int] = {}
    pos, n = 24, 0
    while pos + 16 <= len(raw):
        incl = struct.unpack_from("<I", raw, pos + 8)[0]
        pkt = pos + 16
        n += 1
        if struct.unpack_from(">H", raw, pkt + 12)[0] == 0x0800 and raw[pkt + 23] == 6:
            ihl = (raw[pkt + 14] & 15) * 4
            tcp = pkt + 14 + ihl
            total = struct.unpack_from(">H", raw, pkt + 16)[0]
            doff = (raw[tcp + 12] >> 4) * 4
            sport = struct.unpack_from(">H", raw, tcp)[0]
            length = total - ihl - doff
            if length >= 1000 and sport > 1024:
                frames.append((n, tcp + doff, length, sport))
                sent[sport] = sent.get(sport, 0) + length
        pos = pkt + incl
    busiest = max(sent, key=lambda p: sent[p])
    mine = [f for f in frames if f[3] == busiest]
    frame, at, length, _ = mine[len(mine) // 2]
    raw[at + length // 2] ^= 0x40
    dst.write_bytes(bytes(raw))
    return frame


def _keylog_part(capture: Path, *extra: str, capsys) -> dict:
    code = main(["analyze", "--json", "--keylog", str(KEYLOG), *extra, str(capture)])
    report = json.loads(capsys.readouterr().out)
    return {"code": code, **report["capture"]["keylog"]}


def test_tls_verify_authenticates_page_records_the_default_frames(tmp_path: Path, capsys) -> None:
    damaged = tmp_path / "damaged.pcap"
    frame = _flip_one_page_byte(CAPTURE, damaged)

    clean = _keylog_part(CAPTURE, capsys=capsys)
    assert clean["authenticated"] == "records read" and not clean["problems"]
    clean_verified = _keylog_part(CAPTURE, "--tls-verify", capsys=capsys)
    assert clean_verified["authenticated"] == "every record" and not clean_verified["problems"]
    assert clean_verified["decrypted"] == clean["decrypted"] > 0

    framed = _keylog_part(damaged, capsys=capsys)
    assert not framed["problems"], f"frame {frame}: a page-only record was read by default"
    verified = _keylog_part(damaged, "--tls-verify", capsys=capsys)
    assert len(verified["problems"]) == 1, verified["problems"]
    assert "authenticat" in verified["problems"][0]
