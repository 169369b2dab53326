"""TLS migrations without a key log: roles, set-up, generation and outcome from the record layer alone,
held to what the key log proves on every TLS capture of the corpus."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import synth as S
import tls_synth as X

from dissectors.analysis.judge import Options
from dissectors.analysis.tls_shape import MULTIFD_HELLO_SIZE
from dissectors.cli.check import corpus_keylog
from dissectors.cli.pipeline import analyze_file
from dissectors.tls import KeyLog

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
TLS_CAPTURES = sorted(p for p in CAPTURES.glob("*.pcap*") if corpus_keylog(p) is not None)


def _report(path: Path, keylog: bool) -> dict[str, Any]:
    return analyze_file(str(path), Options(), keylog=corpus_keylog(path) if keylog else None).report


def _legs(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in report["migrations"] if m.get("relay", {}).get("side") != "source"]


def test_the_corpus_has_tls_captures() -> None:
    assert len(TLS_CAPTURES) >= 9


@pytest.mark.parametrize("cap", TLS_CAPTURES, ids=lambda p: p.name.split(".")[0])
def test_hidden_roles_and_outcome_agree_with_the_decrypted_truth(cap: Path) -> None:
    hidden, truth = _report(cap, keylog=False), _report(cap, keylog=True)
    if not hidden["migrations"] and [len(m["channels"]) for m in truth["migrations"]] == [1]:
        # a precopy over TLS has one connection, which nothing but its contents makes a migration: without
        # the key log it stays an "other" TLS connection (the text report says a key log would read it)
        assert [c["kind"] for c in hidden["other_connections"]] == ["tls"]
        return
    if any(len(m.get("legs", [])) > 1 for m in truth["migrations"]):
        _recovery_split(hidden, truth)
        return
    assert len(hidden["migrations"]) == len(truth["migrations"])
    for h, t in zip(hidden["migrations"], truth["migrations"], strict=True):
        assert [(c["client"], c["role"]) for c in h["channels"]] == [(c["client"], c["role"]) for c in t["channels"]]
        assert all(c["role_inferred"] and not c["verifiable"] for c in h["channels"])
        assert not any(c["role_inferred"] for c in t["channels"])
        assert h["outcome"]["status"] == t["outcome"]["status"]
        assert "contents not verified" in h["outcome"]["reason"]
        assert [c["assigned_role"] for c in h["channels"]] == [c["assigned_role"] for c in t["channels"]]
        lo = h["policy"]["source_generation"]
        # What the record layer says of the source's generation never contradicts the contents.
        if lo != "unknown":
            floor = tuple(int(x) for x in lo.removeprefix(">= ").split("."))
            real = tuple(int(x) for x in t["policy"]["source_generation"].split(",")[0]
                         .removeprefix(">= ").split("."))
            assert floor <= real


def _recovery_split(hidden: dict[str, Any], truth: dict[str, Any]) -> None:
    """A postcopy recovery over TLS: without the key log the record sizes of the new main channel (a
    RECV_BITMAP command, answered by the destination's RECV_BITMAP message naming the same block) tie the
    recovery leg to the paused migration between the same hosts, which ended unacknowledged: one migration,
    its legs, roles, pause and outcome those the contents prove, and a note saying how it is known."""
    (t,) = truth["migrations"]
    (h,) = hidden["migrations"]
    assert ([(c["client"], c["leg"], c["role"], c["assigned_role"]) for c in h["channels"]]
            == [(c["client"], c["leg"], c["role"], c["assigned_role"]) for c in t["channels"]])
    assert h["postcopy"]["pauses"] == t["postcopy"]["pauses"]
    assert h["outcome"]["status"] == t["outcome"]["status"]
    assert any("taken as a postcopy recovery" in n for n in h["notes"]), h["notes"]


@pytest.mark.parametrize("name", ["preempt-tls-10.0", "preempt-tls-11.1"])
def test_a_late_preempt_channel_names_the_source_8_0_or_later(name: str) -> None:
    """8.0+ opens the preempt channel only after the destination answered on the return path."""
    (m,) = _legs(_report(CAPTURES / f"{name}.pcap.gz", keylog=False))
    assert m["policy"]["source_generation"] == ">= 8.0"
    assert m["policy"]["name"] != "qemu-7.2"
    assert any("TLS record timing" in e for e in m["policy"]["evidence"])


def test_an_early_preempt_channel_leaves_the_generation_unknown() -> None:
    (m,) = _legs(_report(CAPTURES / "preempt-tls-7.2.pcap.gz", keylog=False))
    assert m["policy"]["source_generation"] == "unknown"
    assert "unknown" in m["policy"]["why"]
    assert [c["role"] for c in m["channels"]] == ["main", "preempt"]


def test_a_multifd_channel_accepted_first_is_caught_without_the_key_log(tmp_path: Path) -> None:
    """The multifd hello's size shows through TLS: the destination takes that channel as main."""
    cap = tmp_path / "first.pcap"
    X.write_tls_migration(cap, multifd_first=True)
    (m,) = analyze_file(str(cap), Options()).report["migrations"]
    first = m["channels"][0]
    assert first["role"] == "multifd" and first["assigned_role"] == "main" and first["role_inferred"]
    assert f"holds {MULTIFD_HELLO_SIZE} bytes" in first["role_evidence"]
    assert m["misclassifications"] and m["outcome"]["status"] == "failed"
    # The same capture in the right order is not a finding.
    X.write_tls_migration(cap, multifd_first=False)
    (m,) = analyze_file(str(cap), Options()).report["migrations"]
    assert [c["role"] for c in m["channels"]] == ["main", "multifd", "multifd"]
    assert not m["misclassifications"] and m["outcome"]["status"] == "completed"


def test_a_hello_coalesced_with_other_data_is_not_taken_for_multifd(tmp_path: Path) -> None:
    """Only a first record of exactly a hello's size counts: one byte more and the channel is not multifd."""
    sessions: list[X.TlsSession] = []
    conns = [X.tls_conn(50000, 1.0, [b"QEVM" + bytes(300)], sessions),
             X.tls_conn(50001, 1.01, [bytes(MULTIFD_HELLO_SIZE + 1), bytes(4096)], sessions)]
    cap = tmp_path / "odd.pcap"
    X.S.write_capture(str(cap), conns)
    (m,) = analyze_file(str(cap), Options()).report["migrations"]
    assert [c["role"] for c in m["channels"]] == ["main", "preempt"]


@pytest.mark.parametrize("keylog", [False, True], ids=["hidden", "decrypted"])
def test_tls_channels_get_their_roles_in_handshake_completion_order(tmp_path: Path, keylog: bool) -> None:
    """Main is accepted first, but its Finished comes after the multifd channels' handshakes completed:
    QEMU identifies a TLS channel only once its handshake completed, so a multifd channel becomes main."""
    cap = tmp_path / "late-finished.pcap"
    log = X.write_tls_migration(cap, multifd_first=False, main_finished_delay=0.05)
    report = analyze_file(str(cap), Options(), keylog=KeyLog.load(log) if keylog else None).report
    (m,) = report["migrations"]
    chans = m["channels"]
    assert [c["client"].rsplit(":", 1)[1] for c in chans] == ["50001", "50002", "50000"]
    assert [c["role"] for c in chans] == ["multifd", "multifd", "main"]
    assert chans[0]["assigned_role"] == "main" and chans[0]["misclassified"]
    assert chans[0]["handshake_time"] > chans[2]["handshake_time"]          # accepted after main ...
    assert chans[0]["tls_handshake_done_time"] < chans[2]["tls_handshake_done_time"]   # ... but ready first
    assert m["outcome"]["status"] == "failed"
    assert "its TLS handshake completed first among the initial connections (3 in all) at" in \
        m["misclassifications"][0]["evidence"][0]


def test_a_reset_after_both_fins_is_teardown_noise_not_a_failure(tmp_path: Path) -> None:
    """On a jittered path the source re-ACKs the destination's FIN after that socket is gone, and the
    destination's kernel answers with a RST (netpath-multifd-tls-11.1): the channel had closed cleanly
    both ways, so the hidden verdict stays completed. A reset before the destination's FIN still fails."""
    def capture(rst_after_fins: bool) -> dict[str, Any]:
        sessions: list[X.TlsSession] = []
        main = X.tls_conn(50000, 1.0, [X.precopy_stream()], sessions)
        main.close(1.51 if rst_after_fins else 1.49, by=1, how="F" if rst_after_fins else "R")
        if rst_after_fins:
            main.close(1.53, by=1, how="R")
        hello = X.named(X.MultifdHello).size
        conns = [main] + [X.tls_conn(50001 + i, 1.005 + i * 0.001, [m[:hello], m[hello:]], sessions)
                          for i, m in enumerate(X.multifd_stream(channel_id=i) for i in range(2))]
        cap = tmp_path / f"rst-{rst_after_fins}.pcap"
        X.S.write_capture(str(cap), conns)
        (m,) = analyze_file(str(cap), Options()).report["migrations"]
        return m

    late = capture(rst_after_fins=True)
    assert late["outcome"]["status"] == "completed", late["outcome"]
    assert late["channels"][0]["rst_time"] is not None        # the reset is still reported as seen
    early = capture(rst_after_fins=False)
    assert early["outcome"]["status"] == "failed"
    assert "reset before the source closed it" in early["outcome"]["reason"]


def test_a_lone_tls_connection_is_not_judged_but_the_report_says_why(tmp_path: Path) -> None:
    """A precopy over TLS is one connection: without the key log nothing tells it from any TLS service, so
    it is no migration, but the text says a key log would read it; with the key log it is judged."""
    from dissectors.outputs.text import headline, render_report

    sessions: list[X.TlsSession] = []
    cap = tmp_path / "lone.pcap"
    X.S.write_capture(str(cap), [X.tls_conn(50000, 1.0, [X.precopy_stream()], sessions)])
    keylog = tmp_path / "lone.keylog"
    keylog.write_text("".join(s.keylog() for s in sessions))
    hidden = analyze_file(str(cap), Options()).report
    assert not hidden["migrations"] and [o["kind"] for o in hidden["other_connections"]] == ["tls"]
    assert "pass --keylog" in headline(hidden)
    assert "a lone one may be a migration's main channel" in " ".join(render_report(hidden).split())
    read = analyze_file(str(cap), Options(), keylog=KeyLog.load(str(keylog))).report
    (m,) = read["migrations"]
    assert [c["role"] for c in m["channels"]] == ["main"] and m["outcome"]["status"] == "completed"


def test_a_destination_killed_in_a_hidden_postcopy_may_have_paused_the_source() -> None:
    """TLS shows a postcopy set-up (a preempt channel), not whether postcopy ran: a destination that stopped
    as a whole is said to fail the source or, if postcopy had started, to pause it (this one did)."""
    (m,) = _legs(_report(CAPTURES / "kill-destination-preempt-tls-11.1.pcap.gz", keylog=False))
    reason = m["outcome"]["reason"]
    assert m["outcome"]["status"] == "failed" and reason.startswith("the destination stopped as a whole")
    assert "if postcopy had started" in reason and "postcopy-paused" in reason


# -- a postcopy recovery over TLS, without the key log ---------------------------------------------------
BLOCK = b"pc.ram"


def _recovery_capture(path: Path, acknowledged: bool = False, answer: bytes | None = None,
                      source_closes: bool = True) -> None:
    """A TLS postcopy migration (main + preempt) whose main channel the source closes with a page request
    last from the destination (a pause), then a recovery on another port: a new main channel opening with
    RECV_BITMAP, the destination answering with its RECV_BITMAP message and the bitmap, and a new preempt
    channel; the destination acknowledges with SHUT at the end. ``acknowledged``: the first migration's
    destination sent SHUT last instead (it completed); ``answer``: the recovery main's first answer instead;
    ``source_closes`` False: the capture ends before the source answers the destination's closes of the
    recovery leg's channels."""
    from dissectors.layers import commands as C
    from dissectors.layers import return_path as R

    def conn(port: int, dport: int, syn: float) -> tuple[S.Conn, X.TlsSession]:
        s = X.TlsSession()
        c_open, s_open = s.opening()
        hello = len(X.client_hello(s.random))
        c = S.Conn(port, syn, dport=dport).send(syn + 0.001, c_open[:hello]).reply(syn + 0.002, s_open)
        return c.send(syn + 0.003, c_open[hello:]), s

    shut = bytes(R.RpMessage(type=R.MIG_RP_MSG_SHUT) / R.RpShut(status=0))
    request = bytes(R.RpMessage(type=R.MIG_RP_MSG_REQ_PAGES) / R.RpReqPages(start=0, len=4096))
    main, ms = conn(50000, 4444, 1.0)
    main.send(1.01, ms.data(0, b"Q" * 32)).reply(1.011, ms.data(1, b"P" * 8)).send(1.02, ms.data(0, b"r" * 9000))
    pre, ps = conn(50001, 4444, 1.5)
    pre.send(1.51, ps.data(0, b"p" * 4111))
    main.send(2.0, ms.data(0, b"r" * 100))
    main.reply(2.001 if acknowledged else 1.9, ms.data(1, shut if acknowledged else request))
    main.close(2.1, by=0)
    main.close(2.101, by=1)
    pre.close(2.1, by=1)
    pre.close(2.101, by=0)
    rec, rs = conn(50002, 4445, 3.0)
    recv_bitmap = bytes(C.Command(cmd=C.MIG_CMD_RECV_BITMAP) / C.CmdRecvBitmap(block=BLOCK))
    rp_bitmap = bytes(R.RpMessage(type=R.MIG_RP_MSG_RECV_BITMAP) / R.RpRecvBitmap(block=BLOCK))
    rec.send(3.01, rs.data(0, recv_bitmap)).reply(3.011, rs.data(1, answer if answer is not None else rp_bitmap))
    rec.reply(3.012, rs.data(1, b"b" * 1040)).send(3.02, rs.data(0, b"r" * 20000))
    pre2, qs = conn(50003, 4445, 3.1)
    pre2.send(3.11, qs.data(0, b"p" * 4111))
    rec.reply(3.5, rs.data(1, shut))
    for c in (rec, pre2):
        c.close(3.6, by=1)
        if source_closes:
            c.close(3.601, by=0)
    S.write_capture(str(path), [main, pre, rec, pre2])


def test_a_recovery_leg_joins_the_paused_migration_without_the_key_log(tmp_path: Path) -> None:
    cap = tmp_path / "recover.pcap"
    _recovery_capture(cap)
    (m,) = analyze_file(str(cap), Options()).report["migrations"]
    assert [(c["leg"], c["role"]) for c in m["channels"]] == [(0, "main"), (0, "preempt"), (1, "main-recovery"),
                                                              (1, "preempt")]
    (pause,) = m["postcopy"]["pauses"]
    assert pause["port"] == 4445 and abs(pause["duration"] - (3.0 - 2.1)) < 0.01, pause
    assert m["outcome"]["status"] == "completed"
    (note,) = [n for n in m["notes"] if "taken as a postcopy recovery" in n]
    assert "holds 12 bytes" in note and "answer 11" in note, note      # 1+2+2 and 2+2 header bytes, 1+6 of name
    # in words, not "leg 1 is taken as a postcopy recovery of leg 0 ... after leg 0's main channel"
    assert "taken as a postcopy recovery (the first)" in note and "after the initial connections' main channel" \
        in note and not re.search(r"\bleg \d", note), note
    assert m["channels"][2]["role_inferred"] and "RECV_BITMAP" in m["channels"][2]["role_evidence"]


def test_a_migration_the_destination_acknowledged_is_not_resumed(tmp_path: Path) -> None:
    """SHUT's size last from the destination: the first migration completed, nothing resumes it."""
    cap = tmp_path / "acked.pcap"
    _recovery_capture(cap, acknowledged=True)
    first, second = analyze_file(str(cap), Options()).report["migrations"]
    assert first["outcome"]["status"] == "completed" and len(first["channels"]) == 2
    assert not first["postcopy"]["pauses"]


def test_a_new_main_channel_without_the_recv_bitmap_answer_is_a_migration_of_its_own(tmp_path: Path) -> None:
    """The same sizes from the source, but the destination's first answer is not the RECV_BITMAP message
    naming that block (a PONG's size): no recovery is proven, so none is claimed."""
    cap = tmp_path / "fresh.pcap"
    _recovery_capture(cap, answer=b"P" * 8)
    first, second = analyze_file(str(cap), Options()).report["migrations"]
    assert first["outcome"]["status"] == "unknown" and "unacknowledged" in first["outcome"]["reason"]
    assert [c["leg"] for c in second["channels"]] == [0, 0]


def test_a_postcopy_destination_closing_after_its_acknowledgement_is_not_a_failure_yet(tmp_path: Path) -> None:
    """After the SHUT-sized record the destination closes its channels first, the source answers: a capture
    (or a live view) that stops in between has seen a completion in progress, not a channel dropped."""
    cap = tmp_path / "closing.pcap"
    _recovery_capture(cap, source_closes=False)
    (m,) = analyze_file(str(cap), Options()).report["migrations"]
    assert m["outcome"]["status"] == "incomplete", m["outcome"]
    assert "SHUT" in m["outcome"]["reason"]


def _recovery_misread(tmp_path: Path, spread: float = 0.002) -> tuple[Path, Path]:
    """A TLS postcopy migration and its recovery, whose new main channel finishes its TLS handshake after
    the new preempt channel; the source closes each connection ``spread`` s after the one before (0: all
    at once), then the destination. The capture and its key log."""
    from dissectors.layers import commands as C

    sessions: list[X.TlsSession] = []

    def conn(port: int, dport: int, syn: float, finished_delay: float = 0.0) -> tuple[S.Conn, X.TlsSession]:
        s = X.TlsSession()
        sessions.append(s)
        c_open, s_open = s.opening()
        hello = len(X.client_hello(s.random))
        c = S.Conn(port, syn, dport=dport).send(syn + 0.001, c_open[:hello]).reply(syn + 0.002, s_open)
        return c.send(syn + 0.003 + finished_delay, c_open[hello:]), s

    main, ms = conn(50000, 4444, 1.0)
    main.send(1.01, ms.data(0, S.header() + S.command(C.MIG_CMD_POSTCOPY_ADVISE, bytes(16)) + S.ram_start()
                            + S.ram_part([0x1000])))
    main.send(1.6, ms.data(0, S.command(C.MIG_CMD_POSTCOPY_LISTEN) + S.command(C.MIG_CMD_POSTCOPY_RUN)))
    main.reply(1.7, ms.data(1, S.rp_req_pages(0x5000)))
    pre, ps = conn(50001, 4444, 1.02)
    pre.send(1.8, ps.data(0, S.preempt_page(0x5000, True)))
    rec, rs = conn(50002, 4445, 3.0, finished_delay=0.2)      # accepted first, ready second
    rec.send(3.21, rs.data(0, bytes(C.Command(cmd=C.MIG_CMD_RECV_BITMAP) / C.CmdRecvBitmap(block=BLOCK))
                           + S.ram_part([0x2000])))
    pre2, qs = conn(50003, 4445, 3.05)
    pre2.send(3.5, qs.data(0, S.preempt_page(0x6000, True)))
    for k, c in enumerate((main, pre, rec, pre2)):       # the source closes, then the destination
        end = (2.0 if k < 2 else 4.0) + k * spread
        c.close(end, by=0)
        c.close(end + 0.001, by=1)
    cap = tmp_path / "recovery-misread.pcap"
    S.write_capture(str(cap), [main, pre, rec, pre2])
    keylog = tmp_path / "recovery-misread.keylog"
    keylog.write_text("".join(s.keylog() for s in sessions))
    return cap, keylog


def test_a_recovery_channels_misclassification_names_the_recovery_it_counts_in(tmp_path: Path) -> None:
    """Decrypted: the recovery's new main channel finishes its TLS handshake after the new preempt channel,
    which is taken as main. Its place is counted among that recovery's connections, and the evidence says
    so: "1 of 2" alone read as the first of the migration's connections."""
    cap, keylog = _recovery_misread(tmp_path)
    (m,) = analyze_file(str(cap), Options(), keylog=KeyLog.load(str(keylog))).report["migrations"]
    misread = {(x["leg"], x["client"]): x["evidence"][0] for x in m["misclassifications"]}
    assert set(misread) == {(1, "127.0.0.1:50003"), (1, "127.0.0.1:50002")}, misread
    assert misread[1, "127.0.0.1:50003"].startswith(
        "its TLS handshake completed first among the first postcopy recovery's connections (2 in all) at "), misread
    assert misread[1, "127.0.0.1:50002"].startswith(
        "its TLS handshake completed second among the first postcopy recovery's connections (2 in all) at "), misread


def test_connections_the_source_closes_at_the_same_instant_are_judged(tmp_path: Path) -> None:
    """Without the key log, channels the source closed at the very same time stamp (a capture's time stamps
    are coarse) are ordered by their connection, not compared as objects (a TypeError ended the analysis)."""
    cap, _ = _recovery_misread(tmp_path, spread=0.0)
    report = analyze_file(str(cap), Options()).report
    assert report["migrations"] and all(m["outcome"]["status"] for m in report["migrations"])


@pytest.mark.parametrize("coalesce", [True, False])
def test_a_tls_preempt_channel_taken_as_main_stalls_until_its_first_application_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, coalesce: bool) -> None:
    """Decrypted: the recovery's preempt channel, taken as main, is silent from its TLS handshake (3.053)
    until its first page (3.5, in three segments, the last at 3.500003). The stall ends there, not at the
    ClientHello the source sends as it connects (which made it a 1 ms stall), and the record is dated by
    the segment that completes it, not by the next one (the FIN at 4.006), read run by run or one by one."""
    if not coalesce:
        monkeypatch.setenv("MIGSHARK_NO_COALESCE", "1")
    cap, keylog = _recovery_misread(tmp_path)
    (m,) = analyze_file(str(cap), Options(), keylog=KeyLog.load(str(keylog))).report["migrations"]
    (stall,) = [s for s in m["stalls"] if s["kind"] == "preempt-as-main"]
    assert (stall["start"], stall["end"]) == (3.053, 3.500003), stall
    assert stall["evidence"][0].startswith("no application data (only its TLS handshake) from the source on "
                                           "127.0.0.1:50003 from "), stall
    (misread,) = [x for x in m["misclassifications"] if x["client"] == "127.0.0.1:50003"]
    assert "until the source first writes on it at 3.500003;" in misread["failure"], misread
