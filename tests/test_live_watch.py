# SPDX-License-Identifier: GPL-2.0-or-later
"""End to end with real parts: the recorder runs a real QEMU 7.2 postcopy-preempt migration through its
reordering proxy (main held back, so the destination takes the silent preempt channel as main and stalls),
while a real tcpdump pipes into ``migshark watch -``. The misclassification alert must arrive while the
migration is still stalled, and the final report must equal ``migshark analyze`` of the same bytes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from recorder_helpers import live_recording_unavailable

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[1]


def _tee(src: IO[bytes], dst: IO[bytes], path: Path) -> None:
    """Copy tcpdump's output to watch's input as it comes, and to ``path``."""
    with open(path, "wb") as f:
        fd = src.fileno()
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            f.write(data)
            dst.write(data)
            dst.flush()
    dst.close()


def _lines(stream: object, out: list[tuple[float, str]]) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        out.append((time.time(), raw.decode(errors="replace")))


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    reason = live_recording_unavailable()
    if reason:
        pytest.skip(reason)
    from dissectors.recorder.capture import BUFFER_KIB, port_filter, wait_written
    from dissectors.recorder.driver import Run
    from dissectors.recorder.qemus import tool
    from dissectors.recorder.scenarios import SCENARIOS

    out = tmp_path_factory.mktemp("watch")
    run = Run(SCENARIOS["holdback-preempt-tiny-7.2"], out, "recorded")
    teed = out / "watched.pcap"
    # Our own tcpdump on the recorder's ports (chosen when the run was made) piping into watch; every byte
    # is also written to a file (a tee) for analyze. Its buffer is the recorder's: with tcpdump's default
    # (2 MiB) a busy machine dropped the migration's first burst, the destination-side preempt handshake
    # with it, and the capture no longer showed the misorder (seen in a stress run).
    log = open(out / "td.log", "wb")  # noqa: SIM115 - closed below
    dump = subprocess.Popen([tool("tcpdump"), "-i", "lo", "-B", str(BUFFER_KIB), "-s", "0", "-n", "-U", "-w", "-",
                             port_filter(list(run.ports.values()))], stdout=subprocess.PIPE, stderr=log)
    watch = subprocess.Popen([sys.executable, "-m", "dissectors.cli.main", "watch", "--json", "-"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    tee = threading.Thread(target=_tee, args=(dump.stdout, watch.stdin, teed), daemon=True)
    tee.start()
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=_lines, args=(watch.stdout, lines), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while "listening on" not in (out / "td.log").read_text(errors="replace"):
        assert time.monotonic() < deadline and dump.poll() is None, "tcpdump did not start"
        time.sleep(0.05)
    try:
        rec = asyncio.run(run.execute())
    finally:
        wait_written(dump, out / "td.log", copies=2)   # every packet through tcpdump's ring buffer to watch (lo)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=30)
        log.close()
        tee.join(timeout=30)
        try:
            watch.wait(timeout=60)
        except subprocess.TimeoutExpired:
            watch.kill()
            raise
    reader.join(timeout=60)
    events = [(t, json.loads(line)) for t, line in lines]
    analyze = subprocess.run([sys.executable, "-m", "dissectors.cli.main", "analyze", "--json", str(teed)],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
    return {"recording": rec, "timeline": run.timeline, "events": events, "watch_rc": watch.returncode,
            "watch_err": watch.stderr.read().decode() if watch.stderr else "", "analyze": analyze,
            "teed": teed, "tcpdump_log": (out / "td.log").read_text(errors="replace")}


def test_the_migration_stalled(watched: dict[str, object]) -> None:
    rec = watched["recording"]
    assert rec.outcome in ("stalled", "failed"), rec.reason  # type: ignore[attr-defined]


def test_the_alert_arrives_while_the_migration_is_stalled(watched: dict[str, object]) -> None:
    events = watched["events"]
    assert isinstance(events, list)
    # what watch was fed is the whole migration: a dropped handshake would hide the misorder
    dropped = re.search(r"^(\d+) packets? dropped by kernel", str(watched["tcpdump_log"]), re.M)
    assert dropped and int(dropped.group(1)) == 0, watched["tcpdump_log"]
    alerts = [(t, e) for t, e in events if e["event"] == "misclassified" and e["role"] == "preempt"
              and e["assigned_role"] == "main"]
    # (a string message: pytest shortens a list's repr, and this is what a failure needs to be understood)
    assert alerts, "\n".join(json.dumps({k: v for k, v in e.items() if k not in ("report", "evidence")})
                              for _, e in events)
    arrived, alert = alerts[0]
    timeline = {m["what"]: m["time"] for m in watched["timeline"]}  # type: ignore[union-attr]
    # The stall ends when the recorder gives up and stops the source (its timeout): the alert must come before,
    # within a few seconds of the migration's start (the threshold is 1 s of silence).
    stop = timeline.get("destination after source exit") or timeline["stopped"]
    print(f"alert {arrived - timeline['migrate']:.3f} s after migrate, {stop - arrived:.3f} s before the stall "
          f"ended; silent for {alert['silent_for']} s ({alert['clock']} clock)")
    assert arrived < stop - 5, (arrived, timeline)
    assert arrived - timeline["migrate"] < 5, (arrived, timeline)
    assert alert["silent_for"] >= 1.0
    assert "silent socket" in alert["qemu_would_show"]
    # It comes out of the same judgement as the report: the report has the same misclassification.
    report = [e for _, e in events if e["event"] == "report"][0]["report"]
    mig = report["migrations"][alert["migration"]]
    assert any(m["client"] == alert["client"] and m["assigned_role"] == "main" for m in mig["misclassifications"])


def test_the_final_report_equals_analyze_of_the_same_bytes(watched: dict[str, object]) -> None:
    events = watched["events"]
    assert isinstance(events, list)
    analyze = watched["analyze"]
    assert analyze.returncode == watched["watch_rc"], watched["watch_err"]  # type: ignore[attr-defined]
    expected = json.loads(analyze.stdout)  # type: ignore[attr-defined]
    got = [e for _, e in events if e["event"] == "report"][-1]["report"]
    assert expected["capture"].pop("file") == str(watched["teed"])
    assert got["capture"].pop("file") == "-"
    assert got == expected
    assert expected["migrations"]
