"""One streaming pass over a capture's connections: per-connection facts, then judgement.

Memory is bounded by the number of connections (facts keep bounded summaries; the reassembler bounds
its out-of-order buffer), never by the capture size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dissectors import __version__
from dissectors.analysis.facts import ConnectionFacts
from dissectors.analysis.grouping import MigrationGroup, group, start_ts
from dissectors.analysis.judge import MigrationJudge, Options
from dissectors.analysis.ledger import PageLedger
from dissectors.analysis.repeats import RepeatedPages
from dissectors.channels import TARGET_PAGE_SIZE
from dissectors.tcp import Connection
from dissectors.tcp.sink import StreamSink
from dissectors.tls import KeyLog, TlsStreamSink

SCHEMA = 1
#: Connections outside any migration listed in the report at most (the rest counted; docs/limits.md).
MAX_OTHERS_LISTED = 2_000
#: Relay legs are paired among at most this many migrations with the same channel openings.
MAX_RELAY_BUCKET = 256


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

    def sink_for(self, conn: Connection) -> StreamSink:
        """The TCP sink of one connection: its channels' parsers feeding its facts, behind TLS decryption
        when a key log was given."""
        f = ConnectionFacts(conn, self.ledger, self.page_size, repeats=self.repeats)
        self.facts.append(f)
        if self.keylog is None:
            return f.sink
        tls = TlsStreamSink(f.sink, self.keylog)
        f.tls = tls.status
        return tls

    def finish(self, capture: dict[str, Any]) -> Analysis:
        """Judge every migration once the capture (summarised in ``capture``, with ``last_time``) ended."""
        options, facts, ledger = self.options, self.facts, self.ledger
        end = capture["last_time"] or 0.0
        groups = [g for g in group(facts) if _is_migration(g.connections)]
        in_migration = {id(f) for g in groups for f in g.connections}
        relays = pair_relays(groups)
        migrations = [MigrationJudge(g, i, ledger, end, options, self.repeats, relay=relays.get(i)).run()
                      for i, g in enumerate(groups)]
        tie_relay_outcomes(migrations)
        rest = [f for f in facts if id(f) not in in_migration]
        others = [f.conn.to_dict() | {"kind": f.kind or "silent"} for f in rest[:MAX_OTHERS_LISTED]]
        limits = list(capture.pop("limits", []))
        if len(rest) > MAX_OTHERS_LISTED:
            kinds = Counter(f.kind or "silent" for f in rest[MAX_OTHERS_LISTED:])
            limits.append({"limit": "other_connections_listed", "bound": MAX_OTHERS_LISTED,
                           "over": len(rest) - MAX_OTHERS_LISTED,
                           "effect": f"{len(rest)} connections carry no migration; the first {MAX_OTHERS_LISTED} "
                                     f"are listed, the other {len(rest) - MAX_OTHERS_LISTED} only counted by kind: "
                                     + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))})
        findings = len(limits) + sum(len(m["misclassifications"]) + len(m["stalls"]) + len(m["unreadable"])
                       + len(m["unsupported"]) + (m["outcome"]["status"] == "failed")
                       for m in migrations if m.get("relay", {}).get("side") != "source")
        if self.keylog is not None:
            capture["keylog"] = keylog_summary(self.keylog, facts)
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


def keylog_summary(keylog: KeyLog, facts: list[ConnectionFacts]) -> dict[str, Any]:
    """What the key log did: connections decrypted, TLS connections it had no secrets for, problems."""
    tls = [f for f in facts if f.tls is not None and f.tls.tls]
    return {
        "file": keylog.name,
        "client_randoms": len(keylog),
        "tls_connections": len(tls),
        "decrypted": sum(f.decrypted for f in tls),
        "not_decrypted": [f.conn.index for f in tls if not f.decrypted],
        "problems": [f"connection {f.conn.index}: {p}" for f in tls for p in f.tls.problems][:50]
        + list(keylog.conflicts[:10]),
    }


def _signature(f: ConnectionFacts) -> bytes:
    return bytes(f.dirs[0].first[:64])


def pair_relays(groups: list[MigrationGroup]) -> dict[int, dict[str, Any]]:
    """Pair the two legs of a migration relayed by a proxy: same channel openings, other endpoint.

    The leg whose connections open first faces the source (its server is the relay); the other leg
    faces the real destination, and only its accept order and its closes are the destination's.
    """
    sigs = [Counter(s for s in map(_signature, g.connections) if s) for g in groups]
    starts = [min((start_ts(f) for f in g.connections), default=0.0) for g in groups]
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
        a, b = groups[i], groups[j]
        if a.destination == b.destination:
            continue
        first, second = (i, j) if starts[i] <= starts[j] else (j, i)
        out[first] = {"side": "source", "peer": second, "peer_destination": groups[second].destination,
                      "note": "this leg ends at a relay; its accept order is the source's connect order and "
                              "its closes are the relay's, not the destination's"}
        out[second] = {"side": "destination", "peer": first, "peer_destination": groups[first].destination,
                       "note": "this leg is relayed; its accept order is the destination's"}
    return out


def tie_relay_outcomes(migrations: list[dict[str, Any]]) -> None:
    """A relay's source-side leg ends as the destination-side leg does: the relay's EOF or closes say
    nothing of what the destination loaded."""
    for m in migrations:
        relay = m.get("relay")
        if not relay or relay["side"] != "source":
            continue
        peer = migrations[relay["peer"]]
        own = m["outcome"]
        m["outcome"] = {**peer["outcome"],
                        "reason": f"{peer['outcome']['reason']} (the destination-side leg, migration {peer['id']})",
                        "source_leg": own}


def _is_migration(conns: list[ConnectionFacts]) -> bool:
    """A group is a migration if a connection carries a migration channel's bytes. TLS alone says
    little (any TLS service): it takes at least two TLS connections to one endpoint."""
    if any(f.kind in ("main", "main-recovery", "multifd", "preempt-candidate") for f in conns):
        return True
    return sum(f.kind == "tls" for f in conns) >= 2
