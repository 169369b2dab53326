"""``LiveView``'s incremental judgement (frozen groups not grouped again, settled migrations' judgements
reused) equals ``Analyzer.judge`` on the same facts at every step: the soak's feed, a feed whose time goes
back between rounds, late packets on closed connections, and corpus captures read a few segments at a
time."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from dissectors.analysis.engine import Analyzer
from dissectors.analysis.judge import Options
from dissectors.analysis.live import LiveView
from dissectors.capture import open_capture
from dissectors.cli.pipeline import reassemble
from dissectors.tls import KeyLog
from tests import synth as S
from tests.test_watch_events import _Batches, _capture, _migrations

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from live_feed import PCAP_HEADER, fast_migration  # noqa: E402


class _Checked(LiveView):
    """A live view that checks each incremental judgement against a full one on the same facts."""

    def __init__(self, analyzer: Analyzer) -> None:
        super().__init__(analyzer)
        self.frozen_seen = 0
        self.steps = 0

    def _judge(self, end: float) -> tuple[list[Any], list[dict[str, Any]]]:
        groups, migrations = super()._judge(end)
        kept = self.analyzer.all_groups
        full_groups, full = self.analyzer.judge(end)
        self.analyzer.all_groups = kept
        assert [[f.conn.index for f in g.connections] for g in groups] == \
            [[f.conn.index for f in g.connections] for g in full_groups]
        assert migrations == full
        self.frozen_seen = max(self.frozen_seen, len(self._frozen))
        self.steps += 1
        return groups, migrations


def _run(path: Path, size: int, options: Options, keylog: KeyLog | None = None) -> tuple[_Checked, dict[str, Any]]:
    analyzer = Analyzer(options, keylog=keylog)
    view = _Checked(analyzer)

    def on_batch(tracker: Any) -> None:
        view.forget = tracker.forget
        view._last_retire = 0.0
        view.update(tracker.last_ts)

    with open_capture(path) as cap:
        _, capture = reassemble(_Batches(cap, size), str(path), analyzer.sink_for, on_batch=on_batch,
                                coalesce_runs=False)
    view.update(capture["last_time"], final=True)
    return view, analyzer.finish(capture).report


def _soak_feed(path: Path, count: int) -> Path:
    with path.open("wb") as f:
        f.write(PCAP_HEADER)
        for i in range(count):
            f.write(b"".join(fast_migration(1000.0 + i * 0.1, i + 1, i % 2 == 0)[0]))
    return path


@pytest.mark.parametrize("size", [3, 20])
def test_soak_feed(tmp_path: Path, size: int) -> None:
    view, report = _run(_soak_feed(tmp_path / "soak.pcap", 80), size, Options(qemu_version="7.2"))
    assert len(report["migrations"]) == 80
    assert view.frozen_seen >= 5          # the incremental path was taken


def test_time_going_back(tmp_path: Path) -> None:
    """Two rounds of migrations, the second's timestamps inside the first's (connections starting before
    frozen groups ended: they thaw)."""
    path = _capture(tmp_path / "back.pcap", [(_migrations(0.0, 30, 0.3), "10.0.0.1"),
                                             (_migrations(2.0, 10, 0.3, first=100), "10.0.0.2")])
    view, report = _run(path, 4, Options(qemu_version="7.2"))
    assert len(report["migrations"]) == 40
    assert view.frozen_seen >= 3


def test_late_packets_on_closed_connections(tmp_path: Path) -> None:
    """A retransmitted FIN and a reset after both FINs, seconds later, on a migration frozen by then."""
    conns = _migrations(0.0, 20, 0.2)
    late = conns[3]
    last = max(ts for ts, _, _ in late.events)
    late.events.append((last + 0.5, 1, "R"))
    path = tmp_path / "late.pcap"
    S.write_capture(str(path), conns)
    view, report = _run(path, 5, Options(qemu_version="7.2"))
    assert len(report["migrations"]) == 20


CORPUS = ["holdback-multifd-7.2-to-10.0", "holdback-preempt-7.2", "multifd-postcopy-7.2", "multifd-tls-10.0"]


@pytest.mark.parametrize("name", CORPUS)
def test_corpus(name: str) -> None:
    keylog_path = REPO / "captures" / f"{name}.keylog"
    keylog = KeyLog.load(str(keylog_path)) if keylog_path.exists() else None
    _run(REPO / "captures" / f"{name}.pcap.gz", 50, Options(), keylog)


# The captures in which an earlier live view said an outcome and later another (issue 11's false alarms).
REVISED = ["holdback-multifd-7.2-to-10.0", "holdback-multifd-7.2", "holdback-preempt-7.2-to-10.0",
           "holdback-preempt-7.2", "holdback-preempt-tiny-7.2", "preempt-tls-7.2", "tlsfin-preempt-7.2"]


@pytest.mark.parametrize("name", REVISED)
def test_no_false_alarm(name: str) -> None:
    """Without --qemu-version, an outcome said is not contradicted later: no `failed` or `stalled` turned
    `completed` (a stall that ends in a failure is a progression). The one revision left, a relay's
    source-side leg said `completed` before its destination-side leg failed, is flagged ``revises``. A
    misclassification said (its event, or a channel said misread without ``policy_unsure``) is one the
    report holds: none said under the assumed version while one not ruled out would misread nothing, for
    a migration that then completes (holdback-multifd-7.2-to-10.0)."""
    keylog_path = REPO / "captures" / f"{name}.keylog"
    keylog = KeyLog.load(str(keylog_path)) if keylog_path.exists() else None
    analyzer = Analyzer(Options(), keylog=keylog)
    view = LiveView(analyzer)
    events: list[dict[str, Any]] = []

    def on_batch(tracker: Any) -> None:
        view.forget = tracker.forget
        events.extend(view.update(tracker.last_ts))

    path = REPO / "captures" / f"{name}.pcap.gz"
    with open_capture(path) as cap:
        _, capture = reassemble(_Batches(cap, 50), str(path), analyzer.sink_for, on_batch=on_batch,
                                coalesce_runs=False)
    events.extend(view.update(capture["last_time"], final=True))
    report = analyzer.finish(capture).report
    said: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if e["event"] == "outcome":
            said.setdefault(e["migration"], []).append(e)
    for m in report["migrations"]:
        outs = said.get(m["id"], [])
        assert outs and outs[-1]["status"] == m["outcome"]["status"]
        for before, after in zip(outs, outs[1:], strict=False):
            assert after["revises"] == before["status"]
            relay_tie = "relay" in m and m["relay"]["side"] == "source" and before["status"] == "completed"
            assert (before["status"], after["status"]) == ("stalled", "failed") or relay_tie, (name, m["id"], outs)
        assert "revises" not in outs[0]
    misread = {(m["id"], mc["client"]) for m in report["migrations"] for mc in m["misclassifications"]}
    alarms = [(e["migration"], e["client"]) for e in events if e["event"] == "misclassified"
              or (e["event"] in ("channel", "channel-role") and e["misclassified"] and not e.get("policy_unsure"))]
    assert set(alarms) <= misread, (name, alarms, misread)


@pytest.mark.parametrize("batch", [1, 5, 50])
def test_a_hidden_tls_recovery_is_said_as_a_pause_and_a_recovery(batch: int) -> None:
    """Without the key log a TLS postcopy recovery is linked by its record sizes (grouping.tls_paused); the
    recovery leg proves postcopy ran, which TLS hides otherwise, so watch says the pause and the recovery,
    once each, under one migration, and no failure on the way: the paused migration is neither frozen nor
    retired before its recovery leg joins it, and the destination closing its channels after loading the
    stream (the preempt channel first, before its SHUT) is a completion under way."""
    analyzer = Analyzer(Options())
    view = LiveView(analyzer)
    events: list[dict[str, Any]] = []

    def on_batch(tracker: Any) -> None:
        view.forget = tracker.forget
        events.extend(view.update(tracker.last_ts))

    path = REPO / "captures" / "preempt-recover-tls-11.1.pcap.gz"
    with open_capture(path) as cap:
        _, capture = reassemble(_Batches(cap, batch), str(path), analyzer.sink_for, on_batch=on_batch,
                                coalesce_runs=False)
    events.extend(view.update(capture["last_time"], final=True))
    (m,) = analyzer.finish(capture).report["migrations"]
    assert [e["migration"] for e in events if e["event"] == "migration-start"] == [m["id"]]
    said = [(e["event"], e.get("leg")) for e in events if e["migration"] == m["id"]
            and e["event"] in ("postcopy-pause", "postcopy-recovery")]
    assert said == [("postcopy-pause", 0), ("postcopy-recovery", 1)], events
    (pause,) = m["postcopy"]["pauses"]
    pause_event = next(e for e in events if e["event"] == "postcopy-pause")
    assert pause_event["time"] == pause["paused_at"]
    assert [e["status"] for e in events if e["event"] == "outcome"] == ["completed"]


@pytest.mark.parametrize("size", [1, 4])
def test_a_recovery_preempt_channel_accepted_before_its_main(tmp_path: Path, size: int) -> None:
    """The recovery's early preempt channel first opens a migration of its own, which the recovered main
    channel then takes into its paused migration: live, step by step, as the report has it."""
    from tests.test_analysis_synthetic import postcopy_recovery

    path = tmp_path / "recovery.pcap"
    S.write_capture(str(path), postcopy_recovery(preempt_first=True))
    _, report = _run(path, size, Options(qemu_version="7.2"))
    (m,) = report["migrations"]
    assert [c["leg"] for c in m["channels"]] == [0, 0, 1, 1]
