#!/usr/bin/env python3
"""What a ``migshark analyze`` process pays before and after its work: interpreter start-up and imports.

    python benchmarks/bench_startup.py [--repeat 9] [--tree OTHER_CHECKOUT] [--capture FILE]

Runs, alternating so that the machine's load falls alike on each, ``python -c pass`` (the baseline: the
interpreter and ``site``), ``python -c "import <what analyze imports>"`` and ``migshark analyze --json`` on a
small capture, in this tree and, with ``--tree``, in another checkout (e.g. a ``git worktree`` of the main
branch), and prints the minimum and median wall and CPU time of each (CPU, user + system, is less swayed by
other work on the machine). Then ``python -X importtime`` of the same imports: the sum of the modules' own
times (minimum over the runs of each module), the number of modules, the heaviest ones, and whether Scapy or
``cryptography`` was imported. Bytecode caches are written first (``PYTHONDONTWRITEBYTECODE`` is dropped).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The modules ``analyze --json`` of a capture imports (cli.main imports the rest on demand).
IMPORTS = ("dissectors.cli.main", "dissectors.cli.pipeline", "dissectors.analysis.engine",
           "dissectors.analysis.judge", "dissectors.outputs.text")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPATH", None)
    return env


def _run(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall s, CPU s, stderr) of one child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} in {cwd} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, proc.stderr


def _importtime(text: str) -> dict[str, int]:
    """Module -> own import time in microseconds, from ``-X importtime`` output."""
    return {m.group(4): int(m.group(1)) for m in map(_LINE.match, text.splitlines()) if m}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--tree", action="append", default=[], help="another checkout to measure alike")
    ap.add_argument("--capture", default=str(ROOT / "captures" / "holdback-multifd-10.0.pcap.gz"))
    ap.add_argument("--top", type=int, default=12, help="heaviest modules listed per tree")
    args = ap.parse_args(argv)
    trees = [ROOT, *(Path(t).resolve() for t in args.tree)]
    py = sys.executable
    code = "import " + ", ".join(IMPORTS)
    cases = {"python -c pass": [py, "-c", "pass"], "imports": [py, "-c", code],
             "analyze --json": [py, "-m", "dissectors.cli.main", "analyze", "--json", args.capture]}
    for tree in trees:                       # bytecode caches written, files in the page cache
        for cmd in cases.values():
            _run(cmd, tree)
    print(f"median / min of {args.repeat} alternating runs; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; capture {args.capture}")
    times: dict[tuple[Path, str], list[tuple[float, float]]] = defaultdict(list)
    own: dict[Path, dict[str, list[int]]] = {t: defaultdict(list) for t in trees}
    loaded: dict[Path, set[str]] = {}
    for _ in range(args.repeat):
        for tree in trees:
            for name, cmd in cases.items():
                wall, cpu, _ = _run(cmd, tree)
                times[tree, name].append((wall, cpu))
            _, _, err = _run([py, "-X", "importtime", "-c", code], tree)
            mods = _importtime(err)
            loaded[tree] = set(mods)
            for mod, us in mods.items():
                own[tree][mod].append(us)
    print(f"{'tree':<28} {'what':<16} {'wall min':>9} {'median':>8} {'CPU min':>8} {'median':>8}")
    for tree in trees:
        for name in cases:
            walls = [w for w, _ in times[tree, name]]
            cpus = [c for _, c in times[tree, name]]
            ms = [min(walls), statistics.median(walls), min(cpus), statistics.median(cpus)]
            print(f"{str(tree)[-28:]:<28} {name:<16} {ms[0] * 1e3:>7.0f}ms {ms[1] * 1e3:>6.0f}ms "
                  f"{ms[2] * 1e3:>6.0f}ms {ms[3] * 1e3:>6.0f}ms")
    for tree in trees:
        best = {mod: min(v) for mod, v in own[tree].items()}
        scapy = sorted(m for m in loaded[tree] if m == "scapy" or m.startswith("scapy."))
        crypto = any(m == "cryptography" or m.startswith("cryptography.") for m in loaded[tree])
        print(f"\n{tree}: -X importtime, sum of each module's own minimum {sum(best.values()) / 1e3:.1f} ms, "
              f"{len(best)} modules; Scapy modules {len(scapy)}; cryptography {'yes' if crypto else 'no'}")
        for mod, us in sorted(best.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {us / 1e3:7.2f} ms  {mod}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
