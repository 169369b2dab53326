"""dissect, check and the progress line, through the CLI entry point."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from dissectors.cli.main import main
from dissectors.outputs.progress import Progress
from tests import synth as S
from tests.test_analysis_synthetic import multifd_migration, postcopy_preempt

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "captures"


@pytest.fixture
def capture(tmp_path):
    path = tmp_path / "m.pcap"
    S.write_capture(str(path), multifd_migration("main"))
    return str(path)


def test_dissect_lists_records_with_offsets(capture, capsys):
    assert main(["dissect", capture]) == 0
    out = capsys.readouterr().out
    assert "main.header" in out and "multifd.hello" in out and "multifd.sync" in out
    assert "Records per channel kind and type:" in out


def test_dissect_filters_by_channel_type_and_connection(capture, capsys):
    assert main(["dissect", "--json", "--channel", "multifd", "-t", "multifd.hello", capture]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    recs = [x for x in lines if "type" in x]
    assert [r["fields"]["id"] for r in recs] == [0, 1]
    assert all(r["channel"] == "multifd" for r in recs)
    assert len(recs) == len(lines)          # JSON lines of records only: no summary unless asked for
    assert main(["dissect", "--json", "--summary", "--channel", "multifd", "-t", "multifd.hello", capture]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines == [{"summary": [{"channel": "multifd", "type": "multifd.hello", "count": 2}]}]
    assert main(["dissect", "--json", "-c", "127.0.0.1:40002", "-t", "multifd.*", capture]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["client"] for r in recs} == {"127.0.0.1:40002"}


def test_dissect_json_keeps_one_type_per_field(capture, capsys):
    """Numbers stay numbers whatever their size (no "0x1f000" strings beside small ints)."""
    assert main(["dissect", "--json", "--pages", capture]) == 0
    types: dict[tuple[str, str], set[str]] = {}
    big = 0
    for line in capsys.readouterr().out.splitlines():
        rec = json.loads(line)
        for k, v in rec["fields"].items():
            types.setdefault((rec["type"], k), set()).add(type(v).__name__)
            big += isinstance(v, int) and v > 0xFFFF
    assert big and types[("multifd.packet", "packet_num")] == {"int"}
    assert all(len(t) == 1 for t in types.values()), {k: t for k, t in types.items() if len(t) > 1}


def test_dissect_return_path(tmp_path, capsys):
    path = tmp_path / "p.pcap"
    S.write_capture(str(path), postcopy_preempt(preempt_first=False))
    assert main(["dissect", "--channel", "return-path", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rp.pong" in out and "rp.req_pages" in out and "start=0x8000" in out


def test_dissect_verbose_shows_layer_trees(capture, capsys):
    assert main(["dissect", "-V", "-t", "main.config", "-t", "multifd.hello", capture]) == 0
    out = capsys.readouterr().out
    assert "\n    QEMU_VM_CONFIGURATION\n" in out and "        Machine: pc-i440fx-7.2\n" in out
    assert "\n    multifd initial packet\n" in out and "        Magic: 0x11223344\n" in out


def test_dissect_summary_counts_pages(capture, capsys):
    assert main(["dissect", "--summary", capture]) == 0
    out = capsys.readouterr().out
    assert "multifd.normal_pages" not in out.split("Records")[0]
    assert "multifd        multifd.packet           2" in out


def test_check_detects_a_changed_report(tmp_path, capsys):
    src = CORPUS / "precopy-7.2.pcap.gz"
    for suffix in (".pcap.gz", ".manifest.json", ".expected.json"):
        shutil.copy(CORPUS / f"precopy-7.2{suffix}", tmp_path / f"precopy-7.2{suffix}")
    assert src.exists()
    assert main(["check", str(tmp_path)]) == 0
    capsys.readouterr()
    expected = tmp_path / "precopy-7.2.expected.json"
    report = json.loads(expected.read_text())
    report["migrations"][0]["outcome"]["status"] = "failed"
    expected.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "differs" in out and '"status": "failed"' in out and '+        "status": "completed"' in out
    assert main(["check", "--update", str(tmp_path)]) == 0
    out = capsys.readouterr().out     # the review sees which report --update changed
    assert out == f" updated  {tmp_path / 'precopy-7.2.pcap.gz'}\n1 expected report(s) written, 0 unchanged\n"
    assert main(["check", "--update", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"    same  {tmp_path / 'precopy-7.2.pcap.gz'}\n")
    assert main(["check", str(tmp_path)]) == 0


def test_check_goes_on_past_an_unreadable_capture(tmp_path, capsys):
    """An empty or foreign file among the captures is its own error line, not the end of the run: every
    other capture is still checked, and the exit code is 2 (unreadable input) once all are done."""
    for suffix in (".pcap.gz", ".manifest.json", ".expected.json"):
        shutil.copy(CORPUS / f"precopy-7.2{suffix}", tmp_path / f"precopy-7.2{suffix}")
    (tmp_path / "empty.pcap").write_bytes(b"")
    (tmp_path / "notes.pcapng").write_text("not a capture\n")
    assert main(["check", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert f"   error  {tmp_path / 'empty.pcap'}\n          {tmp_path / 'empty.pcap'}, offset 0: empty file\n" in out
    assert f"   error  {tmp_path / 'notes.pcapng'}\n" in out and "not a pcap or pcapng file" in out
    assert f"      ok  {tmp_path / 'precopy-7.2.pcap.gz'}\n" in out
    assert out.endswith("1 passed, 0 failed, 2 unreadable\n") and not err
    assert main(["check", "--json", str(tmp_path)]) == 2
    result = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in result["results"]] == ["error", "error", "ok"]
    assert result["unreadable"] == 2 and result["failed"] == 0
    assert main(["check", "--update", str(tmp_path)]) == 2
    assert capsys.readouterr().out.endswith("0 expected report(s) written, 1 unchanged, 2 capture(s) unreadable\n")
    assert not (tmp_path / "empty.expected.json").exists()


def test_a_missing_expected_report_names_the_one_capture_to_update(tmp_path, capsys):
    """The advice was 'run migshark check --update', which on the directory just checked would also rewrite
    every report that differs, hiding the regressions; it now names the capture."""
    for suffix in (".pcap.gz", ".expected.json"):
        shutil.copy(CORPUS / f"precopy-7.2{suffix}", tmp_path / f"precopy-7.2{suffix}")
    shutil.copy(CORPUS / "precopy-10.0.pcap.gz", tmp_path / "new run.pcap.gz")
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert (f"no expected report new run.expected.json (after review: migshark check --update "
            f"'{tmp_path / 'new run.pcap.gz'}'; --update on a directory rewrites every report in it)") in out


def test_check_without_captures_is_usage_error(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 2


def test_export_wireshark_writes_the_plugin(tmp_path, capsys):
    out = tmp_path / "qmig.lua"
    assert main(["export-wireshark", str(out)]) == 0
    text = out.read_text()
    assert 'Proto("qmig"' in text and "qmig.multifd.hello.id" in text


def test_progress_is_quiet_when_piped():
    buf = io.StringIO()
    p = Progress("x", stream=buf)
    p(50, 100)
    p.close()
    assert buf.getvalue() == ""


def test_progress_draws_on_a_terminal():
    """A bar with percentage, bytes, rate and ETA when the size is known; cleared on close."""
    buf = io.StringIO()
    p = Progress("analyse x", stream=buf, force=True, min_interval=0)
    p(0, 100 << 20)
    p(50 << 20, 100 << 20)
    shown = buf.getvalue()
    p.close()
    assert "50%" in shown and "52.4M/105M" in shown and "B/s" in shown and "<" in shown    # ETA: [elapsed<left]
    assert "|" in shown                                                                   # the bar
    assert buf.getvalue().endswith("\r")                                                 # taken off the line


def test_progress_on_a_stream_has_no_bar():
    buf = io.StringIO()
    p = Progress("analyse -", stream=buf, force=True, min_interval=0)
    p(0, None)
    p(3_000_000, None)
    p.close()
    assert "3.00MB" in buf.getvalue() and "B/s" in buf.getvalue() and "%" not in buf.getvalue()


def test_no_progress_imports_no_tqdm():
    """A run that shows no progress (stderr not a terminal) does not import the progress library."""
    code = ("import sys; from dissectors.cli.main import main; main(['analyze', 'captures/precopy-7.2.pcap.gz']); "
            "print('tqdm' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "False"


def test_cut_gzip_names_the_problem(tmp_path, capsys):
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes((CORPUS / "precopy-7.2.pcap.gz").read_bytes()[:12])
    assert main(["analyze", str(cut)]) == 2
    err = capsys.readouterr().err
    assert "cut.pcap.gz" in err and "gzip stream ends" in err and "0xnone" not in err


def test_fleet_progress_is_a_bar_over_the_captures_bytes():
    from dissectors.fleet.inputs import CaptureInput
    from dissectors.fleet.summary import FleetProgress

    items = [CaptureInput("a.pcap", 3_000_000), CaptureInput("b.pcap", 1_000_000)]
    buf = io.StringIO()
    bar = FleetProgress(items, "serial", stream=buf, force=True, min_interval=0)
    bar(items[0], [{"status": "failed", "findings": 2}])
    shown = buf.getvalue()
    bar.close()
    assert "75%" in shown and "3.00M/4.00M" in shown and "1/2 captures, 2 findings, 0 errors" in shown
    assert bar.done == 1 and bar.findings == 2
    quiet = io.StringIO()
    FleetProgress(items, "serial", stream=quiet)(items[0], [])
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("args,message", [
    (["analyze", "--stall-threshold", "-1"], "argument --stall-threshold: not a number of seconds >= 0: '-1'"),
    (["analyze", "--progress-timeout", "nan"], "argument --progress-timeout: not a number of seconds >= 0: 'nan'"),
    (["watch", "--silent-threshold", "soon"], "argument --silent-threshold: not a number of seconds: 'soon'"),
    (["dissect", "--limit", "-1"], "argument --limit: not a count >= 0: '-1'"),
])
def test_a_negative_or_nan_number_is_a_usage_error(args, message, capsys):
    """A negative threshold made every postcopy page request a stall (a COMPLETED migration with findings),
    a NaN one none; a negative --limit was taken as no limit."""
    with pytest.raises(SystemExit) as exc:
        main([*args, str(CORPUS / "precopy-7.2.pcap.gz")])
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["analyze", ""], "migshark analyze: error: argument capture: empty file name"),
    (["dissect", ""], "migshark dissect: error: argument capture: empty file name"),
    (["watch", ""], "migshark watch: error: argument capture: empty file name"),
    (["analyze", str(CORPUS / "precopy-7.2.pcap.gz"), "--plot", ""], "argument --plot: empty file name"),
    (["analyze", str(CORPUS / "precopy-7.2.pcap.gz"), "--keylog", ""], "argument --keylog: empty file name"),
    (["fleet", str(CORPUS / "precopy-7.2.pcap.gz"), "-o", ""], "argument -o/--output: empty file name"),
    (["fleet", "", "-o", "t.csv"], "argument CAPTURE: empty file name"),
    (["fleet", "--from-list", "", "-o", "t.csv"], "argument --from-list: empty file name"),
    (["check", ""], "migshark check: error: argument paths: empty file name"),
    (["export-wireshark", ""], "argument OUT.lua: empty file name"),
    (["record", "--scenario", "precopy-7.2", "--out", ""], "argument --out: empty directory name"),
])
def test_an_empty_file_name_is_a_usage_error_naming_the_argument(args, message, capsys):
    """``analyze ''`` said only "cannot open: No such file or directory" (no name to read), ``--keylog ''``
    ": no such file", and ``--plot ''`` wrote no picture and said nothing: each is a usage error naming it."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err, err


@pytest.mark.parametrize("args,message", [
    (["--multifd", "-3"], "argument --multifd: not a count >= 0: '-3'"),
    (["--multifd", "256"], "argument --multifd: not a channel count from 0 to 255: '256'"),
    (["--timeout", "-1"], "argument --timeout: not a number of seconds >= 0: '-1'"),
    (["--interrupt-after", "nan"], "argument --interrupt-after: not a number of seconds >= 0: 'nan'"),
])
def test_a_bad_recording_number_is_a_usage_error_before_qemu_starts(args, message, tmp_path, capsys):
    """`record --multifd -3` reached QMP ("Parameter 'multifd-channels' expects uint8_t") and exited 1 as a
    failed recording; it is a usage error, and nothing is started or written."""
    with pytest.raises(SystemExit) as exc:
        main(["record", "--scenario", "precopy-7.2", *args, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dissect_of_tcp_that_is_no_migration_says_so(tmp_path, capsys):
    path = tmp_path / "http.pcap"
    S.write_capture(str(path), [S.Conn(40000, 1.0, dport=80).send(1.01, b"GET / HTTP/1.1\r\n\r\n")
                                .reply(1.02, b"HTTP/1.1 200 OK\r\n\r\n").close(1.03)])
    assert main(["dissect", "--summary", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "\nRecords per channel kind and type:\n  none\n"
    assert err == "migshark: note: no QEMU migration record in the capture's 1 TCP connection(s)\n"


def test_dissect_exit_codes_on_a_damaged_capture_follow_analyze(tmp_path, capsys):
    """A capture that stops at a corrupt record is a finding (exit 1) though every record before it is
    whole; one with nothing readable is unreadable (exit 2), as for analyze. Both were exit 0."""
    whole = tmp_path / "whole.pcap"
    S.write_capture(str(whole), [S.Conn(40000, 1.0).send(1.01, S.header() + S.ram_start() + S.eof()).close(1.02)])
    assert main(["dissect", "--summary", str(whole)]) == 0
    capsys.readouterr()
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(whole.read_bytes() + struct.pack("<IIII", 2, 0, 0x7FFFFFF0, 0x7FFFFFF0) + b"\xff" * 64)
    assert main(["dissect", "--summary", str(damaged)]) == 1
    out, err = capsys.readouterr()
    assert "  main           main.eof                 1\n" in out and "truncated" not in out
    assert f"migshark: warning: {damaged}: offset {whole.stat().st_size}: " in err
    assert main(["analyze", str(damaged)]) == 1
    capsys.readouterr()
    header_only = tmp_path / "header-only.pcap"
    header_only.write_bytes(whole.read_bytes()[:10])
    assert main(["dissect", str(header_only)]) == 2
    err = capsys.readouterr().err
    assert f"migshark: error: {header_only}: no record decoded: the capture could not be read completely" in err


def test_analyze_says_why_no_migration_was_found(tmp_path, capsys):
    """An empty capture (a tcpdump whose filter matched nothing), one of UDP only, and one cut inside its
    header each say what they hold (all three said 'no TCP segment could be decoded')."""
    from dissectors.capture.writer import PcapWriter
    from tests.capture_helpers import udp_frame

    empty, udp, cut = tmp_path / "empty.pcap", tmp_path / "udp.pcap", tmp_path / "cut.pcap"
    with PcapWriter(str(empty)):
        pass
    with PcapWriter(str(udp)) as w:
        w.write(1.0, udp_frame())
        w.write(1.1, udp_frame())
    cut.write_bytes(empty.read_bytes()[:10])
    user0 = tmp_path / "user0.pcap"
    with PcapWriter(str(user0), linktype=147) as w:      # a link type not read: its frames are skipped
        w.write(1.0, udp_frame())
    for path, why in ((empty, "the capture holds no packet"), (udp, "none of its 2 frame(s) is a TCP segment"),
                      (cut, "no packet could be read (see the warnings)"),
                      (user0, "none of its 1 frame(s) is a TCP segment (see the warnings)")):
        assert main(["analyze", str(path)]) == 2
        assert capsys.readouterr().err == f"migshark: error: {path}: no migration found: {why}\n"


@pytest.mark.parametrize("args,message", [
    (["check", "-"], "migshark check: '-' is not a capture file (the expected report sits beside each capture)"),
    (["fleet", "-o", "table.csv", "-"], "migshark fleet: error: '-' is not a capture file here"),
])
def test_commands_that_read_files_where_they_lie_refuse_standard_input(args, message, tmp_path, capsys,
                                                                       monkeypatch):
    """check compared standard input with '-.expected.json' ('missing'), fleet made it an error row ('no such
    file'); both are usage errors, said before anything runs."""
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert err.startswith(message) and not out and not (tmp_path / "table.csv").exists()


def test_dissect_minus_t_with_a_time_format_letter_says_what_dissect_t_is(capsys):
    """A tshark user's ``-t ad`` (tshark's time format) selects record types in dissect: the note says so."""
    assert main(["dissect", "-t", "ad", str(CORPUS / "precopy-7.2.pcap.gz")]) == 0
    err = capsys.readouterr().err
    assert "no record matches -t ad" in err
    assert "(dissect's -t is --type, a record type glob; ad is a time format of analyze and watch" in err
    assert main(["dissect", "-t", "main.eof", "-t", "nothing", str(CORPUS / "precopy-7.2.pcap.gz")]) == 0
    assert "time format" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["analyze", "dissect", "watch"])
def test_a_directory_given_as_the_capture_points_to_fleet_and_check(command, tmp_path, capsys):
    assert main([command, str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"migshark: error: {tmp_path}: is a directory (this command reads one "
                                       "capture; fleet and check take directories)\n")
    assert main(["analyze", "--keylog", str(tmp_path), str(CORPUS / "precopy-7.2.pcap.gz")]) == 2
    assert "fleet and check" not in capsys.readouterr().err      # not the capture: no hint


@pytest.mark.parametrize("command", ["analyze", "watch"])
def test_time_format_help_marks_the_default_letter(command, capsys):
    """The help read 'r: relative to the migration's start (+1.0011s); its start in ISO 8601 UTC (default)',
    as if the default were the ISO start; the letter is now marked."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "as tshark -t: r (default): relative to the migration's start (+1.0011s), the start itself" in text


def test_a_file_that_says_size_0_but_reads_bytes_is_read(capsys):
    """procfs and sysfs files are regular files of size 0 that read bytes: they are read (here: not a
    capture), not called "empty file"; a truly empty file still is."""
    assert main(["analyze", "/proc/self/status"]) == 2
    err = capsys.readouterr().err
    assert "/proc/self/status, offset 0: not a pcap or pcapng file (magic 0x4e616d65)" in err, err


def test_a_cut_gzip_capture_stops_with_one_warning(tmp_path, capsys):
    """A .pcap.gz cut mid-record stops once: the truncated record, with the gzip stream's early end as its
    cause, not two warnings at one offset."""
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes((CORPUS / "holdback-multifd-7.2.pcap.gz").read_bytes()[:1000])
    assert main(["analyze", "--json", str(cut)]) == 1
    cap = json.loads(capsys.readouterr().out)["capture"]
    [warning] = [w for w in cap["warnings"] if w.endswith("; stopped reading")]
    assert "truncated record" in warning and "; cause: gzip stream ends early (file cut?)" in warning, warning
    assert cap["stopped"]["reason"].startswith("truncated record")
