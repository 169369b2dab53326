# SPDX-License-Identifier: GPL-2.0-or-later
"""Live: a real QEMU 7.2 multifd migration forced to TLS 1.2 with a ChaCha20-Poly1305-only priority string
(``--tls-priority``), recorded, then decrypted with the key log the recorder kept, and read without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from recorder_helpers import live_recording_unavailable

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[1]
PRIORITY = "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+CHACHA20-POLY1305"


def _analyze(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dissectors.cli.main", "analyze", "--json", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_a_tls12_chacha_migration_is_decrypted_and_read_without_the_key_log(tmp_path: Path) -> None:
    reason = live_recording_unavailable()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        [sys.executable, "-m", "dissectors.cli.main", "record", "--scenario", "multifd-tls12-7.2",
         "--tls-priority", PRIORITY, "--out", str(tmp_path), "--name", "t12", "--json", "--timeout", "40"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    man = json.loads(Path(result["manifest"]).read_text())
    assert result["outcome"] == "completed", (result["reason"], man["stderr"])
    assert man["tls"]["priority"] == PRIORITY
    assert any(f"priority={PRIORITY}" in a for a in man["qemu"]["source"]["command_line"])
    keylog = tmp_path / "t12.keylog"
    assert keylog.read_text().startswith("CLIENT_RANDOM ")
    (m,) = _analyze("--keylog", str(keylog), str(result["capture"]))["migrations"]
    assert {(c["tls"]["version"], c["tls"]["cipher"]) for c in m["channels"]} == {
        ("TLS 1.2", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256")}
    assert sorted(c["role"] for c in m["channels"]) == ["main", "multifd", "multifd"]
    assert m["outcome"]["status"] == "completed"
    ram = man["query_migrate"]["source"]["ram"]
    pages = sum(c["records"].get("multifd.normal_pages", 0) + c["records"].get("ram.page", 0) for c in m["channels"])
    assert pages - (m["multifd_repeated_pages"] or {}).get("count", 0) == ram["normal"]
    (h,) = _analyze(str(result["capture"]))["migrations"]
    assert [(c["client"], c["role"]) for c in h["channels"]] == [(c["client"], c["role"]) for c in m["channels"]]
    assert h["outcome"]["status"] == "completed"
