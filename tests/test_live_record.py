# SPDX-License-Identifier: GPL-2.0-or-later
"""Live smoke tests: record one short real multifd migration with Debian's QEMU 7.2 (and one with QEMU 11.1 in
its trixie chroot, when installed), then analyse it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from recorder_helpers import live_recording_unavailable

from dissectors.recorder.qemus import qemu_install

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[1]


def _skip_reason() -> str | None:
    return live_recording_unavailable()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("live")
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "record", "--scenario", "smoke-multifd2-7.2",
         "--out", str(out), "--name", "smoke", "--json"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    manifest = json.loads(Path(result["manifest"]).read_text())
    return {"pcap": result["capture"], "outcome": result["outcome"], "reason": result["reason"],
            "manifest": manifest}


def test_migration_completed(recording: dict[str, object]) -> None:
    assert recording["outcome"] == "completed", recording["reason"]
    manifest = recording["manifest"]
    assert isinstance(manifest, dict)
    assert manifest["capture"]["packets_dropped_by_kernel"] == 0
    assert manifest["query_migrate"]["source"]["ram"]["multifd-bytes"] > 0


def test_pcap_has_three_connections_to_the_destination(recording: dict[str, object]) -> None:
    from scapy.layers.inet import TCP
    from scapy.utils import PcapReader

    manifest = recording["manifest"]
    assert isinstance(manifest, dict)
    dport = manifest["ports"]["destination"]
    syns = set()
    with PcapReader(str(recording["pcap"])) as reader:
        for pkt in reader:
            if TCP in pkt and pkt[TCP].dport == dport and pkt[TCP].flags.S and not pkt[TCP].flags.A:
                syns.add(pkt[TCP].sport)
    assert len(syns) == 3  # main + 2 multifd


def test_analyze_sees_three_channels(recording: dict[str, object]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "analyze", "--json", str(recording["pcap"])],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["migrations"][0]["channels"]) == 3


def _skip_reason_11_1() -> str | None:
    reason = _skip_reason()
    if reason:
        return reason
    from dissectors.recorder.chroot import missing_mounts

    inst = qemu_install("11.1")
    if inst.root is None or not inst.binary.is_file():
        return f"QEMU 11.1 root not installed at {inst.root} (scripts/install-qemu-11.sh)"
    if missing_mounts(inst.root):
        return f"QEMU 11.1 root {inst.root} lacks its mounts (re-run scripts/install-qemu-11.sh)"
    return None


def test_record_11_1_in_its_chroot(tmp_path: Path) -> None:
    """A short multifd 2 migration between two QEMU 11.1 run as ``chroot ROOT qemu-system-x86_64``."""
    reason = _skip_reason_11_1()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "record", "--scenario", "smoke-multifd2-7.2",
         "--src-qemu", "11.1", "--dst-qemu", "11.1", "--out", str(tmp_path), "--name", "smoke11", "--json"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert result["outcome"] == "completed", result["reason"]
    assert manifest["capture"]["packets_dropped_by_kernel"] == 0
    for role in ("source", "destination"):
        qemu = manifest["qemu"][role]
        assert qemu["version"]["qemu"]["major"] == 11, qemu["version_string"]
        assert Path(qemu["command_line"][0]).name == "chroot"
    assert manifest["query_migrate"]["source"]["ram"]["multifd-bytes"] > 0
    report = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "analyze", "--json", str(result["capture"])],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert len(json.loads(report.stdout)["migrations"][0]["channels"]) == 3  # main + 2 multifd


def test_record_a_frozen_timer_footer_look_alike(tmp_path: Path) -> None:
    """``--scenario timer-footer-11.1``: the recorder freezes the stopped source's cpu_ticks_offset on a value
    ending in 0x7e, and the real migration carries that timer body (a section-0 footer look-alike), whole."""
    reason = _skip_reason_11_1()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "record", "--scenario", "timer-footer-11.1",
         "--out", str(tmp_path), "--name", "timer", "--json"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    probe = json.loads(Path(result["manifest"]).read_text())["timer_probe"]
    assert probe["found"] and probe["cpu_ticks_offset"] & 0xFF == 0x7E
    dissect = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "dissect", "--json", "-t", "device.state", "-t", "main.eof",
         str(result["capture"])],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert dissect.returncode == 0, dissect.stderr
    recs = [json.loads(line) for line in dissect.stdout.splitlines()]
    (timer,) = [r for r in recs if r["type"] == "device.state" and r["fields"]["idstr"] == "timer"]
    assert timer["fields"]["section_id"] == 0 and timer["length"] == 24
    assert [r["type"] for r in recs].count("main.eof") == 1


def test_an_interrupt_due_before_postcopy_starts_comes_at_its_time(tmp_path: Path) -> None:
    """``--interrupt-after`` counts from ``migrate`` on postcopy scenarios too: 0.3 s is before the postcopy
    switch (1.5 s), so the source is killed at 0.3 s in precopy and postcopy is not started (it used to wait
    for migrate-start-postcopy and kill 1.5 s in while the reason said 0.3 s)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "record", "--scenario", "kill-source-preempt-7.2",
         "--interrupt-after", "0.3", "--out", str(tmp_path), "--name", "early", "--json"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    timeline = json.loads(Path(result["manifest"]).read_text())["timeline"]
    at = {e["what"]: e["time"] for e in timeline}
    assert "migrate-start-postcopy" not in at, timeline
    assert at["SIGKILL (source)"] - at["migrate"] < 1.0, timeline
    assert result["reason"].startswith("kill-source 0.3 s after migrate (source was active)"), result["reason"]
