"""Records nobody reads (dissectors.tls, the TCP room's skip and gather windows): a consumer that skips
plaintext by length gets, at the same offsets and times, the same bytes as when every record is decrypted,
whether the tracker hands segments one by one or in coalesced runs; a skipped record that is not plain
application data is said, not misread."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import synth as S
import tls12_synth as Y
import tls_synth as X

from dissectors.analysis.engine import Analyzer
from dissectors.analysis.judge import Options
from dissectors.capture import open_capture
from dissectors.cli.pipeline import reassemble, sweeping
from dissectors.layers import tls as T
from dissectors.tcp import Connection
from dissectors.tls import KeyLog, TlsStreamSink
from dissectors.tls.schedule import SUITES

BIG = 1 << 40


class Windowed:
    """An inner StreamSink skipping like a channel parser: after each chunk, a window drawn from the
    chunk's end offset (so the same calls get the same windows); keeps every call."""

    def __init__(self, seed: int, skips: bool = True) -> None:
        self.seed = seed
        self.skips = skips
        self.calls: list[tuple[Any, ...]] = []

    def data(self, d: int, offset: int, data: Any, ts: float) -> int:
        k = 0
        if self.skips:
            rng = random.Random(self.seed * 1_000_003 + offset + len(data))
            k = rng.choice((0, 1, rng.randint(1, 5000), rng.randint(5000, 80000), rng.randint(80000, 400000)))
        self.calls.append(("data", d, offset, bytes(data), ts, k))
        return k

    def gap(self, d: int, offset: int, length: int, ts: float) -> None:
        self.calls.append(("gap", d, offset, length, ts))

    def end(self, d: int, offset: int, ts: float, how: str) -> None:
        self.calls.append(("end", d, offset, how))


def _tls13_stream(rng: random.Random, suite: int, size: int) -> tuple[X.TlsSession, bytes, bytes, bytes]:
    """A session's opening flights and the client's application data (records of random sizes, some
    padded, a KeyUpdate now and then), and the plaintext it carries."""
    s = X.TlsSession(suite)
    c_open, s_open = s.opening()
    plain = bytearray()
    out = bytearray(c_open)
    while len(plain) < size:
        n = rng.choice((16384, 16384, 16384, rng.randint(1, 16384), rng.randint(400, 2000)))
        content = rng.randbytes(n)
        padding = rng.choice((0, 0, 0, 0, 1, rng.randint(2, 30)))
        out += s.app[0].protect(T.TLS_APPLICATION_DATA, content, padding)
        plain += content
        if rng.random() < 0.01:
            out += s.key_update(0)
    return s, bytes(out), s_open, bytes(plain)


def _tls12_stream(rng: random.Random, suite: int, size: int) -> tuple[Y.Tls12Session, list[tuple[int, bytes]], bytes]:
    s = Y.Tls12Session(suite)
    hello, server, client = s.opening()
    plain = bytearray()
    data = bytearray()
    while len(plain) < size:
        content = rng.randbytes(rng.choice((16384, 16384, rng.randint(1, 16384))))
        data += s.protect(0, T.TLS_APPLICATION_DATA, content)
        plain += content
    return s, [(0, hello), (1, server), (0, client), (1, s.server_finished()), (0, bytes(data))], bytes(plain)


def _pieces(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` cut into sends of random sizes (each then cut at the MSS by synth)."""
    out, i = [], 0
    while i < len(data):
        n = rng.choice((S.MSS * 8, S.MSS * 20, rng.randint(1, 3000), rng.randint(1, 40000)))
        out.append(data[i:i + n])
        i += n
    return out


def _capture(tmp_path: Path, flows: list[list[tuple[int, bytes]]], rng: random.Random) -> Path:
    """One connection per flow of (direction, bytes), their sends interleaved in time."""
    conns = [S.Conn(50000 + i, 1.0 + i * 0.001) for i in range(len(flows))]
    sends = [[(d, p) for d, data in flow for p in _pieces(rng, data)] for flow in flows]
    ts = 1.01
    while any(sends):
        for conn, queue in zip(conns, sends, strict=True):
            for _ in range(rng.randint(0, 3)):
                if queue:
                    d, piece = queue.pop(0)
                    (conn.send if d == 0 else conn.reply)(ts, piece)
                    ts += 0.0001
    for conn in conns:
        conn.close(ts + 0.01)
    path = tmp_path / "tls.pcap"
    S.write_capture(str(path), conns)
    return path


def _run(path: Path, keylog: KeyLog, seed: int, coalesce: bool, skips: bool = True) -> list[tuple[Any, ...]]:
    sinks: list[tuple[int, Windowed, TlsStreamSink]] = []

    def factory(conn: Connection) -> TlsStreamSink:
        inner = Windowed(seed + conn.index, skips)
        sink = TlsStreamSink(inner, keylog)
        sinks.append((conn.index, inner, sink))
        return sink

    with open_capture(str(path)) as cap:
        reassemble(cap, str(path), factory, coalesce_runs=coalesce)
    return [(i, inner.calls, sink.status.to_dict()) for i, inner, sink in sorted(sinks, key=lambda x: x[0])]


def _check_against_full(windowed: list[tuple[Any, ...]], full: list[tuple[Any, ...]], plains: list[bytes]) -> None:
    """Every chunk the skipping consumer got is the plaintext at its offset, delivered no later than in
    full decryption; every byte it did not ask to skip came; the ends and the status are the same."""
    for (i, calls, status), (_, full_calls, full_status), plain in zip(windowed, full, plains, strict=True):
        assert any(c[0] == "data" and c[5] > 0 for c in calls)      # (some windows were asked for)
        assert status == full_status, i
        assert not status["problems"], status["problems"]
        assert bytes(b"".join(c[3] for c in full_calls if c[0] == "data" and c[1] == 0)) == plain
        ends = [c for c in calls if c[0] == "end"]
        assert ends == [c for c in full_calls if c[0] == "end"]
        front = 0                 # where the next chunk must start: the last one's end and its window
        for _, _, offset, data, _, k in (c for c in calls if c[0] == "data" and c[1] == 0):
            assert offset == front and data == plain[offset:offset + len(data)]
            front = offset + len(data) + k
        assert front >= len(plain)


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tls13_skipping_gives_the_same_bytes_coalesced_or_not(tmp_path: Path, suite: int, seed: int) -> None:
    rng = random.Random(seed)
    sessions, flows, plains = [], [], []
    for _ in range(2):
        s, client, server, plain = _tls13_stream(rng, suite, 600_000)
        sessions.append(s)
        flows.append([(0, client[:len(X.client_hello(s.random))]), (1, server),
                      (0, client[len(X.client_hello(s.random)):])])
        plains.append(plain)
    path = _capture(tmp_path, flows, rng)
    keylog = KeyLog.parse("".join(s.keylog() for s in sessions))
    one_by_one = _run(path, keylog, seed, coalesce=False)
    runs = _run(path, keylog, seed, coalesce=True)
    assert runs == one_by_one
    _check_against_full(runs, _run(path, keylog, seed, coalesce=False, skips=False), plains)


@pytest.mark.parametrize("suite", [Y.AES128_GCM, Y.AES256_GCM, Y.CHACHA20])
def test_tls12_skipping_gives_the_same_bytes_coalesced_or_not(tmp_path: Path, suite: int) -> None:
    rng = random.Random(suite)
    sessions, flows, plains = [], [], []
    for _ in range(2):
        s, flow, plain = _tls12_stream(rng, suite, 500_000)
        sessions.append(s)
        flows.append(flow)
        plains.append(plain)
    path = _capture(tmp_path, flows, rng)
    keylog = KeyLog.parse("".join(s.keylog() for s in sessions))
    runs = _run(path, keylog, 7, coalesce=True)
    assert runs == _run(path, keylog, 7, coalesce=False)
    _check_against_full(runs, _run(path, keylog, 7, coalesce=False, skips=False), plains)


def _report(path: Path, keylog: KeyLog, coalesce: bool) -> dict[str, Any]:
    analyzer = Analyzer(Options(), keylog=keylog)
    with open_capture(str(path)) as cap:
        _, capture = reassemble(cap, str(path), analyzer.sink_for, coalesce_runs=coalesce,
                                on_batch=sweeping(analyzer))
    return analyzer.finish(capture).report


@pytest.mark.parametrize("multifd_first", [False, True])
def test_a_tls_migration_reports_the_same_coalesced_or_not(tmp_path: Path, multifd_first: bool) -> None:
    cap = tmp_path / "tls.pcap"
    keylog = KeyLog.load(X.write_tls_migration(cap, multifd_first=multifd_first))
    runs, single = _report(cap, keylog, True), _report(cap, keylog, False)
    assert runs == single
    assert all(c["tls"]["decrypted"] and not c["tls"]["problems"] for m in runs["migrations"] for c in m["channels"])


# -- what a skipped record's last bytes say -----------------------------------------------------------
class _Skipper:
    """Takes the first chunk, then skips everything."""

    def __init__(self) -> None:
        self.got = bytearray()
        self.gaps: list[tuple[int, int, int]] = []

    def data(self, d: int, offset: int, data: Any, ts: float) -> int:
        self.got += data
        return BIG if d == 0 else 0

    def gap(self, d: int, offset: int, length: int, ts: float) -> None:
        self.gaps.append((d, offset, length))

    def end(self, d: int, offset: int, ts: float, how: str) -> None:
        pass


def _feed_windowed(sink: TlsStreamSink, d: int, offset: int, data: bytes) -> None:
    """Hand ``data`` over as the TCP room would, honouring the sink's skip and gather windows."""
    i, skip_to, gather_from = 0, 0, None
    while i < len(data):
        seg = data[i:i + S.MSS]
        end = i + len(seg)
        if end <= skip_to:
            i = end
            continue
        if gather_from is not None:
            at, piece, gather_from = gather_from, data[gather_from:end], None
        else:
            at, piece = max(i, skip_to), data[max(i, skip_to):end]
        k = sink.data(d, offset + at, piece, 1.0)
        if k > 0:
            skip_to = end + k
        elif k < 0:
            skip_to, gather_from = end - k, end
        i = end


def _opened(s: X.TlsSession) -> tuple[_Skipper, TlsStreamSink, int]:
    c_open, s_open = s.opening()
    inner = _Skipper()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    sink.data(0, 0, c_open, 1.0)
    sink.data(1, 0, s_open, 1.0)
    return inner, sink, len(c_open)


def test_a_skipped_record_that_is_a_handshake_message_is_said() -> None:
    s = X.TlsSession()
    inner, sink, at = _opened(s)
    first = s.app[0].protect(T.TLS_APPLICATION_DATA, b"QEVM" * 10)
    odd = s.app[0].protect(T.TLS_HANDSHAKE, X.handshake(4, bytes(4000)))   # a 4 KB NewSessionTicket
    rest = b"".join(s.app[0].protect(T.TLS_APPLICATION_DATA, bytes(16384)) for _ in range(3))
    _feed_windowed(sink, 0, at, first + odd + rest)
    sink.end(0, at + len(first + odd + rest), 2.0, "fin")
    (problem,) = sink.status.problems
    assert "was not decrypted" in problem and "is not application data (inner content type 22)" in problem
    assert f"ciphertext offset {at + len(first)}:" in problem
    assert sink.status.plaintext_bytes[0] == 40


def test_skipped_padded_records_count_their_true_length() -> None:
    s = X.TlsSession()
    inner, sink, at = _opened(s)
    stream = s.app[0].protect(T.TLS_APPLICATION_DATA, b"head")
    for pad in (0, 7, 31, 0, 46):
        stream += s.app[0].protect(T.TLS_APPLICATION_DATA, bytes(10000), pad)
    _feed_windowed(sink, 0, at, stream)
    sink.end(0, at + len(stream), 2.0, "fin")
    assert sink.status.problems == [] and sink.status.plaintext_bytes[0] == 4 + 5 * 10000
    assert bytes(inner.got) == b"head"


def test_a_skipped_record_padded_past_the_bytes_read_is_said() -> None:
    s = X.TlsSession()
    inner, sink, at = _opened(s)
    stream = s.app[0].protect(T.TLS_APPLICATION_DATA, b"head") \
        + s.app[0].protect(T.TLS_APPLICATION_DATA, bytes(10000), 100)
    _feed_windowed(sink, 0, at, stream)
    sink.end(0, at + len(stream), 2.0, "fin")
    (problem,) = sink.status.problems
    assert "has over 47 bytes of padding: its length is unknown" in problem


def test_records_behind_the_hello_in_one_chunk_all_come() -> None:
    """The server's flight first, then the client's hello, Finished and data records in one chunk: the
    records after the first plaintext wait for the consumer's window, then come, with nothing left over."""
    s = X.TlsSession()
    c_open, s_open = s.opening()
    inner = Windowed(0, skips=False)
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    sink.data(1, 0, s_open, 1.0)
    blob = c_open + s.data(0, b"a" * 100) + s.data(0, b"b" * 100) + s.data(0, b"c" * 100)
    sink.data(0, 0, blob, 1.0)
    sink.end(0, len(blob), 2.0, "fin")
    assert b"".join(c[3] for c in inner.calls if c[0] == "data") == b"a" * 100 + b"b" * 100 + b"c" * 100
    assert sink.status.problems == []


@pytest.mark.parametrize("version", ["1.3", "1.2"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_stream_cut_inside_a_skipped_record_says_so_as_full_decryption_does(tmp_path: Path, version: str,
                                                                             seed: int) -> None:
    rng = random.Random(seed)
    if version == "1.3":
        s13, client, server, _ = _tls13_stream(rng, 0x1302, 300_000)
        hello = len(X.client_hello(s13.random))
        keylog = KeyLog.parse(s13.keylog())
        cut = rng.randint(len(client) // 2, len(client) - 1)
        flow = [(0, client[:hello]), (1, server), (0, client[hello:cut])]
    else:
        s12, flow, _ = _tls12_stream(rng, Y.AES256_GCM, 300_000)
        keylog = KeyLog.parse(s12.keylog())
        data = flow[-1][1]
        flow[-1] = (0, data[:rng.randint(len(data) // 2, len(data) - 1)])
    path = _capture(tmp_path, [flow], rng)
    (_, calls, status), = _run(path, keylog, seed, coalesce=True)
    (_, full_calls, full_status), = _run(path, keylog, seed, coalesce=False, skips=False)
    assert status == full_status
    assert [c for c in calls if c[0] != "data"] == [c for c in full_calls if c[0] != "data"]


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_a_gap_inside_a_skipped_record_counts_as_full_decryption_does(version: str) -> None:
    statuses = []
    for skipping in (True, False):
        rng = random.Random(5)
        if version == "1.3":
            s13 = X.TlsSession()
            c_open, s_open = s13.opening()
            sink = TlsStreamSink(_Skipper() if skipping else Windowed(0, skips=False), KeyLog.parse(s13.keylog()))
            sink.data(1, 0, s_open, 1.0)
            opening, data = c_open, b"".join(s13.app[0].protect(T.TLS_APPLICATION_DATA, rng.randbytes(16384))
                                             for _ in range(8))
        else:
            s12 = Y.Tls12Session(Y.AES256_GCM)
            hello, server, client = s12.opening()
            sink = TlsStreamSink(_Skipper() if skipping else Windowed(0, skips=False), KeyLog.parse(s12.keylog()))
            sink.data(0, 0, hello, 1.0)
            sink.data(1, 0, server + s12.server_finished(), 1.0)
            sink.data(0, len(hello), client, 1.0)
            opening, data = hello + client, b"".join(s12.protect(0, T.TLS_APPLICATION_DATA, rng.randbytes(16384))
                                                     for _ in range(8))
        if version == "1.3":
            sink.data(0, 0, opening, 1.0)
        cut = 5 * 16400 + 777                   # inside the sixth record
        (_feed_windowed if skipping else lambda s, d, o, b: s.data(d, o, b, 1.0))(sink, 0, len(opening), data[:cut])
        sink.gap(0, len(opening) + cut, 100, 1.5)
        sink.end(0, len(opening) + len(data), 2.0, "fin")
        status = sink.status.to_dict()
        del status["client_random"]             # (each loop has its own session)
        statuses.append(status)
    assert statuses[0] == statuses[1] and "bytes missing" in statuses[0]["problems"][0]
    assert statuses[0]["plaintext_bytes"][0] == 5 * 16384
