"""A live view of an analysis in progress: events as each thing happens, from the same judge as the report.

``LiveView.update`` judges the facts seen so far with ``Analyzer.judge`` (the very judgement ``finish``
makes at the end of a capture, no second analyser) as if the capture ended *now*, and compares it with
the previous judgement: what is new becomes an event (a migration starts, a channel is accepted or its
role becomes known, a misclassification, a stall, postcopy start / pause / recovery, the outcome).

Time: ``now`` is the capture time of the last packet plus the wall-clock time since it arrived. During a
stall no packet arrives and capture time stands still, so a silent channel or a waiting page request is
judged on the wall clock too; each stall event says which clock decided it (``clock``: ``capture`` when
the packets alone show it, ``wall`` when only the time since the last packet does).

Events are plain dicts (docs/report-schema.md, "watch events"); nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from dissectors.analysis.engine import (
    RETIRE_AFTER,
    Analyzer,
    RelayFeatures,
    _is_migration,
    group_key,
    pair_relays,
    quiet,
    relay_features,
    tie_relay_outcomes,
)
from dissectors.analysis.facts import ConnectionFacts
from dissectors.analysis.grouping import MigrationGroup, group, start_ts
from dissectors.analysis.policies import BLOCKED, MAIN, PREEMPT, REAL_POLICIES, RECOVERY

SILENT_KINDS = ("preempt-as-main", "peek-blocked")
RETIRE_EVERY = 0.25    # wall seconds between attempts (or half of RETIRE_AFTER in capture time)
FAR = 1e6              # a judgement this far after the end must equal the one now for a migration to retire
FINAL_STATUSES = ("completed", "failed", "stalled")
Event = dict[str, Any]


class _Seen:
    """What was already said of one migration (what was said of its channels is kept per connection, in
    ``LiveView``: a channel said under one grouping may land in another)."""

    def __init__(self) -> None:
        self.generation: str | None = None
        self.stalls: dict[tuple[str, float | None], bool] = {}   # (kind, start) -> ended already said
        self.postcopy_run = False
        self.paused: set[int] = set()                        # leg numbers whose main channel was lost
        self.resumed: set[int] = set()                       # recovery legs seen
        self.outcome: str | None = None


class LiveView:
    """Diffs successive judgements of ``analyzer``'s facts into events.

    ``silent_threshold``: seconds a silent channel taken as main (or a peek blocked on one) must stay
    silent before it is reported (the judgement of such a channel is only a suspicion until then)."""

    def __init__(self, analyzer: Analyzer, silent_threshold: float = 1.0,
                 forget: Callable[[Collection[Any]], None] | None = None) -> None:
        self.analyzer = analyzer
        self.silent_threshold = silent_threshold
        #: Set (the tracker's ``forget``) to free finished migrations' state as the capture goes on.
        self.forget = forget
        # What was said, per connection index: the migration it was announced under (a migration's
        # identity while the grouping moves: see ``_identities``), its channel's (role, assigned role),
        # whether its misclassification was said.
        self._owner: dict[int, _Seen] = {}
        self._anchor: dict[int, _Seen] = {}
        self._channels: dict[int, tuple[str, str]] = {}
        self._misread: set[int] = set()
        self._last_retire = 0.0         # wall clock and capture time of the last attempt to retire
        self._last_retire_ts = float("-inf")
        # Settled migrations: every connection closed, and the judgement far later equal to the one then;
        # reused while nothing they depend on moves (their packets, the shared page ledger and repeats).
        self._settled: dict[tuple[str, int], tuple[tuple[Any, ...], dict[str, Any]]] = {}
        # Frozen groups: the first groups in start order, every connection closed, no postcopy, settled;
        # every other connection started after they all ended, so no connection can join them and they
        # weigh on no other group. They are not grouped again while their connections get no packet and
        # no connection starts before their end (``_judge``); the rest is grouped on its own.
        self._frozen: list[MigrationGroup] = []
        self._frozen_facts: dict[int, tuple[ConnectionFacts, tuple[Any, ...]]] = {}   # id -> (facts, version)
        self._frozen_end = float("-inf")
        self._features: dict[int, RelayFeatures] = {}          # id(group) -> relay_features, frozen groups
        self._diffed: dict[int, tuple[MigrationGroup, dict[str, Any]]] = {}   # frozen group -> judgement diffed
        self._open_policy: set[int] = set()    # migrations whose failure depends on a policy not yet pinned

    def update(self, last_ts: float | None, wall_idle: float = 0.0, final: bool = False) -> list[Event]:
        """Events since the last call. ``last_ts``: capture time of the last packet read; ``wall_idle``:
        wall-clock seconds since it arrived. ``final``: the stream has ended; judge on capture time alone,
        as the report does, and say again the outcome of a migration whose last said outcome the report
        does not hold (one said ``stalled`` on the wall clock that the bytes alone leave ``incomplete``)."""
        if last_ts is None:
            return []
        now = last_ts if final else last_ts + max(wall_idle, 0.0)
        groups, migrations = self._judge(now)
        self._open_policy = set() if final else self._policy_open(groups, migrations)
        events: list[Event] = []
        diffed = self._diffed
        for g, m, seen in zip(groups, migrations, self._identities(groups), strict=True):
            last = diffed.get(id(g))
            if last is not None and last[1] is m and seen is not None and not final:
                continue        # a frozen group judged as last time: nothing new to say
            base = {"migration": m["id"], "destination": m["destination"]}
            if "relay" in m:
                base["relay_side"] = m["relay"]["side"]
            if seen is None:
                # Its anchor: the first connection no migration said yet (a split: else its first).
                anchor = min((f.conn.index for f in g.connections if f.conn.index not in self._owner),
                             default=min(f.conn.index for f in g.connections))
                seen = self._anchor[anchor] = _Seen()
                gen = m["policy"].get("source_generation")
                events.append({"event": "migration-start", **base, "time": m["start_time"],
                               "source_generation": gen, "policy": m["policy"].get("name")})
                seen.generation = gen
            for f in g.connections:
                self._owner[f.conn.index] = seen
            events += self._migration(m, seen, base, last_ts, now, final)
            if id(g) in self._features:
                diffed[id(g)] = (g, m)
        if self.forget is not None:
            wall = time.monotonic()
            if wall - self._last_retire >= RETIRE_EVERY or last_ts - self._last_retire_ts >= RETIRE_AFTER / 2:
                self._last_retire, self._last_retire_ts = wall, last_ts
                self.retire(groups, migrations, last_ts)
        return events

    def _identities(self, groups: list[MigrationGroup]) -> list[_Seen | None]:
        """Which migration already announced each group is (None: a new one). The grouping of the
        connections so far can change between two judgements (timestamps that go back, a handshake that
        completes late: a connection moves to another group, two groups merge or one splits), so a
        migration is not known by its group's lowest connection. Each announced migration has an anchor,
        the first connection it brought (``_anchor``), and owns the connections last said under it
        (``_owner``): it goes to the group holding its anchor, else to the group holding most of its
        connections (ties: the first group); one group each. A group left without one is a new
        migration, as it is in the report."""
        owner, anchors = self._owner, self._anchor
        pairs: list[tuple[int, int, int, _Seen]] = []    # (not its anchor, -shared, group, migration)
        for i, g in enumerate(groups):
            shared: dict[int, list[Any]] = {}
            for f in g.connections:
                s = anchors.get(f.conn.index)
                if s is not None:
                    shared.setdefault(id(s), [0, 1, s])[1] = 0
                s = owner.get(f.conn.index)
                if s is not None:
                    shared.setdefault(id(s), [0, 1, s])[0] -= 1
            pairs += [(not_anchor, n, i, s) for n, not_anchor, s in shared.values()]
        out: list[_Seen | None] = [None] * len(groups)
        taken: set[int] = set()
        for _, _, i, s in sorted(pairs, key=lambda p: p[:3]):
            if out[i] is None and id(s) not in taken:
                out[i] = s
                taken.add(id(s))
        return out

    def _judge(self, end: float) -> tuple[list[MigrationGroup], list[dict[str, Any]]]:
        """``Analyzer.judge(end)``, incrementally: the frozen groups are not grouped again, their relay
        features are cached, and settled migrations reuse their judgement (``_judge_one``). The result is
        the same (tests/test_watch_incremental.py compares it with a full judgement at every step)."""
        an = self.analyzer
        rest = an.facts
        if self._frozen:
            ff = self._frozen_facts
            moved = next((k for k, g in enumerate(self._frozen)
                          if any(_version(f) != ff[id(f)][1] for f in g.connections)), None)
            if moved is not None:
                self._thaw(moved)          # packets on a frozen group: it and what it could touch thaw
            ff = self._frozen_facts
            rest = [f for f in rest if id(f) not in ff]
            if ff and not all(start_ts(f) > self._frozen_end for f in rest):
                self._thaw(0)              # a connection started before their end (time went back)
                rest = an.facts
        an.all_groups = self._frozen + group(rest)
        groups = [g for g in an.all_groups if _is_migration(g.connections)]
        ids = an.retired.ids([group_key(g) for g in groups])
        relays = {i: {**r, "peer": ids[r["peer"]]} for i, r in pair_relays(groups, self._relay_features).items()}
        migrations = [self._judge_one(g, ids[i], end, relays.get(i)) for i, g in enumerate(groups)]
        tie_relay_outcomes(migrations)
        self._freeze(groups, migrations)
        return groups, migrations

    def _relay_features(self, g: MigrationGroup) -> RelayFeatures:
        got = self._features.get(id(g))
        return got if got is not None else relay_features(g)

    def _thaw(self, keep: int) -> None:
        """Keep the first ``keep`` frozen groups at most: fewer while one of the others' connections
        started before they all ended."""
        thawed = self._frozen[keep:]
        later = min((start_ts(f) for g in thawed for f in g.connections), default=float("inf"))
        while keep and _end_of(self._frozen[:keep]) >= later:
            keep -= 1
            later = min(later, *(start_ts(f) for f in self._frozen[keep].connections))
        self._frozen = self._frozen[:keep]
        live = {id(g) for g in self._frozen}
        self._frozen_facts = {id(f): v for g in self._frozen for f in g.connections
                              for v in (self._frozen_facts[id(f)],)}
        self._frozen_end = _end_of(self._frozen)
        self._features = {i: v for i, v in self._features.items() if i in live}
        self._diffed = {i: v for i, v in self._diffed.items() if i in live}

    def _freeze(self, groups: list[MigrationGroup], migrations: list[dict[str, Any]]) -> None:
        """Extend the frozen prefix of ``an.all_groups`` (see ``__init__``)."""
        an = self.analyzer
        judged = {id(g): m for g, m in zip(groups, migrations, strict=True)}
        every = an.all_groups
        n = len(self._frozen)
        end = self._frozen_end
        cut = n
        while cut < len(every) and self._freezable(every[cut], judged.get(id(every[cut]))):
            cut += 1
        if cut == n:
            return
        later = min((start_ts(f) for g in every[cut:] for f in g.connections), default=float("inf"))
        while cut > n and max(end, _end_of(every[n:cut])) >= later:   # a later connection started before
            cut -= 1                                                   # they ended: freeze fewer
            later = min(later, *(start_ts(f) for f in every[cut].connections))
        cut_end = max(end, _end_of(every[n:cut]))
        for g in every[n:cut]:
            self._frozen.append(g)
            self._features[id(g)] = relay_features(g)
            for f in g.connections:
                self._frozen_facts[id(f)] = (f, _version(f))
        self._frozen_end = cut_end

    def _freezable(self, g: MigrationGroup, m: dict[str, Any] | None) -> bool:
        if g._postcopyish or not all(f.conn.closed for f in g.connections) or g.postcopy():
            return False
        if m is None:
            return not _is_migration(g.connections)
        if "relay" in m or (_hidden_postcopy(m) and m["outcome"]["status"] != "completed"):
            return False        # (a recovery leg may still join it: grouping.tls_paused)
        hit = self._settled.get((g.destination, min(f.conn.index for f in g.connections)))
        return hit is not None and hit[1] is m

    def _judge_one(self, g: MigrationGroup, index: int, end: float, relay: dict[str, Any] | None) -> dict[str, Any]:
        an = self.analyzer
        if relay is not None or not all(f.conn.closed for f in g.connections):
            return an.judge_one(g, index, end, relay)
        key = (g.destination, min(f.conn.index for f in g.connections))
        led = an.ledger
        keys = _repeat_keys(g.connections)
        version = (tuple(f.conn.index for f in g.connections), sum(h.frames for f in g.connections
                                                                  for h in f.conn.halves),
                   led.requests, led.dropped, len(led.outstanding), sum(led.served_count.values()), index,
                   repr(an.repeats.summary(keys)))
        hit = self._settled.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        m = an.judge_one(g, index, end, relay)
        if an.judge_one(g, index, end + FAR, relay) == m:
            self._settled[key] = (version, m)
        return m

    def retire(self, groups: list[MigrationGroup], migrations: list[dict[str, Any]], last_ts: float) -> int:
        """Judge for good and drop the migrations that are over (any, not only the oldest): every connection
        closed, nothing for ``RETIRE_AFTER`` s of capture time, no relay partner, no postcopy recovery possible, and a
        judgement ``FAR`` seconds later identical to the one now (nothing in it depends on when the capture
        ends). Their reports go to ``analyzer.retired`` (on disk), their facts and TCP state are freed. Also
        drops closed connections of groups that are no migration. Returns how many migrations retired."""
        an = self.analyzer
        done: list[dict[str, Any]] = []
        gone: list[ConnectionFacts] = []
        keys: list[tuple[float, int]] = []
        held: list[tuple[float, int]] = []
        for g, m in zip(groups, migrations, strict=True):
            # Any migration that is over, not only the oldest: numbers stay as they are (Retired.ids),
            # so a long migration holds back no later one.
            if not self._over(g, m, last_ts) or (id(g) not in self._features
                                                  and an.judge_one(g, m["id"], last_ts + FAR) != m):
                held.append(group_key(g))
                continue
            done.append(m)
            keys.append(group_key(g))
            gone += g.connections
        for f in sorted(gone, key=lambda f: f.conn.index):
            an.retired.tls.add(f)             # the key log's tally (retire_others adds its own)
        gone += an.retire_others(an.all_groups, last_ts)
        if not gone:
            return 0
        an.retired.add(done, keys)
        an.retired.prune(min(held, default=None))
        dropped = {id(f) for f in gone}
        an.facts = [f for f in an.facts if id(f) not in dropped]
        # The last judgement's groups would hold the dropped facts until the next one (at a high feed
        # rate, as many migrations again as are held).
        an.all_groups = [g for g in an.all_groups if not any(id(f) in dropped for f in g.connections)]
        an.repeats.retire(_repeat_keys(gone) - _repeat_keys(an.facts))
        assert self.forget is not None
        self.forget([f.conn for f in gone])
        for f in gone:
            f.release()
        held_conns = {f.conn.index for f in an.facts}
        self._owner = {i: s for i, s in self._owner.items() if i in held_conns}
        self._anchor = {i: s for i, s in self._anchor.items() if i in held_conns}
        self._channels = {i: p for i, p in self._channels.items() if i in held_conns}
        self._misread &= held_conns
        kept = {(g.destination, min(f.conn.index for f in g.connections)) for g in an.all_groups}
        self._settled = {k: v for k, v in self._settled.items() if k in kept}
        self._frozen = [g for g in self._frozen if not any(id(f) in dropped for f in g.connections)]
        self._frozen_facts = {i: v for i, v in self._frozen_facts.items() if i not in dropped}
        live = {id(g) for g in self._frozen}
        self._features = {i: v for i, v in self._features.items() if i in live}
        self._diffed = {i: v for i, v in self._diffed.items() if i in live}
        return len(done)

    @staticmethod
    def _over(g: MigrationGroup, m: dict[str, Any], last_ts: float) -> bool:
        if "relay" in m or not quiet(g.connections, last_ts):
            return False
        if m["outcome"]["status"] == "completed":
            return True
        # A postcopy migration that did not complete may be resumed by a recovery on another port.
        return not (g.postcopy() or _hidden_postcopy(m)
                    or any(f.kind in ("preempt-candidate", None) for f in g.connections))

    def _migration(self, m: dict[str, Any], seen: _Seen, base: dict[str, Any], last_ts: float,
                   now: float, final: bool = False) -> list[Event]:
        out: list[Event] = []
        gen = m["policy"].get("source_generation")
        if gen != seen.generation and gen not in (None, "unknown"):
            out.append({"event": "source-generation", **base, "time": _r(last_ts), "source_generation": gen,
                        "evidence": m["policy"].get("evidence", [])})
        seen.generation = gen
        # A misreading that only the assumed destination policy makes, while one the capture has not ruled
        # out would misread nothing, is no alarm yet: held as the outcome it would cause is (``_policy_open``).
        unsure = m["id"] in self._open_policy
        for ch in m["channels"]:
            pair = (ch["role"], ch["assigned_role"])
            before = self._channels.get(ch["connection"])
            if before != pair:
                self._channels[ch["connection"]] = pair
                ev = {"event": "channel" if before is None else "channel-role", **base,
                      "time": ch["handshake_time"] or ch["syn_time"] or ch["first_data_time"],
                      "connection": ch["connection"], "client": ch["client"], "leg": ch["leg"],
                      "accept_index": ch["accept_index"], "role": ch["role"],
                      "assigned_role": ch["assigned_role"], "misclassified": ch["misclassified"],
                      "role_evidence": ch["role_evidence"]}
                if ch["misclassified"] and unsure:
                    ev["policy_unsure"] = True
                out.append(ev)
        stalls = {(s["kind"], s["start"]): s for s in m["stalls"]}
        by_client = {ch["client"]: ch for ch in m["channels"]}
        for mc in m["misclassifications"]:
            ch = by_client.get(mc["client"])
            if ch is None or ch["connection"] in self._misread or unsure:
                continue
            silent = (mc["role"] == PREEMPT and mc["assigned_role"] == MAIN) or mc["assigned_role"] == BLOCKED
            ev = {"event": "misclassified", **base, "time": mc["time"], "connection": ch["connection"],
                  "client": mc["client"], "role": mc["role"], "assigned_role": mc["assigned_role"],
                  "policy": mc["policy"], "qemu_would_show": mc["failure"], "evidence": mc["evidence"]}
            if silent:
                stall = next((s for s in stalls.values() if s["kind"] in SILENT_KINDS
                              and mc["client"] in s["channels"]), None)
                if stall is None or stall["start"] is None:
                    continue
                waited = (stall["end"] if stall["end"] is not None else now) - stall["start"]
                if waited < self.silent_threshold:
                    continue           # not silent for long enough yet: a suspicion, not an alert
                ev["silent_for"] = _r(waited)
                ev["clock"] = _clock(stall, last_ts, self.silent_threshold)
            self._misread.add(ch["connection"])
            out.append(ev)
        thresholds = {"page-request": self.analyzer.options.stall_threshold,
                      "no-progress": self.analyzer.options.progress_timeout}
        for k, s in stalls.items():
            thr = thresholds.get(s["kind"], self.silent_threshold)
            said = seen.stalls.get(k)
            if said is None:
                if s["kind"] in SILENT_KINDS and (s["duration"] or 0.0) < self.silent_threshold:
                    continue
                seen.stalls[k] = s["end"] is not None
                out.append({"event": "stall", **base, "time": s["start"], "kind": s["kind"],
                            "ongoing": s["end"] is None, "duration": s["duration"], "channels": s["channels"],
                            "clock": _clock(s, last_ts, thr), "evidence": s["evidence"],
                            "outstanding_requests": s["outstanding_requests"][:5]})
            elif not said and s["end"] is not None:
                seen.stalls[k] = True
                out.append({"event": "stall-end", **base, "time": s["end"], "kind": s["kind"],
                            "duration": s["duration"], "channels": s["channels"]})
        pc = m["postcopy"]
        if pc.get("run_time") is not None and not seen.postcopy_run:
            seen.postcopy_run = True
            out.append({"event": "postcopy-start", **base, "time": pc["run_time"]})
        # (a recovery leg proves postcopy ran where TLS hides the POSTCOPY_RUN command)
        if seen.postcopy_run or any(leg["kind"] == "recovery" and leg["leg"] > 0 for leg in m["legs"]):
            last_leg = max(leg["leg"] for leg in m["legs"])
            for leg in m["legs"]:
                lost = self._main_lost(m, leg["leg"])
                if lost is not None and leg["leg"] == last_leg and any(
                        ch["role_inferred"] for ch in m["channels"] if ch["leg"] == last_leg):
                    lost = None     # TLS hides main's EOF: a pause shows only once a recovery leg follows
                if lost is not None and leg["leg"] not in seen.paused and m["outcome"]["status"] != "completed":
                    seen.paused.add(leg["leg"])
                    out.append({"event": "postcopy-pause", **base, "time": lost, "leg": leg["leg"]})
                if leg["kind"] == "recovery" and leg["leg"] > 0 and leg["leg"] not in seen.resumed:
                    seen.resumed.add(leg["leg"])
                    out.append({"event": "postcopy-recovery", **base, "time": leg["start_time"], "leg": leg["leg"]})
        status = m["outcome"]["status"]
        if status in ("failed", "stalled") and unsure:
            return out          # a failure only under some of the destination's possible versions: not yet
        if status != seen.outcome and (status in FINAL_STATUSES or (final and seen.outcome is not None)):
            ev = {"event": "outcome", **base, "time": m["end_time"], "status": status,
                  "reason": m["outcome"]["reason"]}
            if seen.outcome is not None:
                ev["revises"] = seen.outcome
            seen.outcome = status
            out.append(ev)
        return out

    def _policy_open(self, groups: list[MigrationGroup], migrations: list[dict[str, Any]]) -> set[int]:
        """The migrations whose misclassifications another destination policy still possible would not
        make (no ``--qemu-version``; a policy is possible while the capture does not contradict it: see
        the report's ``what_if``): a failure or stall said now could be revised to ``completed`` once the
        destination's behaviour shows its version. Also those with a TLS channel still open whose handshake
        has not completed: QEMU gives TLS channels their roles in the order their handshakes complete, so
        the accept order is not known yet. A relay's source-side leg follows its peer."""
        out: set[int] = set()
        pinned = bool(self.analyzer.options.qemu_version)
        for g, m in zip(groups, migrations, strict=True):
            if not m["misclassifications"]:
                continue
            if any(f.encrypted and f.tls_done_ts is None and not f.conn.closed for f in g.connections):
                out.add(m["id"])
                continue
            if pinned:
                continue
            what_if = m["what_if"]
            for name in REAL_POLICIES:
                legs = what_if.get(name, [])
                if legs and all(leg["fits_capture"] is not False and not leg["misclassified"] for leg in legs):
                    out.add(m["id"])
                    break
        for m in migrations:
            relay = m.get("relay")
            if relay and relay["side"] == "source" and relay["peer"] in out:
                out.add(m["id"])
        return out

    @staticmethod
    def _main_lost(m: dict[str, Any], leg: int) -> float | None:
        """When the main channel of ``leg`` closed or was reset with no EOF (a postcopy pause), else None."""
        for ch in m["channels"]:
            if ch["leg"] != leg or ch["role"] not in (MAIN, RECOVERY):
                continue
            if ch["records"].get("main.eof"):
                return None
            times = [t for t in (ch["rst_time"], *ch["fin_time"]) if t is not None]
            return min(times) if times else None
        return None


def _hidden_postcopy(m: dict[str, Any]) -> bool:
    """A TLS migration whose record layer shows a preempt channel (no key log): the grouping's
    ``_postcopyish`` cannot see it, but a recovery leg may join it (``grouping.tls_paused``)."""
    return any(ch["role"] == PREEMPT and ch["role_inferred"] for ch in m["channels"])


def _end_of(groups: list[MigrationGroup]) -> float:
    """When the last connection of ``groups`` saw its last packet."""
    return max((f.conn.last_ts for g in groups for f in g.connections), default=float("-inf"))


def _version(f: ConnectionFacts) -> tuple[Any, ...]:
    """Changes with every packet of the connection (and so with whatever the packets tell)."""
    h0, h1 = f.conn.halves
    return h0.frames, h1.frames, h0.ended, h1.ended, f.kind


def _repeat_keys(facts: Collection[ConnectionFacts]) -> set[tuple[str, str]]:
    """The keys (destination endpoint, multifd UUID) under which ``RepeatedPages`` holds these
    connections' packets."""
    return {(f.endpoint, f.hello["uuid"]) for f in facts if f.hello and "uuid" in f.hello}


def _clock(stall: dict[str, Any], last_ts: float, threshold: float) -> str:
    """``capture`` if the packets alone show the stall (it started ``threshold`` before the last packet or
    has ended), else ``wall``: only the wall-clock time since the last packet shows it."""
    if stall["end"] is not None or stall["start"] is None:
        return "capture"
    return "capture" if last_ts - stall["start"] >= threshold else "wall"


def _r(ts: float | None) -> float | None:
    return None if ts is None else round(ts, 6)
