# SPDX-License-Identifier: GPL-2.0-or-later
"""Live: a real QEMU 7.2 multifd migration over TLS whose main channel's TLS Finished the recorder's relay holds
back for 3 s (``--hold-at tls-finished``). The source completes main's handshake and opens its multifd
channels during the hold; QEMU's destination nevertheless completes them only after main (its TLS handshake
blocks its main loop on the accepted socket), takes main as main, and the migration completes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from recorder_helpers import live_recording_unavailable

from dissectors.recorder.driver import is_destination_error

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[1]


def test_held_tls_finished_does_not_reorder_the_destination(tmp_path: Path) -> None:
    reason = live_recording_unavailable()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "record", "--scenario", "multifd-tls-7.2",
         "--hold-back", "main", "--hold-at", "tls-finished", "--hold-delay", "3",
         "--out", str(tmp_path), "--name", "tlsfin", "--json", "--timeout", "40"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    man = json.loads(Path(result["manifest"]).read_text())
    # QEMU's own outcome: both sides completed, both exited 0, no error on the destination.
    assert result["outcome"] == "completed", (result["reason"], man["stderr"])
    assert man["query_migrate"]["source"]["status"] == man["query_migrate"]["destination"]["status"] == "completed"
    assert man["exit_status"] == {"source": 0, "destination": 0}
    assert not [ln for ln in man["stderr"]["destination"].splitlines() if is_destination_error(ln)]
    assert man["query_migrate"]["source"]["ram"]["multifd-bytes"] > 0
    # The hold did what it says: main's ClientHello passed, the rest waited 3 s ...
    held, *multifd = man["proxy"]["connections"]
    assert held["hold_at"] == "tls-finished" and held["first_record_bytes"] > 100
    assert held["hold_released_at"] - held["hold_started_at"] >= 2.9
    # ... the source opened both multifd channels during it (its side of main's handshake was done; it
    # does so within milliseconds, the hold is long so that a busy machine cannot stretch it past) ...
    assert len(multifd) == 2 and all(c["accepted_at"] < held["hold_released_at"] for c in multifd)
    # ... and the destination answered their ClientHellos only once main's Finished had arrived.
    assert all(c["first_reply_at"] >= held["hold_released_at"] for c in multifd)
    # The key log decrypts all six TLS connections (both legs of the relay).
    report = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "analyze", "--json", "--keylog",
         str(tmp_path / "tlsfin.keylog"), str(result["capture"])],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert report.returncode in (0, 1), report.stderr
    migrations = json.loads(report.stdout)["migrations"]
    assert sum(len(m["channels"]) for m in migrations) == 6
