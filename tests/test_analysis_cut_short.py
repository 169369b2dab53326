"""Migrations cut short before the main channel's EOF: by the source (migrate_cancel, a source that stops)
or by a destination that stops as a whole (a failed load, an exit, a kill). Every destination generation
closes its channels then, so those closes must not rule any generation out, and the outcome says who cut
the migration (captures/cancel-*, kill-destination-* are the real QEMU runs)."""

from __future__ import annotations

from dissectors.analysis.judge import Options
from dissectors.cli.pipeline import analyze_file as analyze
from dissectors.layers import commands as C
from tests import synth as S
from tests.test_analysis_synthetic import T0

REAL = ("qemu-7.2", "qemu-8.0-10.0", "qemu-10.1+")


def multifd_running() -> list[S.Conn]:
    """Main + 2 multifd channels, in order, carrying data for a second; nobody has closed anything yet."""
    main, m0, m1 = S.Conn(40000, T0), S.Conn(40001, T0 + 0.002), S.Conn(40002, T0 + 0.003)
    main.send(T0 + 0.001, S.header() + S.ram_start() + S.ram_part([], flush=True))
    m0.send(T0 + 0.003, S.multifd_hello(0))
    m1.send(T0 + 0.004, S.multifd_hello(1))
    for i in range(10):
        t = T0 + 0.1 * (i + 1)
        m0.send(t, S.multifd_packet(2 * i + 1, 2))
        m1.send(t, S.multifd_packet(2 * i + 2, 1))
    return [main, m0, m1]


def _fits(m: dict) -> dict[str, bool]:
    return {name: legs[0]["fits_capture"] for name, legs in m["what_if"].items()}


def test_source_cancel_is_the_source_stopping_and_rules_nothing_out(cap):
    main, m0, m1 = conns = multifd_running()
    t = T0 + 1.2
    main.close(t, by=0)                       # migrate_cancel: the source shuts its channels down, main first
    for c in conns:
        c.close(t + 0.001, by=1)              # the destination fails on the cut stream and closes everything
    m0.close(t + 0.09, by=0)
    m1.close(t + 0.09, by=0)
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    assert m["outcome"]["status"] == "failed"
    assert m["outcome"]["reason"].startswith("the source stopped mid-stream at ")
    assert "migrate_cancel" in m["outcome"]["reason"]
    assert all(_fits(m)[p] for p in REAL), m["policy"]
    assert "fits no" not in m["policy"]["destination_generation"]


def test_a_source_close_while_main_is_open_is_not_yet_a_cut(cap):
    """A source that closed one multifd channel while main is still open, no EOF yet: the capture (or, live,
    the stream so far) ends before the migration does; "the source stopped mid-stream" needs main ended."""
    main, m0, m1 = conns = multifd_running()
    m1.close(T0 + 1.2, by=0)
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    assert m["outcome"]["status"] == "incomplete", m["outcome"]
    main.close(T0 + 1.3, by=0)                # now main ends with no EOF: the source stopped mid-stream
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    assert m["outcome"]["status"] == "failed"
    assert m["outcome"]["reason"].startswith("the source stopped mid-stream at ")


def test_a_destination_ending_a_silent_connection_first_is_named(cap):
    """The first channel the destination ends may be one that never sent a byte (its kind unknown): the
    reason names it a silent connection (the fuzzer's pipeline target found a crash there)."""
    main, m0, m1 = multifd_running()
    silent = S.Conn(40003, T0 + 0.005)
    silent.close(T0 + 0.5, by=1, how="R")
    (m,) = analyze(cap([main, m0, m1, silent]), Options()).report["migrations"]
    assert m["outcome"]["status"] == "failed"
    assert "silent connection 127.0.0.1:40003" in m["outcome"]["reason"], m["outcome"]


def test_destination_stopping_as_a_whole_rules_nothing_out(cap):
    conns = multifd_running()
    for c in conns:
        c.close(T0 + 1.2, by=1, how="R")      # a killed destination: its kernel resets every socket at once
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    assert m["outcome"]["status"] == "failed"
    assert m["outcome"]["reason"].startswith("the destination stopped as a whole at ")
    assert "reset all 3 channels" in m["outcome"]["reason"]
    assert all(_fits(m)[p] for p in REAL), m["policy"]


def test_one_channel_dropped_by_the_destination_still_counts(cap):
    main, m0, m1 = conns = multifd_running()
    m1.close(T0 + 1.2, by=1, how="R")         # the destination drops one channel mid-stream, keeps the rest
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    assert m["outcome"]["status"] == "failed"
    assert m["outcome"]["reason"].startswith("the destination reset multifd ")
    assert not any(_fits(m)[p] for p in REAL)


def misread_main() -> list[S.Conn]:
    """7.2 with main accepted last: m0 (accepted first) is taken as main and never read; reading the real
    main as multifd, the destination resets it a moment after its QEVM and shuts the multifd channel it had
    (m1) down. Nothing else is closed yet."""
    main, m0, m1 = S.Conn(40000, T0 + 0.010), S.Conn(40001, T0), S.Conn(40002, T0 + 0.002)
    main.send(main.syn_ts + 0.001, S.header() + S.ram_start())
    m0.send(T0 + 0.001, S.multifd_hello(0))
    m1.send(m1.syn_ts + 0.001, S.multifd_hello(1))
    m1.close(main.syn_ts + 0.0012, by=1)
    main.close(main.syn_ts + 0.0013, by=1, how="R")
    return [main, m0, m1]


def test_a_prompt_drop_among_the_closes_is_not_a_whole_stop(cap):
    """The misread's destination lives on (7.2 prints the error) and keeps the channel it took as main open
    until it is stopped, seconds later (captures/netpath-multifd4-7.2-misorder.dst: 6.3 s): every channel
    ended by the destination, yet the prompt drop is still the misread, still against the rules that
    predict success."""
    main, m0, m1 = conns = misread_main()
    m0.close(T0 + 6, by=1, how="R")
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    fits = _fits(m)
    assert fits["qemu-7.2"] and not fits["qemu-8.0-10.0"] and not fits["qemu-10.1+"]
    assert not m["outcome"]["reason"].startswith("the destination stopped as a whole"), m["outcome"]


def test_a_destination_ending_every_channel_at_once_stopped_as_a_whole(cap):
    """The same first closes with the channel taken as main ended at once too: the process ended every
    socket together (it exited on its error, or was killed then), as a destination of any generation does
    that refuses the stream's header and exits: a whole stop, however soon after main's first bytes, and
    no generation is ruled out."""
    main, m0, m1 = conns = misread_main()
    m0.close(main.syn_ts + 0.0012, by=1)
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    assert all(_fits(m)[p] for p in REAL), m["policy"]


def test_an_unanswered_ping_rules_out_a_prediction_of_success(cap):
    """The silent preempt channel taken as main: the real main's PING is never answered, which a rule
    that makes it main (and so reads it) cannot explain, even once the source has stopped from outside."""
    main, pre = S.Conn(41000, T0 + 0.005), S.Conn(41001, T0)
    main.send(main.syn_ts + 0.001, S.header() + S.command(C.MIG_CMD_OPEN_RETURN_PATH) + S.ping(1) + S.ram_start())
    main.close(T0 + 20, by=0)
    pre.close(T0 + 20, by=0)
    for c in (main, pre):
        c.close(T0 + 20.001, by=1)
    (m,) = analyze(cap([main, pre]), Options(qemu_version="7.2")).report["migrations"]
    assert not _fits(m)["two-way-handshake"]
    assert _fits(m)["qemu-7.2"]


def test_a_hidden_postcopy_completes_only_with_a_shut_sized_last_record():
    """Without a key log a TLS postcopy migration counts as completed only when the destination's last record
    on the return path, after the source's last one, is as long as SHUT; a page request last (or a SHUT-sized
    record before the source's last) is a pause or a failure (captures/preempt-recover-tls-11.1)."""
    from dissectors.analysis.tls_shape import RP_SHUT_SIZE, SideShape, TlsShape

    def shape(dst_len: int, dst_ts: float, src_ts: float = 1.0) -> TlsShape:
        return TlsShape(sides=(SideShape(records=9, last_ts=src_ts, last_len=4096),
                               SideShape(records=3, last_ts=dst_ts, last_len=dst_len)))

    assert RP_SHUT_SIZE == 8
    assert shape(8, 1.001).acknowledged()
    assert not shape(16, 1.001).acknowledged()          # REQ_PAGES last: the destination still wanted pages
    assert not shape(8, 0.9).acknowledged()             # a PONG, before the source's last record


def test_a_dead_destination_seen_from_the_source_across_a_jittered_path(cap):
    """From the source's side the dead destination's resets arrive jittered, and the source's kernel answers
    each late segment of a connection it has already dropped with a reset of its own: one channel's answer may
    come before the destination's reset of another. Still the destination stopped as a whole
    (captures/netpath-kill-destination-10.0.src)."""
    main, m0, m1 = conns = multifd_running()
    t = T0 + 1.2
    m0.close(t, by=1, how="R")
    m0.close(t + 0.0005, by=0, how="R")       # the source's kernel answers a late segment on m0
    m1.close(t + 0.001, by=1, how="R")
    main.close(t + 0.002, by=1)
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    assert m["outcome"]["reason"].startswith("the destination stopped as a whole at ")
    assert all(_fits(m)[p] for p in REAL), m["policy"]


def test_a_dying_destination_whose_source_shuts_main_in_between(cap):
    """A killed destination's sockets close a few ms apart; the source, failing on the first reset, may shut
    main down before the destination's kernel ends it: still one stop of the whole destination
    (captures/kill-destination-tls-10.0 had 5 ms between its first and last reset)."""
    main, m0, m1 = conns = multifd_running()
    t = T0 + 1.2
    m1.close(t, by=1, how="R")
    main.close(t + 0.001, by=0)               # the source gives up and shuts main down
    m0.close(t + 0.005, by=1, how="R")
    main.close(t + 0.0055, by=1)
    (m,) = analyze(cap(conns), Options()).report["migrations"]
    assert m["outcome"]["reason"].startswith("the destination stopped as a whole at ")
    assert all(_fits(m)[p] for p in REAL), m["policy"]


def precopy_running() -> S.Conn:
    """Plain precopy: one main channel carrying RAM for a second, nobody has closed it yet."""
    main = S.Conn(40000, T0)
    main.send(T0 + 0.001, S.header() + S.ram_start())
    for i in range(10):
        main.send(T0 + 0.1 * (i + 1), S.ram_part([]))
    return main


def test_a_destination_ending_its_only_channel_late_stopped_as_a_whole(cap):
    """A plain precopy has one channel: a destination that resets it long after its first bytes, before the
    EOF, with nothing on the return path, stopped as a whole (killed, exited, failed to load), as one with
    many channels that resets them all; every generation does that, so none is ruled out."""
    main = precopy_running()
    main.close(T0 + 1.2, by=1, how="R")
    (m,) = analyze(cap([main]), Options()).report["migrations"]
    assert m["outcome"]["status"] == "failed"
    reason = m["outcome"]["reason"]
    assert reason.startswith("the destination stopped as a whole at "), reason
    assert "reset its only channel (main 127.0.0.1:40000)" in reason, reason
    assert all(_fits(m)[p] for p in REAL), m["policy"]


def test_a_destination_ending_its_only_channel_at_once_is_not_said_to_stop_as_a_whole(cap):
    """The same reset a moment after the channel's first bytes is the destination's reaction to them (a
    channel it refused): not a stop as a whole."""
    main = S.Conn(40000, T0)
    main.send(T0 + 0.001, S.header() + S.ram_start())
    main.close(T0 + 0.0012, by=1, how="R")
    (m,) = analyze(cap([main]), Options()).report["migrations"]
    assert m["outcome"]["reason"].startswith("the destination reset main 127.0.0.1:40000 at "), m["outcome"]
