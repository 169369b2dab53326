# SPDX-License-Identifier: GPL-2.0-or-later
"""Recording over a real, delayed path between network namespaces (scenario ``path="netns"``).

``run_on_netpath(run)`` wraps one ``driver.Run``: it builds the three namespaces (netns.py), starts the
jittered relay in the middle one (delay_relay.py), and hands the run a ``NetpathSession`` that the driver
asks for the command prefix of each QEMU side (``ip netns exec NS``, in front of whatever the QEMU install
needs, e.g. ``chroot ROOT``), for the capture (one tcpdump in the source namespace and one in the
destination's: NAME.src.pcap and NAME.dst.pcap), and, before the manifest is written, to add the path,
the relay's figures and each vantage's view of the connection set-up (``finish``). Everything is
stopped and the namespaces deleted when the run ends, however it ends.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .capture import CaptureStats, Tcpdump, port_filter
from .delay_relay import RelayConfig, RelayProcess
from .netns import NetnsPath, NetnsProblem, ip_tool
from .qemus import EnvironmentProblem
from .vantage import vantage_summary

if TYPE_CHECKING:
    from .driver import Recording, Run

BAD_MAGIC = "received packet magic"
RELAY_MARGIN_S = 180.0  # the relay's own deadline: the scenario's timeout plus this


class DualCapture:
    """Two tcpdumps, one per vantage, started and stopped together (the driver's ``Tcpdump`` interface)."""

    def __init__(self, session: NetpathSession, pcap_src: Path, pcap_dst: Path, ports: list[int]) -> None:
        p = session.path
        self.files = {"source": pcap_src, "destination": pcap_dst}
        self.interfaces = {"source": p.src_if, "destination": p.dst_if}
        self.namespaces = {"source": p.src_ns, "destination": p.dst_ns}
        self.filter = port_filter(ports)
        self.dumps = {
            "source": Tcpdump(pcap_src, ports, interface=p.src_if, prefix=p.src_prefix),
            "destination": Tcpdump(pcap_dst, ports, interface=p.dst_if, prefix=p.dst_prefix),
        }
        self.stats: dict[str, CaptureStats] = {}

    def start(self) -> None:
        started = []
        try:
            for d in self.dumps.values():
                d.start()
                started.append(d)
        except BaseException:
            for d in started:
                d.stop()
            raise

    def stop(self) -> CaptureStats:
        """Stops both; returns the source vantage's figures (the driver's ``capture`` entry)."""
        for vantage, d in self.dumps.items():
            self.stats[vantage] = d.stop()
        return self.stats["source"]


class NetpathSession:
    def __init__(self, run: Run, path: NetnsPath) -> None:
        sc = run.sc
        self.run = run
        self.path = path
        self.seed = sc.relay_seed if sc.relay_seed is not None else random.SystemRandom().randrange(2**31)
        self.relay = RelayProcess(
            path.mid_prefix,
            RelayConfig(path.mid_src_if, path.mid_dst_if, sc.delay_ms, sc.jitter_ms, self.seed,
                        sc.timeout_s + RELAY_MARGIN_S),
            Path(tempfile.gettempdir()) / f"migshark-relay-{path.mid_ns}.json",
        )
        self.capture: DualCapture | None = None
        self.relay_stats: dict[str, Any] | None = None

    # -- what the driver asks ---------------------------------------------------------------------------
    def prefix(self, role: str) -> list[str]:
        return self.path.src_prefix if role == "source" else self.path.dst_prefix

    def pcap_path(self, out_dir: Path, name: str) -> Path:
        return out_dir / f"{name}.src.pcap"

    def make_capture(self, pcap: Path, ports: list[int]) -> DualCapture:
        dst = pcap.with_name(pcap.name.replace(".src.pcap", ".dst.pcap"))
        self.capture = DualCapture(self, pcap, dst, ports)
        return self.capture

    def stop_relay(self) -> None:
        if self.relay_stats is None:
            self.relay_stats = self.relay.stop()

    def finish(self, manifest: dict[str, Any], *, compress: bool) -> None:
        """Stop the relay; compress the destination vantage's file; describe the path and both vantages."""
        self.stop_relay()
        run, cap = self.run, self.capture
        dport = run.ports["destination"]
        info: dict[str, Any] = {
            "path": "netns",
            **self.path.describe(),
            "relay": {
                "process": "ip netns exec MIDDLE python -m dissectors.recorder.delay_relay",
                "command_line": self.relay.args,
                "delay_ms": run.sc.delay_ms,
                "jitter_ms": run.sc.jitter_ms,
                "seed": self.seed,
                "model": "per frame and per direction: max(0, N(delay, jitter)) ms; frames may overtake",
                "stats": self.relay_stats,
            },
        }
        if cap is not None:
            vantages: dict[str, Any] = {}
            for vantage, path in cap.files.items():
                stats = cap.stats.get(vantage)
                gz = path.with_name(path.name + ".gz")
                if compress and path.exists():  # the destination's file: the driver compresses only its own
                    uncompressed = path.stat().st_size
                    with open(path, "rb") as src, gzip.open(gz, "wb", compresslevel=9) as dst:
                        shutil.copyfileobj(src, dst)
                    path.unlink()
                    path = gz
                elif compress and gz.exists():  # the source's file, compressed by the driver already
                    uncompressed = (manifest.get("capture") or {}).get("uncompressed_size_bytes", 0)
                    path = gz
                else:
                    uncompressed = path.stat().st_size if path.exists() else 0
                cap.files[vantage] = path
                entry: dict[str, Any] = {
                    "file": path.name,
                    "namespace": cap.namespaces[vantage],
                    "interface": cap.interfaces[vantage],
                    "filter": cap.filter,
                    "size_bytes": path.stat().st_size if path.exists() else 0,
                    "uncompressed_size_bytes": uncompressed,
                    **(stats.to_dict() if stats is not None else {}),
                }
                if path.exists():
                    try:
                        entry["handshakes"] = vantage_summary(path, self.path.dst_addr, dport, vantage)
                    except Exception as exc:  # noqa: BLE001 - a damaged capture must not lose the manifest
                        entry["handshakes"] = {"error": str(exc)}
                vantages[vantage] = entry
            info["vantages"] = vantages
            manifest["captures"] = {v: e["file"] for v, e in vantages.items()}
            if isinstance(manifest.get("capture"), dict):
                manifest["capture"].update(
                    {k: v for k, v in vantages["source"].items() if k not in ("handshakes", "file")},
                    vantage="source",
                )
            dst_view = vantages["destination"].get("handshakes", {})
            info["accept_order_destination"] = dst_view.get("accept_order")
            info["connect_order_source"] = vantages["source"].get("handshakes", {}).get("connect_order")
            info["main_accepted_first"] = dst_view.get("main_accepted_first")
        stderr = manifest.get("stderr", {}).get("destination", "") or ""
        after = (manifest.get("teardown") or {}).get("destination_stderr_after_source_exit", "") or ""
        bad = [ln for ln in stderr.splitlines() if BAD_MAGIC in ln and ln not in after.splitlines()]
        info["destination_bad_magic"] = bool(bad)
        info["destination_bad_magic_line"] = bad[0] if bad else None
        manifest["netpath"] = info


def check_environment(sc: Any) -> None:
    if sc.uses_proxy:
        raise EnvironmentProblem("the reordering proxy is for loopback runs; a netns path reorders by itself")
    try:
        ip_tool()
    except NetnsProblem as exc:
        raise EnvironmentProblem(str(exc)) from None


def write_vantage_manifests(rec: Recording) -> list[Path]:
    """NAME.src.manifest.json and NAME.dst.manifest.json beside NAME.manifest.json: the same manifest with
    ``vantage`` and ``capture`` naming that file, so tools that look for ``<capture stem>.manifest.json``
    (``migshark check``) find it; for a TLS run NAME.src.keylog and NAME.dst.keylog likewise."""
    data = json.loads(rec.manifest.read_text())
    vantages = data.get("netpath", {}).get("vantages") or {}
    written = []
    for vantage, tag in (("source", "src"), ("destination", "dst")):
        if vantage not in vantages:
            continue
        copy = dict(data)
        copy["vantage"] = vantage
        copy["capture"] = {k: v for k, v in vantages[vantage].items() if k != "handshakes"}
        copy["capture"]["vantage"] = vantage
        copy["main_manifest"] = rec.manifest.name
        out = rec.manifest.with_name(rec.manifest.name.replace(".manifest.json", f".{tag}.manifest.json"))
        out.write_text(json.dumps(copy, indent=2) + "\n")
        written.append(out)
        # A TLS run's key log decrypts both captures: a copy as NAME.src.keylog / NAME.dst.keylog for the
        # tools that look for ``<capture stem>.keylog`` (check, fleet, the differential test)
        keylog = (data.get("tls") or {}).get("keylog_file")
        if keylog and rec.manifest.with_name(keylog).is_file():
            kout = rec.manifest.with_name(keylog.removesuffix(".keylog") + f".{tag}.keylog")
            shutil.copyfile(rec.manifest.with_name(keylog), kout)
            written.append(kout)
    return written


async def run_on_netpath(run: Run) -> Recording:
    """Run ``run`` inside a fresh namespace path with the relay up; tear everything down afterwards."""
    check_environment(run.sc)
    try:
        with NetnsPath() as path:
            session = NetpathSession(run, path)
            run.netpath = session
            run.host = path.dst_addr
            run.mark("netns path up", **{"namespaces": [path.src_ns, path.mid_ns, path.dst_ns]})
            try:
                session.relay.start()
            except RuntimeError as exc:
                raise EnvironmentProblem(str(exc)) from None
            run.mark("relay ready", delay_ms=run.sc.delay_ms, jitter_ms=run.sc.jitter_ms, seed=session.seed)
            try:
                rec = await run.execute()
            finally:
                session.stop_relay()
                session.relay.stats_path.unlink(missing_ok=True)
    except NetnsProblem as exc:
        raise EnvironmentProblem(str(exc)) from None
    write_vantage_manifests(rec)
    return rec
