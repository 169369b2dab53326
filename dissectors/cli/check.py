"""``migshark check``: replay captures and compare the analyser's report with the expected one.

Next to ``NAME.pcap`` (or ``.pcapng``, optionally ``.gz``) lives ``NAME.expected.json`` (and, for a TLS
migration, the ``NAME.keylog`` the recorder kept, which the check decrypts with). The check runs
the analysis as a user does by default (no ``--qemu-version``): the corpus holds migrations across QEMU
generations, and the default judgement is what must be right. The recorder's ``NAME.manifest.json``
says the destination's real version (:func:`destination_version`); the regression tests hold the
default report to it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from dissectors.analysis.judge import Options
from dissectors.cli.pipeline import analyze_file, load_keylog
from dissectors.errors import InputError
from dissectors.fleet import inputs
from dissectors.fleet.inputs import SUFFIXES, CaptureInput
from dissectors.tls import KeyLog

__all__ = ["SUFFIXES", "check_one", "find_captures", "run_check", "sibling", "stem"]


def stem(path: Path) -> Path:
    return path.with_name(inputs.stem(path.name))


def sibling(capture: Path, suffix: str) -> Path:
    """``NAME.pcap.gz`` -> ``NAME<suffix>`` (names hold dots, as in ``precopy-7.2``)."""
    base = stem(capture)
    return base.with_name(base.name + suffix)


def find_captures(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.iterdir() if x.name.endswith(SUFFIXES))
        else:
            out.append(p)
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def destination_version(capture: Path) -> str | None:
    manifest = sibling(capture, ".manifest.json")
    if not manifest.exists():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    qemu = data.get("qemu", {})
    dst = qemu.get("destination", {}) if isinstance(qemu, dict) else {}
    version = dst.get("version", {}).get("qemu") if isinstance(dst, dict) else None
    if isinstance(version, dict) and "major" in version:
        return f"{version['major']}.{version.get('minor', 0)}"
    if isinstance(dst, dict) and isinstance(dst.get("name"), str):
        return dst["name"]
    return None


def corpus_keylog(capture: Path) -> KeyLog | None:
    """The key log recorded beside a capture (``NAME.keylog``), else the one its manifest names (``tls.keylog_file``:
    a namespace-path run's two captures, ``NAME.src`` and ``NAME.dst``, share the run's ``NAME.keylog``)."""
    path = sibling(capture, ".keylog")
    if not path.exists():
        path = _manifest_keylog(capture) or path
    return load_keylog(str(path)) if path.exists() else None


def _manifest_keylog(capture: Path) -> Path | None:
    try:
        data = json.loads(sibling(capture, ".manifest.json").read_text())
    except (OSError, ValueError):
        return None
    tls = data.get("tls") if isinstance(data, dict) else None
    name = tls.get("keylog_file") if isinstance(tls, dict) else None
    return capture.with_name(Path(name).name) if isinstance(name, str) and name else None


def normalise(report: dict[str, Any]) -> dict[str, Any]:
    """The parts of a report that must not change without review (no tool version, no local path)."""
    r = json.loads(json.dumps(report))
    r.pop("tool", None)
    r["capture"]["file"] = Path(r["capture"]["file"]).name
    if "keylog" in r["capture"]:
        r["capture"]["keylog"]["file"] = Path(r["capture"]["keylog"]["file"]).name
    return r


def check_one(capture: Path, update: bool) -> tuple[str, list[str]]:
    expected_path = sibling(capture, ".expected.json")
    try:
        report = normalise(analyze_file(str(capture), Options(), keylog=corpus_keylog(capture)).report)
    except InputError as exc:       # unreadable: said on its own line, the other captures still checked
        return "error", [exc.describe()]
    except OSError as exc:
        return "error", [f"{exc.filename or capture}: {exc.strerror or exc}"]
    got = json.dumps(report, indent=2, sort_keys=True).splitlines()
    if update:          # which reports changed, for the review: "updated" (or "new"), else "same"
        text = "\n".join(got) + "\n"
        before = expected_path.read_text() if expected_path.exists() else None
        if before == text:
            return "same", []
        expected_path.write_text(text)
        return ("new" if before is None else "updated"), []
    if not expected_path.exists():
        return "missing", [f"no expected report {expected_path.name} (after review: migshark check --update "
                           f"{shlex.quote(str(capture))}; --update on a directory rewrites every report in it)"]
    want = expected_path.read_text().splitlines()
    if want == got:
        return "ok", []
    diff = list(difflib.unified_diff(want, got, f"{expected_path.name} (expected)", "analyser now", lineterm="", n=2))
    return "differs", diff


def check_task(item: CaptureInput, update: bool) -> tuple[str, list[str]]:
    """``check_one`` as a fleet task (what a Dask worker runs for one capture)."""
    return check_one(Path(item.url), update)


def run_check(args: argparse.Namespace) -> int:
    from dissectors.fleet.runner import RunnerError, run_tasks

    if "-" in args.paths:
        print("migshark check: '-' is not a capture file (the expected report sits beside each capture)",
              file=sys.stderr)
        return 2
    captures = find_captures(args.paths)
    if not captures:
        print(f"migshark check: no capture found in {' '.join(args.paths)}", file=sys.stderr)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print("migshark check: -j needs at least 1", file=sys.stderr)
        return 2
    items = [CaptureInput(str(c), _size(c)) for c in captures]
    # Serial unless asked (-j N, --scheduler, DASK_SCHEDULER_ADDRESS): the corpus takes seconds in one
    # process, less than a local cluster takes to start.
    try:
        outcomes = run_tasks(check_task, items, args.update, scheduler=args.scheduler, workers=args.jobs or 1)
    except RunnerError as exc:
        print(f"migshark check: {exc}", file=sys.stderr)
        return 2
    results = []
    bad = unreadable = 0
    for cap, (status, diff) in zip(captures, outcomes, strict=True):
        results.append({"capture": str(cap), "status": status, "diff": diff})
        bad += status in ("differs", "missing")
        unreadable += status == "error"
        if not args.json:
            print(f"{status:>8}  {cap}")
            for line in diff[:200]:
                print(f"          {line}")
    if args.json:
        json.dump({"results": results, "failed": bad, "unreadable": unreadable}, sys.stdout, indent=2)
        print()
    elif args.update:
        written = sum(r["status"] in ("new", "updated") for r in results)
        print(f"{written} expected report(s) written, {len(captures) - unreadable - written} unchanged"
              + (f", {unreadable} capture(s) unreadable" if unreadable else ""))
    else:
        print(f"{len(captures) - bad - unreadable} passed, {bad} failed"
              + (f", {unreadable} unreadable" if unreadable else ""))
    return 2 if unreadable else 1 if bad else 0
