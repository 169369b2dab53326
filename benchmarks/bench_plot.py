#!/usr/bin/env python3
"""What ``analyze --plot`` costs on small real captures, against the analysis alone in the same run.

    python benchmarks/bench_plot.py [--repeat 5] [CAPTURE ...]

Per capture and round, three processes, alternated so the machine's noise hits them alike:
``migshark analyze`` (the baseline), ``migshark analyze --plot`` (what a user pays), and a child that times
inside one process the analysis and the picture (matplotlib's import, layout and PNG write) apart.
Prints medians, the ratio of the plot run to the baseline and the picture's own seconds, wall and CPU (goal:
< 1 s for a small capture; on a shared machine the CPU seconds are the steadier figure).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["captures/holdback-multifd-7.2.pcap.gz", "captures/holdback-preempt-7.2.pcap.gz",
           "captures/multifd4-postcopy-preempt-11.1.pcap.gz"]


def child(capture: str, png: str) -> None:
    sys.path.insert(0, str(ROOT))
    from dissectors.cli.pipeline import analyze_file

    t0, c0 = time.perf_counter(), cpu()
    analysis = analyze_file(capture)
    t1, c1 = time.perf_counter(), cpu()
    from dissectors.outputs.plot import plot_timeline

    plot_timeline(analysis, png)
    t2, c2 = time.perf_counter(), cpu()
    print(json.dumps({"analysis": t1 - t0, "plot": t2 - t1, "analysis_cpu": c1 - c0, "plot_cpu": c2 - c1}))


def cpu() -> float:
    """CPU seconds of this process and its waited-for children (the gzip reader may be one)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr[-500:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("captures", nargs="*", default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    cli = [sys.executable, "-m", "dissectors.cli.main", "analyze"]
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        png = str(Path(tmp) / "t.png")
        for capture in args.captures:
            base, plotted, inside = [], [], []
            for _ in range(args.repeat):
                base.append(wall([*cli, capture]))
                plotted.append(wall([*cli, "--plot", png, capture]))
                out = subprocess.run([sys.executable, __file__, "--child", capture, png], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout
                inside.append(json.loads(out.splitlines()[-1]))
            b, p = statistics.median(base), statistics.median(plotted)
            a = statistics.median(x["analysis"] for x in inside)
            pic = statistics.median(x["plot"] for x in inside)
            pic_cpu = statistics.median(x["plot_cpu"] for x in inside)
            a_cpu = statistics.median(x["analysis_cpu"] for x in inside)
            worst = max(worst, pic_cpu)
            size = Path(ROOT / capture).stat().st_size
            print(f"{capture} ({size / 1024:.0f} KiB): analyze {b:.2f} s, analyze --plot {p:.2f} s "
                  f"(x{p / b:.2f}); in one process: analysis {a:.2f} s, picture {pic:.2f} s "
                  f"(x{(a + pic) / a:.2f} of the analysis); CPU: analysis {a_cpu:.2f} s, picture {pic_cpu:.2f} s")
    print(f"most CPU a picture took: {worst:.2f} s (goal < 1 s): {'ok' if worst < 1.0 else 'OVER'}")
    return 0 if worst < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
