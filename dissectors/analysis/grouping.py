"""Group a capture's connections into migrations.

Per destination endpoint, a connection joins a migration that is still alive when it opens (one of its
connections has not ended yet) unless it would be that migration's second main channel. A recovered
main channel (RECV_BITMAP first, no QEVM) joins the latest paused postcopy migration (one whose main
channel ended), whatever the port (``migrate-recover`` usually listens on a new one), and takes with it
into the new leg the channels its endpoint accepted just before it, which had opened a migration of their
own (:func:`_early_channels`). Multifd channels carry the source UUID in their
hello; a channel whose UUID disagrees with the migration's never joins it.

Under TLS without the key log the contents are hidden, but a recovered main channel shows in its record
sizes (``TlsShape.looks_recovery``): such a channel opens a new leg of the latest hidden TLS migration
between the same two hosts whose main channel (its first channel that wrote something other than a multifd
hello) had ended before it opened, with no SHUT-sized record from the destination (a migration the
destination acknowledged is over; one that ended unacknowledged is a pause or a failure, and only a paused
postcopy migration is resumed), whatever the port (:func:`tls_paused`).

Near-linear in the number of connections (a port scan or a day of migrations to one port holds
100,000s): connections are taken in start order, so a migration that is not alive when one opens is
never alive again (unless a recovery leg revives it); live migrations are indexed per endpoint, in
creation order, in three lists (any, without a main channel, per source UUID), each pruned lazily of
entries that no longer fit. The search for a paused migration a recovered main channel resumes looks at
no more than :data:`RECOVERY_CANDIDATES` candidates (docs/limits.md).
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field

from dissectors.analysis.facts import ConnectionFacts

#: A recovered main channel looks at most at this many paused-migration candidates (latest first).
RECOVERY_CANDIDATES = 4096

_MAINS = ("main", "main-recovery")
_INF = float("inf")


@dataclass(slots=True)
class MigrationGroup:
    destination: str
    legs: list[list[ConnectionFacts]] = field(default_factory=list)   # leg 0, then each recovery
    # Incremental state kept by ``group`` (the current leg's end, main channel and endpoint; the first UUID).
    order: int = field(default=0, repr=False, compare=False)
    _end_max: float = field(default=-_INF, repr=False, compare=False)
    _main_end_max: float = field(default=-_INF, repr=False, compare=False)
    _has_main: bool = field(default=False, repr=False, compare=False)
    _uuid: str | None = field(default=None, repr=False, compare=False)
    _postcopyish: bool = field(default=False, repr=False, compare=False)

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
        return any(f.kind in _MAINS for f in self.current)

    def postcopy(self) -> bool:
        return any(_postcopy(f) for f in self.connections)

    def _add(self, f: ConnectionFacts, end: float, new_leg: bool = False) -> None:
        if new_leg:
            self.legs.append([f])
            self._end_max = self._main_end_max = -_INF
            self._has_main = False
        else:
            self.current.append(f)
        self._end_max = max(self._end_max, end)
        if f.kind in _MAINS:
            self._has_main = True
            self._main_end_max = max(self._main_end_max, end)
        if self._uuid is None:
            self._uuid = _uuid(f)
        if not self._postcopyish:
            self._postcopyish = f.kind in ("preempt-candidate", None) or _postcopy(f)


def _postcopy(f: ConnectionFacts) -> bool:
    return bool(f.commands("POSTCOPY_ADVISE") or f.commands("POSTCOPY_RUN"))


def _uuid(f: ConnectionFacts) -> str | None:
    return str(f.hello["uuid"]) if f.hello and f.hello.get("uuid") else None


def _end(f: ConnectionFacts) -> float:
    """When the connection was done with: the source's FIN, an RST, or its replacement; else infinity."""
    c = f.conn
    how = c.end_how
    if "superseded" in how or c.fin_ts[0] is not None or any(t is not None for t in c.rst_ts):
        return c.last_ts
    return _INF


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


def _host(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0].strip("[]")


def _file(entries: list[tuple[int, int, MigrationGroup]], entry: tuple[int, int, MigrationGroup]) -> None:
    """Insert in creation order (a new migration's entry goes last: an append)."""
    if not entries or entries[-1][0] <= entry[0]:
        entries.append(entry)
    else:
        insort(entries, entry, key=lambda e: e[0])


class _Index:
    """Live migrations per endpoint (creation order), and postcopy-like ones per destination host."""

    def __init__(self) -> None:
        self.live: dict[str, list[tuple[int, int, MigrationGroup]]] = {}
        self.no_main: dict[str, list[tuple[int, int, MigrationGroup]]] = {}
        self.by_uuid: dict[tuple[str, str | None], list[tuple[int, int, MigrationGroup]]] = {}
        self.paused_all: list[tuple[int, int, MigrationGroup]] = []
        self.paused_host: dict[str, list[tuple[int, int, MigrationGroup]]] = {}
        self.postcopyish: set[int] = set()

    def register(self, g: MigrationGroup, endpoint: str) -> None:
        """(Re-)file ``g`` under its current leg's endpoint (entries carry the leg count: stale ones drop)."""
        entry = (g.order, len(g.legs), g)
        _file(self.live.setdefault(endpoint, []), entry)
        if not g._has_main:
            _file(self.no_main.setdefault(endpoint, []), entry)
        _file(self.by_uuid.setdefault((endpoint, g._uuid), []), entry)
        self.note_postcopyish(g)

    def joined(self, g: MigrationGroup, endpoint: str, had_uuid: str | None) -> None:
        if g._uuid != had_uuid:
            _file(self.by_uuid.setdefault((endpoint, g._uuid), []), (g.order, len(g.legs), g))
        self.note_postcopyish(g)

    def note_postcopyish(self, g: MigrationGroup) -> None:
        if g._postcopyish and g.order not in self.postcopyish:
            self.postcopyish.add(g.order)
            entry = (g.order, 0, g)
            _file(self.paused_all, entry)
            _file(self.paused_host.setdefault(_host(g.destination), []), entry)

    @staticmethod
    def latest(entries: list[tuple[int, int, MigrationGroup]] | None, ts: float, endpoint: str,
               need_no_main: bool = False, uuid: str | None = None, check_uuid: bool = False) -> MigrationGroup | None:
        """The latest live migration in ``entries`` that fits; entries that never will again are dropped."""
        if not entries:
            return None
        i = len(entries) - 1
        while i >= 0:
            _, legs, g = entries[i]
            stale = (legs != len(g.legs) or g._end_max < ts or (need_no_main and g._has_main)
                     or (check_uuid and g._uuid != uuid))
            if stale:
                del entries[i]
                i -= 1
                continue
            if g.current and g.current[0].endpoint != endpoint:
                del entries[i]
                i -= 1
                continue
            return g
        return None

    def paused(self, f: ConnectionFacts, ts: float) -> MigrationGroup | None:
        """The migration a recovered main channel resumes: the latest postcopy-like one whose main channel
        has ended, one towards the same destination host first."""
        for entries in (self.paused_host.get(f.conn.server[0]), self.paused_all):
            if not entries:
                continue
            looked = 0
            for i in range(len(entries) - 1, -1, -1):
                g = entries[i][2]
                if g._has_main and g._main_end_max <= ts:     # (no main channel: nothing was paused)
                    return g
                looked += 1
                if looked >= RECOVERY_CANDIDATES:
                    break
        return None


def _hidden_tls(f: ConnectionFacts) -> bool:
    return f.kind == "tls" and not f.decrypted


def tls_main(leg: list[ConnectionFacts]) -> ConnectionFacts | None:
    """A hidden TLS leg's main channel as the record layer shows it: the first (in role order) whose first
    write is not a multifd hello (``roles.tls_roles`` names it so too)."""
    for f in sorted(leg, key=role_ts):
        shape = f.tls_shape
        if shape.handshake_done and shape.sides[0].first_len is not None and not shape.looks_multifd():
            return f
    return None


def tls_paused(g: MigrationGroup, f: ConnectionFacts, ts: float) -> bool:
    """Whether hidden TLS channel ``f``, a recovered main channel by its record sizes, opening at ``ts``,
    resumes ``g``: ``g``'s current leg is hidden TLS, between the same two hosts, its main channel ended
    (closed or reset) by ``ts``, and no record of SHUT's size came from the destination after the source's
    last one (an acknowledged migration is over)."""
    leg = g.current
    if not leg or not all(_hidden_tls(x) for x in leg):
        return False
    main = tls_main(leg)
    if main is None or (main.conn.client[0], main.conn.server[0]) != (f.conn.client[0], f.conn.server[0]):
        return False
    c = main.conn
    if not any(t is not None and t <= ts for t in (*c.fin_ts, *c.rst_ts)):
        return False
    return not any(x.tls_shape.acknowledged() for x in leg)


def _early_channels(index: _Index, f: ConnectionFacts, ts: float) -> MigrationGroup | None:
    """The migration that connections to ``f``'s endpoint opened just before recovered main channel ``f``:
    still alive, no main channel, nothing but its first leg, none of it hidden TLS."""
    early = index.latest(index.no_main.get(f.endpoint), ts, f.endpoint, need_no_main=True)
    if early is None or len(early.legs) != 1 or any(_hidden_tls(x) for x in early.legs[0]):
        return None
    return early


def group(facts: list[ConnectionFacts]) -> list[MigrationGroup]:
    groups: list[MigrationGroup] = []
    index = _Index()
    hidden: list[MigrationGroup] = []        # migrations whose first channel is hidden TLS, in creation order
    for f in sorted(facts, key=start_ts):
        ts = start_ts(f)
        end = _end(f)
        if f.kind == "main-recovery":
            g = index.paused(f, ts)
            if g is not None:
                early = _early_channels(index, f, ts)
                if early is not None and early is not g:
                    # channels of this recovery the destination accepted before its main channel (a 7.2
                    # source opens the preempt channel right after main; a reordering path swaps them):
                    # they opened a migration of their own; they are this leg's first channels
                    first, *rest = early.legs[0]
                    g._add(first, _end(first), new_leg=True)
                    for x in rest:
                        g._add(x, _end(x))
                    g._add(f, end)
                    early.legs = []                 # (its index entries go stale)
                    groups.remove(early)
                else:
                    g._add(f, end, new_leg=True)
                index.register(g, f.endpoint)
                continue
        elif hidden and _hidden_tls(f) and f.tls_shape.looks_recovery():
            g = next((h for h in reversed(hidden[-RECOVERY_CANDIDATES:]) if tls_paused(h, f, ts)), None)
            if g is not None:
                g._add(f, end, new_leg=True)
                index.register(g, f.endpoint)
                continue
        ep = f.endpoint
        uuid = _uuid(f)
        if f.kind in _MAINS:
            target = index.latest(index.no_main.get(ep), ts, ep, need_no_main=True)
            if target is not None and uuid and target._uuid not in (None, uuid):
                target = None      # (a main channel carries no hello; kept for the rule's sake)
        elif uuid:
            a = index.latest(index.by_uuid.get((ep, None)), ts, ep, uuid=None, check_uuid=True)
            b = index.latest(index.by_uuid.get((ep, uuid)), ts, ep, uuid=uuid, check_uuid=True)
            target = max((x for x in (a, b) if x is not None), key=lambda x: x.order, default=None)
        else:
            target = index.latest(index.live.get(ep), ts, ep)
        if target is None:
            # A recovery leg on the same endpoint: a new connection after the leg's main closed.
            target = MigrationGroup(ep, [[]], order=len(groups))
            groups.append(target)
            target._add(f, end)
            index.register(target, ep)
            if _hidden_tls(f):
                hidden.append(target)
            continue
        had = target._uuid
        target._add(f, end)
        index.joined(target, ep, had)
    return groups
