"""Captures read as streams (standard input, pipes, FIFOs, gzip) and ``migshark watch``: its events, its
wall-clock stalls, SIGINT, retirement of finished migrations, and its final report equal to ``analyze``'s."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dissectors.analysis.engine import Analyzer
from dissectors.analysis.judge import Options
from dissectors.analysis.live import LiveView
from dissectors.capture import open_capture
from dissectors.cli.main import main
from dissectors.cli.pipeline import analyze_file, reassemble
from tests import synth as S
from tests.test_analysis_synthetic import multifd_migration, postcopy_preempt

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
CLI = [sys.executable, "-m", "dissectors.cli.main"]


def _same_report(a: dict, b: dict) -> None:
    """Equal but for the capture's name (a path vs '-')."""
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    name_a, name_b = a["capture"].pop("file"), b["capture"].pop("file")
    a["capture"]["warnings"] = [w.replace(name_a, "-") for w in a["capture"]["warnings"]]
    b["capture"]["warnings"] = [w.replace(name_b, "-") for w in b["capture"]["warnings"]]
    assert a == b


def _analyze_json(path: Path | str, *extra: str) -> tuple[int, dict]:
    proc = subprocess.run([*CLI, "analyze", "--json", *extra, str(path)], capture_output=True, cwd=REPO, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


# -- streams ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["holdback-multifd-7.2.pcap.gz", "preempt-recover-10.0.pcap.gz"])
def test_analyze_reads_standard_input_gzip_or_not(name: str, tmp_path: Path) -> None:
    rc, expected = _analyze_json(CAPTURES / name)
    raw = gzip.decompress((CAPTURES / name).read_bytes())
    for data in ((CAPTURES / name).read_bytes(), raw):
        proc = subprocess.run([*CLI, "analyze", "--json", "-"], input=data, capture_output=True, cwd=REPO, timeout=120)
        assert proc.returncode == rc, proc.stderr
        _same_report(json.loads(proc.stdout), expected)


def test_analyze_reads_a_fifo_pcapng_in_small_pieces(tmp_path: Path) -> None:
    src = tmp_path / "x.pcapng"
    pcap = tmp_path / "x.pcap"
    S.write_capture(str(pcap), postcopy_preempt(False))
    from dissectors.capture.writer import PcapngWriter

    with open_capture(pcap) as cap, PcapngWriter(src) as w:
        w.add_interface("ether")
        from dissectors.capture.pcap import FILE_HEADER_LEN
        data = pcap.read_bytes()[FILE_HEADER_LEN:]
        pos = 0
        while pos < len(data):
            sec, usec, caplen, _ = __import__("struct").unpack_from("<IIII", data, pos)
            w.write(sec + usec / 1e6, data[pos + 16:pos + 16 + caplen])
            pos += 16 + caplen
        assert cap.size
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    blob = src.read_bytes()

    def feed() -> None:
        with open(fifo, "wb", buffering=0) as f:
            for i in range(0, len(blob), 777):      # records split across reads
                f.write(blob[i:i + 777])
                time.sleep(0.0005)

    t = threading.Thread(target=feed)
    t.start()
    got = analyze_file(str(fifo), Options()).report
    t.join()
    _same_report(got, analyze_file(str(src), Options()).report)
    assert got["capture"]["frames"] > 10 and got["migrations"]


def test_empty_or_garbage_stream_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for data, says in ((b"", "empty input"), (b"not a capture at all", "not a pcap or pcapng")):
        proc = subprocess.run([*CLI, "analyze", "-"], input=data, capture_output=True, cwd=REPO, timeout=60)
        assert proc.returncode == 2
        assert f"-, offset 0: {says}" in proc.stderr.decode()
        assert "Traceback" not in proc.stderr.decode()


def test_progress_on_a_stream_shows_bytes_and_rate_not_a_percentage() -> None:
    data = (CAPTURES / "precopy-7.2.pcap.gz").read_bytes()
    proc = subprocess.Popen([*CLI, "analyze", "--progress", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdin is not None
    step = len(data) // 4 + 1
    for i in range(0, len(data), step):     # slowly, so that the bar is drawn between pieces
        proc.stdin.write(data[i:i + step])
        proc.stdin.flush()
        time.sleep(0.5)
    _, err_bytes = proc.communicate(timeout=60)
    err = err_bytes.decode()
    assert re.search(r"analyse -: \d+(\.\d+)?[kMG]B \[\d\d:\d\d, \d+(\.\d+)?[kMG]B/s\]", err), err   # bytes, rate
    assert "%" not in err and "|" not in err                                                              # no bar


# -- watch ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["holdback-multifd-7.2", "holdback-preempt-7.2", "preempt-recover-11.1",
                                  "multifd-tls-10.0"])
def test_watch_report_equals_analyze(name: str) -> None:
    path = CAPTURES / f"{name}.pcap.gz"
    keylog = CAPTURES / f"{name}.keylog"
    extra = ["--keylog", str(keylog)] if keylog.exists() else []
    rc, expected = _analyze_json(path, *extra)
    proc = subprocess.run([*CLI, "watch", "--json", *extra, "-"], input=path.read_bytes(), capture_output=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == rc, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert lines[-1]["event"] == "report"
    _same_report(lines[-1]["report"], expected)
    events = lines[:-1]
    assert events[0]["event"] == "migration-start"
    for m in expected["migrations"]:
        said = {e["client"] for e in events if e["event"] == "channel" and e["migration"] == m["id"]}
        assert said == {c["client"] for c in m["channels"]}
        alerts = {e["client"] for e in events if e["event"] == "misclassified" and e["migration"] == m["id"]}
        assert alerts == {x["client"] for x in m["misclassifications"]}
        outcome = [e for e in events if e["event"] == "outcome" and e["migration"] == m["id"]]
        if m["outcome"]["status"] in ("completed", "failed", "stalled"):
            assert outcome[-1]["status"] == m["outcome"]["status"]


def test_watch_text_lines() -> None:
    path = CAPTURES / "holdback-multifd-7.2.pcap.gz"
    proc = subprocess.run([*CLI, "watch", "-"], input=path.read_bytes(), capture_output=True, cwd=REPO, timeout=120)
    out = proc.stdout.decode()
    assert proc.returncode == 1
    assert "MISCLASSIFIED 127.0.0.1:39298 is main but the destination (qemu-7.2) takes it as multifd" in out
    assert "QEMU would show: failed to receive packet via multifd channel 3" in out
    assert ("Migrations 1 and 0, the destination and source sides of one migration to 127.0.0.1:54699 through a "
            "relay at 127.0.0.1:58743: FAILED") in " ".join(x.strip() for x in out.splitlines())   # the report
    assert "FAILED: multifd channel accepted before main on a QEMU 7.2 destination" in out      # its headline
    assert "+1.0011s  migration 1 to 127.0.0.1:54699 [relay leg, destination side]: MISCLASSIFIED" in out


def _start_watch(*args: str) -> tuple[subprocess.Popen[bytes], list[tuple[float, dict]]]:
    proc = subprocess.Popen([*CLI, "watch", "--json", *args, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO)
    events: list[tuple[float, dict]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.append((time.monotonic(), json.loads(line)))

    threading.Thread(target=read, daemon=True).start()
    return proc, events


def _wait_for(events: list[tuple[float, dict]], pred, timeout: float = 20.0) -> tuple[float, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, e in list(events):
            if pred(e):
                return t, e
        time.sleep(0.01)
    raise AssertionError(f"no such event in {[e for _, e in events]}")


def test_a_silent_channel_is_judged_on_the_wall_clock_and_sigint_gives_the_report(tmp_path: Path) -> None:
    """The capture stops at the stall (no packet comes): capture time stands still, the alert comes from
    the wall clock once the channel has been silent for the threshold; then SIGINT ends the stream."""
    path = tmp_path / "stall.pcap"
    S.write_capture(str(path), postcopy_preempt(True))
    data = path.read_bytes()
    proc, events = _start_watch("--qemu-version", "7.2", "--silent-threshold", "0.5")
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()
    # from watch's first event on (its start-up, longer on a busy machine, is not what is measured here)
    started, _ = _wait_for(events, lambda e: e["event"] == "migration-start")
    t, alert = _wait_for(events, lambda e: e["event"] == "misclassified" and e["role"] == "preempt")
    assert alert["assigned_role"] == "main" and alert["clock"] == "wall"
    assert 0.5 <= alert["silent_for"] < 3.0
    assert "silent socket" in alert["qemu_would_show"]
    assert t - started < 5.0
    _, stall = _wait_for(events, lambda e: e["event"] == "stall" and e["kind"] == "preempt-as-main")
    assert stall["ongoing"] and stall["clock"] == "wall"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 1                   # analyze's exit code for findings
    _, last = _wait_for(events, lambda e: e["event"] == "report")
    assert "stopped by SIGINT" in proc.stderr.read().decode()  # type: ignore[union-attr]
    rc, expected = _analyze_json(path, "--qemu-version", "7.2")
    assert rc == 1
    _same_report(last["report"], expected)


def test_sigterm_also_ends_the_stream_with_the_report() -> None:
    data = (CAPTURES / "precopy-7.2.pcap.gz").read_bytes()
    proc, events = _start_watch()
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()
    _wait_for(events, lambda e: e["event"] == "outcome")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    _, last = _wait_for(events, lambda e: e["event"] == "report")
    assert last["report"]["migrations"][0]["outcome"]["status"] == "completed"


def test_watch_arguments_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch"]) == 2
    assert "give a capture to follow" in capsys.readouterr().err
    assert main(["watch", "-f", "tcp", "-"]) == 2
    assert "-f FILTER goes with -i IFACE" in capsys.readouterr().err


def test_watch_interface_says_what_permission_is_missing() -> None:
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv") or not os.path.exists("/usr/bin/tcpdump"):
        pytest.skip("needs root (to drop privileges with setpriv) and tcpdump")
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *CLI, "watch", "-i", "lo",
                           "-f", "tcp port 4444"], capture_output=True, cwd=REPO, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "permission" in err and "cap_net_raw" in err and "Traceback" not in err


# -- memory: finished migrations are retired --------------------------------------------------------
def test_finished_migrations_are_retired_and_the_report_is_unchanged(tmp_path: Path) -> None:
    conns: list[S.Conn] = []
    for n in range(30):
        ms = multifd_migration("multifd" if n % 3 == 0 else "main")
        for c in ms:
            c.syn_ts += n * 1.0
            c.events = [(ts + n * 1.0, d, data) for ts, d, data in c.events]
            c.sport += n * 10
            if not any(d == 1 and isinstance(x, str) for _, d, x in c.events):
                c.close(max(ts for ts, _, _ in c.events) + 0.001, by=1)   # the server closes too
        conns += ms
    path = tmp_path / "many.pcap"
    S.write_capture(str(path), conns)
    expected = analyze_file(str(path), Options(qemu_version="7.2")).report

    analyzer = Analyzer(Options(qemu_version="7.2"))
    view = LiveView(analyzer)
    most = {"facts": 0, "conns": 0}

    def on_batch(tracker) -> None:  # noqa: ANN001
        view.forget = tracker.forget
        view._last_retire = 0.0            # retire at every batch here (at most every RETIRE_EVERY s otherwise)
        view.update(tracker.last_ts)
        most["facts"] = max(most["facts"], len(analyzer.facts))
        most["conns"] = max(most["conns"], len(tracker.connections))

    with open_capture(path) as cap:
        _, capture = reassemble(_SmallBatches(cap), str(path), analyzer.sink_for, on_batch=on_batch)
    assert analyzer.retired.migrations >= 20
    assert most["facts"] <= 3 * 6 and most["conns"] <= 3 * 6    # a few migrations live at a time, not 30
    got = analyzer.finish(capture).report
    assert [m["id"] for m in got["migrations"]] == list(range(30))
    assert json.loads(json.dumps(got)) == json.loads(json.dumps(expected))


class _SmallBatches:
    """A capture whose keyed batches are 5 segments long (as a slow live stream hands them over)."""

    def __init__(self, cap) -> None:  # noqa: ANN001
        self.cap = cap

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.cap, name)

    def keyed_batches(self):  # noqa: ANN201
        for batch in self.cap.keyed_batches():
            for i in range(0, len(batch), 5):
                yield [tuple(x[:4]) + (bytes(x[4]),) + tuple(x[5:]) for x in batch[i:i + 5]]


def _child_captures(parent: int) -> bool:
    """True once a child of ``parent`` (the tcpdump that ``watch -i`` started) holds a packet socket bound to
    an interface (/proc/net/packet: Iface set, R running)."""
    with open("/proc/net/packet") as f:
        bound = {c[8] for c in (line.split() for line in list(f)[1:]) if c[4] != "0" and c[5] == "1"}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            if any(os.readlink(fd) in {f"socket:[{i}]" for i in bound} for fd in (stat.parent / "fd").iterdir()):
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def test_watch_interface_starts_tcpdump_and_follows_a_connection() -> None:
    """``watch -i lo -f FILTER`` with the real tcpdump: a migration stream sent over loopback is reported
    while the watcher runs, and SIGINT gives the report."""
    import shutil
    import socket

    from dissectors.layers import synth as L

    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        pytest.skip("needs root and tcpdump")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    proc = subprocess.Popen([*CLI, "watch", "--json", "-i", "lo", "-f", f"tcp port {port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    events: list[tuple[float, dict]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.append((time.monotonic(), json.loads(line)))

    threading.Thread(target=read, daemon=True).start()
    try:
        # watch starts (imports), then its tcpdump: wait until that one captures, however long a busy
        # machine takes, then a moment for its filter (set right after)
        deadline = time.monotonic() + 60
        while not _child_captures(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "watch's tcpdump did not start"
            time.sleep(0.05)
        time.sleep(0.5)
        cli = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        cli.sendall(L.precopy_stream())
        sent = time.monotonic()
        cli.close()
        while conn.recv(65536):
            pass
        conn.close()
        t, outcome = _wait_for(events, lambda e: e["event"] == "outcome")
        assert outcome["status"] == "completed" and t - sent < 5.0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        _, last = _wait_for(events, lambda e: e["event"] == "report")
        assert last["report"]["capture"]["file"] == f"tcpdump -i lo 'tcp port {port}'"
        assert last["report"]["migrations"][0]["outcome"]["status"] == "completed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.close()


def test_a_page_request_waiting_is_a_stall_on_the_wall_clock(tmp_path: Path) -> None:
    """Postcopy runs, the destination asks for a page, and nothing more comes: the request is alerted once it
    has waited ``--stall-threshold`` on the wall clock."""
    from tests.test_analysis_synthetic import T0

    conns = postcopy_preempt(False, serve_after=None)
    for c in conns:      # the capture so far: up to just after the page request (T0 + 1.01)
        c.events = [e for e in c.events if e[0] <= T0 + 1.02]
    path = tmp_path / "waiting.pcap"
    S.write_capture(str(path), conns)
    proc, events = _start_watch("--stall-threshold", "0.5")
    assert proc.stdin is not None
    proc.stdin.write(path.read_bytes())
    proc.stdin.flush()
    started, _ = _wait_for(events, lambda e: e["event"] == "postcopy-start")
    t, stall = _wait_for(events, lambda e: e["event"] == "stall" and e["kind"] == "page-request")
    assert stall["clock"] == "wall" and stall["ongoing"]
    assert stall["outstanding_requests"][0]["addr"] == "0x8000"
    # said once the request has waited the threshold on the wall clock (its own measure: a time taken here
    # may come late on a busy machine), and soon after, while the stream is still open
    assert 0.5 <= stall["duration"] and t - started < 5.0
    proc.stdin.close()
    proc.wait(timeout=20)
    _, last = _wait_for(events, lambda e: e["event"] == "report")
    rc, expected = _analyze_json(path, "--stall-threshold", "0.5")
    assert proc.returncode == rc
    _same_report(last["report"], expected)
