#!/usr/bin/env python3
"""Run the atheris fuzz targets (fuzz/targets.py), seeded from the capture corpus.

    python fuzz/run.py all --minutes 30            # every target, the time shared between them
    python fuzz/run.py parser-main --minutes 10    # one target
    python fuzz/run.py list                        # the targets

Each target runs in its own process (libFuzzer exits when done) with its corpus under ``--work``
(default /tmp/migshark-fuzz/TARGET, grown across runs) seeded from captures/: the first bytes of each
capture for ``reader`` and ``pipeline``, each channel's first bytes (per kind, as the capture's streams
carry them) for the parsers. A crashing input is written to fuzz/crashes/TARGET/ (kept in git: the
test ``tests/test_fuzz_regressions.py`` replays every one) and the run fails.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRASHES = ROOT / "fuzz" / "crashes"
NAMES = ["reader", "tcp", "parser-main", "parser-main-devstate", "parser-multifd", "parser-preempt",
         "parser-return-path", "parser-tls", "pipeline", "vmstate"]
SEED_BYTES = {"reader": 16384, "pipeline": 24576}
STREAM_BYTES = 6144


def _captures() -> list[Path]:
    return sorted((ROOT / "captures").glob("*.pcap*"))


def _raw(cap: Path, n: int) -> bytes:
    if cap.suffix == ".gz":
        with gzip.open(cap, "rb") as f:
            return f.read(n)
    return cap.read_bytes()[:n]


class _Keep:
    """A TCP sink keeping the first STREAM_BYTES of each direction."""

    def __init__(self, streams: list[list[bytearray]]) -> None:
        self.b = [bytearray(), bytearray()]
        streams.append(self.b)

    def data(self, d: int, off: int, data: memoryview | bytes, ts: float) -> int:
        if len(self.b[d]) < STREAM_BYTES:
            self.b[d] += bytes(data[:STREAM_BYTES - len(self.b[d])])
        return 0

    def gap(self, d: int, off: int, length: int, ts: float) -> None:
        pass

    def end(self, d: int, off: int, ts: float, how: str) -> None:
        pass


def _stream_seeds() -> dict[str, list[bytes]]:
    """The first bytes of every channel of every capture, by parser."""
    sys.path.insert(0, str(ROOT))
    from dissectors.capture import open_capture
    from dissectors.channels import identify_stream
    from dissectors.tcp import TcpTracker

    kinds = {"main": "main", "main-recovery": "main", "multifd": "multifd", "preempt-candidate": "preempt",
             "tls": "tls"}
    out: dict[str, list[bytes]] = {f"parser-{k}": [] for k in ("main", "main-devstate", "multifd", "preempt",
                                                                 "return-path", "tls")}
    for cap in _captures():
        streams: list[list[bytearray]] = []
        t = TcpTracker(lambda conn, s=streams: _Keep(s))
        with open_capture(cap) as c:
            t.feed_keyed(c.keyed_segments())
        t.finish()
        for client, server in streams:
            kind = kinds.get(identify_stream(bytes(client[:4096])) or "")
            if kind:
                out[f"parser-{kind}"].append(b"\x07" + bytes(client))
                if kind == "main":
                    out["parser-main-devstate"].append(b"\x07" + bytes(client))
                if kind == "main" and server:
                    out["parser-return-path"].append(b"\x07" + bytes(server))
                if kind == "tls" and server:
                    out["parser-tls"].append(b"\x07" + bytes(server))
    return out


def _vmstate_seeds() -> list[bytes]:
    """Each device of the real QEMU 7.2 stream in tests/data: its description, a zero byte, its body."""
    sys.path.insert(0, str(ROOT))
    from dissectors.channels import MainParser

    data = gzip.decompress((ROOT / "tests" / "data" / "qemu72-precopy-pc-i440fx.mig.gz").read_bytes())
    desc = json.loads(data[data.rindex(b'{"page_size"'):])
    devices = {(d["name"], d["instance_id"]): d for d in desc["devices"]}
    p = MainParser()
    p.keep_device_state()
    out = []
    for r in p.feed(data, 0.0) + p.eof(0.0):
        dev = devices.get((r.fields.get("idstr"), r.fields.get("instance_id")))
        if r.kind == "device.vmstate" and r.raw is not None and dev is not None and len(r.raw) < 16384:
            out.append(json.dumps({"devices": [dev]}).encode() + b"\0" + r.raw)
    return out


def _devstate_stream_seeds() -> list[bytes]:
    """Small precopy streams whose device sections and VMDESCRIPTION are a real device's (see above)."""
    from dissectors.layers.synth import precopy_stream

    out = []
    for s in _vmstate_seeds():
        text, _, body = s.partition(b"\0")
        name = json.loads(text)["devices"][0]["name"].encode()
        out.append(b"\x07" + precopy_stream(pages=1, zero_pages=1, devices=[(name, body)], vmdesc=text))
    return out


def seed(work: Path, names: list[str]) -> None:
    streams = _stream_seeds() if any(n.startswith("parser-") for n in names) else {}
    for name in names:
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        if name in SEED_BYTES:
            seeds = [_raw(c, SEED_BYTES[name]) for c in _captures()]
        elif name == "vmstate":
            seeds = _vmstate_seeds()
        elif name == "tcp":
            seeds = [b"\x0a\0\0\0\x0a\0\0\0\x0a\0\x01\x08abcdefgh\x0b\0\0\x02\x0c\0\0\x00",
                     b"\x08\0\0\x10QEVM\0\0\0\x03fff\x08\x00\x20\x08hijklmno\x09\0\0\x00"]
        else:
            seeds = streams.get(name, [])
        if name == "parser-main-devstate":    # the device sections and VMDESCRIPTION come at a stream's end
            seeds = seeds + _devstate_stream_seeds()
        for i, s in enumerate(dict.fromkeys(seeds)):
            (d / f"seed-{i:03d}").write_bytes(s)


def fuzz_one(name: str, seconds: int, work: Path, max_len: int) -> int:
    """Run in this process (atheris exits at the end)."""
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["dissectors"]):
        from fuzz.targets import TARGETS
    target = TARGETS[name]
    (CRASHES / name).mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], str(work / name), f"-max_total_time={seconds}", f"-max_len={max_len}",
            f"-artifact_prefix={CRASHES / name}/", "-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1"]
    atheris.Setup(args, target)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="a target name, 'all' or 'list'")
    ap.add_argument("--minutes", type=float, default=0)
    ap.add_argument("--seconds", type=float, default=0, help="instead of --minutes")
    ap.add_argument("--work", type=Path, default=Path("/tmp/migshark-fuzz"))
    ap.add_argument("--max-len", type=int, default=32768)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.target == "list":
        print("\n".join(NAMES))
        return 0
    names = NAMES if args.target == "all" else [args.target]
    if any(n not in NAMES for n in names):
        ap.error(f"unknown target {args.target!r}; one of: all, {', '.join(NAMES)}")
    total = args.seconds or args.minutes * 60 or 60
    if args.child:
        return fuzz_one(names[0], int(total), args.work, args.max_len)
    seed(args.work, names)
    each = max(1, int(total / len(names)))
    failed = []
    for name in names:
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, __file__, name, "--seconds", str(each), "--work", str(args.work),
                              "--max-len", str(args.max_len), "--child"], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
        stats = [ln for ln in res.stderr.splitlines() if ln.startswith(("stat::number_of_executed_units",
                                                                         "#", "==", "Done"))]
        print(f"{name}: exit {res.returncode} in {time.monotonic() - t0:.0f} s; "
              f"{stats[-1] if stats else res.stderr[-300:]}", flush=True)
        if res.returncode != 0:
            failed.append(name)
            print(res.stderr[-4000:], file=sys.stderr)
    if failed:
        print(f"crashes in {', '.join(failed)}: see {CRASHES}/", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
