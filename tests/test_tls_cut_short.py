"""TLS migrations a destination cut short, over a delayed path: a channel the destination refused is told
from a destination that stopped as a whole by the channel's first application data, not its ClientHello (the
destination reads nothing before the handshake ends, 2+ round trips later), and by the destination living
on after the drop (captures/kill-destination-tls-10.0 is the real kill)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import synth as S
import tls_synth as X

from dissectors.analysis.judge import Options
from dissectors.cli.pipeline import analyze_file
from dissectors.layers.multifd import MultifdHello
from dissectors.layers.structs import named
from dissectors.layers.synth import multifd_stream, precopy_stream
from dissectors.tls import KeyLog

#: A round trip of the lab's namespace path (5 +- 3 ms each way), as the source sees it.
RTT = 0.016


def channel(port: int, syn: float, finished: float, writes: list[tuple[float, bytes]],
            sessions: list[X.TlsSession]) -> S.Conn:
    """One TLS connection seen from the source over that path: the SYN-ACK a round trip after the SYN, the
    ClientHello at once, the server's flight a round trip (and its signing) later, the client's Finished at
    ``finished``; then each of ``writes`` (time, plaintext) in records of its own."""
    s = X.TlsSession()
    sessions.append(s)
    c_open, s_open = s.opening()
    n = len(X.client_hello(s.random))
    c = S.Conn(port, syn, synack_delay=RTT)
    c.send(syn + RTT + 0.0001, c_open[:n]).reply(syn + 2 * RTT + 0.03, s_open).send(finished, c_open[n:])
    for t, data in writes:
        c.send(t, s.data(0, data))
    return c


def multifd_writes(start: float, channel_id: int, until: float) -> list[tuple[float, bytes]]:
    """A multifd channel's hello at ``start``, then a packet every 20 ms up to ``until``."""
    out = [(start, S.multifd_hello(channel_id))]
    t, num = start + 0.02, channel_id + 1
    while t < until:
        out.append((t, S.multifd_packet(num, 4)))
        t, num = t + 0.02, num + 2
    return out


def reports(tmp_path: Path, conns: list[S.Conn], sessions: list[X.TlsSession]) -> list[dict[str, Any]]:
    """The migration's report without the key log, then with it."""
    cap = tmp_path / "cut.pcap"
    S.write_capture(str(cap), conns)
    keylog = tmp_path / "cut.keylog"
    keylog.write_text("".join(s.keylog() for s in sessions))
    out = []
    for kl in (None, KeyLog.load(str(keylog))):
        (m,) = analyze_file(str(cap), Options(), keylog=kl).report["migrations"]
        out.append(m)
    return out


def _fits(m: dict[str, Any]) -> dict[str, bool]:
    return {name: legs[0]["fits_capture"] for name, legs in m["what_if"].items()}


def test_a_refused_channel_after_a_slow_handshake_is_not_a_whole_stop(tmp_path: Path) -> None:
    """QEMU 7.2 over TLS takes channels in handshake order: main's handshake ends last, so main is read as
    multifd and refused as soon as its QEVM arrives; 0.16 s after main's ClientHello (the handshake took 0.14 s)
    but a round trip after its first application data. The destination lives on (it only prints the error)
    and keeps the channel it took as main open until it is stopped seconds later: the reset of main is that
    refusal, not a stop of the whole destination: with the key log it rules out a rule that would have mapped
    the channels right (two-way-handshake), which a whole stop would not."""
    sessions: list[X.TlsSession] = []
    m0 = channel(50001, 1.0, 1.10, multifd_writes(1.1005, 0, 1.17), sessions)
    m1 = channel(50002, 1.002, 1.12, multifd_writes(1.1205, 1, 1.17), sessions)
    main = channel(50000, 1.004, 1.16, [(1.1605, S.header() + S.ram_start()), (1.165, S.ram_part([]))],
                   sessions)
    drop = 1.1605 + RTT
    m1.close(drop - 0.0001, by=1)              # the failing hello check shuts the running multifd channel down
    main.close(drop, by=1, how="R")            # and resets the one it read (unread data in it)
    m0.close(7.0, by=1, how="R")               # the destination, stopped at the teardown
    hidden, read = reports(tmp_path, [m0, m1, main], sessions)
    for m in (hidden, read):
        assert m["outcome"]["status"] == "failed", m["outcome"]
        assert "stopped as a whole" not in m["outcome"]["reason"], m["outcome"]
    fits = _fits(read)
    assert fits["qemu-7.2"] and not fits["two-way-handshake"], read["what_if"]


def test_a_kill_soon_after_a_channels_first_application_data_is_a_whole_stop(tmp_path: Path) -> None:
    """A destination killed 30 ms after a multifd channel's first application data (0.3 s after its
    ClientHello) resets every channel at once: it stopped as a whole, whoever had only just begun."""
    sessions: list[X.TlsSession] = []
    main = channel(50000, 1.0, 1.06, [(1.0605, S.header() + S.ram_start())]
                   + [(1.07 + 0.02 * i, S.ram_part([])) for i in range(12)], sessions)
    m0 = channel(50001, 1.001, 1.10, multifd_writes(1.1005, 0, 1.32), sessions)
    m1 = channel(50002, 1.002, 1.30, multifd_writes(1.3005, 1, 1.32), sessions)
    kill = 1.33
    for i, c in enumerate((m1, m0, main)):
        c.close(kill + 0.0001 * i, by=1, how="R")
    hidden, read = reports(tmp_path, [main, m0, m1], sessions)
    for m in (hidden, read):
        assert m["outcome"]["status"] == "failed", m["outcome"]
        assert m["outcome"]["reason"].startswith("the destination stopped as a whole at "), m["outcome"]
        assert "reset all 3 channels" in m["outcome"]["reason"], m["outcome"]
        # one had just begun: it said "none a moment after its first bytes", which was not so
        assert "none refused while the others stayed open" in m["outcome"]["reason"], m["outcome"]
    assert all(_fits(read).values()), read["what_if"]      # a killed destination of any rule does this


def _precopy_channel(port: int, syn: float, writes: list[bytes], sessions: list[X.TlsSession]) -> S.Conn:
    """One loopback TLS connection: the handshake, then each of ``writes`` in records of its own, 10 ms in."""
    s = X.TlsSession()
    sessions.append(s)
    c_open, s_open = s.opening()
    n = len(X.client_hello(s.random))
    c = S.Conn(port, syn).send(syn + 0.001, c_open[:n]).reply(syn + 0.002, s_open).send(syn + 0.003, c_open[n:])
    return c.send(syn + 0.01, b"".join(s.data(0, w) for w in writes))


def test_a_precopy_destination_closing_first_after_the_last_record_is_not_a_failure(tmp_path: Path) -> None:
    """A 7.2 source (no TLS close_notify) to a 10.0 destination (the recorded holdback-tls 7.2 -> 10.0 run):
    once the destination has loaded the stream it closes main and a multifd channel with a FIN 0.2 ms before
    the source closes them; the source closes the other multifd channel first. Every close is clean and after
    the source's last record. Without the key log that is a completion or a load that failed on the last
    bytes (a device section), closed the same way: unknown, not "the destination stopped as a whole"; the key
    log reads main's EOF: completed."""
    sessions: list[X.TlsSession] = []
    hello = named(MultifdHello).size
    mfd = [multifd_stream(channel_id=i) for i in range(2)]
    main = _precopy_channel(50000, 1.0, [precopy_stream()], sessions)
    m0 = _precopy_channel(50001, 1.004, [mfd[0][:hello], mfd[0][hello:]], sessions)
    m1 = _precopy_channel(50002, 1.006, [mfd[1][:hello], mfd[1][hello:]], sessions)
    m0.close(1.5, by=1).close(1.5002, by=0)
    m1.close(1.5003, by=0).close(1.5004, by=1)
    main.close(1.5005, by=1).close(1.5007, by=0)
    hidden, read = reports(tmp_path, [main, m0, m1], sessions)
    assert hidden["outcome"]["status"] == "unknown", hidden["outcome"]
    assert "stopped as a whole" not in hidden["outcome"]["reason"], hidden["outcome"]
    assert read["outcome"]["status"] == "completed", read["outcome"]


def test_hidden_roles_partly_inferred_make_one_note(tmp_path: Path) -> None:
    """Cancelled in set-up: main closed by the source after its handshake alone (no application data: its
    role unknown), the two multifd channels' hellos sent. Without the key log the report says once that the
    contents are hidden, some roles inferred from the record layer and the others unknown (it said it twice,
    in two near-identical notes)."""
    sessions: list[X.TlsSession] = []
    main = channel(50000, 1.0, 1.06, [], sessions)
    m0 = channel(50001, 1.001, 1.10, multifd_writes(1.1005, 0, 1.12), sessions)
    m1 = channel(50002, 1.002, 1.14, multifd_writes(1.1405, 1, 1.16), sessions)
    main.close(1.07, by=0)
    for c in (m0, m1):
        c.close(1.2, by=1, how="R")
    hidden, _ = reports(tmp_path, [main, m0, m1], sessions)
    hid = [n for n in hidden["notes"] if n.startswith("TLS: the channels' contents are hidden")]
    assert len(hid) == 1, hidden["notes"]
    assert "the roles of some are inferred" in hid[0] and "the others' are unknown" in hid[0], hid
