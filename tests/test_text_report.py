"""The text report as people read it (issue 13): the headline, wrapping, times, relay legs, the common
context said once, a capture cut short, subcommand usage errors and what ``findings`` counts."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dissectors.analysis.findings import migration_findings
from dissectors.analysis.judge import Options
from dissectors.cli.pipeline import analyze_file
from dissectors.outputs.events import EventText
from dissectors.outputs.text import headline, render_report
from dissectors.outputs.timefmt import TimeFormat
from tests import synth as S
from tests.test_analysis_synthetic import T0, multifd_migration

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
CLI = [sys.executable, "-m", "dissectors.cli.main"]
EXPECTED = sorted(CAPTURES.glob("*.expected.json"))
EPOCH = re.compile(r"\d{9,11}\.\d{6}")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | (env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, timeout=120, env=full)


# -- headline on real captures, one per outcome ---------------------------------------------------------
@pytest.mark.parametrize("name,extra,line", [
    ("holdback-multifd-7.2", [], "FAILED: multifd channel accepted before main on a QEMU 7.2 destination"),
    # the capture fits every generation's rules (each stalls): the generation judged by is said to be assumed
    ("holdback-preempt-7.2", [], "FAILED: preempt channel accepted before main on a QEMU 7.2 (assumed) destination"),
    ("holdback-preempt-7.2-to-11.1", [],
     "FAILED: preempt channel accepted before main on a QEMU 7.2 (assumed) destination"),
    ("netpath-multifd4-7.2-misorder.dst", [],
     "FAILED: multifd channel accepted before main on a QEMU 7.2 destination"),
    ("multifd-postcopy-7.2", [], "FAILED: multifd with postcopy before QEMU 10.1, unsupported by QEMU 7.2"),
    ("precopy-7.2", [], "COMPLETED: precopy, main channel only, 18.4 MiB in 0.24 s"),
    ("multifd4-postcopy-preempt-11.1", [], "COMPLETED: postcopy, main + 4 multifd + preempt, 29.0 MiB in 5.32 s"),
    ("preempt-recover-11.1", [], "COMPLETED: postcopy, main + preempt, 1 recovery leg(s), 23.9 MiB in 4.72 s"),
    ("multifd-tls-10.0", [], "COMPLETED: precopy, main + 2 multifd, 2.7 MiB in 0.20 s; TLS, not decrypted"),
    ("multifd-tls-10.0", ["--keylog", "captures/multifd-tls-10.0.keylog"],
     "COMPLETED: precopy, main + 2 multifd, 2.7 MiB in 0.20 s"),
    # the version given is the one named (6.0 is judged by 7.2's rules; it was "a QEMU 7.2 destination")
    ("holdback-multifd-7.2", ["--qemu-version", "6.0"],
     "FAILED: multifd channel accepted before main on a QEMU 6.0 destination"),
    # a blocked peek gives no role (it was "preempt channel taken as blocked by a QEMU 10.1+ destination")
    ("holdback-preempt-7.2-to-11.1", ["--qemu-version", "11.1"],
     "FAILED: a QEMU 11.1 destination stuck in a peek on the silent preempt channel"),
])
def test_headline_on_real_captures(name: str, extra: list[str], line: str) -> None:
    proc = _run("analyze", *extra, f"captures/{name}.pcap.gz")
    assert proc.stdout.splitlines()[0] == line, proc.stdout[:400]


def test_a_channel_behind_a_blocked_peek_is_given_no_role() -> None:
    proc = _run("analyze", "--qemu-version", "11.1", "captures/holdback-preempt-7.2-to-11.1.pcap.gz")
    text = " ".join(proc.stdout.split())
    assert "is preempt but the destination gives it no role, stuck in a peek (qemu-10.1+); silent" in text
    assert "is main but the destination gives it no role, stuck in a peek (qemu-10.1+)" in text
    assert "as blocked" not in text and proc.returncode == 1


def test_headline_of_a_stall_and_of_no_migration(tmp_path: Path) -> None:
    main = S.Conn(42000, T0).send(T0 + 0.001, S.header() + S.ram_start() + S.ram_part([0x1000]))
    other = S.Conn(42001, T0 + 30.0).send(T0 + 30.001, b"x")
    other.dport = 9999
    path = str(tmp_path / "stall.pcap")
    S.write_capture(path, [main, other])
    report = analyze_file(path, Options(qemu_version="7.2")).report
    assert headline(report) == "STALLED: no byte on any channel for 30.0 s (still at the capture's end)"
    only_other = str(tmp_path / "other.pcap")
    S.write_capture(only_other, [other])
    assert headline(analyze_file(only_other).report) == \
        "NO MIGRATION: no QEMU migration channel in 1 TCP connection(s), 4 segment(s)"


def test_headline_of_a_tls_migration_cut_before_its_end(tmp_path: Path) -> None:
    """TLS without a key log and no clean close: the outcome is unknown, and the headline says why."""
    if not shutil.which("editcap"):
        pytest.skip("needs editcap (Wireshark)")
    plain = tmp_path / "tls.pcap"
    plain.write_bytes(gzip.decompress((CAPTURES / "multifd-tls-10.0.pcap.gz").read_bytes()))
    subprocess.run(["editcap", "-r", str(plain), str(tmp_path / "first.pcap"), "1-150"], check=True)
    proc = _run("analyze", str(tmp_path / "first.pcap"))
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0] == "UNKNOWN: TLS not decrypted (give --keylog); connections still open"


# -- every corpus report: 80 columns, no epoch seconds, a headline that starts with the status ---------
@pytest.mark.parametrize("expected", EXPECTED, ids=lambda p: p.name.removesuffix(".expected.json"))
def test_every_corpus_report_reads_at_80_columns(expected: Path) -> None:
    report = json.loads(expected.read_text())
    text = render_report(report, width=80)
    lines = text.splitlines()
    assert all(len(x) <= 80 for x in lines), [x for x in lines if len(x) > 80]
    assert not EPOCH.search(text), EPOCH.findall(text)[:3]
    statuses = {m["outcome"]["status"].upper() for m in report["migrations"]}
    assert lines[0].split(":")[0] in statuses
    assert report["findings"] == sum(map(migration_findings, report["migrations"])) + len(report.get("limits", []))


def test_wraps_to_80_when_piped_and_honours_columns() -> None:
    piped = _run("analyze", "captures/holdback-multifd-7.2.pcap.gz")
    assert max(map(len, piped.stdout.splitlines())) <= 80
    assert any(len(x) > 70 for x in piped.stdout.splitlines())      # it fills the width, too
    wide = _run("analyze", "captures/holdback-multifd-7.2.pcap.gz", env={"COLUMNS": "160"})
    assert 80 < max(map(len, wide.stdout.splitlines())) <= 160
    # evidence sits under its finding, indented deeper
    lines = piped.stdout.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("  ! misclassified: 127.0.0.1:39298"))
    assert lines[at + 1].startswith("      ") and "QEMU would show" in " ".join(lines[at + 1:at + 4])


# -- relay legs, the context once -------------------------------------------------------------------------
def test_a_relays_two_legs_are_one_migration() -> None:
    proc = _run("analyze", "captures/holdback-multifd-7.2.pcap.gz")
    out = proc.stdout
    assert proc.returncode == 1
    assert len(re.findall(r"^Migration", out, re.M)) == 1
    assert ("Migrations 1 and 0, the destination and source sides of one migration to 127.0.0.1:54699 through a "
            "relay at 127.0.0.1:58743: FAILED") in " ".join(x.strip() for x in out.splitlines())
    dst, src = out.index("destination side, migration 1"), out.index("source side, migration 0")
    assert dst < out.index("127.0.0.1:39298", dst) < src < out.index("127.0.0.1:36412", src)
    assert "1 migration(s), 1 through a relay (two legs)" in out
    report = json.loads(_run("analyze", "--json", "captures/holdback-multifd-7.2.pcap.gz").stdout)
    assert [m["relay"]["side"] for m in report["migrations"]] == ["source", "destination"]   # JSON: two legs


def test_a_relayed_migrations_text_names_the_json_ids_of_both_legs() -> None:
    """The text called a relayed migration "Migration 1" where the JSON report lists it as migrations 0 (the
    source side, first) and 1: the heading and the headline name both ids, each with its side, as the JSON."""
    report = json.loads(_run("analyze", "--json", "captures/holdback-multifd-7.2.pcap.gz").stdout)
    side = {m["id"]: m["relay"]["side"] for m in report["migrations"]}
    text = render_report(report, width=300)
    heading = next(x for x in text.splitlines() if x.startswith("Migration"))
    named = re.match(r"Migrations (\d+) and (\d+), the destination and source sides ", heading)
    assert named, heading
    assert [side[int(i)] for i in named.groups()] == ["destination", "source"]
    other = json.loads(_run("analyze", "--json", "captures/precopy-7.2.pcap.gz").stdout)["migrations"][0]
    both = report | {"migrations": report["migrations"] + [other | {"id": 2}]}
    assert headline(both).endswith("(migrations 1 and 0, through a relay; 1 other(s): 1 completed)"), headline(both)
    assert "Migration 2 to " in render_report(both, width=300)


def test_the_same_context_is_said_once(tmp_path: Path) -> None:
    first = multifd_migration("main")
    second = multifd_migration("main")
    for c in second:                # an hour later, to another destination: not a relay of the first
        c.sport += 100
        c.dport = 5555
        c.syn_ts += 3600
        c.events = [(ts + 3600, who, what) for ts, who, what in c.events]
    path = str(tmp_path / "two.pcap")
    S.write_capture(path, first + second)
    report = analyze_file(path, Options(qemu_version="7.2")).report
    assert len(report["migrations"]) == 2
    text = render_report(report, width=200)
    assert text.count("policy qemu-7.2: --qemu-version 7.2") == 1
    assert text.count("vantage: ") == 1
    assert text.index("Every migration:") < text.index("Migration 0 to")
    assert text.splitlines()[0].startswith("COMPLETED: ") and "(migration 0; 1 other(s): 1 completed)" in text


# -- times ------------------------------------------------------------------------------------------------
def test_time_formats() -> None:
    ts, base = 1795633640.075779, 1795633639.074360
    assert TimeFormat("r").at(ts, base) == "+1.0014s"
    assert TimeFormat("r").absolute(base) == "2026-11-25T19:07:19.074360Z"
    assert TimeFormat("ud").at(ts, base) == "2026-11-25T19:07:20.075779Z"
    assert TimeFormat("u").at(ts, base) == "19:07:20.075779Z"
    assert TimeFormat("e").at(ts, base) == "1795633640.075779"
    assert TimeFormat("r").retime("accepted 5 of 5 at 1795633640.075779; 125000 bytes", base) == \
        "accepted 5 of 5 at +1.0014s; 125000 bytes"
    with pytest.raises(ValueError):
        TimeFormat("x")


def test_local_time_with_a_and_ad() -> None:
    env = {"TZ": "Asia/Kolkata"}
    ad = _run("analyze", "-t", "ad", "captures/holdback-multifd-7.2.pcap.gz", env=env).stdout
    assert "started 2026-11-26T00:37:19.074360+05:30; times below are local" in ad
    assert "accepted as the fifth of the initial connections (5 in all) at 2026-11-26T00:37:20.075779+05:30" \
        in ad.replace("\n        ", " ")
    a = _run("analyze", "-t", "a", "captures/holdback-multifd-7.2.pcap.gz", env=env).stdout
    assert "at 00:37:20.075779;" in a.replace("\n        ", " ")
    ud = _run("analyze", "-t", "ud", "captures/holdback-multifd-7.2.pcap.gz", env=env).stdout
    assert "started 2026-11-25T19:07:19.074360Z; times below are UTC" in ud


def test_watch_event_lines_are_relative_to_their_migration() -> None:
    text = EventText(TimeFormat("r"))
    base = {"migration": 0, "destination": "127.0.0.1:4444", "wall": 1.0}
    start = text(base | {"event": "migration-start", "time": 1795633639.0, "source_generation": "7.2",
                         "policy": "qemu-7.2"})
    assert start.lstrip().startswith("+0.0000s  migration 0") and "at 2026-11-25T19:07:19.000000Z" in start
    stall = text(base | {"event": "stall", "time": 1795633640.5, "kind": "no-progress", "duration": 5.0,
                         "ongoing": True, "clock": "capture", "channels": ["127.0.0.1:1"], "evidence": []})
    assert stall.lstrip().startswith("+1.5000s") and "since +1.5000s" in stall


def test_watch_events_say_a_channels_place_in_words() -> None:
    """"(#0 of leg 0)" read as jargon: a channel's place and its set of connections are said in words."""
    text = EventText(TimeFormat("r"))
    base = {"migration": 0, "destination": "127.0.0.1:4444", "wall": 1.0, "time": 1795633639.0, "client": "a:1",
            "role": "main", "assigned_role": "main", "misclassified": False}
    first = text(base | {"event": "channel", "leg": 0, "accept_index": 0})
    assert "channel a:1, the first of the initial connections, accepted: true role main" in first, first
    again = text(base | {"event": "channel-role", "leg": 1, "accept_index": 1, "role": "preempt"})
    assert "channel a:1 (the second connection of the first postcopy recovery) now reads as preempt" in again
    pause = text(base | {"event": "postcopy-pause", "leg": 0})
    assert "postcopy paused: the initial connections' main channel was lost" in pause, pause
    resume = text(base | {"event": "postcopy-recovery", "leg": 1})
    assert "the migration resumes on the first postcopy recovery's connections" in resume, resume


def test_no_leg_numbers_in_watch_or_analyze_text_of_a_postcopy_recovery() -> None:
    """Nowhere "#N of leg N", "leg N resumes" or "leg.place": the sets of connections are named."""
    jargon = re.compile(r"#\d+ of leg|\bleg \d|leg\.place")
    with open(CAPTURES / "preempt-recover-11.1.pcap.gz", "rb") as capture:
        watched = subprocess.run([*CLI, "watch", "-"], stdin=capture, capture_output=True, text=True, cwd=REPO,
                                 timeout=120)
    analysed = _run("analyze", "captures/preempt-recover-11.1.pcap.gz")
    assert watched.returncode == 0 and analysed.returncode == 0, watched.stderr + analysed.stderr
    for out in (watched.stdout, analysed.stdout):
        assert not jargon.findall(out), jargon.findall(out)
    assert "the second connection of the first postcopy recovery, accepted: true role preempt" in watched.stdout
    assert ("#: 0.N the initial connections, 1.N the first postcopy recovery's connections"
            in " ".join(x.strip() for x in analysed.stdout.splitlines()))


# -- a capture cut short ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_a_capture_cut_short_is_a_finding(tmp_path: Path, fmt: str) -> None:
    """editcap keeps the first 60 packets; the file is then cut inside its last record (tcpdump killed)."""
    if not shutil.which("editcap"):
        pytest.skip("needs editcap (Wireshark)")
    plain = tmp_path / "all.pcap"
    plain.write_bytes(gzip.decompress((CAPTURES / "holdback-multifd-7.2.pcap.gz").read_bytes()))
    first = tmp_path / f"first.{fmt}"
    subprocess.run(["editcap", "-F", fmt, "-r", str(plain), str(first), "1-60"], check=True)
    data = first.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[:-10])
    whole = json.loads(_run("analyze", "--json", str(first)).stdout)
    proc = _run("analyze", "--json", str(cut))
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    stopped = report["capture"]["stopped"]
    assert stopped["file"] == str(cut) and stopped["where"] == "offset"
    assert 0 < stopped["offset"] < len(data) - 10 and stopped["reason"].startswith("truncated")
    assert report["findings"] == whole["findings"] + 1
    assert report["capture"]["frames"] == 59            # the partial report: every whole record before the cut
    text = _run("analyze", str(cut))
    assert text.returncode == 1
    assert f"! capture cut short: {cut}: offset {stopped['offset']}: truncated" in text.stdout.replace("\n      ", " ")
    assert text.stdout.splitlines()[0] == (f"INCOMPLETE: capture cut short at offset {stopped['offset']} "
                                           f"(truncated {'record' if fmt == 'pcap' else 'block'})")
    assert "Traceback" not in text.stderr


def test_a_complete_capture_has_no_stop() -> None:
    report = json.loads(_run("analyze", "--json", "captures/precopy-7.2.pcap.gz").stdout)
    assert "stopped" not in report["capture"] and report["findings"] == 0


# -- usage errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["analyze", "analyse", "watch", "dissect", "check", "fleet",
                                     "export-wireshark", "record"])
def test_an_unknown_option_shows_the_subcommands_usage(command: str) -> None:
    name = "analyze" if command == "analyse" else command
    required = ["-o", "t.csv"] if command == "fleet" else []
    proc = _run(command, *required, "--bogus", "x")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"usage: migshark {name} ")
    assert f"migshark {name}: error: unrecognized arguments: --bogus" in proc.stderr.splitlines()[-1]


# -- findings ---------------------------------------------------------------------------------------------
def test_a_relays_source_leg_counts_only_its_unreadable_channels() -> None:
    report = json.loads((CAPTURES / "holdback-multifd-7.2.expected.json").read_text())
    src, dst = report["migrations"]
    assert src["relay"]["side"] == "source" and src["outcome"]["status"] == "failed"
    assert migration_findings(src) == 0
    assert migration_findings(dst) == len(dst["misclassifications"]) + 1 == report["findings"]
    src["unreadable"] = [{"client": "127.0.0.1:1", "role": "main", "direction": "to-server", "offset": 9,
                          "reason": "bad"}]
    assert migration_findings(src) == 1


# -- the README's sample output is what the command prints -----------------------------------------------


def test_postcopy_line_far_from_the_source_says_what_it_cannot_tell(tmp_path) -> None:
    """Captured at the destination (the ACK a round trip after the SYN-ACK), a page the source sent before
    the request reached it still arrives after the request left: the line must not vouch for the in-flight
    count, and its latencies include the round trip (netpath-preempt-tls-11.1: 11 of 24 at the source, 0
    at the destination)."""
    from tests.test_analysis_synthetic import postcopy_preempt

    def text(ack_delay: float) -> str:
        conns = postcopy_preempt(preempt_first=False)
        for c in conns:
            c.ack_delay = ack_delay
        cap = tmp_path / f"pc-{ack_delay}.pcap"
        S.write_capture(str(cap), conns)
        report = analyze_file(str(cap), Options()).report
        return " ".join(render_report(report, width=200).split())

    far = text(0.01)
    assert "looks served" in far and "round trip included" in far
    near = text(0.00001)
    assert "looks served" not in near and "latency median" in near


def test_an_unknown_source_generation_is_not_called_a_generation(tmp_path: Path) -> None:
    """A capture cut before anything pins the source's generation: the policy's reason says so, not "source
    looks like QEMU unknown; ... fits that generation's rules" (there is no such generation)."""
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes((CAPTURES / "holdback-multifd-7.2.pcap.gz").read_bytes()[:1000])
    [m] = analyze_file(str(cut)).report["migrations"]
    why = m["policy"]["why"]
    assert "QEMU unknown" not in why and "that generation" not in why, why
    assert why.startswith("nothing in the capture pins the source's generation; ")
    assert f"fits {m['policy']['name']}'s rules" in why


def test_the_headline_and_the_migration_count_time_from_one_start() -> None:
    """The headline's times count from the start of the migration it speaks of, as that migration's lines
    do (they counted from the capture's first frame, 12.7 ms earlier here: +0.2889s against +0.2762s), and
    the migration's start is said before its reason."""
    lines = _run("analyze", "captures/netpath-kill-destination-10.0.dst.pcap.gz").stdout.splitlines()
    at = re.search(r"stopped as a whole at (\+\d+\.\d+s)", lines[0])
    assert at and at.group(1) == "+0.2762s", lines[0]
    i = next(i for i, line in enumerate(lines) if line.startswith("Migration 0 "))
    assert lines[i + 1].startswith("  started ") and f"stopped as a whole at {at.group(1)}" in lines[i + 2]
