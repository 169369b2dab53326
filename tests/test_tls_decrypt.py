"""TLS 1.3 decryption (dissectors.tls): the key schedule against RFC 8448, synthetic sessions of every
suite fed in any chunking, KeyUpdate, missing and wrong secrets, and the analysis of a TLS migration."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import synth as S
import tls_synth as X

from dissectors.analysis.judge import Options
from dissectors.cli.main import main as cli
from dissectors.cli.pipeline import analyze_file
from dissectors.tls import KeyLog, KeyLogError, TlsConnection, TlsStreamSink
from dissectors.tls.schedule import SUITES, hkdf_expand_label


class Collect:
    """An inner StreamSink keeping what it is handed."""

    def __init__(self) -> None:
        self.bufs = [bytearray(), bytearray()]
        self.gaps: list[tuple[int, int, int]] = []
        self.ends: list[tuple[int, int, str]] = []

    def data(self, d: int, offset: int, data: Any, ts: float) -> int:
        assert offset == len(self.bufs[d]) + sum(n for dd, _, n in self.gaps if dd == d)
        self.bufs[d] += data
        return 0

    def gap(self, d: int, offset: int, length: int, ts: float) -> None:
        self.gaps.append((d, offset, length))

    def end(self, d: int, offset: int, ts: float, how: str) -> None:
        self.ends.append((d, offset, how))


def feed(sink: TlsStreamSink, streams: list[tuple[int, bytes]], rng: random.Random | None = None) -> None:
    """Feed (direction, bytes) pieces in order, each cut into random chunks; then end both directions."""
    offsets = [0, 0]
    for d, data in streams:
        i = 0
        while i < len(data):
            n = rng.randint(1, 3000) if rng else len(data)
            sink.data(d, offsets[d], data[i:i + n], 1.0)
            offsets[d] += len(data[i:i + n])
            i += n
    for d in (0, 1):
        sink.end(d, offsets[d], 2.0, "fin")


def test_key_schedule_matches_rfc8448() -> None:
    """RFC 8448 section 3 (Simple 1-RTT Handshake): the server's handshake write key and iv."""
    suite = SUITES[0x1301]
    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    assert hkdf_expand_label(suite, secret, b"key", b"", 16).hex() == "3fce516009c21727d0f2e4e86ee403bc"
    assert hkdf_expand_label(suite, secret, b"iv", b"", 12).hex() == "5d313eb2671276ee13000b30"


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("seed", [1, 2])
def test_every_suite_any_chunking_with_key_update(suite: int, seed: int) -> None:
    s = X.TlsSession(suite)
    c_open, s_open = s.opening()
    up = bytes(range(256)) * 300
    down = b"return path" * 40
    streams = [(0, c_open[:80]), (1, s_open), (0, c_open[80:]), (0, s.data(0, up[:30000], padding=3)),
               (1, s.data(1, down)), (0, s.key_update(0)), (0, s.data(0, up[30000:], chunk=999))]
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    feed(sink, streams, random.Random(seed))
    assert sink.status.decrypted and sink.status.problems == [], sink.status.problems
    assert sink.status.cipher == SUITES[suite].name and sink.status.version == "TLS 1.3"
    assert bytes(inner.bufs[0]) == up and bytes(inner.bufs[1]) == down
    assert inner.ends == [(0, len(up), "fin"), (1, len(down), "fin")]


def test_only_application_secrets_still_decrypt_the_data() -> None:
    s = X.TlsSession()
    c_open, s_open = s.opening()
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog(X.LABELS[2:])))
    feed(sink, [(0, c_open), (1, s_open), (0, s.data(0, b"QEVM" * 100))])
    assert bytes(inner.bufs[0]) == b"QEVM" * 100 and sink.status.problems == []


def test_a_record_failing_authentication_stops_that_direction_only() -> None:
    s = X.TlsSession()
    c_open, s_open = s.opening()
    good, bad = s.data(0, b"a" * 100), bytearray(s.data(0, b"b" * 100))
    bad[10] ^= 1
    after = s.data(0, b"c" * 100)
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    feed(sink, [(0, c_open), (1, s_open), (0, good), (0, bytes(bad)), (0, after), (1, s.data(1, b"rp"))])
    assert bytes(inner.bufs[0]) == b"a" * 100 and bytes(inner.bufs[1]) == b"rp"
    (problem,) = sink.status.problems
    assert "client to server" in problem and "failed authentication" in problem
    # the undecryptable rest reaches the inner sink as a gap, so nothing is read as following on
    assert inner.gaps == [(0, 100, len(bad) + len(after))]


def test_without_secrets_the_ciphertext_passes_through() -> None:
    s = X.TlsSession()
    c_open, s_open = s.opening()
    stream = c_open + s.data(0, b"x" * 500)
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(X.TlsSession().keylog()))     # another connection's secrets
    feed(sink, [(1, s_open), (0, stream)], random.Random(3))
    assert bytes(inner.bufs[0]) == stream and bytes(inner.bufs[1]) == s_open
    assert not sink.status.decrypted and "no secrets" in sink.status.problems[0]


def test_a_plain_connection_passes_through_with_its_skip_windows() -> None:
    class Skipper(Collect):
        def data(self, d: int, offset: int, data: Any, ts: float) -> int:
            super().data(d, offset, data, ts)
            return 7

    inner = Skipper()
    sink = TlsStreamSink(inner, KeyLog.parse(X.TlsSession().keylog()))
    assert sink.data(0, 0, b"QEVM\0\0\0\3", 1.0) == 7
    assert sink.mode == "plain" and not sink.status.tls


def test_a_gap_before_the_client_hello_completes_passes_through() -> None:
    s = X.TlsSession()
    c_open, _ = s.opening()
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    sink.data(0, 0, c_open[:20], 1.0)
    sink.gap(0, 20, 30, 1.1)
    assert sink.mode == "plain" and bytes(inner.bufs[0]) == c_open[:20] and inner.gaps == [(0, 20, 30)]


def test_tls11_is_reported_not_decrypted() -> None:
    s = X.TlsSession()
    conn = TlsConnection(KeyLog.parse(s.keylog()))
    conn.feed(0, X.client_hello(s.random))
    events = conn.feed(1, X.server_hello(0x1302, version=0x0302))
    assert {e.why for e in events} == {"TLS 1.1 is not decrypted (TLS 1.2 and 1.3 only)"}


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_key_logs_are_empty(text: str) -> None:
    assert len(KeyLog.parse(text)) == 0


def test_key_log_errors_name_the_file() -> None:
    with pytest.raises(KeyLogError, match="k.log: line 1"):
        KeyLog.parse("this is not a key log\n", "k.log")
    log = KeyLog.parse(X.TlsSession().keylog() + "CLIENT_RANDOM zz 00\n")
    assert log.skipped == 1 and len(log) == 1


def test_duplicate_lines_are_one_and_conflicts_are_said() -> None:
    s = X.TlsSession()
    log = KeyLog.parse(s.keylog() + s.keylog())
    assert len(log) == 1 and not log.conflicts
    other = s.keylog().replace(s.secrets[X.LABELS[0]].hex(), "00" * 48)
    assert KeyLog.parse(s.keylog() + other).conflicts


# -- a TLS migration end to end (synthetic capture: real parsers, tracker, analysis) ----------------
def test_a_tls_migration_is_judged_by_its_decrypted_contents(tmp_path: Path) -> None:
    cap = tmp_path / "tls.pcap"
    keylog = KeyLog.load(X.write_tls_migration(cap, multifd_first=False))
    (m,) = analyze_file(str(cap), Options(), keylog=keylog).report["migrations"]
    assert [c["role"] for c in m["channels"]] == ["main", "multifd", "multifd"]
    assert all(c["tls"]["decrypted"] for c in m["channels"])
    assert not m["misclassifications"]


def test_multifd_accepted_first_under_tls_is_misread_by_accept_order(tmp_path: Path) -> None:
    """TLS cannot be peeked: every generation before 10.1 gives the first TLS connection main."""
    cap = tmp_path / "tls-first.pcap"
    keylog = KeyLog.load(X.write_tls_migration(cap, multifd_first=True))
    (m,) = analyze_file(str(cap), Options(qemu_version="8.2"), keylog=keylog).report["migrations"]
    assert m["channels"][0]["role"] == "multifd" and m["channels"][0]["assigned_role"] == "main"
    assert m["misclassifications"]


def test_cli_keylog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = tmp_path / "tls.pcap"
    keylog = X.write_tls_migration(cap, multifd_first=False)
    assert cli(["analyze", "--keylog", keylog, str(cap)]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 TLS connection(s) decrypted" in " ".join(out.split())      # wrapped to the width
    assert cli(["dissect", "--keylog", keylog, "-t", "multifd.hello", str(cap)]) == 0
    assert out.count("multifd.hello") == 0 and capsys.readouterr().out.count("multifd.hello") == 3
    bad = tmp_path / "bad.keylog"
    bad.write_text("nonsense\n")
    assert cli(["analyze", "--keylog", str(bad), str(cap)]) == 2
    assert "bad.keylog: no line of the NSS key log format" in capsys.readouterr().err


# -- without a key log: the verdict TCP and the TLS record layer allow ------------------------------
def test_without_a_keylog_a_clean_tls_migration_is_completed_from_tcp_evidence(tmp_path: Path) -> None:
    cap = tmp_path / "tls.pcap"
    X.write_tls_migration(cap, multifd_first=False)
    (m,) = analyze_file(str(cap), Options()).report["migrations"]
    assert m["outcome"]["status"] == "completed"
    assert "contents not verified" in m["outcome"]["reason"] and "--keylog" in m["outcome"]["reason"]


def test_without_a_keylog_a_destination_alert_or_close_is_a_failure(tmp_path: Path) -> None:
    s = X.TlsSession()
    alert = X.record(21, b"\x02\x2a")                    # fatal bad_certificate, in clear during the handshake
    conns = [S.Conn(50000, 1.0).send(1.001, X.client_hello(s.random)).reply(1.002, alert).close(1.003, by=1),
             S.Conn(50001, 1.01).send(1.011, X.client_hello(X.TlsSession().random)).close(1.5)]
    cap = tmp_path / "alert.pcap"
    S.write_capture(str(cap), conns)
    (m,) = analyze_file(str(cap), Options()).report["migrations"]
    assert m["outcome"]["status"] == "failed" and "destination sent a TLS alert" in m["outcome"]["reason"]
    conns = [S.Conn(50000, 1.0).send(1.001, X.client_hello(s.random) + b"\x17\x03\x03\x00\x20" + bytes(32))
             .close(1.2, by=1),
             S.Conn(50001, 1.01).send(1.011, X.client_hello(X.TlsSession().random)).close(1.5)]
    S.write_capture(str(cap), conns)
    (m,) = analyze_file(str(cap), Options()).report["migrations"]
    assert m["outcome"]["status"] == "failed" and "closed by server before the source" in m["outcome"]["reason"]


def test_the_server_flight_seen_before_the_client_hello_still_decrypts() -> None:
    """A capture may order the two directions' first segments either way."""
    s = X.TlsSession()
    c_open, s_open = s.opening()
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    feed(sink, [(1, s_open), (0, c_open), (0, s.data(0, b"QEVM" * 50)), (1, s.data(1, b"rp"))])
    assert bytes(inner.bufs[0]) == b"QEVM" * 50 and bytes(inner.bufs[1]) == b"rp"
    assert sink.status.decrypted and not sink.status.problems


def test_a_decrypted_channel_silent_past_its_handshake_is_the_preempt_channel(tmp_path: Path) -> None:
    """preempt-tls12-11.1: the 8.0+ source opens the preempt channel at postcopy start and, with no page
    request, writes nothing on it after the TLS handshake. Decrypted, that channel is silent (its handshake
    bytes are not the source's migration data): a postcopy migration's preempt channel, as without the key log."""
    from dissectors.layers import commands as C
    from dissectors.layers.synth import postcopy_package

    stream = (S.header() + S.command(C.MIG_CMD_POSTCOPY_ADVISE, (0x1000).to_bytes(8, "big") * 2)
              + S.ram_start() + S.ram_part([0x1000]) + postcopy_package() + S.ram_part([0x2000], end=True)
              + S.eof())
    sessions: list[X.TlsSession] = []
    conns = [X.tls_conn(50000, 1.0, [stream], sessions), X.tls_conn(50001, 1.2, [], sessions)]
    cap = tmp_path / "silent-preempt.pcap"
    S.write_capture(str(cap), conns)
    keylog = tmp_path / "silent-preempt.keylog"
    keylog.write_text("".join(s.keylog() for s in sessions))
    (m,) = analyze_file(str(cap), Options(), keylog=KeyLog.load(str(keylog))).report["migrations"]
    assert [c["role"] for c in m["channels"]] == ["main", "preempt"]
    assert "past the TLS handshake" in m["channels"][1]["role_evidence"]
    assert m["outcome"]["status"] == "completed"
    (hidden,) = analyze_file(str(cap), Options()).report["migrations"]
    assert [c["role"] for c in hidden["channels"]] == ["main", "preempt"]


def test_suites_name_their_primitives() -> None:
    """A suite names its hash and AEAD (``cryptography`` is imported when keys are made); the digest size
    read from the name is the hash's."""
    from dissectors.tls.tls12 import SUITES12

    for suite in [*SUITES.values(), *SUITES12.values()]:
        assert suite.digest_size == suite.hash.digest_size
        assert suite.aead.__name__ == suite.aead_name
