"""Group a capture's connections into migrations.

Per destination endpoint, a connection joins a migration that is still alive when it opens (one of its
connections has not ended yet) unless it would be that migration's second main channel. A recovered
main channel (RECV_BITMAP first, no QEVM) joins the latest paused postcopy migration, whatever the port
(``migrate-recover`` usually listens on a new one). Multifd channels carry the source UUID in their
hello; a channel whose UUID disagrees with the migration's never joins it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dissectors.analysis.facts import ConnectionFacts


@dataclass
class MigrationGroup:
    destination: str
    legs: list[list[ConnectionFacts]] = field(default_factory=list)   # leg 0, then each recovery

    @property
    def connections(self) -> list[ConnectionFacts]:
        return [f for leg in self.legs for f in leg]

    @property
    def current(self) -> list[ConnectionFacts]:
        return self.legs[-1]

    def endpoints(self) -> set[str]:
        return {f.endpoint for f in self.current} or {self.destination}

    def alive_at(self, ts: float) -> bool:
        return any(_end(f) >= ts for f in self.current)

    def uuid(self) -> str | None:
        for f in self.connections:
            if f.hello and f.hello.get("uuid"):
                return str(f.hello["uuid"])
        return None

    def has_main(self) -> bool:
        return any(f.kind in ("main", "main-recovery") for f in self.current)

    def postcopy(self) -> bool:
        return any(f.commands("POSTCOPY_ADVISE") or f.commands("POSTCOPY_RUN") for f in self.connections)


def _end(f: ConnectionFacts) -> float:
    """When the connection was done with: the source's FIN, an RST, or its replacement; else infinity."""
    c = f.conn
    how = c.end_how
    if "rst" in how or "superseded" in how or c.fin_ts[0] is not None:
        return c.last_ts
    return float("inf")


def start_ts(f: ConnectionFacts) -> float:
    c = f.conn
    for t in (c.handshake_ts, c.synack_ts, c.syn_ts, c.first_ts):
        if t is not None:
            return t
    return 0.0


def role_ts(f: ConnectionFacts) -> float:
    """When the destination gives the connection its role: at accept for plain TCP; for TLS once the
    handshake completed, since QEMU upgrades a TLS channel first and identifies it after (so TLS
    channels get their roles in the order their handshakes complete, which a slow Finished can change)."""
    t = f.tls_done_ts if f.encrypted else None
    return t if t is not None else start_ts(f)


def _paused_candidates(groups: list[MigrationGroup], f: ConnectionFacts, ts: float) -> list[MigrationGroup]:
    """Migrations a recovered main channel may resume: postcopy ones (advised, or with a preempt-like
    channel when the main channel's commands were not readable) whose main channel has ended by now.
    Those towards the same destination host come last, so they win."""
    host = f.conn.server[0]

    def postcopyish(g: MigrationGroup) -> bool:
        return g.postcopy() or any(x.kind in ("preempt-candidate", None) for x in g.connections)

    def main_ended(g: MigrationGroup) -> bool:
        return all(_end(x) <= ts for x in g.current if x.kind in ("main", "main-recovery"))

    found = [g for g in groups if postcopyish(g) and main_ended(g)]
    return sorted(found, key=lambda g: g.destination.rsplit(":", 1)[0].strip("[]") == host)


def group(facts: list[ConnectionFacts]) -> list[MigrationGroup]:
    groups: list[MigrationGroup] = []
    for f in sorted(facts, key=start_ts):
        ts = start_ts(f)
        if f.kind == "main-recovery":
            paused = _paused_candidates(groups, f, ts)
            if paused:
                paused[-1].legs.append([f])
                continue
        target = None
        for g in reversed(groups):
            if f.endpoint not in g.endpoints() or not g.alive_at(ts):
                continue
            if f.kind in ("main", "main-recovery") and g.has_main():
                continue
            uuid = f.hello.get("uuid") if f.hello else None
            if uuid and g.uuid() not in (None, uuid):
                continue
            target = g
            break
        if target is None:
            # A recovery leg on the same endpoint: a new connection after the leg's main closed.
            target = MigrationGroup(f.endpoint, [[]])
            groups.append(target)
        target.current.append(f)
    return groups
