"""fleet's rows and summary say what analyze says: the same reason for a capture without a migration, and a
blocked peek as no role (not "taken as blocked")."""

from __future__ import annotations

import struct
from pathlib import Path

from dissectors.analysis.judge import Options
from dissectors.cli.pipeline import analyze_file
from dissectors.fleet.rows import rows_from_report
from dissectors.fleet.summary import render_summary

CAPTURES = Path(__file__).resolve().parent.parent / "captures"


def _rows(path: Path, qemu_version: str | None = None) -> list[dict]:
    report = analyze_file(str(path), Options(qemu_version=qemu_version)).report
    return rows_from_report(report, str(path), path.stat().st_size)


def test_a_header_only_capture_is_an_error_row_saying_why_and_the_summary_names_it(tmp_path: Path) -> None:
    cap = tmp_path / "hdr-only.pcap"
    cap.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    [row] = _rows(cap)
    assert row["status"] == "error"
    assert row["error"] == "no migration found: the capture holds no packet"
    text = render_summary([row], captures=1, seconds=0.1, engine="loop", table="t.csv")
    assert f"e.g. {cap}: no migration found: the capture holds no packet" in text


def test_a_blocked_peek_signature_gives_no_role() -> None:
    rows = _rows(CAPTURES / "holdback-preempt-7.2-to-11.1.pcap.gz", "11.1")
    sigs = [r["signature"] for r in rows if r["signature"] and r["signature"].startswith("misclassified")]
    assert sigs and all("as blocked" not in s for s in sigs)
    assert any("given no role (a peek stuck on it) (qemu-10.1+)" in s for s in sigs), sigs
