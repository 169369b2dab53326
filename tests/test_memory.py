"""Memory bounded by the connections open at a time (issues 11 and 14), functionally: closed connections
outside migrations are retired while ``analyze`` reads (the report unchanged), their memory returns without
the cyclic collector, the listed other connections stay the lowest-indexed ones whatever order they retire
in, ``watch`` retires TLS migrations decrypted with a key log (their TLS state freed), and the retired
reports stay bounded. Timing and RSS figures are benchmarks (benchmarks/bench_attacks.py,
benchmarks/bench_watch_soak.py), not tests."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import synth as S
import tls_synth as X

import dissectors.cli.pipeline as pipeline
from dissectors.analysis.engine import Analyzer, Others
from dissectors.analysis.facts import ConnectionFacts
from dissectors.analysis.judge import Options
from dissectors.analysis.live import LiveView
from dissectors.capture import open_capture
from dissectors.cli.pipeline import analyze_file, reassemble, sweeping
from dissectors.tcp import Connection
from dissectors.tcp.halfstream import HalfStream
from dissectors.tls import KeyLog, TlsStreamSink
from tests.test_analysis_synthetic import T0, multifd_migration

T_END = T0 + 60.0


def _plain(report: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(report))


def _scan_with_migrations(path: Path, count: int) -> None:
    """``count`` connections that send nothing (a port scan), 10 ms apart, each closed by both sides, with
    a migration every 500 of them and one connection left open from the start (to another port: one to the
    same port would keep every later connection there in its group, alive, so none could retire)."""
    conns: list[S.Conn] = []
    for n in range(count):
        c = S.Conn(20000 + n, 1.0 + n * 0.01)
        conns.append(c.close(c.syn_ts + 0.0005, by=0).close(c.syn_ts + 0.0006, by=1))
    conns.append(S.Conn(19999, 1.0, dport=6666))          # never closed: held to the end
    for k in range(count // 500):
        ms = multifd_migration("main")
        shift = 1.5 + k * 5.0 - ms[0].syn_ts
        for c in ms:
            c.syn_ts += shift
            c.events = [(ts + shift, d, x) for ts, d, x in c.events]
            c.sport = 40000 + k * 10 + (c.sport - 40000)
            c.dport = 5555
            c.close(max(ts for ts, _, _ in c.events) + 0.001, by=1)
        conns += ms
    S.write_capture(str(path), conns)


def test_analyze_retires_closed_connections_outside_migrations(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scan.pcap"
    _scan_with_migrations(path, 3000)
    # The whole capture held to the end (no sweeping): the report to compare with.
    whole = Analyzer()
    with open_capture(path) as cap:
        _, capture = reassemble(cap, str(path), whole.sink_for)
    expected = _plain(whole.finish(capture).report)
    assert len(expected["migrations"]) == 6
    assert len(expected["other_connections"]) == 2000 and expected["limits"][0]["over"] == 1001

    monkeypatch.setattr(pipeline, "SWEEP_EVERY", 200)
    analyzer = Analyzer()
    sweep = sweeping(analyzer)
    most = {"facts": 0, "conns": 0}

    def on_batch(tracker: Any) -> None:
        sweep(tracker)
        most["facts"] = max(most["facts"], len(analyzer.facts))
        most["conns"] = max(most["conns"], len(tracker.connections))

    with open_capture(path) as cap:
        _, capture = reassemble(_SmallBatches(cap), str(path), analyzer.sink_for, on_batch=on_batch)
    # RETIRE_AFTER (2 s) of capture time is 200 connections here: a few hundred are held, not 3,000.
    assert analyzer.retired.others.total > 2500
    assert most["facts"] < 800 and most["conns"] < 800
    got = _plain(analyzer.finish(capture).report)
    assert got == expected
    # analyze_file sweeps the same way: the same report.
    assert _plain(analyze_file(str(path)).report) == expected


def test_retired_connections_need_no_cyclic_collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgotten connections leave no reference cycle behind: with the collector's view frozen (as
    ``analyze`` freezes it) they would otherwise never be freed."""
    path = tmp_path / "scan.pcap"
    _scan_with_migrations(path, 1200)
    monkeypatch.setattr(pipeline, "SWEEP_EVERY", 100)
    analyzer = Analyzer()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with open_capture(path) as cap:
            _, capture = reassemble(cap, str(path), analyzer.sink_for, on_batch=sweeping(analyzer))
        assert analyzer.retired.others.total > 100
        held = {id(f) for f in analyzer.facts}
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, ConnectionFacts | Connection | HalfStream)
                  and id(o) not in held]
        assert leaked == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _facts(index: int, kind: str | None = None) -> Any:
    conn = SimpleNamespace(index=index, to_dict=lambda: {"index": index})
    return SimpleNamespace(conn=conn, kind=kind)


def test_others_lists_the_lowest_indexes_whatever_the_order() -> None:
    store = Others(cap=3)
    for i, kind in ((7, None), (2, "unknown"), (9, None), (5, "tls"), (1, None), (8, "unknown")):
        store.add(_facts(i, kind))
    assert [o["index"] for o in store.listed()] == [1, 2, 5]
    assert [o["kind"] for o in store.listed()] == ["silent", "unknown", "tls"]
    assert store.total == 6 and store.over == {"silent": 2, "unknown": 1}


# -- watch: TLS migrations decrypted with a key log retire too ------------------------------------------
def _tls_migrations(path: Path, count: int) -> Path:
    sessions: list[X.TlsSession] = []
    conns: list[S.Conn] = []
    for n in range(count):
        t = 1.0 + n * 3.0
        main = X.precopy_stream()
        mfd = [X.multifd_stream(channel_id=i) for i in range(2)]
        ms = [X.tls_conn(30000 + 10 * n, t, [main], sessions)]
        ms += [X.tls_conn(30001 + 10 * n + i, t + 0.005 + i * 0.001, [m[:64], m[64:]], sessions)
               for i, m in enumerate(mfd)]
        for c in ms:
            c.close(max(ts for ts, _, _ in c.events) + 0.001, by=1)
        conns += ms
    S.write_capture(str(path), conns)
    keylog = path.with_suffix(".keylog")
    keylog.write_text("".join(s.keylog() for s in sessions))
    return keylog


def _watched(path: Path, analyzer: Analyzer, sink_for: Any) -> tuple[Any, int]:
    """Read ``path`` in small batches as ``watch`` does, judging and retiring after each; returns the
    capture summary and the most connection facts held at once."""
    view = LiveView(analyzer)
    most = 0

    def on_batch(tracker: Any) -> None:
        nonlocal most
        view.forget = tracker.forget
        view._last_retire = 0.0
        view.update(tracker.last_ts)
        most = max(most, len(analyzer.facts))

    with open_capture(path) as cap:
        _, capture = reassemble(_SmallBatches(cap), str(path), sink_for, on_batch=on_batch)
    return capture, most


def test_watch_retires_decrypted_tls_migrations(tmp_path: Path) -> None:
    path = tmp_path / "tls.pcap"
    keylog = KeyLog.load(str(_tls_migrations(path, 12)))
    options = Options(qemu_version="10.0")
    expected = _plain(analyze_file(str(path), options, keylog=keylog).report)
    assert len(expected["migrations"]) == 12
    assert expected["capture"]["keylog"]["decrypted"] == 36

    analyzer = Analyzer(options, keylog=keylog)
    sinks: list[TlsStreamSink] = []
    sink_for = analyzer.sink_for

    def keep_sink(conn: Any) -> Any:
        sink = sink_for(conn)
        sinks.append(sink)
        return sink

    capture, most_facts = _watched(path, analyzer, keep_sink)
    assert analyzer.retired.migrations >= 8
    assert most_facts <= 3 * 3
    # Every connection's TLS state went when both its directions ended.
    assert all(s.mode == "tls" and s._conn is None for s in sinks)
    got = _plain(analyzer.finish(capture).report)
    assert got == expected


class _SmallBatches:
    """A capture whose keyed batches are 5 segments long (as a slow live stream hands them over)."""

    def __init__(self, cap: Any) -> None:
        self.cap = cap

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cap, name)

    def keyed_batches(self) -> Any:
        for batch in self.cap.keyed_batches():
            for i in range(0, len(batch), 5):
                yield [tuple(x[:4]) + (bytes(x[4]),) + tuple(x[5:]) for x in batch[i:i + 5]]


def test_retired_reports_are_compact_on_disk(tmp_path: Path) -> None:
    """Retired migrations go through one zlib stream: a few hundred bytes each, not ~3 KB, and come back
    as they went."""
    import copy
    import pickle

    from dissectors.analysis.engine import Retired

    path = tmp_path / "scan.pcap"
    _scan_with_migrations(path, 1000)
    report = _plain(analyze_file(str(path)).report)
    template = report["migrations"][0]
    alone = len(pickle.dumps([template], protocol=pickle.HIGHEST_PROTOCOL))
    assert alone > 2000
    retired = Retired()
    sent = []
    for n in range(600):
        m = copy.deepcopy(template)
        m["id"] = n
        m["start_time"] += n * 0.1
        m["end_time"] += n * 0.1
        for ch in m["channels"]:
            ch["client"] = f"10.0.{n // 250}.{n % 250}:{40000 + n}"
        sent.append(m)
        if n % 3 == 2:
            retired.add(sent[-3:])
    assert retired.migrations == 600
    back = retired.load()
    assert back == sent
    assert retired.disk_bytes / 600 < alone / 4


def test_a_long_migration_holds_back_no_later_one(tmp_path: Path) -> None:
    """A migration still running while 20 later ones complete: those retire (numbered as ``analyze``
    numbers them), the long one stays until it ends."""
    conns: list[S.Conn] = []
    long = multifd_migration("main")
    for c in long:            # the first migration: its channels stay open until t+60
        c.sport += 5000
        c.events = [(ts, d, x) for ts, d, x in c.events if not isinstance(x, str)]
        c.close(T_END, by=0).close(T_END + 0.001, by=1)
    conns += long
    for n in range(1, 21):
        ms = multifd_migration("main")
        for c in ms:
            c.syn_ts += n * 2.5
            c.events = [(ts + n * 2.5, d, x) for ts, d, x in c.events]
            c.sport += n * 10
            c.close(max(ts for ts, _, _ in c.events) + 0.001, by=1)
        conns += ms
    path = tmp_path / "long.pcap"
    S.write_capture(str(path), conns)
    expected = _plain(analyze_file(str(path), Options(qemu_version="7.2")).report)
    assert len(expected["migrations"]) == 21

    analyzer = Analyzer(Options(qemu_version="7.2"))
    capture, most_facts = _watched(path, analyzer, analyzer.sink_for)
    assert analyzer.retired.migrations >= 15
    assert most_facts <= 3 * 4               # the long one and a few recent ones, not 21
    got = _plain(analyzer.finish(capture).report)
    assert [m["id"] for m in got["migrations"]] == list(range(21))
    assert got == expected


def test_dissect_forgets_closed_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dissect``'s reassembly drops connections once they ended and were quiet (the same records come
    out), and leaves no reference cycle behind (a sink whose callback holds the sink, as dissect's does)."""
    from dissectors.channels import ChannelSink

    path = tmp_path / "scan.pcap"
    _scan_with_migrations(path, 1500)

    def run(forget: bool) -> tuple[list[tuple[int, int, str, int]], Any]:
        seen: list[tuple[int, int, str, int]] = []

        def factory(conn: Any) -> ChannelSink:
            sink = ChannelSink(lambda d, recs: seen.extend((conn.index, d, r.kind, r.offset) for r in recs)
                               if sink is not None else None)
            return sink

        tracker, _ = pipeline.reassemble_file(str(path), factory, forget_closed=forget)
        return seen, tracker

    whole, tracker = run(False)
    held_all = len(tracker.connections)
    del tracker
    monkeypatch.setattr(pipeline, "SWEEP_EVERY", 100)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        got, tracker = run(True)
        held = len(tracker.connections)
        gc.collect()          # the connections still held are reachable: only forgotten ones could be here
        leaked = [o for o in gc.garbage if isinstance(o, ChannelSink | Connection | HalfStream)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert got == whole and len(whole) > 6 * 3
    assert held_all == 1500 + 1 + 9 and held < 500
    assert leaked == []


def test_watch_retirement_leaves_no_cycle(tmp_path: Path) -> None:
    """What made a soak's memory rise: retired migrations' connections, sinks, facts and parsers in
    reference cycles, freed only by the collector's rare full passes. Now nothing of them is left for it."""
    from dissectors.channels.engine import StreamParser

    conns: list[S.Conn] = []
    for n in range(12):
        ms = multifd_migration("multifd" if n % 2 else "main")
        for c in ms:
            c.syn_ts += n * 2.5
            c.events = [(ts + n * 2.5, d, x) for ts, d, x in c.events]
            c.sport += n * 10
            if not any(d == 1 and isinstance(x, str) for _, d, x in c.events):
                c.close(max(ts for ts, _, _ in c.events) + 0.001, by=1)
        conns += ms
    path = tmp_path / "many.pcap"
    S.write_capture(str(path), conns)
    analyzer = Analyzer(Options(qemu_version="7.2"))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        _watched(path, analyzer, analyzer.sink_for)
        assert analyzer.retired.migrations >= 8
        gc.collect()
        leaked = [type(o).__name__ for o in gc.garbage
                  if isinstance(o, ConnectionFacts | Connection | HalfStream | StreamParser)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert leaked == []


def test_watch_retirement_frees_per_destination_state(tmp_path: Path) -> None:
    """Migrations to 20 destinations, one after the other: once each retires, the multifd repeat window
    kept under its (destination, UUID) key goes (it held up to 8,192 packets per destination), and the
    last judgement's groups hold none of its facts until the next judgement."""
    conns: list[S.Conn] = []
    for n in range(20):
        ms = multifd_migration("main")
        for c in ms:
            c.syn_ts += n * 2.5
            c.events = [(ts + n * 2.5, d, x) for ts, d, x in c.events]
            c.sport += n * 10
            c.dport = 5000 + n
            c.close(max(ts for ts, _, _ in c.events) + 0.001, by=1)
        conns += ms
    path = tmp_path / "destinations.pcap"
    S.write_capture(str(path), conns)
    options = Options(qemu_version="7.2")
    expected = _plain(analyze_file(str(path), options).report)
    assert len(expected["migrations"]) == 20

    analyzer = Analyzer(options)
    view = LiveView(analyzer)
    most = {"keys": 0, "stale": 0}

    def on_batch(tracker: Any) -> None:
        view.forget = tracker.forget
        view._last_retire = 0.0
        view.update(tracker.last_ts)
        held = {id(f) for f in analyzer.facts}
        most["stale"] += sum(id(f) not in held for g in analyzer.all_groups for f in g.connections)
        most["keys"] = max(most["keys"], len(analyzer.repeats))

    with open_capture(path) as cap:
        _, capture = reassemble(_SmallBatches(cap), str(path), analyzer.sink_for, on_batch=on_batch)
    assert analyzer.retired.migrations >= 15
    assert 1 <= most["keys"] <= 3            # the migrations held at a time, not one per destination seen
    assert most["stale"] == 0
    got = _plain(analyzer.finish(capture).report)
    assert got == expected


def test_retired_repeat_keys_keep_only_their_summary() -> None:
    """A retired key that found repeats keeps its summary (a later migration on the same key adds to it,
    as in ``analyze``) but not its window of packets; one that found none goes."""
    from dissectors.analysis.repeats import RepeatedPages

    rp = RepeatedPages()
    a, b = ("10.0.0.1:4444", "u"), ("10.0.0.2:4444", "u")
    for n in range(1, 3000):        # full 128-page packets; packet 10's last page opens packet 11
        first = 0x100000 * n if n != 11 else 0x100000 * 10 + 127 * 4096
        rp.packet(a, n, "pc.ram", 128, 128, first, first + 127 * 4096, float(n))
        rp.packet(b, n, "pc.ram", 128, 128, 0x100000 * n, 0x100000 * n + 127 * 4096, float(n))
    before = rp.summary({a, b})
    assert before is not None and before["count"] == 1
    assert len(rp._by_key[a].recent) > 2000
    rp.retire([a, b])
    assert len(rp) == 1 and rp._by_key[a].recent == {}
    assert rp.summary({a, b}) == before


def test_analyze_gives_back_only_what_it_froze(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``analyze_file`` freezes per-connection state as it piles up and unfreezes it when the report is built,
    but never undoes a freeze of its caller's (the collector can only unfreeze everything at once)."""
    path = tmp_path / "scan.pcap"
    _scan_with_migrations(path, 600)
    monkeypatch.setattr(pipeline, "FREEZE_EVERY", 50)
    frozen = []
    freeze = gc.freeze
    monkeypatch.setattr(gc, "freeze", lambda: (frozen.append(1), freeze())[1])
    assert gc.get_freeze_count() == 0
    analyze_file(str(path))
    assert frozen and gc.get_freeze_count() == 0            # what it froze, given back
    freeze()                                                # the caller's own freeze
    try:
        held = gc.get_freeze_count()
        analyze_file(str(path))
        assert gc.get_freeze_count() >= held                # the caller's freeze stands
    finally:
        gc.unfreeze()
