"""``migshark watch``: follow a live capture (standard input, a pipe, a FIFO, or tcpdump started here),
print an event line as each thing happens, and the full report at the end of the stream or on SIGINT /
SIGTERM. The events come from ``analysis.live.LiveView`` over the same analysis the report is made of.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any

from dissectors.analysis.engine import Analyzer
from dissectors.analysis.judge import Options
from dissectors.analysis.live import LiveView
from dissectors.capture import open_capture
from dissectors.cli.pipeline import load_keylog, reassemble
from dissectors.errors import InputError
from dissectors.outputs.events import EventText, event_json
from dissectors.outputs.progress import Progress
from dissectors.outputs.text import render_report
from dissectors.outputs.timefmt import TimeFormat
from dissectors.tcp import TcpTracker

JUDGE_INTERVAL = 0.01      # at most one judgement per this many seconds while packets arrive ...
JUDGE_SHARE = 5            # ... and per this many times the last judgement's own CPU time (bounded overhead;
                           # CPU, not wall: on a loaded machine a judgement preempted midway costs no more),
JUDGE_INTERVAL_MAX = 0.5   # but at least this often (retirement of finished migrations rides on it)
IDLE_INTERVAL = 0.01       # wake-up period while no packet arrives (wall-clock stalls, pending events)
QUIET_JUDGE_INTERVAL = 0.1  # judgement period while nothing arrives (only the wall clock moves)
PERMISSION_HINT = ("capturing needs root, or tcpdump with the capabilities cap_net_raw and cap_net_admin "
                   "(sudo setcap cap_net_raw,cap_net_admin=eip \"$(command -v tcpdump)\"), or run as root: "
                   "sudo migshark watch -i IFACE; or pipe: sudo tcpdump -i IFACE -U -w - | migshark watch -")


class Watcher:
    """Judges the facts so far after each batch (at most every ``JUDGE_INTERVAL``) and while idle, and
    writes the events."""

    def __init__(self, analyzer: Analyzer, silent_threshold: float, as_json: bool, progress: Progress,
                 times: TimeFormat | None = None) -> None:
        self.view = LiveView(analyzer, silent_threshold)
        self.event_text = EventText(times)
        self.as_json = as_json
        self.progress = progress
        self.tracker: TcpTracker | None = None
        self.arrival = time.monotonic()
        self.last_judged = 0.0
        self.interval = JUDGE_INTERVAL
        self.dirty = False
        self.events = 0

    def on_batch(self, tracker: TcpTracker) -> None:
        if self.tracker is None:
            self.view.forget = tracker.forget      # free finished migrations as the stream goes on
        self.tracker = tracker
        self.arrival = time.monotonic()
        self.dirty = True
        if self.arrival - self.last_judged >= self.interval:
            self.judge(self.arrival)

    def on_idle(self) -> None:
        now = time.monotonic()
        if self.tracker is None:
            return
        if (self.dirty and now - self.last_judged >= self.interval) or now - self.last_judged >= QUIET_JUDGE_INTERVAL:
            self.judge(now)

    def judge(self, now: float, final: bool = False) -> None:
        assert self.tracker is not None
        self.last_judged = now
        self.dirty = False
        cpu = time.thread_time()
        events = self.view.update(self.tracker.last_ts, now - self.arrival, final)
        self.interval = min(max(JUDGE_INTERVAL, JUDGE_SHARE * (time.thread_time() - cpu)), JUDGE_INTERVAL_MAX)
        if not events:
            return
        wall = time.time()
        out = sys.stdout
        self.progress.clear()        # the event lines go above the bar
        for e in events:
            e["wall"] = round(wall, 6)
            out.write((event_json(e) if self.as_json else self.event_text(e)) + "\n")
        out.flush()
        self.progress.refresh()
        self.events += len(events)


class _Stop:
    """SIGINT / SIGTERM end the stream (the reader returns as at its end) instead of killing the process."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signal is not None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt        # a second Ctrl-C: give up at once
        self.signal = signum

    def __enter__(self) -> _Stop:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


class Tcpdump:
    """The real tcpdump writing pcap to a pipe (``-U -w -``): packets reach us as they are captured."""

    def __init__(self, iface: str, bpf: str | None, snaplen: int = 0) -> None:
        exe = shutil.which("tcpdump") or next((p for p in ("/usr/sbin/tcpdump", "/usr/bin/tcpdump")
                                                if os.access(p, os.X_OK)), None)
        if exe is None:
            raise InputError("tcpdump is not installed (apt-get install tcpdump), or pipe a capture in: "
                             "... | migshark watch -", path=f"-i {iface}")
        cmd = [exe, "-i", iface, "-U", "-w", "-", "-s", str(snaplen), "--immediate-mode"]
        if bpf:
            cmd.append(bpf)
        self.label = f"tcpdump -i {iface}" + (f" '{bpf}'" if bpf else "")
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # noqa: S603
                                     start_new_session=True)
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def fd(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            text = line.decode(errors="replace").rstrip()
            if len(self.stderr) < 50:
                self.stderr.append(text)

    def failure(self) -> str | None:
        """Why tcpdump stopped on its own (permission, no such interface, bad filter), if it did."""
        try:
            rc = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=1)
        if rc == 0:
            return None
        said = "; ".join(x for x in self.stderr if x and not x.startswith(("tcpdump: listening", "listening on")))
        why = f"tcpdump exited with status {rc}: {said or 'no message'}"
        if any(w in said.lower() for w in ("permission", "operation not permitted", "not permitted")):
            why += f". {PERMISSION_HINT}"
        return why

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_watch(args: argparse.Namespace) -> int:
    from dissectors.cli.main import report_exit_code

    if (args.capture is None) == (args.interface is None):
        raise InputError("give a capture to follow ('-' for standard input, a pipe or a FIFO) or -i IFACE")
    if args.filter and args.interface is None:
        raise InputError("-f FILTER goes with -i IFACE (filter a piped capture with tcpdump itself)")
    opts = Options(qemu_version=args.qemu_version, stall_threshold=args.stall_threshold,
                   progress_timeout=args.progress_timeout, tls_verify=args.tls_verify)
    keylog = load_keylog(args.keylog)
    dump = Tcpdump(args.interface, args.filter) if args.interface is not None else None
    label = dump.label if dump is not None else args.capture
    try:
        with _Stop() as stop:
            try:
                cap = open_capture(f"/dev/fd/{dump.fd}" if dump is not None else args.capture, live=True)
            except InputError as exc:
                why = dump.failure() if dump is not None else None
                if why:
                    raise InputError(why, path=label) from None
                raise exc from None
            cap.path = label
            analyzer = Analyzer(opts, keylog=keylog)
            bar = Progress(f"watch {label}", force=args.progress)
            times = TimeFormat(args.time_format)
            watcher = Watcher(analyzer, args.silent_threshold, args.json, bar, times)
            assert cap.live is not None
            cap.live.on_idle = watcher.on_idle
            cap.live.idle_interval = IDLE_INTERVAL
            cap.live.should_stop = stop
            try:
                with cap:
                    _, capture = reassemble(cap, label, analyzer.sink_for, bar, on_batch=watcher.on_batch,
                                            coalesce_runs=False)   # live: one segment at a time, as read
                if watcher.tracker is not None:
                    watcher.judge(time.monotonic())     # what the last packets decided
                    watcher.judge(time.monotonic(), final=True)   # outcomes said that the report won't hold
            finally:
                bar.close()
            # Said on stderr, not in the report: the report is the one `analyze` makes of the same bytes.
            if stop.signal is not None:
                print(f"migshark: watch: {label}: stopped by {signal.Signals(stop.signal).name} after "
                      f"{cap.position} bytes", file=sys.stderr)
            elif dump is not None:
                why = dump.failure()
                if why:
                    print(f"migshark: watch: {label}: {why}", file=sys.stderr)
    finally:
        if dump is not None:
            dump.stop()
    result = analyzer.finish(capture)
    report = result.report
    if args.json:
        sys.stdout.write(json.dumps({"event": "report", "wall": round(time.time(), 6), "report": report}) + "\n")
    else:
        sys.stdout.write("\n" + render_report(report, times))
    sys.stdout.flush()
    return report_exit_code(report, label)
