"""One streaming pass over a capture's connections: per-connection facts, then judgement.

Memory is bounded by the number of connections (facts keep bounded summaries; the reassembler bounds
its out-of-order buffer), never by the capture size.
"""

from __future__ import annotations

import heapq
import zlib
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import IO, Any

from dissectors import __version__
from dissectors.analysis.facts import ConnectionFacts
from dissectors.analysis.findings import migration_findings
from dissectors.analysis.grouping import MigrationGroup, group, start_ts
from dissectors.analysis.judge import MigrationJudge, Options
from dissectors.analysis.ledger import PageLedger
from dissectors.analysis.repeats import RepeatedPages
from dissectors.channels import TARGET_PAGE_SIZE
from dissectors.tcp import Connection
from dissectors.tcp.sink import StreamSink
from dissectors.tls import KeyLog

SCHEMA = 1
#: Connections outside any migration listed in the report at most (the rest counted; docs/limits.md).
MAX_OTHERS_LISTED = 2_000
#: Relay legs are paired among at most this many migrations with the same channel openings.
MAX_RELAY_BUCKET = 256
#: zlib level of the retired migrations' reports on disk (1: fast; they compress ~10x already).
RETIRED_ZLIB_LEVEL = 1
#: TLS connections the key log could not decrypt listed by index at most (the count stays exact).
NOT_DECRYPTED_LISTED = 1_000
#: Capture seconds after the last packet of a group of closed connections before it may be retired (its
#: state freed: a late ACK or retransmitted FIN after that would open a new connection).
RETIRE_AFTER = 2.0
#: ``analyze`` sweeps closed connections outside migrations once this many connections are held, then
#: after as many new ones as are still held, at least this many (linear time whatever is held: each sweep
#: groups the held connections, about 1.25 times what it retires on a port scan).
SWEEP_EVERY = 8192
JudgeOne = Callable[[MigrationGroup, int, float, "dict[str, Any] | None"], "dict[str, Any]"]


@dataclass
class Analysis:
    report: dict[str, Any]
    facts: list[ConnectionFacts] = field(default_factory=list)
    ledger: PageLedger | None = None


class Analyzer:
    """The analysis of one capture: a ``ConnectionFacts`` fold per connection (``sink_for`` is the TCP
    sink factory), then grouping and judgement (``finish``). Whoever drives TCP reassembly (the CLI's
    pipeline, a live watcher) owns the capture; nothing here opens files."""

    def __init__(self, options: Options | None = None, page_size: int = TARGET_PAGE_SIZE,
                 keylog: KeyLog | None = None) -> None:
        self.options = options or Options()
        self.keylog = keylog
        self.page_size = page_size
        self.ledger = PageLedger(page_size, late_after=self.options.stall_threshold)
        self.repeats = RepeatedPages()
        self.facts: list[ConnectionFacts] = []
        self.retired = Retired()       # what a live view judged for good and dropped (analysis.live)
        self.all_groups: list[MigrationGroup] = []   # the last ``judge``'s groups, migrations or not

    def sink_for(self, conn: Connection) -> StreamSink:
        """The TCP sink of one connection: its channels' parsers feeding its facts, behind TLS decryption
        when a key log was given."""
        f = ConnectionFacts(conn, self.ledger, self.page_size, repeats=self.repeats)
        self.facts.append(f)
        if self.keylog is None:
            return f.sink
        from dissectors.tls import TlsStreamSink

        tls = TlsStreamSink(f.sink, self.keylog, skip_unread=not self.options.tls_verify)
        f.tls = tls.status
        return tls

    def sweep(self, last_ts: float, forget: Callable[[Collection[Any]], None]) -> int:
        """Retire closed connections outside any migration, quiet for ``RETIRE_AFTER`` capture seconds
        before ``last_ts`` (``analyze`` calls it as connections pile up; a live view retires through
        ``retire_others``): their summary is kept in ``retired.others``, their facts and TCP state
        (``forget``: the tracker's) are freed. Returns how many connections were retired."""
        gone = self.retire_others(group(self.facts), last_ts)
        if gone:
            dropped = {id(f) for f in gone}
            self.facts = [f for f in self.facts if id(f) not in dropped]
            forget([f.conn for f in gone])
            for f in gone:
                f.release()
        return len(gone)

    def retire_others(self, groups: list[MigrationGroup], last_ts: float) -> list[ConnectionFacts]:
        """Summarise the connections of ``groups`` that are no migration and quiet (``quiet``) into
        ``retired.others``; return their facts (the caller drops them)."""
        gone: list[ConnectionFacts] = []
        for g in groups:
            if _is_migration(g.connections) or not quiet(g.connections, last_ts):
                continue
            gone += g.connections
        gone.sort(key=lambda f: f.conn.index)
        for f in gone:
            self.retired.others.add(f)
            self.retired.tls.add(f)
        return gone

    def judge(self, end: float, judge_one: JudgeOne | None = None) -> tuple[list[MigrationGroup], list[dict[str, Any]]]:
        """Group the connections seen so far into migrations and judge each as if the capture ended at
        ``end``. ``finish`` does this once at the end; a live view (``analysis.live``) does it on the facts
        so far while the capture is still running. Judging changes no fact. Migrations a live view retired
        (``retired``) keep their numbers: the others are numbered after them. ``judge_one`` (a live view's
        cache of settled migrations) stands in for ``self.judge_one``."""
        one = judge_one or self.judge_one
        self.all_groups = group(self.facts)
        groups = [g for g in self.all_groups if _is_migration(g.connections)]
        ids = self.retired.ids([group_key(g) for g in groups])
        relays = {i: {**r, "peer": ids[r["peer"]]} for i, r in pair_relays(groups).items()}
        migrations = [one(g, ids[i], end, relays.get(i)) for i, g in enumerate(groups)]
        tie_relay_outcomes(migrations)
        return groups, migrations

    def judge_one(self, g: MigrationGroup, index: int, end: float,
                  relay: dict[str, Any] | None = None) -> dict[str, Any]:
        return MigrationJudge(g, index, self.ledger, end, self.options, self.repeats, relay=relay).run()

    def finish(self, capture: dict[str, Any]) -> Analysis:
        """Judge every migration once the capture (summarised in ``capture``, with ``last_time``) ended."""
        options, facts, ledger = self.options, self.facts, self.ledger
        groups, migrations = self.judge(capture["last_time"] or 0.0)
        in_migration = {id(f) for g in groups for f in g.connections}
        store = self.retired.others
        for f in facts:
            if id(f) not in in_migration:
                store.add(f)
        others = store.listed()
        limits = list(capture.pop("limits", []))
        if store.over:
            over = sum(store.over.values())
            limits.append({"limit": "other_connections_listed", "bound": store.cap, "over": over,
                           "effect": f"{store.total} connections carry no migration; the first {store.cap} "
                                     f"are listed, the other {over} only counted by kind: "
                                     + ", ".join(f"{k} {n}" for k, n in sorted(store.over.items()))})
        if self.retired.migrations:
            migrations = sorted(self.retired.load() + migrations, key=lambda m: m["id"])
        findings = len(limits) + (capture.get("stopped") is not None) + sum(map(migration_findings, migrations))
        if self.keylog is not None:
            capture["keylog"] = keylog_summary(self.keylog, facts, self.retired.tls)
            capture["keylog"]["authenticated"] = "every record" if self.options.tls_verify else "records read"
        report = {
            "schema": SCHEMA,
            "tool": f"migshark {__version__}",
            "capture": capture,
            "options": {"qemu_version": options.qemu_version, "stall_threshold": options.stall_threshold,
                        "progress_timeout": options.progress_timeout},
            "migrations": migrations,
            "other_connections": others,
            "findings": findings,
        }
        if limits:
            report["limits"] = limits
        return Analysis(report, facts, ledger)


class Others:
    """Connections outside any migration, as the report lists them: the ``cap`` lowest-indexed as their
    summary (``Connection.to_dict`` and kind), every other one only counted by kind. Fed one connection
    at a time in any order (retired while the capture runs, then the rest at the end), it holds at most
    ``cap`` summaries (docs/limits.md)."""

    def __init__(self, cap: int = MAX_OTHERS_LISTED) -> None:
        self.cap = cap
        self.total = 0
        self.over: Counter[str] = Counter()
        self._heap: list[tuple[int, str, dict[str, Any] | None]] = []   # (-index, kind, summary): max-heap

    def add(self, f: ConnectionFacts) -> None:
        self.total += 1
        kind = f.kind or "silent"
        index = f.conn.index
        heap = self._heap
        if len(heap) >= self.cap:
            if index > -heap[0][0]:
                self.over[kind] += 1          # never listed: no summary made
                return
            _, dropped, _ = heapq.heapreplace(heap, (-index, kind, f.conn.to_dict() | {"kind": kind}))
            self.over[dropped] += 1
            return
        heapq.heappush(heap, (-index, kind, f.conn.to_dict() | {"kind": kind}))

    def listed(self) -> list[dict[str, Any]]:
        return [d for _, _, d in sorted(self._heap, reverse=True) if d is not None]


class TlsTally:
    """What the key log did for connections already retired (``keylog_summary`` adds the rest)."""

    def __init__(self) -> None:
        self.connections = 0
        self.decrypted = 0
        self.not_decrypted: list[int] = []
        self.problems: list[str] = []

    def add(self, f: ConnectionFacts) -> None:
        if f.tls is None or not f.tls.tls:
            return
        self.connections += 1
        self.decrypted += f.decrypted
        if not f.decrypted and len(self.not_decrypted) < NOT_DECRYPTED_LISTED:
            self.not_decrypted.append(f.conn.index)
        if len(self.problems) < 50:
            self.problems += [f"connection {f.conn.index}: {p}" for p in f.tls.problems][:50 - len(self.problems)]


class Retired:
    """What a run already judged for good and dropped: migrations (a live view, ``analysis.live``), kept on
    disk so that memory stays flat over hours; connections outside any migration (``Others``, bounded in
    memory) and their key log tally. ``finish`` puts them back in the report.

    The migrations' reports go to a temporary file through one zlib stream (each batch pickled, with its
    length): successive reports share most of their keys and values, so each costs a few hundred bytes on
    disk instead of ~3 KB pickled alone (``disk_bytes``; docs/limits.md). The final report holds every one
    of them, as ``analyze``'s would."""

    def __init__(self) -> None:
        self.migrations = 0
        self.others = Others()
        self.tls = TlsTally()
        self.disk_bytes = 0
        self._file: IO[bytes] | None = None
        self._zip: Any = None
        # Group keys (``group_key``) of retired migrations above the oldest migration still held, and how
        # many retired ones are below it: what numbering the held ones needs (``ids``).
        self._keys: list[tuple[float, int]] = []
        self._below = 0

    def ids(self, keys: list[tuple[float, int]]) -> list[int]:
        """The numbers of the held migrations whose group keys are ``keys`` (in group order): each counts
        the migrations before it, retired or held, as ``analyze`` numbers them."""
        return [self._below + bisect_left(self._keys, k) + i for i, k in enumerate(keys)]

    def prune(self, oldest_held: tuple[float, int] | None) -> None:
        """Only the count of retired migrations older than every held one matters any more (later
        migrations start later still)."""
        cut = len(self._keys) if oldest_held is None else bisect_left(self._keys, oldest_held)
        if cut:
            self._below += cut
            del self._keys[:cut]

    def add(self, migrations: list[dict[str, Any]], keys: Collection[tuple[float, int]] = ()) -> None:
        if not migrations:
            return
        for k in keys:
            insort(self._keys, k)
        import pickle  # here: only a run that retires migrations (watch) pays the imports

        if self._file is None:
            import tempfile

            self._file = tempfile.TemporaryFile(prefix="migshark-retired-")  # noqa: SIM115 - closed in load()
            self._zip = zlib.compressobj(RETIRED_ZLIB_LEVEL)
        blob = pickle.dumps(migrations, protocol=pickle.HIGHEST_PROTOCOL)
        self._write(self._zip.compress(len(blob).to_bytes(8, "little") + blob))
        self.migrations += len(migrations)

    def _write(self, data: bytes) -> None:
        if data:
            assert self._file is not None
            self._file.write(data)
            self.disk_bytes += len(data)

    def load(self) -> list[dict[str, Any]]:
        migrations: list[dict[str, Any]] = []
        if self._file is None:
            return migrations
        import pickle

        self._write(self._zip.flush())
        self._file.seek(0)
        unzip = zlib.decompressobj()
        data = bytearray()
        while chunk := self._file.read(1 << 20):
            data += unzip.decompress(chunk)
            pos = 0
            while len(data) - pos >= 8:
                n = int.from_bytes(data[pos:pos + 8], "little")
                if len(data) - pos - 8 < n:
                    break
                migrations += pickle.loads(data[pos + 8:pos + 8 + n])  # noqa: S301 - our own temporary file
                pos += 8 + n
            del data[:pos]
        self._file.close()
        self._file = None
        self._zip = None
        return migrations


def keylog_summary(keylog: KeyLog, facts: list[ConnectionFacts], retired: TlsTally | None = None) -> dict[str, Any]:
    """What the key log did: connections decrypted, TLS connections it had no secrets for, problems (with
    ``retired``: those of connections already retired too)."""
    tally = TlsTally()
    if retired is not None:
        tally.connections, tally.decrypted = retired.connections, retired.decrypted
        tally.not_decrypted, tally.problems = list(retired.not_decrypted), list(retired.problems)
    for f in sorted(facts, key=lambda f: f.conn.index):
        tally.add(f)
    return {
        "file": keylog.name,
        "client_randoms": len(keylog),
        "tls_connections": tally.connections,
        "decrypted": tally.decrypted,
        "not_decrypted": sorted(tally.not_decrypted),
        "problems": tally.problems + list(keylog.conflicts[:10]),
    }


def _signature(f: ConnectionFacts) -> bytes:
    return bytes(f.dirs[0].first[:64])


RelayFeatures = tuple["Counter[bytes]", float, float]


def relay_features(g: MigrationGroup) -> RelayFeatures:
    """What ``pair_relays`` compares of a group: its channels' openings, its start and its end."""
    conns = g.connections
    return (Counter(s for s in map(_signature, conns) if s), min((start_ts(f) for f in conns), default=0.0),
            max((f.conn.last_ts for f in conns), default=0.0))


def pair_relays(groups: list[MigrationGroup],
                features: Callable[[MigrationGroup], RelayFeatures] = relay_features) -> dict[int, dict[str, Any]]:
    """Pair the two legs of a migration relayed by a proxy: same channel openings, other endpoint.

    The leg whose connections open first faces the source (its server is the relay); the other leg
    faces the real destination, and only its accept order and its closes are the destination's.
    ``features``: ``relay_features`` or a cache of it (a live view's groups that no longer change).
    """
    feats = [features(g) for g in groups]
    sigs = [x[0] for x in feats]
    starts = [x[1] for x in feats]
    ends = [x[2] for x in feats]
    out: dict[int, dict[str, Any]] = {}
    # Only legs with equal openings can pair: bucket them (a capture may hold 1,000s of migrations), then
    # look at the pairs of each bucket in the order of the full pairwise scan. A bucket with more than
    # MAX_RELAY_BUCKET legs to several destinations is left unpaired (which leg relays which is moot).
    buckets: dict[frozenset[tuple[bytes, int]], list[int]] = {}
    for i, sig in enumerate(sigs):
        if sig:
            buckets.setdefault(frozenset(sig.items()), []).append(i)
    pairs = []
    for members in buckets.values():
        if len(members) < 2 or len({groups[i].destination for i in members}) < 2:
            continue
        if len(members) > MAX_RELAY_BUCKET:
            continue
        pairs += [(i, j) for i in members for j in members if i < j]
    for i, j in sorted(pairs):
        if groups[i].destination == groups[j].destination:
            continue
        if starts[i] > ends[j] or starts[j] > ends[i]:
            continue        # the two legs of a relay are open at the same time
        first, second = (i, j) if starts[i] <= starts[j] else (j, i)
        out[first] = {"side": "source", "peer": second, "peer_destination": groups[second].destination,
                      "note": "this leg ends at a relay; its accept order is the source's connect order and "
                              "its closes are the relay's, not the destination's"}
        out[second] = {"side": "destination", "peer": first, "peer_destination": groups[first].destination,
                       "note": "this leg is relayed; its accept order is the destination's"}
    return out


def tie_relay_outcomes(migrations: list[dict[str, Any]]) -> None:
    """A relay's source-side leg ends as the destination-side leg does: the relay's EOF or closes say
    nothing of what the destination loaded (both legs are among ``migrations``: neither retires)."""
    by_id = {m["id"]: m for m in migrations}
    for m in migrations:
        relay = m.get("relay")
        if not relay or relay["side"] != "source":
            continue
        peer = by_id[relay["peer"]]
        own = m["outcome"]
        m["outcome"] = {**peer["outcome"],
                        "reason": f"{peer['outcome']['reason']} (the destination-side leg, migration {peer['id']})",
                        "source_leg": own}


def group_key(g: MigrationGroup) -> tuple[float, int]:
    """Where ``group`` puts a migration among all of a capture's: its first connection's start and index."""
    f = g.legs[0][0]
    return start_ts(f), f.conn.index


def quiet(conns: list[ConnectionFacts], last_ts: float) -> bool:
    """Every connection closed, the last one ``RETIRE_AFTER`` seconds before ``last_ts``."""
    return all(f.conn.closed for f in conns) and last_ts - max(f.conn.last_ts for f in conns) >= RETIRE_AFTER


def _is_migration(conns: list[ConnectionFacts]) -> bool:
    """A group is a migration if a connection carries a migration channel's bytes. TLS alone says
    little (any TLS service): it takes at least two TLS connections to one endpoint."""
    if any(f.kind in ("main", "main-recovery", "multifd", "preempt-candidate") for f in conns):
        return True
    return sum(f.kind == "tls" for f in conns) >= 2
