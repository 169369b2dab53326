# SPDX-License-Identifier: GPL-2.0-or-later
"""Run one scenario: two QEMUs on loopback, optional reordering proxy, tcpdump, QMP, manifest."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import platform
import re
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .capture import Tcpdump, port_filter
from .chroot import stage_kernel, work_parent
from .guest import build_guest, guest_append
from .manifest import write_manifest
from .netpath import NetpathSession, run_on_netpath
from .proxy import ProxyConfig, ReorderingProxy, hold_back_indices
from .qemus import EnvironmentProblem, GuestSpec, qemu_command, qemu_install, tool
from .scenarios import Scenario
from .side import QemuSide, QmpFailed
from .timer_probe import TimerProbe, freeze_timer
from .tls import make_x509_creds

LOOPBACK = "127.0.0.1"
POLL_S = 0.25
ERROR_GRACE_S = 2.0
GUEST_SETTLE_S = 1.2
TEARDOWN_WATCH_S = 2.0
# A destination error followed by nothing (no exit, no close, the source in progress and not moving for
# STALL_QUIET_S, watched for up to STALL_CONFIRM_S after the grace) is a stall, not a failure.
STALL_QUIET_S = 2.0
STALL_CONFIRM_S = 6.0
_IN_PROGRESS = frozenset({"setup", "active", "device", "pre-switchover", "postcopy-active"})
# Destination stderr lines that mean the incoming migration broke (QEMU prints and may keep running).
_DST_ERROR = re.compile(r"(?i)(error|failed|not a migration stream|magic|assert|abort|unknown)")
# ... but not QEMU's warnings (11.1: "warning: Machine type 'pc-i440fx-7.2' is deprecated: ...").
_WARNING = re.compile(r"^[^:]*: warning: ")


def is_destination_error(line: str) -> bool:
    return bool(_DST_ERROR.search(line)) and not _WARNING.search(line)


@dataclass
class Recording:
    outcome: str
    reason: str
    pcap: Path
    manifest: Path
    manifest_data: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def capabilities(sc: Scenario) -> dict[str, bool]:
    caps = {"events": True}
    if sc.multifd:
        caps["multifd"] = True
    if sc.postcopy:
        caps["postcopy-ram"] = True
        caps["return-path"] = True
    if sc.preempt:
        caps["postcopy-preempt"] = True
    return caps


def parameters(sc: Scenario, role: str, host: str = LOOPBACK) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if sc.multifd:
        params["multifd-channels"] = sc.multifd
    if sc.tls:
        params["tls-creds"] = "tls0"
    if role == "source":
        params["max-bandwidth"] = sc.max_bandwidth
        if sc.max_postcopy_bandwidth:
            params["max-postcopy-bandwidth"] = sc.max_postcopy_bandwidth
        if sc.tls:
            params["tls-hostname"] = host  # the server certificate's SAN IP (tls.py)
    return params


def _cap_list(caps: dict[str, bool]) -> list[dict[str, Any]]:
    return [{"capability": k, "state": v} for k, v in caps.items()]


def check_environment(sc: Scenario) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("recording needs root (tcpdump on lo, userfaultfd for postcopy)")
    for name in (sc.src, sc.dst):
        qemu_install(name).check()
    tool("tcpdump")
    if sc.tls:
        tool("certtool")


async def _resolved_machine(side: QemuSide, requested: str) -> str:
    machines = await side.try_execute("query-machines", log=False) or []
    for m in machines:
        if m.get("name") == requested:
            return str(m["name"])
        if m.get("alias") == requested:
            return str(m["name"])
    return requested


async def _wait_status(side: QemuSide, wanted: set[str], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = await side.migration_status()
        if status in wanted or not side.alive():
            return status
        await asyncio.sleep(0.1)
    return status


class Run:
    """State of one recording; ``execute()`` does it, always cleaning up its processes."""

    def __init__(
        self, sc: Scenario, out_dir: Path, name: str, *, compress: bool = False, verbose: bool = False
    ) -> None:
        self.sc = sc
        self.out_dir = out_dir
        self.name = name
        self.compress = compress
        self.verbose = verbose
        self.t0 = time.time()
        self.work = Path(".")
        self.timeline: list[dict[str, Any]] = []
        self.ports = {"destination": free_port()}
        self.host = LOOPBACK  # the destination's address (a namespace path's, see netpath.py)
        self.netpath: NetpathSession | None = None
        self.timer_probe: TimerProbe | None = None
        if sc.uses_proxy:
            self.ports["proxy"] = free_port()
        if sc.recover:
            self.ports["recover"] = free_port()

    def mark(self, what: str, **extra: Any) -> None:
        self.timeline.append({"time": time.time(), "t": round(time.time() - self.t0, 4), "what": what, **extra})
        if self.verbose:
            print(f"[{time.time() - self.t0:7.2f}] {what} {extra if extra else ''}", flush=True)

    async def execute(self) -> Recording:
        if self.sc.path == "netns" and self.netpath is None:
            return await run_on_netpath(self)  # sets self.netpath up, calls execute() again, tears it down
        sc = self.sc
        check_environment(sc)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pcap = self.out_dir / f"{self.name}.pcap"
        if self.netpath is not None:
            pcap = self.netpath.pcap_path(self.out_dir, self.name)  # NAME.src.pcap (and NAME.dst.pcap)
        kernel = build_guest()
        # A side that runs in a root (QEMU 11.1's chroot) opens only files inside it: work there.
        parent = work_parent(qemu_install(v) for v in (sc.src, sc.dst))
        with tempfile.TemporaryDirectory(prefix="migshark-rec-", dir=parent) as tmp:
            work = Path(tmp)
            self.work = work
            if parent is not None:
                kernel = stage_kernel(kernel, work)
            tls_dir = make_x509_creds(work / "tls", self.host) if sc.tls else None
            keylog = self.out_dir / f"{self.name}.keylog" if sc.tls else None
            work_keylog = work / "sslkeylog" if sc.tls else None  # copied to keylog after the run
            guest = GuestSpec(
                kernel, guest_append(sc.fill_mib, sc.dirty_pages, sc.dirty_rate), sc.memory_mib, sc.machine
            )
            sides = {}
            for role, ver in (("destination", sc.dst), ("source", sc.src)):
                inst = qemu_install(ver)
                cmd = qemu_command(
                    inst,
                    guest,
                    qmp_socket=work / f"{role}.qmp",
                    serial_log=work / f"{role}.serial",
                    incoming=role == "destination",
                    tls_dir=tls_dir,
                    name=f"migshark-{role}",
                    tls_priority=sc.tls_priority,
                )
                env = {"SSLKEYLOGFILE": inst.qemu_path(work_keylog)} if work_keylog else {}
                if self.netpath is not None:
                    cmd = self.netpath.prefix(role) + cmd  # ip netns exec NS [chroot ROOT] qemu ...
                sides[role] = QemuSide(role, inst, cmd, work, work / f"{role}.qmp", env)
            tcpdump = (
                self.netpath.make_capture(pcap, list(self.ports.values()))
                if self.netpath is not None
                else Tcpdump(pcap, list(self.ports.values()))
            )
            proxy: ReorderingProxy | None = None
            stats = None
            manifest: dict[str, Any] = {}
            outcome, reason = "failed", "not started"
            try:
                for side in sides.values():
                    await side.start()
                manifest = await self._describe(sides)
                tcpdump.start()
                self.mark("tcpdump ready")
                if sc.uses_proxy:
                    proxy = ReorderingProxy(
                        ProxyConfig(
                            self.ports["proxy"],
                            self.ports["destination"],
                            hold_back_indices(sc.hold_back, multifd=sc.multifd, preempt=sc.preempt),
                            sc.hold_delay_s,
                            hold_at=sc.hold_at,
                        )
                    )
                    await proxy.start()
                outcome, reason = await self._migrate(sides)
            except QmpFailed as exc:
                outcome, reason = "failed", f"QMP: {exc}"
            finally:
                manifest["query_migrate"] = {r: await s.try_execute("query-migrate") for r, s in sides.items()}
                manifest["run_state"] = {r: await s.try_execute("query-status") for r, s in sides.items()}
                exit_status, manifest["teardown"] = await self._teardown(sides, outcome)
                if proxy is not None:
                    await proxy.stop()
                stats = tcpdump.stop()
            self.mark("stopped")
            if keylog is not None and work_keylog is not None and work_keylog.exists():
                shutil.copyfile(work_keylog, keylog)
            manifest.update(self._results(sides, exit_status, proxy, stats, pcap, keylog, work))
            if self.timer_probe is not None:
                manifest["timer_probe"] = self.timer_probe.to_dict()
        manifest["outcome"], manifest["outcome_reason"] = outcome, reason
        manifest["expected_outcome"] = sc.expect
        manifest["matches_lab_notes"] = outcome == sc.expect
        manifest["timeline"] = self.timeline
        if self.compress:
            manifest["capture"]["uncompressed_size_bytes"] = pcap.stat().st_size
            gz = pcap.with_suffix(".pcap.gz")
            with open(pcap, "rb") as src, gzip.open(gz, "wb", compresslevel=9) as dst:
                shutil.copyfileobj(src, dst)
            pcap.unlink()
            pcap = gz
            manifest["capture"]["file"] = gz.name
            manifest["capture"]["size_bytes"] = gz.stat().st_size
        if self.netpath is not None:
            self.netpath.finish(manifest, compress=self.compress)
        path = write_manifest(self.out_dir / f"{self.name}.manifest.json", manifest)
        return Recording(outcome, reason, pcap, path, manifest)

    async def _describe(self, sides: dict[str, QemuSide]) -> dict[str, Any]:
        sc = self.sc
        caps = capabilities(sc)
        info: dict[str, Any] = {
            "name": self.name,
            "scenario": asdict(sc),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.t0)),
            "host": {"kernel": platform.release(), "python": platform.python_version()},
            "ports": self.ports,
            "capabilities": caps,
            "parameters_set": {r: parameters(sc, r, self.host) for r in sides},
            "qemu": {},
        }
        for role, side in sides.items():
            version = await side.execute("query-version")
            info["qemu"][role] = {
                "name": side.install.name,
                "binary": str(side.install.binary),
                "version": version,
                "version_string": "{major}.{minor}.{micro}".format(**version["qemu"])
                + " "
                + version.get("package", ""),
                "machine": {"requested": sc.machine, "resolved": await _resolved_machine(side, sc.machine)},
                "command_line": side.cmd,
                "env": side.install.env,
            }
            await side.execute("migrate-set-capabilities", {"capabilities": _cap_list(caps)})
            params = parameters(sc, role, self.host)
            if params:
                await side.execute("migrate-set-parameters", params)
            info["qemu"][role]["migrate_parameters"] = await side.try_execute("query-migrate-parameters")
            info["qemu"][role]["migrate_capabilities"] = await side.try_execute("query-migrate-capabilities")
        info["machine_type"] = info["qemu"]["destination"]["machine"]["resolved"]
        return info

    async def _migrate(self, sides: dict[str, QemuSide]) -> tuple[str, str]:
        sc, src, dst = self.sc, sides["source"], sides["destination"]
        dport = self.ports["destination"]
        target = self.ports.get("proxy", dport)
        await self._wait_guest_ready(src)
        if sc.timer_low_byte is not None:
            # the source stays stopped from here: the migration below carries the timer body probed
            self.timer_probe = await freeze_timer(
                src, self.work, sc.timer_low_byte, max_attempts=sc.timer_max_attempts, mark=self.mark
            )
        baseline = len(dst.stderr())
        await dst.execute("migrate-incoming", {"uri": f"tcp:{self.host}:{dport}"})
        self.mark("migrate-incoming", port=dport)
        t_migrate = time.monotonic()
        await src.execute("migrate", {"uri": f"tcp:{self.host}:{target}"})
        self.mark("migrate", port=target)
        # --interrupt-after counts from migrate: one due before the postcopy switch breaks the precopy phase
        # and postcopy is not started (waiting for the switch first broke it later than the reason says)
        interrupt_first = sc.interrupt is not None and sc.interrupt_after_s < sc.postcopy_after_s
        if sc.postcopy and interrupt_first:
            self.mark("postcopy not started", reason=f"{sc.interrupt} due {sc.interrupt_after_s:g} s after migrate")
        elif sc.postcopy:
            await asyncio.sleep(max(0.0, sc.postcopy_after_s - (time.monotonic() - t_migrate)))
            status = await src.migration_status()
            if status in ("active", "setup", "device", "pre-switchover"):
                await src.try_execute("migrate-start-postcopy")
                self.mark("migrate-start-postcopy", source_status=status)
            else:
                self.mark("postcopy not started", source_status=status)
        if sc.recover and not interrupt_first:
            result = await self._recover(src, dst)
            if result is not None:
                return result
        if sc.interrupt:
            await asyncio.sleep(max(0.0, sc.interrupt_after_s - (time.monotonic() - t_migrate)))
            return await self._interrupt(src, dst, baseline)
        return await self._wait_outcome(src, dst, baseline)

    async def _interrupt(self, src: QemuSide, dst: QemuSide, baseline: int) -> tuple[str, str]:
        """Break the running migration (scenario ``interrupt``) and record what each side then says. The
        outcome is "failed" unless it had already completed; the reason says what was done and how QEMU
        took it."""
        sc = self.sc
        before = await src.migration_status()
        if before in ("completed", "failed", "cancelled", None):
            self.mark("not interrupted", source_status=before)
            return await self._wait_outcome(src, dst, baseline)
        if sc.interrupt == "cancel":
            try:
                await src.execute("migrate_cancel")
            except QmpFailed as exc:   # 8.x+ in postcopy: "Postcopy migration in progress, cannot cancel."
                self.mark("migrate_cancel refused (source)", source_status=before, error=str(exc))
                outcome, reason = await self._wait_outcome(src, dst, baseline)
                return outcome, f"{reason}; migrate_cancel refused while {before}: {exc}"
            self.mark("migrate_cancel (source)", source_status=before)
        else:
            side = dst if sc.interrupt == "kill-destination" else src
            if side.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(side.proc.pid, signal.SIGKILL)
            self.mark(f"SIGKILL ({side.role})", source_status=before)
        # let both sides settle: a source goes cancelling -> cancelled, or failed once its peer is gone;
        # a destination fails on the cut stream and (before 9.1's exit-on-error) exits
        deadline = time.monotonic() + ERROR_GRACE_S + 3.0
        s = d = None
        while time.monotonic() < deadline:
            s = await src.migration_status() if src.alive() else None
            d = await dst.migration_status() if dst.alive() else None
            if s not in _IN_PROGRESS | {"cancelling"} and d not in _IN_PROGRESS:
                break
            await asyncio.sleep(POLL_S)
        await asyncio.sleep(ERROR_GRACE_S)      # the destination's stderr and exit
        s = await src.migration_status() if src.alive() else None
        d = await dst.migration_status() if dst.alive() else None
        self.mark("status", source=s, destination=d)
        errors = [ln for ln in dst.stderr()[baseline:].splitlines() if is_destination_error(ln)]

        def state(side: QemuSide, status: str | None) -> str:
            if side.alive():
                return str(status)
            return f"exited ({side.proc.returncode if side.proc else '?'})"

        reason = (f"{sc.interrupt} {sc.interrupt_after_s:g} s after migrate (source was {before}): source "
                  f"{state(src, s)}, destination {state(dst, d)}")
        if errors:
            reason += f"; destination: {errors[0]}"
        if s == "completed" and d == "completed":
            return "completed", reason
        return "failed", reason

    async def _teardown(self, sides: dict[str, QemuSide], outcome: str) -> tuple[dict[str, int | None], dict]:
        """Stop the source first; after a stall, watch what the destination does once the source is gone."""
        dst = sides["destination"]
        before = len(dst.stderr())
        exit_status = {"source": await sides["source"].stop()}
        info: dict[str, Any] = {"order": ["source", "destination"]}
        if outcome == "stalled":
            await asyncio.sleep(TEARDOWN_WATCH_S)
            info["destination_status_after_source_exit"] = await dst.migration_status()
            info["destination_stderr_after_source_exit"] = dst.stderr()[before:]
            info["destination_exited_after_source_exit"] = None if dst.alive() else dst.proc and dst.proc.returncode
            info["destination_qmp_timeouts"] = dst.qmp_timeouts
            self.mark("destination after source exit", status=info["destination_status_after_source_exit"])
        exit_status["destination"] = await dst.stop()
        return exit_status, info

    async def _wait_guest_ready(self, src: QemuSide, timeout: float = 90.0) -> None:
        """Wait until the guest has filled its memory (it says so on its serial port), then a little more."""
        serial = self.work / "source.serial"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if serial.exists() and "migshark-guest: filled" in serial.read_text(errors="replace"):
                self.mark("guest filled")
                await asyncio.sleep(GUEST_SETTLE_S)
                return
            await asyncio.sleep(0.1)
        self.mark("guest did not report 'filled' in time")

    async def _recover(self, src: QemuSide, dst: QemuSide) -> tuple[str, str] | None:
        status = await _wait_status(src, {"postcopy-active", "completed", "failed"}, 15)
        if status != "postcopy-active":
            return "failed", f"recovery: source never reached postcopy-active (status {status})"
        await asyncio.sleep(0.7)
        await src.execute("migrate-pause")
        self.mark("migrate-pause (source)")
        s = await _wait_status(src, {"postcopy-paused", "completed", "failed"}, 10)
        d = await _wait_status(dst, {"postcopy-paused", "completed", "failed"}, 10)
        self.mark("paused", source_status=s, destination_status=d)
        if s != "postcopy-paused" or d != "postcopy-paused":
            return "failed", f"recovery: not paused (source {s}, destination {d})"
        await asyncio.sleep(0.5)
        uri = f"tcp:{self.host}:{self.ports['recover']}"
        await dst.execute("migrate-recover", {"uri": uri})
        self.mark("migrate-recover (destination)", uri=uri)
        await asyncio.sleep(0.2)
        await src.execute("migrate", {"uri": uri, "resume": True})
        self.mark("migrate resume=true (source)", uri=uri)
        return None

    async def _wait_outcome(self, src: QemuSide, dst: QemuSide, baseline: int) -> tuple[str, str]:
        deadline = time.monotonic() + self.sc.timeout_s
        last: tuple[str | None, str | None] = (None, None)
        error_at: float | None = None
        error_line = dst_error = ""
        while time.monotonic() < deadline:
            s, d = await src.migration_status(), await dst.migration_status()
            if (s, d) != last:
                self.mark("status", source=s, destination=d)
                last = (s, d)
            if not dst.alive():
                return "failed", f"destination QEMU exited ({dst.proc.returncode if dst.proc else '?'})"
            if not src.alive():
                return "failed", f"source QEMU exited ({src.proc.returncode if src.proc else '?'})"
            if s == "completed" and d == "completed" and error_at is None:
                await asyncio.sleep(GUEST_SETTLE_S)  # let the guest print on the destination's serial
                return "completed", "both sides completed"
            # A paused postcopy prints socket errors on purpose; recovery runs are judged by status only.
            # The destination's error is looked for during the grace too: a source that saw the broken
            # connection first (its status polled before the destination's line was read) still has the
            # cause named in the reason.
            if not dst_error and not self.sc.recover:
                new = [ln for ln in dst.stderr()[baseline:].splitlines() if is_destination_error(ln)]
                if new:
                    dst_error = new[0]
                    self.mark("destination error", line=dst_error)
                    if error_at is None:
                        error_at, error_line = time.monotonic(), dst_error
                    else:
                        error_line += f"; destination: {dst_error}"
            if "failed" in (s, d) and error_at is None:
                error_at, error_line = time.monotonic(), f"status source={s} destination={d}"
            if error_at is not None and time.monotonic() - error_at >= ERROR_GRACE_S:
                if not error_line.startswith("status ") and await self._stalled_after_error(src, dst):
                    return "stalled", error_line
                return "failed", error_line
            await asyncio.sleep(POLL_S)
        if error_at is not None:
            return "failed", error_line
        return (
            "stalled",
            f"no completion within {self.sc.timeout_s:g} s (source {last[0]}, destination {last[1]})"
            + ("; destination QMP not answering" if dst.qmp_hung else ""),
        )

    async def _stalled_after_error(self, src: QemuSide, dst: QemuSide) -> bool:
        """After the destination printed an error: True if nothing followed it. Both QEMUs still run, the
        source stays in progress (no failure, no completion) and transfers nothing more for STALL_QUIET_S.
        A source that fails, completes or keeps moving (the loopback failures) leaves it a failure."""
        deadline = time.monotonic() + STALL_CONFIRM_S
        last: object = object()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if not (src.alive() and dst.alive()):
                return False
            info = await src.try_execute("query-migrate", log=False) or {}
            status = info.get("status")
            if status not in _IN_PROGRESS:
                return False
            transferred = (info.get("ram") or {}).get("transferred")
            now = time.monotonic()
            if transferred != last:
                last, quiet_since = transferred, now
            elif now - quiet_since >= STALL_QUIET_S:
                self.mark("stalled after the destination's error", source_status=status, transferred=transferred)
                return True
            await asyncio.sleep(POLL_S)
        return False

    def _results(
        self,
        sides: dict[str, QemuSide],
        exit_status: dict[str, int | None],
        proxy: ReorderingProxy | None,
        stats: Any,
        pcap: Path,
        keylog: Path | None,
        work: Path,
    ) -> dict[str, Any]:
        def tail(path: Path, n: int = 8) -> list[str]:
            return path.read_text(errors="replace").splitlines()[-n:] if path.exists() else []

        res: dict[str, Any] = {
            "events": {r: s.events for r, s in sides.items()},
            "qmp_log": {r: s.qmp_log for r, s in sides.items()},
            "stderr": {r: s.stderr() for r, s in sides.items()},
            "exit_status": exit_status,
            "serial_tail": {r: tail(work / f"{r}.serial") for r in sides},
            "capture": {
                "file": pcap.name,
                "filter": port_filter(list(self.ports.values())),
                "interface": "lo",
                "size_bytes": pcap.stat().st_size if pcap.exists() else 0,
                **(stats.to_dict() if stats is not None else {}),
            },
            "proxy": None,
        }
        if keylog is not None:
            res["tls"] = {
                "keylog_file": keylog.name if keylog.exists() else None,
                "hostname": self.host,
                "creds": f"x509 from certtool (CA, server SAN IP {self.host}, client)",
                "priority": self.sc.tls_priority,
            }
        if proxy is not None:
            res["proxy"] = {
                "listen_port": proxy.config.listen_port,
                "upstream_port": proxy.config.upstream_port,
                "hold_back_role": self.sc.hold_back,
                "hold_back_indices": proxy.config.hold_back,
                "hold_delay_s": proxy.config.hold_delay_s,
                "hold_at": proxy.config.hold_at,
                "connections": [c.to_dict() for c in proxy.log],
            }
        return res


def record(
    sc: Scenario, out_dir: Path, name: str | None = None, *, compress: bool = False, verbose: bool = False
) -> Recording:
    run = Run(sc, out_dir, name or sc.name, compress=compress, verbose=verbose)
    return asyncio.run(run.execute())
