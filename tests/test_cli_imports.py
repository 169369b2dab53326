"""What ``migshark analyze`` imports: nothing a run of it does not use (issue 15: a small capture's whole
process is mostly start-up)."""

from __future__ import annotations

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
