#!/usr/bin/env python3
"""What decryption costs: ``analyze`` on a TLS 1.3 capture with its key log against ``analyze`` on the
same QEMU streams in plain TCP, generated in this run (``gen_capture.py --tls``).

    python benchmarks/bench_tls.py [--size 1G] [--repeat 3] [--keep DIR] [--tls12]

Three runs per round, alternated so the machine's noise hits them alike: plain, TLS with the key log,
TLS without it (record framing only); with ``--tls12`` also the same streams in TLS 1.2 (AES-256-GCM) with
their key log. Each run is its own process; the in-process time is the
analysis (``cli.pipeline.analyze_file``), and ``whole`` is the whole ``migshark analyze --json``
process as a user pays it, wall clock and CPU seconds (user + system: less swayed by other load). Prints
medians, the ratio of each to plain (goal: TLS with the key log <= 1.5x) and the peak RSS (GNU time ``%M``),
then what the AEAD alone costs (``cryptography``'s AES-256-GCM over as many 16 KiB records as the capture
holds, in this process): what decrypting every record would cost at the least, against what the analysis
pays (records whose plaintext nobody reads are framed, not decrypted).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "benchmarks" / "gen_capture.py"


def child(path: str, keylog: str | None) -> None:
    sys.path.insert(0, str(ROOT))
    from dissectors.cli.pipeline import analyze_file, load_keylog

    t0 = time.perf_counter()
    report = analyze_file(path, keylog=load_keylog(keylog)).report
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "migrations": len(report["migrations"]),
                      "decrypted": report["capture"].get("keylog", {}).get("decrypted")}))


def aead_only(records: int, repeat: int) -> float:
    """CPU seconds (median of ``repeat``) for AES-256-GCM to open ``records`` TLS 1.3 records of 16 KiB,
    one ``decrypt`` call each, as the record layer makes them."""
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(32))
    nonce, header = bytes(12), b"\x17\x03\x03\x40\x11"
    sealed = aead.encrypt(nonce, os.urandom(16385), header)
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(records):
            aead.decrypt(nonce, sealed, header)
        times.append(time.process_time() - t0)
    return statistics.median(times)


def timed(cmd: list[str]) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS KiB or 0, stdout, CPU seconds or wall) of one process. CPU seconds (user +
    system) are less swayed than wall time by other load on the machine."""
    gnu_time = shutil.which("time") or (Path("/usr/bin/time").exists() and "/usr/bin/time")
    with tempfile.NamedTemporaryFile("r") as rss:
        full = [str(gnu_time), "-f", "%U %S %M", "-o", rss.name, *cmd] if gnu_time else cmd
        t0 = time.perf_counter()
        proc = subprocess.run(full, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):            # 1: findings (the generated streams have no EOF)
            raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        out = proc.stdout
        text = Path(rss.name).read_text().strip().splitlines()
    if not (gnu_time and text):
        return wall, 0, out, wall
    user, system, peak = text[-1].split()
    return wall, int(peak), out, float(user) + float(system)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="generate into (and reuse from) this directory")
    ap.add_argument("--tls12", action="store_true", help="also measure TLS 1.2 (gen_capture --tls12)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1] if len(args.child) > 1 else None)
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-tls-"))
    work.mkdir(parents=True, exist_ok=True)
    plain, tls = work / f"plain-{args.size}.pcap", work / f"tls-{args.size}.pcap"
    keylog = tls.with_suffix(".keylog")
    payload = ["--payload", "qemu_payload:payload_source", "--size", args.size]
    if not plain.exists():
        subprocess.run([sys.executable, str(GEN), str(plain), *payload], check=True)
    if not tls.exists() or not keylog.exists():
        subprocess.run([sys.executable, str(GEN), str(tls), *payload, "--tls", str(keylog)], check=True)
    runs = {
        "plain": ([str(plain)], [str(plain)]),
        "tls+keylog": ([str(tls), str(keylog)], ["--keylog", str(keylog), str(tls)]),
        "tls, no keylog": ([str(tls)], [str(tls)]),
    }
    if args.tls12:
        tls12 = work / f"tls12-{args.size}.pcap"
        keylog12 = tls12.with_suffix(".keylog")
        if not tls12.exists() or not keylog12.exists():
            subprocess.run([sys.executable, str(GEN), str(tls12), *payload, "--tls", str(keylog12), "--tls12"],
                           check=True)
        runs["tls1.2+keylog"] = ([str(tls12), str(keylog12)], ["--keylog", str(keylog12), str(tls12)])
    inproc: dict[str, list[float]] = {k: [] for k in runs}
    whole: dict[str, list[float]] = {k: [] for k in runs}
    whole_cpu: dict[str, list[float]] = {k: [] for k in runs}
    rss: dict[str, int] = dict.fromkeys(runs, 0)
    for _ in range(args.repeat):
        for name, (child_args, cli_args) in runs.items():
            _, peak, out, _ = timed([sys.executable, __file__, "--child", *child_args])
            result = json.loads(out)
            if name.endswith("+keylog") and not result["decrypted"]:
                raise SystemExit("the key log decrypted nothing: the benchmark would not measure decryption")
            inproc[name].append(result["seconds"])
            rss[name] = max(rss[name], peak)
            wall, _, _, cpu = timed([sys.executable, "-m", "dissectors.cli.main", "analyze", "--json", *cli_args])
            whole[name].append(wall)
            whole_cpu[name].append(cpu)
    base_in, base_whole = statistics.median(inproc["plain"]), statistics.median(whole["plain"])
    base_cpu = statistics.median(whole_cpu["plain"])
    mb = tls.stat().st_size / 1e6
    heads = ("analysis s", "x plain", "MB/s", "whole s", "x plain", "CPU s", "x plain", "RSS MB")
    print(f"{'run':16s} " + " ".join(f"{h:>{max(len(h), 7)}s}" for h in heads))
    for name in runs:
        a, w = statistics.median(inproc[name]), statistics.median(whole[name])
        c = statistics.median(whole_cpu[name])
        print(f"{name:16s} {a:10.2f} {a / base_in:7.2f} {mb / a:7.0f} {w:7.2f} {w / base_whole:7.2f} "
              f"{c:7.2f} {c / base_cpu:7.2f} {rss[name] / 1024:7.0f}")
    print(f"(medians of {args.repeat}, {mb:.0f} MB captures in {work})")
    sys.path.insert(0, str(GEN.parent))
    from gen_capture import parse_size

    records = parse_size(args.size) // (5 + 16384 + 1 + 16)    # the TLS bytes in 16 KiB TLS 1.3 records
    aead = aead_only(records, args.repeat)
    print(f"AEAD alone (AES-256-GCM, {records} records of 16 KiB, CPU s in this process): {aead:.2f} "
          f"({aead / base_cpu:.2f} x plain's whole CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
