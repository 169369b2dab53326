# SPDX-License-Identifier: GPL-2.0-or-later
"""Manifest writing, scenario table and the command's usage errors (no QEMU needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dissectors.recorder import add_arguments, run
from dissectors.recorder.manifest import FORMAT, read_manifest, write_manifest
from dissectors.recorder.proxy import ConnectionLog
from dissectors.recorder.scenarios import SCENARIOS, Scenario, with_overrides


def test_manifest_round_trip_and_plain_json(tmp_path: Path) -> None:
    conn = ConnectionLog(index=1, accepted_at=1.5, client_port=40000, held_back_s=1.0)
    data = {
        "name": "x",
        "outcome": "stalled",
        "scenario": SCENARIOS["holdback-preempt-7.2"],
        "proxy": {"connections": [conn], "hold_back_indices": {1}},
        "capture": {"file": Path("x.pcap")},
    }
    path = write_manifest(tmp_path / "x.manifest.json", data)
    raw = json.loads(path.read_text())
    assert raw["format"] == FORMAT
    assert raw["scenario"]["hold_back"] == "main" and raw["scenario"]["preempt"] is True
    assert raw["proxy"]["connections"][0]["client_port"] == 40000
    assert raw["proxy"]["hold_back_indices"] == [1]
    assert raw["capture"]["file"] == "x.pcap"
    assert read_manifest(path)["outcome"] == "stalled"
    assert not list(tmp_path.glob("*.tmp"))


def test_manifest_rejects_unknown_outcome(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_manifest(tmp_path / "m.json", {"outcome": "maybe"})


def test_read_manifest_rejects_other_json(tmp_path: Path) -> None:
    p = tmp_path / "other.json"
    p.write_text("{}")
    with pytest.raises(ValueError):
        read_manifest(p)


def test_scenarios_machine_type_and_overrides() -> None:
    assert SCENARIOS["precopy-10.0"].machine == "pc"
    assert SCENARIOS["multifd4-7.2-to-10.0"].machine == "pc-i440fx-7.2"
    sc = with_overrides(SCENARIOS["multifd4-7.2"], dst="10.0", multifd=2, hold_back="main")
    assert (sc.dst, sc.multifd, sc.hold_back, sc.machine) == ("10.0", 2, "main", "pc-i440fx-7.2")
    assert with_overrides(SCENARIOS["holdback-multifd-7.2"], hold_back="none").hold_back is None
    assert all(isinstance(s, Scenario) and s.expect in ("completed", "failed", "stalled") for s in SCENARIOS.values())


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_list_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_parse(["--list"])) == 0
    assert "holdback-preempt-7.2" in capsys.readouterr().out
    assert run(_parse([])) == 2
    assert run(_parse(["--scenario", "no-such"])) == 2
    assert run(_parse(["--scenario", "precopy-7.2", "--hold-back", "multifd"])) == 2
