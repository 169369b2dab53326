"""What ``migshark analyze`` imports: nothing a run of it does not use (issue 15: a small capture's whole
process is mostly start-up)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "holdback-preempt-7.2-to-11.1.pcap.gz"

#: Modules only other subcommands (fleet, record, plot) need.
NOT_FOR_ANALYZE = ("dissectors.recorder", "dissectors.fleet", "dissectors.cli.fleet", "asyncio", "dask",
                   "distributed", "matplotlib", "pyarrow", "qemu")


def _modules_after(argv: list[str]) -> set[str]:
    code = ("import json, sys\nfrom dissectors.cli.main import main\n"
            f"code = main({argv!r})\n"
            "sys.stdout.flush()\nprint('\\n' + json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.stdout, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _scapy_after(code: str, stdin: bytes = b"") -> list[str]:
    """Scapy modules loaded after ``code`` ran in a fresh interpreter (it must print nothing else last)."""
    full = code + "\nimport json, sys\nsys.stdout.flush()\nprint('\\nMODULES ' + json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", full], cwd=ROOT, capture_output=True, input=stdin, check=False)
    found = [line for line in out.stdout.decode().splitlines() if line.startswith("MODULES ")]
    assert found, out.stderr.decode(errors="replace")
    mods = json.loads(found[-1].removeprefix("MODULES "))
    assert "dissectors.channels.main" in mods, "the run did not parse"
    return sorted(m for m in mods if m == "scapy" or m.startswith("scapy.") or m in SCAPY_LAYERS)


#: What a failure means, and the fix.
HINT = ("a module on this path imports Scapy (a dissectors.layers.<layer> module, dissectors.layers.structs or "
        "scapy itself): take constants from dissectors.layers.derived and layouts from dissectors.layers.unpack "
        "(by layer name), and regenerate derived.py after a layer change: python -m dissectors.layers.derive")


#: The Scapy declarations (the fast parsers take them from the generated ``dissectors.layers.derived``).
SCAPY_LAYERS = ("dissectors.layers.main_stream", "dissectors.layers.commands", "dissectors.layers.ram",
                "dissectors.layers.multifd", "dissectors.layers.return_path", "dissectors.layers.tls",
                "dissectors.layers.structs", "dissectors.scapy")


def test_analyze_does_not_import_scapy() -> None:
    code = ("from dissectors.cli.main import main\n"
            f"assert main(['analyze', '--json', {str(CAPTURE)!r}]) in (0, 1)")
    assert _scapy_after(code) == [], HINT


def test_check_does_not_import_scapy() -> None:
    code = f"from dissectors.cli.main import main\nassert main(['check', {str(CAPTURE)!r}]) == 0"
    assert _scapy_after(code) == [], HINT


def test_watch_does_not_import_scapy() -> None:
    code = "from dissectors.cli.main import main\nassert main(['watch', '--json', '-']) in (0, 1)"
    assert _scapy_after(code, stdin=gzip.decompress(CAPTURE.read_bytes())) == [], HINT


def test_a_fleet_worker_does_not_import_scapy() -> None:
    code = ("from dissectors.fleet.inputs import discover\nfrom dissectors.fleet.task import analyse_capture\n"
            f"rows = analyse_capture(discover([{str(CAPTURE)!r}])[0])\nassert rows and not rows[0].get('error')")
    assert _scapy_after(code) == [], HINT


def test_dissect_still_uses_the_scapy_layers() -> None:
    code = ("from dissectors.cli.main import main\n"
            f"assert main(['dissect', '-V', '--limit', '3', {str(CAPTURE)!r}]) in (0, 1)")
    assert "scapy.packet" in _scapy_after(code)


def test_analyze_imports_no_fleet_recorder_or_plotting() -> None:
    mods = _modules_after(["analyze", "--json", str(CAPTURE)])
    assert "dissectors.analysis.judge" in mods        # the run did analyse
    loaded = sorted(m for m in mods if any(m == n or m.startswith(n + ".") for n in NOT_FOR_ANALYZE))
    assert not loaded, f"analyze imported what it does not use: {loaded}"


def test_fleet_and_record_still_declare_their_arguments() -> None:
    from dissectors.cli.main import build_parser

    for command, option in (("fleet", "--output"), ("record", "--scenario")):
        lazy = build_parser(command).format_help()
        assert command in lazy
        sub = build_parser(command)._subparsers._group_actions[0].choices[command]   # type: ignore[union-attr]
        assert option in sub.format_help()
        full = build_parser()._subparsers._group_actions[0].choices[command]   # type: ignore[union-attr]
        assert option in full.format_help()
    analyze_only = build_parser("analyze")._subparsers._group_actions[0].choices["fleet"]   # type: ignore[union-attr]
    assert "--output" not in analyze_only.format_help()


#: The record layer and key schedules: needed only to decrypt.
DECRYPTION = ("cryptography", "dissectors.tls.connection", "dissectors.tls.sink", "dissectors.tls.tls12")


def _crypto_after(argv: list[str]) -> bool:
    mods = _modules_after(argv)
    assert "dissectors.analysis.judge" in mods
    loaded = {n for n in DECRYPTION if any(m == n or m.startswith(n + ".") for m in mods)}
    assert loaded in (set(), set(DECRYPTION)), loaded
    return bool(loaded)


def test_cryptography_only_with_a_key_log() -> None:
    tls = ROOT / "captures" / "holdback-tls-11.1.pcap.gz"
    assert not _crypto_after(["analyze", "--json", str(tls)])
    assert _crypto_after(["analyze", "--json", "--keylog", str(tls.with_name("holdback-tls-11.1.keylog")), str(tls)])
