"""``migshark check``: replay captures and compare the analyser's report with the expected one.

Next to ``NAME.pcap`` (or ``.pcapng``, optionally ``.gz``) lives ``NAME.expected.json``; the recorder's
``NAME.manifest.json``, when present, says the destination's QEMU version, which the check passes on
as ``--qemu-version`` so the expected report does not depend on a guess.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from dissectors.analysis.engine import analyze
from dissectors.analysis.judge import Options

SUFFIXES = (".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz")


def stem(path: Path) -> Path:
    name = path.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path


def find_captures(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.iterdir() if x.name.endswith(SUFFIXES))
        else:
            out.append(p)
    return out


def destination_version(capture: Path) -> str | None:
    manifest = stem(capture).with_suffix(".manifest.json")
    if not manifest.exists():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    for key in ("dst_qemu", "destination_qemu", "dst_version"):
        v = data.get(key)
        if isinstance(v, str):
            return v
    dst = data.get("destination") or data.get("dst") or {}
    if isinstance(dst, dict):
        v = dst.get("qemu_version") or dst.get("version") or dst.get("qemu")
        if isinstance(v, str):
            return v
        if isinstance(v, dict) and "qemu" in v:
            q = v["qemu"]
            return f"{q.get('major')}.{q.get('minor')}"
    return None


def normalise(report: dict[str, Any]) -> dict[str, Any]:
    """The parts of a report that must not change without review (no tool version, no local path)."""
    r = json.loads(json.dumps(report))
    r.pop("tool", None)
    r["capture"]["file"] = Path(r["capture"]["file"]).name
    return r


def check_one(capture: Path, update: bool) -> tuple[str, list[str]]:
    expected_path = stem(capture).with_suffix(".expected.json")
    version = destination_version(capture)
    report = normalise(analyze(str(capture), Options(qemu_version=version)).report)
    got = json.dumps(report, indent=2, sort_keys=True).splitlines()
    if update:
        expected_path.write_text("\n".join(got) + "\n")
        return "updated", []
    if not expected_path.exists():
        return "missing", [f"no expected report {expected_path.name} (run migshark check --update after review)"]
    want = expected_path.read_text().splitlines()
    if want == got:
        return "ok", []
    diff = list(difflib.unified_diff(want, got, f"{expected_path.name} (expected)", "analyser now", lineterm="", n=2))
    return "differs", diff


def run_check(args: argparse.Namespace) -> int:
    captures = find_captures(args.paths)
    if not captures:
        print(f"migshark check: no capture found in {' '.join(args.paths)}", file=sys.stderr)
        return 2
    results = []
    bad = 0
    for cap in captures:
        status, diff = check_one(cap, args.update)
        results.append({"capture": str(cap), "status": status, "diff": diff})
        bad += status in ("differs", "missing")
        if not args.json:
            print(f"{status:>8}  {cap}")
            for line in diff[:200]:
                print(f"          {line}")
    if args.json:
        json.dump({"results": results, "failed": bad}, sys.stdout, indent=2)
        print()
    else:
        print(f"{len(captures) - bad} passed, {bad} failed")
    return 1 if bad else 0
