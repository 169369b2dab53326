"""The JSON Schemas in docs/ hold for every report the corpus gives (stored expected reports and fresh
``analyze --json`` output), for ``watch --json`` events and ``dissect --json`` records, and they say the
same as docs/report-schema.md: a field added, removed or re-typed in the code fails here, naming it."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from schema_helpers import DOCS, SCHEMAS, assert_valid, problems, schema

from dissectors.analysis.judge import Options
from dissectors.cli.check import corpus_keylog, find_captures, sibling
from dissectors.cli.pipeline import analyze_file

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = find_captures([str(ROOT / "captures")])
IDS = [c.name.split(".pcap")[0] for c in CAPTURES]
CLI = [sys.executable, "-m", "dissectors.cli.main"]


@cache
def fresh(cap: Path) -> dict[str, Any]:
    return analyze_file(str(cap), Options(), keylog=corpus_keylog(cap)).report


def test_schemas_are_valid_json_schemas():
    from jsonschema import Draft202012Validator

    for name in SCHEMAS:
        Draft202012Validator.check_schema(schema(name))


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_expected_report_fits_schema(cap):
    stored = json.loads(sibling(cap, ".expected.json").read_text())
    # `check` stores reports without `tool` (its version would make every report differ on a release)
    assert "tool" not in stored
    assert_valid("report", {"tool": "migshark 0.0.0", **stored}, sibling(cap, ".expected.json").name)


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_fresh_report_fits_schema(cap):
    assert_valid("report", fresh(cap), f"analyze of {cap.name}")


def test_cli_json_fits_schema_with_options_and_keylog():
    cap = ROOT / "captures" / "multifd-tls-11.1.pcap.gz"
    out = subprocess.run(CLI + ["analyze", "--json", "--qemu-version", "11.1", "--keylog",
                                str(ROOT / "captures" / "multifd-tls-11.1.keylog"), str(cap)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode in (0, 1), out.stderr
    report = json.loads(out.stdout)
    assert report["capture"]["keylog"]["decrypted"] > 0
    assert report["options"]["qemu_version"] == "11.1"
    assert_valid("report", report, "analyze --json --keylog")


@pytest.mark.parametrize(("name", "kinds"), [
    ("holdback-multifd-7.2", {"migration-start", "channel", "misclassified", "outcome", "report"}),
    ("holdback-preempt-tiny-7.2", {"channel", "misclassified", "stall", "outcome", "report"}),
])
def test_watch_events_fit_schema(name, kinds):
    cap = ROOT / "captures" / f"{name}.pcap.gz"
    with cap.open("rb") as f:
        out = subprocess.run(CLI + ["watch", "--json", "--qemu-version", "7.2", "-"], stdin=f,
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 1, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert kinds <= {e["event"] for e in events}, {e["event"] for e in events}
    for i, e in enumerate(events):
        assert_valid("watch", e, f"watch --json line {i + 1} ({e.get('event')})")


def test_dissect_records_fit_schema():
    cap = ROOT / "captures" / "multifd4-postcopy-preempt-11.1.pcap.gz"
    lines = []
    for extra in ([], ["--summary"]):
        out = subprocess.run(CLI + ["dissect", "--json", "--limit", "3000", *extra, str(cap)],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert out.returncode in (0, 1), out.stderr
        lines += [json.loads(line) for line in out.stdout.splitlines()]
    records = [r for r in lines if "summary" not in r]
    assert len(records) > 100 and "summary" in lines[-1]
    assert {r["channel"] for r in records} >= {"main", "return-path", "multifd"}
    for i, rec in enumerate(lines):
        assert_valid("dissect", rec, f"dissect --json line {i + 1}")


# The schemas catch drift: the failures they give name the field.

def _a_report() -> dict[str, Any]:
    return copy.deepcopy(fresh(next(c for c in CAPTURES if c.name.startswith("holdback-multifd-7.2.pcap"))))


def test_an_added_field_is_named():
    r = _a_report()
    r["migrations"][0]["channels"][2]["frame"] = 7
    assert problems("report", r) == [
        "migrations[0].channels[2]: Additional properties are not allowed ('frame' was unexpected)"]


def test_a_removed_field_is_named():
    r = _a_report()
    del r["migrations"][0]["outcome"]["status"]
    assert problems("report", r) == ["migrations[0].outcome: 'status' is a required property"]


def test_a_retyped_field_and_an_unknown_enum_are_named():
    r = _a_report()
    r["findings"] = "1"
    r["migrations"][0]["channels"][0]["role"] = "mainn"
    got = problems("report", r)
    assert "findings: '1' is not of type 'integer'" in got
    assert any(p.startswith("migrations[0].channels[0].role: 'mainn' is not one of") for p in got), got


def test_a_broken_nullable_object_names_its_field():
    r = _a_report()
    r["migrations"][0]["multifd_repeated_pages"] = {"count": 1}
    assert problems("report", r) == ["migrations[0].multifd_repeated_pages: 'examples' is a required property"]


def test_a_watch_event_of_the_wrong_shape_is_named():
    e = {"event": "outcome", "wall": 1.0, "time": 2.0, "migration": 0, "destination": "127.0.0.1:4444",
         "status": "completed", "reason": "ok"}
    assert problems("watch", e) == []
    e["status"] = "done"
    assert problems("watch", e) == ["status: 'done' is not one of ['completed', 'failed', 'stalled', 'incomplete', "
                                    "'unknown']"]


# The schema and docs/report-schema.md say the same.

def _property_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties":
                names |= set(value)
            names |= _property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _property_names(value)
    return names


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_field_is_documented(name):
    text = (DOCS / "report-schema.md").read_text()
    documented = set(re.findall(r"`([a-z_][a-z0-9_]*)`", text))
    missing = sorted(_property_names(schema(name)) - documented)
    assert not missing, f"docs/{SCHEMAS[name]} has fields docs/report-schema.md does not name: {missing}"


def test_every_documented_report_field_is_in_the_schema():
    """The field tables of the report sections of docs/report-schema.md (first column) are in the schema."""
    text = (DOCS / "report-schema.md").read_text()
    report_part = text.split("## `migshark fleet`")[0]
    rows = re.findall(r"^\| ([^|]+) \|", report_part, flags=re.M)
    fields = {f for row in rows for f in re.findall(r"`([a-z_][a-z0-9_]*)`", row)}
    missing = sorted(fields - _property_names(schema("report")))
    assert not missing, f"docs/report-schema.md documents fields docs/report.schema.json lacks: {missing}"


def test_a_report_with_limits_and_other_connections_fits_schema(tmp_path):
    """More connections without a migration than the report lists: `limits` and `other_connections`."""
    from dissectors.capture.writer import PcapWriter, tcp_frame

    path = tmp_path / "many.pcap"
    with PcapWriter(path) as w:
        for i in range(2_010):
            sport = 20_000 + i
            t = 1_700_000_000.0 + i * 1e-3
            w.write(t, tcp_frame("10.0.0.1", "10.0.0.2", sport, 80, 1000, flags="S"))
            w.write(t + 1e-4, tcp_frame("10.0.0.2", "10.0.0.1", 80, sport, 5000, 1001, flags="SA"))
            w.write(t + 2e-4, tcp_frame("10.0.0.1", "10.0.0.2", sport, 80, 1001, 5001, flags="PA",
                                        payload=b"GET / HTTP/1.0\r\n\r\n"))
    report = analyze_file(str(path), Options()).report
    assert [lim["limit"] for lim in report["limits"]] == ["other_connections_listed"]
    assert len(report["other_connections"]) == 2_000 and not report["migrations"]
    assert_valid("report", report, "a report with limits")
