"""Judge one migration: accept order, true and assigned roles, misclassifications, stalls, outcome."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from dissectors.analysis import behaviour as B
from dissectors.analysis import policies as P
from dissectors.analysis.facts import ConnectionFacts
from dissectors.analysis.grouping import MigrationGroup, role_ts, start_ts, tls_main
from dissectors.analysis.ledger import PageLedger
from dissectors.analysis.repeats import RepeatedPages
from dissectors.analysis.roles import infer_generation, tls_roles, true_role
from dissectors.analysis.wording import leg_connections, leg_owner, ordinal, place_in_leg
from dissectors.channels import MULTIFD_MAGIC, QEMU_VM_FILE_MAGIC
from dissectors.tcp.connection import Connection
from dissectors.tcp.connection import endpoint_text as _addr

DIRECTIONS = ("to-server", "to-client")
TLS_BULK = 256 << 10      # bytes a single extra TLS channel must carry to be taken for multifd
# QEMU's multifd_recv_initial_packet() message, as the destination prints it for a QEVM stream.
BAD_MAGIC_72 = f"multifd: received packet magic {QEMU_VM_FILE_MAGIC:x} expected {MULTIFD_MAGIC:x}"


@dataclass
class Options:
    qemu_version: str | None = None      # the destination's QEMU version, if known
    stall_threshold: float = 1.0         # seconds a page request may wait before it is a stall
    progress_timeout: float = 5.0        # seconds without bytes before a migration "stopped making progress"
    tls_verify: bool = False             # decrypt and authenticate every TLS record, page contents too


def _rst(c: Connection) -> float | None:
    times = [t for t in c.rst_ts if t is not None]
    return min(times) if times else None


def _abort(c: Connection) -> float | None:
    """The first reset that ends the connection abortively; None when there is none or every reset came after
    both sides' FINs. Such a late reset is TCP's answer to a stray segment (a duplicate ACK or retransmission
    overtaken on the path) reaching a socket that had already closed cleanly both ways: it says nothing about
    the migration (seen on a jittered path: the destination's kernel resets the finished main channel
    when the source re-ACKs the destination's FIN)."""
    done = B.closed_both_ways(c)
    times = [t for t in c.rst_ts if t is not None and (done is None or t < done)]
    return min(times) if times else None


def _missed(c: Connection) -> tuple[int, int]:
    """The bytes each direction of ``c`` misses if the capture ends now: its gaps, and the holes the end of the
    capture would give up (``Connection.would_lose``). A live view judges the capture so far as the report
    would if it ended there: a hole the tracker still waits on (below a reset of main, no packet since) is lost
    bytes then, not a reset's failure said and withdrawn at the end; a late or reordered segment that fills it
    changes the judgement, as any new data does. At the end (``TcpTracker.finish``) they are gaps: same sum."""
    wait = c.would_lose
    return c.gap_bytes[0] + wait[0], c.gap_bytes[1] + wait[1]


def _r(ts: float | None) -> float | None:
    return None if ts is None else round(ts, 6)


@dataclass
class LegFit:
    """One accept order of a leg with every policy's roles and how each fits the destination's behaviour."""

    order: list[ConnectionFacts]
    truth: list[tuple[str, str]]
    views: list[P.ChannelView]
    assignments: dict[str, P.Assignment]
    obs: B.Observed
    fits: dict[str, B.Fit]


class MigrationJudge:
    def __init__(self, group: MigrationGroup, index: int, ledger: PageLedger, capture_end: float,
                 options: Options, repeats: RepeatedPages | None = None,
                 relay: dict[str, Any] | None = None) -> None:
        self.g = group
        self.relay = relay
        self.index = index
        self.ledger = ledger
        self.capture_end = capture_end
        self.opt = options
        self.tls_postcopy = False           # a TLS migration whose record layer shows a preempt channel
        keys = {(f.endpoint, f.hello["uuid"]) for f in group.connections if f.hello and "uuid" in f.hello}
        self.repeated = repeats.summary(keys) if repeats is not None else None

    # -- facts ------------------------------------------------------------------------------------
    def setup(self, leg: list[ConnectionFacts], roles: list[str], recovery: bool) -> P.Setup:
        mains = [f for f in self.g.connections if f.kind in ("main", "main-recovery")]
        postcopy = any(f.commands("POSTCOPY_ADVISE") for f in mains) or recovery
        multifd_ids = {f.hello.get("id") for f in self.g.connections if f.hello}
        n_multifd = 0 if recovery else max(len(multifd_ids), roles.count(P.MULTIFD))
        preempt = P.PREEMPT in roles
        postcopy = postcopy or preempt
        if roles and all(r == P.TLS for r in roles) and len(roles) > 1 and not recovery:
            # Encrypted: guess the set-up from the channels' number and volume. Several extra channels
            # can only be multifd; a single one is multifd if it carried bulk data, else preempt.
            extra = leg[1:]
            if len(extra) > 1 or extra[0].client_sent() > TLS_BULK:
                n_multifd = len(extra)
            else:
                preempt = postcopy = True
        return P.Setup(multifd_channels=n_multifd, postcopy=postcopy, preempt=preempt, recovery=recovery)

    def run(self) -> dict[str, Any]:
        legs_out = []
        channels: list[dict[str, Any]] = []
        misclassifications: list[dict[str, Any]] = []
        stalls: list[dict[str, Any]] = []
        what_if: dict[str, Any] = {}
        policy_info: dict[str, Any] = {}
        all_main = [f for f in self.g.connections if f.kind in ("main", "main-recovery")]
        postcopy = any(f.commands("POSTCOPY_ADVISE") for f in all_main)
        policy_name = ""
        order_notes: list[str] = []
        inferred: set[int] = set()
        for leg_no, leg in enumerate(self.g.legs):
            order = sorted(leg, key=role_ts)
            recovery = leg_no > 0 or any(f.kind == "main-recovery" for f in order)
            truth = tls_roles(order, [true_role(f, postcopy or recovery) for f in order], recovery)
            inferred |= {id(f) for f, (r, _) in zip(order, truth, strict=True)
                         if f.encrypted and not f.decrypted and r != P.TLS}
            roles = [t[0] for t in truth]
            setup = self.setup(order, roles, recovery)
            window = order_window(order)
            cert_of = {id(f): c for f, c in zip(order, order_certainty(order, window), strict=True)}
            leg_fit = self.fit_order(order, truth, setup, paused=leg_no < len(self.g.legs) - 1,
                                     certain=list(cert_of.values()))
            if leg_fit.order is not order:
                order_notes.append(
                    "the accept order seen at this vantage does not fit what the destination did; within the path's "
                    f"jitter ({window * 1000:.1f} ms) the destination most likely accepted "
                    + ", ".join(_addr(f.conn.client) for f in leg_fit.order) + " in that order")
            order, truth, views, assignments, obs, fits = (leg_fit.order, leg_fit.truth, leg_fit.views,
                                                           leg_fit.assignments, leg_fit.obs, leg_fit.fits)
            roles = [t[0] for t in truth]
            certain = [cert_of[id(f)] for f in order]
            if leg_no == 0:
                policy_name, why, gen = self.choose_policy(order, roles, fits, assignments)
                policy_info = {"name": policy_name, "why": why, "source_generation": gen.text(),
                               "evidence": gen.evidence, **self.behaviour_info(fits, assignments, obs)}
            chosen = assignments[policy_name]
            for name, a in assignments.items():
                bad = [i for i, (v, r) in enumerate(zip(views, a.roles, strict=True)) if P.misread(v.role, r)]
                what_if.setdefault(name, []).append({
                    "leg": leg_no, "roles": a.roles, "misclassified": bad,
                    "verdict": fits[name].verdict,
                    "fits_capture": None if fits[name].unjudged else fits[name].fits,
                })
            policy_info.setdefault("notes", chosen.notes)
            multifd_seen = 0
            for i, (f, (role, evidence)) in enumerate(zip(order, truth, strict=True)):
                assigned = chosen.roles[i]
                wrong = P.misread(P.destination_roles(role), assigned)
                ch = self.channel(f, i, leg_no, role, evidence, assigned, wrong, id(f) in inferred)
                ch["order_certain"] = certain[i]
                if assigned == P.MULTIFD:
                    ch["assigned_multifd_slot"] = multifd_seen
                    multifd_seen += 1
                if wrong:
                    m = self.misclassification(f, ch, order, chosen.errors[i], policy_name)
                    ch["predicted_failure"] = m["failure"]
                    misclassifications.append(m)
                    stall = self.misclass_stall(f, ch, order)
                    if stall:
                        stalls.append(stall)
                channels.append(ch)
            legs_out.append({"leg": leg_no, "kind": "recovery" if recovery else "initial",
                             "channels": len(order), "setup": vars(setup),
                             "start_time": _r(start_ts(order[0])) if order else None,
                             "end_time": _r(max(f.conn.last_ts for f in order)) if order else None})
        self.tls_postcopy = any(c["role"] == P.PREEMPT and c["role_inferred"] for c in channels)
        pauses = self.pauses()
        lost = sum(sum(_missed(f.conn)) for f in self.g.connections)
        if not lost:        # with holes, a request may have been served inside one: not judged
            stalls.extend(self.request_stalls(postcopy, pauses))
        unsupported = self.unsupported(policy_name, postcopy)
        np = self.no_progress()
        if np and not stalls:
            stalls.append(np)
        unreadable = [{"client": c["client"], "role": c["role"], **m} for c in channels for m in c["malformed"][:1]]
        outcome = self.outcome(misclassifications, stalls, lost, unreadable)
        if outcome["status"] == "completed" and any(u["policy"] == "qemu-7.2" for u in unsupported):
            outcome = {"status": "failed", "reason": f"{outcome['reason']}; but multifd with postcopy is unsupported "
                                                     "before 10.1: a 7.2 destination aborts right after completing "
                                                     "(yank_unregister_instance assertion)"}
        conns = self.g.connections
        notes = list(order_notes)
        late = [f for f in conns if not f.conn.syn_seen]
        if late:
            notes.append(f"{len(late)} connection(s) were already open when the capture started (no SYN seen): "
                         "their accept order is guessed from their first packet")
        if lost:
            notes.append(f"the capture misses {lost} bytes of these streams (lost or snaplen-cut packets); "
                         "page-request stalls are not judged and records inside the holes are not seen")
        decrypted = [f for f in conns if f.decrypted]
        if decrypted:
            notes.append(f"TLS: {len(decrypted)} of {sum(f.encrypted for f in conns)} connections decrypted with the "
                         "key log; their roles are read from their contents, and the destination's assignment "
                         "follows the rules for TLS channels (no peek)")
        notes += self.tls_recovery_notes()
        unknown = any(c["role"] == P.TLS for c in channels)      # not even the record layer tells
        if inferred:        # one note, saying both when some roles are inferred and others unknown
            whose = "the roles of some" if unknown else "their roles"
            notes.append(f"TLS: the channels' contents are hidden; {whose} are inferred from the TLS record layer "
                         "(a first write of a multifd hello's size is multifd, the first other channel main, a later "
                         "one preempt)"
                         + (", the others' are unknown and the set-up was guessed from the number and volume of "
                            "channels" if unknown else "")
                         + f"; the destination's assignment follows the accept order, and nothing can be verified: "
                         f"{_keylog_hint(conns)}")
        elif unknown:
            notes.append("TLS: the channels' contents are hidden; the assigned roles follow the accept order and "
                         "the set-up was guessed from the number and volume of channels, so nothing can be verified")
        out = {
            "id": self.index,
            "destination": self.g.destination,
            "start_time": _r(min(start_ts(f) for f in conns)),
            "end_time": _r(max(f.conn.last_ts for f in conns)),
            "vantage": vantage(conns),
            "policy": policy_info,
            "outcome": outcome,
            "legs": legs_out,
            "postcopy": {**self.postcopy_summary(), "pauses": self.requests_across(pauses)},
            "channels": channels,
            "misclassifications": misclassifications,
            "stalls": stalls,
            "unreadable": unreadable,
            "unsupported": unsupported,
            "what_if": what_if,
            "multifd_repeated_pages": self.repeated,
            "notes": notes,
        }
        if self.relay is not None:
            out["relay"] = self.relay
        return out

    # -- policy -----------------------------------------------------------------------------------
    def fit_order(self, order: list[ConnectionFacts], truth: list[tuple[str, str]], setup: P.Setup,
                  paused: bool, certain: list[bool]) -> LegFit:
        """Every policy's roles on the accept order seen, judged against the destination's behaviour. When
        no policy wanted (``--qemu-version``'s, else any released one) fits and some places in the order
        are uncertain, the other orders of those places are tried, fewest swaps first; the first that a
        wanted policy fits is returned (the order seen when none does)."""
        relayed = self.relay is not None and self.relay["side"] == "source"
        wanted = [P.policy_for_version(self.opt.qemu_version)] if self.opt.qemu_version else P.REAL_POLICIES
        first: LegFit | None = None
        for perm in candidate_orders(len(order), certain):
            o = order if perm == tuple(range(len(order))) else [order[i] for i in perm]
            t = [truth[i] for i in perm]
            views = [P.ChannelView(role=P.destination_roles(r), magic=f.magic, tls=(r == P.TLS or f.encrypted))
                     for (r, _), f in zip(t, o, strict=True)]
            assignments = {name: fn(views, setup) for name, fn in P.POLICIES.items()}
            obs = B.observe(o, [r for r, _ in t])
            if relayed:
                obs = B.Observed.unjudged(obs)     # the relay's closes are not the destination's
            fit = LegFit(o, t, views, assignments, obs, B.judge_policies(o, views, assignments, obs, paused))
            first = first or fit
            if any(fit.fits[n].fits for n in wanted):
                return fit
        assert first is not None
        return first

    def choose_policy(self, order: list[ConnectionFacts], roles: list[str], fits: dict[str, B.Fit],
                      assignments: dict[str, P.Assignment]) -> tuple[str, str, Any]:
        main = next((f for f in self.g.connections if f.kind == "main"), None)
        multifd = [f for f in self.g.connections if f.kind == "multifd"]
        preempt_early = None
        how = ""
        pre = [f for f, r in zip(order, roles, strict=True) if r == P.PREEMPT]
        hidden_main = next((f for f, r in zip(order, roles, strict=True) if r == P.MAIN and f.kind == "tls"), None)
        if main is not None and pre:
            # 7.2 (and <= 7.2 machine types) connect the preempt channel at set-up; 8.0+ only once
            # postcopy starts (after a PONG), so it comes after the POSTCOPY_ADVISE/LISTEN commands.
            listen = main.first_event("main.cmd", cmd="POSTCOPY_LISTEN") or main.first_event(
                "main.cmd", cmd="POSTCOPY_RUN")
            if listen is not None:
                preempt_early = start_ts(pre[0]) < listen.ts - 0.5
            else:
                preempt_early, how = preempt_early_without_listen(main, pre[0])
        elif hidden_main is not None and pre:
            # Under TLS the commands are hidden, but 8.0+ opens the preempt channel only after the destination
            # answered on the return path, and 7.2 before it wrote anything there.
            answered = hidden_main.tls_shape.sides[1].first_ts
            preempt_early = answered is None or start_ts(pre[0]) < answered
            how = (" (TLS record timing: opened " + ("before the destination's first return-path record"
                                                      if preempt_early else
                                                      f"{start_ts(pre[0]) - answered:.3f} s after the destination's "
                                                      "first return-path record") + " on the main channel)")
        gen = infer_generation(main, multifd, preempt_early, self.repeated["count"] if self.repeated else 0, how)
        if self.opt.qemu_version:
            name = P.policy_for_version(self.opt.qemu_version)
            why = f"--qemu-version {self.opt.qemu_version} (the destination's)"
            if not fits[name].fits:
                why += f"; but the capture disagrees: {fits[name].against[0]}"
            return name, why, gen
        real = list(P.REAL_POLICIES)
        guess = P.policy_for_generation(gen.at_least)
        if order and all(f.encrypted and not f.decrypted for f in order) and gen.at_least == (0, 0):
            return guess, ("TLS hides the streams and nothing in the record layer's timing pins the source's "
                           "generation, so it is unknown; every generation assigns TLS channels by accept order "
                           "(main, then multifd, then preempt), so the roles hold whichever it is (named after "
                           f"{guess}'s rules only)"), gen
        unjudged = next(iter(fits.values())).unjudged if fits else None
        known = gen.text() != "unknown"
        # what the source says, and the generation assumed for the destination from it
        src = f"source looks like QEMU {gen.text()}" if known else "nothing in the capture pins the source's generation"
        same_gen = "the same generation" if known else f"{guess}'s rules (the oldest generation's)"
        if unjudged:
            return guess, (f"{src}; assuming the destination runs {same_gen} ({unjudged}; pass --qemu-version "
                           "for another)"), gen
        fitting = [n for n in real if fits[n].fits]
        if not fitting:
            return guess, (f"{src}; no destination policy fits everything the capture shows, so assuming the "
                           f"destination runs {same_gen}"), gen
        if guess in fitting:
            name = guess
            why = f"{src}; the destination's behaviour fits " + (
                "that generation's rules" if known else f"{guess}'s rules")
        else:
            later = [n for n in fitting if real.index(n) > real.index(guess)]
            name = later[0] if later else fitting[-1]
            why = (f"{src}, but the destination did not behave as {guess} would "
                   f"({fits[guess].against[0]}); {name} is the nearest generation whose rules fit")
        same = {tuple(assignments[n].roles) for n in fitting}
        if len(fitting) > 1:
            why += (f"; the capture cannot tell {', '.join(fitting)} apart"
                    + (" (they give every connection the same role)" if len(same) == 1 else ""))
        return name, why, gen

    @staticmethod
    def behaviour_info(fits: dict[str, B.Fit], assignments: dict[str, P.Assignment],
                       obs: B.Observed) -> dict[str, Any]:
        """Which destination generations the capture agrees with, and why the others do not fit."""
        if not obs.judged:
            return {"fits_capture": None, "ruled_out": {},
                    "destination_generation": "see the destination-side leg (a relay faces this one)"}
        if obs.encrypted:
            return {"fits_capture": None, "ruled_out": {},
                    "destination_generation": "unknown (encrypted: the destination's behaviour cannot be "
                                              "checked against the policies)"}
        fitting = [n for n in P.REAL_POLICIES if fits[n].fits]
        return {
            "fits_capture": fitting,
            "ruled_out": {n: fits[n].against for n in P.REAL_POLICIES if not fits[n].fits},
            "destination_generation": P.generation_span(fitting),
        }

    # -- per channel ------------------------------------------------------------------------------
    def channel(self, f: ConnectionFacts, i: int, leg: int, role: str, evidence: str, assigned: str,
                wrong: bool, inferred: bool = False) -> dict[str, Any]:
        c = f.conn
        hello = f.hello or {}
        return {
            "accept_index": i,
            "leg": leg,
            "connection": c.index,
            "client": _addr(c.client),
            "server": _addr(c.server),
            "syn_time": _r(c.syn_ts),
            "handshake_time": _r(c.handshake_ts),
            "tls_handshake_done_time": _r(f.tls_done_ts) if f.encrypted else None,
            "role_time": _r(role_ts(f)),
            "syn_seen": c.syn_seen,
            "role": role,
            "role_evidence": evidence,
            "multifd_id": hello.get("id") if role == P.MULTIFD else None,
            "uuid": hello.get("uuid"),
            "assigned_role": assigned,
            "misclassified": wrong,
            "verifiable": role not in (P.TLS, P.UNKNOWN) and not inferred,
            "role_inferred": inferred,
            "bytes_to_server": c.bytes[0],
            "bytes_to_client": c.bytes[1],
            "first_data_time": _r(c.first_data_ts[0]),
            "last_data_time": _r(c.last_data_ts[0]),
            "closed_by": c.closed_by,
            "fin_time": [_r(t) for t in c.fin_ts],
            "rst_time": _r(_rst(c)),
            "gaps": [[[o, n] for o, n in c.gaps[d][:20]] for d in (0, 1)],
            "gap_bytes": [c.gap_bytes[0], c.gap_bytes[1]],
            "retransmitted_bytes": [c.retransmitted_bytes[0], c.retransmitted_bytes[1]],
            "records": dict(sorted(f.counts.items())),
            "tls": f.tls.to_dict() if f.tls is not None and f.tls.tls else None,
            "malformed": [{"direction": DIRECTIONS[d], "offset": m.offset, "reason": m.fields.get("reason", "")}
                          for d, m in f.malformed],
        }

    def misclassification(self, f: ConnectionFacts, ch: dict[str, Any], order: list[ConnectionFacts],
                          error: str | None, policy: str) -> dict[str, Any]:
        role, assigned = ch["role"], ch["assigned_role"]
        c = f.conn
        # the place in words, in its own set of connections: "1 of 2" did not say that a postcopy recovery's
        # connections are counted apart from the initial ones, nor which recovery
        if ch["tls_handshake_done_time"] is not None:
            place = f"its TLS handshake completed {ordinal(ch['accept_index'] + 1)} among {leg_connections(ch['leg'])}"
        else:
            place = f"accepted as {place_in_leg(ch['accept_index'], ch['leg'])}"
        evidence: list[str] = [f"{place} ({len(order)} in all) at {_fmt(role_ts(f))}; its bytes say {role} "
                               f"({ch['role_evidence']})"]
        when = c.first_data_ts[0] or c.handshake_ts
        if error:
            failure = error
        elif role == P.MAIN and assigned == P.MULTIFD:
            slot = ch.get("assigned_multifd_slot", 0)
            failure = f"failed to receive packet via multifd channel {slot}: {BAD_MAGIC_72}"
            evidence.append(f"QEVM arrived on it at {_fmt(f.first_write_ts)} where a multifd hello was expected")
        elif role == P.MULTIFD and assigned == P.MAIN:
            failure = ("taken as the main channel; the loader waits for every multifd channel, "
                       "so it fails through the real main channel's bad magic (else: Not a migration stream)")
        elif role == P.PREEMPT and assigned == P.MAIN:
            if f.first_write_ts is not None:
                failure = (f"stall, no error, until the source first writes on it at {_fmt(f.first_write_ts)}; "
                           "then: Not a migration stream")
            elif c.closed_by == "client" and c.fin_ts[0] is not None:
                failure = (f"stall, no error, until the source closes it at {_fmt(c.fin_ts[0])}; "
                           "then: Not a migration stream")
            else:
                failure = "stall, no error: the destination reads a silent socket"
        elif role == P.MAIN and assigned == P.PREEMPT:
            failure = "the real main channel is read as the preempt channel: its QEVM stream is not loaded"
        else:
            failure = f"taken as {assigned} though it carries {role}"
        if c.closed_by == "server":
            t = _rst(c) if _rst(c) is not None else c.fin_ts[1]
            if t is not None and when is not None:
                how = "reset" if _rst(c) is not None else "closed"
                evidence.append(f"the destination {how} the connection {(t - when) * 1000:.1f} ms after its "
                                "first bytes arrived")
        elif c.closed_by == "client":
            evidence.append("the source closed it")
        elif c.last_ts is not None:
            evidence.append("still open at the end of the capture")
        return {
            "accept_index": ch["accept_index"],
            "leg": ch["leg"],
            "client": ch["client"],
            "role": role,
            "assigned_role": assigned,
            "policy": policy,
            "time": _r(when),
            "failure": failure,
            "evidence": evidence,
        }

    def misclass_stall(self, f: ConnectionFacts, ch: dict[str, Any],
                       order: list[ConnectionFacts]) -> dict[str, Any] | None:
        silent_main = ch["role"] == P.PREEMPT and ch["assigned_role"] == P.MAIN
        if not silent_main and not (ch["assigned_role"] == P.BLOCKED and f.magic is None):
            return None
        c = f.conn
        # Under TLS the destination waits on the channel once its handshake is done (QEMU upgrades first,
        # then gives the role), and the source's handshake bytes are not writes of the migration's.
        start = role_ts(f) if f.encrypted else c.handshake_ts or c.syn_ts or c.first_ts
        # The stall lasts until the source writes on the silent channel or the channel closes.
        ends = [t for t in (f.first_write_ts, *c.fin_ts, *c.rst_ts) if t is not None]
        end = min(ends) if ends else None
        others = [o for o in order if o is not f]
        sent = sum(o.conn.bytes[0] for o in others)
        main = next((o for o in others if o.kind == "main"), None)
        silent = "no application data (only its TLS handshake)" if f.encrypted else "no byte"
        ev = [f"{silent} from the source on {ch['client']} from {_fmt(start)} to {_fmt(end or self.capture_end)}",
              f"meanwhile the other channels carried {sent} bytes to the destination"]
        if main is not None:
            ev.append(f"the real main channel {_addr(main.conn.client)} got {main.conn.bytes[1]} bytes back "
                      "(return path)")
        return {
            "kind": "preempt-as-main" if ch["assigned_role"] == P.MAIN else "peek-blocked",
            "start": _r(start),
            "end": _r(end),
            "ongoing_at_capture_end": end is None,
            "duration": _r((end or self.capture_end) - start) if start is not None else None,
            "channels": [ch["client"]] + ([_addr(main.conn.client)] if main else []),
            "outstanding_requests": [],
            "evidence": ev,
        }

    # -- stalls -----------------------------------------------------------------------------------
    def tls_recovery_notes(self) -> list[str]:
        """How a recovery leg of a hidden TLS migration was linked to it (``grouping.tls_paused``)."""
        out = []
        for n, (prev, leg) in enumerate(zip(self.g.legs, self.g.legs[1:], strict=False), start=1):
            first = leg[0]          # the channel that opened the leg
            main = tls_main(prev)
            if first.kind != "tls" or first.decrypted or main is None or not first.tls_shape.looks_recovery():
                continue
            lost = min(t for t in (*main.conn.fin_ts, *main.conn.rst_ts) if t is not None)
            out.append(f"TLS: the connections from {_addr(first.conn.client)} on are taken as a postcopy "
                       f"recovery (the {ordinal(n)}) from the record layer: {_addr(first.conn.client)} opened "
                       f"{start_ts(first) - lost:.3f} s after {leg_owner(n - 1)} main channel "
                       f"{_addr(main.conn.client)} ended, between the same two hosts, with no record "
                       "of SHUT's size from the destination (a pause, not a completion); "
                       f"{first.tls_shape.recovery_text()}; {_keylog_hint(self.g.connections)}")
        return out

    def pauses(self) -> list[dict[str, Any]]:
        """Each postcopy pause: when the previous leg's main channel was lost, when and where it resumed."""
        out = []
        for prev, leg in zip(self.g.legs, self.g.legs[1:], strict=False):
            hidden_main = tls_main(prev)
            mains = ([f for f in prev if f.kind in ("main", "main-recovery")]
                     or ([hidden_main] if hidden_main is not None else prev))
            lost = [t for f in mains for t in (*f.conn.fin_ts, *f.conn.rst_ts) if t is not None]
            paused = min(lost) if lost else max(f.conn.last_ts for f in mains)
            new_main = next((f for f in leg if f.kind in ("main", "main-recovery")), leg[0])
            resumed = start_ts(new_main)
            out.append({"paused_at": _r(paused), "resumed_at": _r(resumed), "duration": _r(resumed - paused),
                        "port": new_main.conn.server[1], "resumed_by": _addr(new_main.conn.client)})
        return out

    def requests_across(self, pauses: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Attribute to each pause the page requests made before it and served after it (or never)."""
        if not pauses:
            return pauses
        keys = {self.ledger.key(f.endpoint) for f in self.g.connections}
        reqs = [r for ep in keys for r in (*self.ledger.served.get(ep, []), *self.ledger.late.get(ep, []),
                                           *self.ledger.waiting(ep))]
        out = []
        for p in pauses:
            across = {id(r): r for r in reqs if r.ts <= p["paused_at"]
                      and (r.served_ts is None or r.served_ts >= p["resumed_at"])}
            waits = sorted(r.latency for r in across.values() if r.latency is not None)
            out.append({**p, "requests_waiting": len(across), "longest_wait": _r(waits[-1]) if waits else None})
        return out

    def unsupported(self, policy: str, postcopy: bool) -> list[dict[str, Any]]:
        """Set-ups the destination's QEMU does not support, with what a real one did."""
        multifd = any(f.kind == "multifd" for f in self.g.connections)
        if not (multifd and postcopy) or policy == "qemu-10.1+":
            return []
        if policy == "qemu-7.2":
            text = ("multifd with postcopy before QEMU 10.1: 7.2 accepts it, and a real 7.2 destination then aborts "
                    "after the source completes (yank_unregister_instance: Assertion `QLIST_EMPTY(&entry->yankfns)' "
                    "failed)")
        else:
            text = ("multifd with postcopy before QEMU 10.1: 8.0-10.0 refuse it when the capabilities are set "
                    "(Postcopy is not yet compatible with multifd); allowed from 10.1 (e27418861288)")
        return [{"kind": "multifd+postcopy", "policy": policy, "text": text}]

    def request_stalls(self, postcopy: bool, pauses: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        if not postcopy:
            return []
        keys = {self.ledger.key(f.endpoint) for f in self.g.connections}
        thr = self.opt.stall_threshold
        late: list[tuple[float, float | None, Any]] = []
        for ep in keys:
            late += [(r.ts, r.served_ts, r) for r in self.ledger.late.get(ep, [])]
            late += [(r.ts, None, r) for r in self.ledger.waiting(ep) if self.capture_end - r.ts > thr]
        late.sort(key=lambda x: x[0])
        episodes: list[list[Any]] = []
        for start, end, r in late:
            e_end = end if end is not None else self.capture_end
            if episodes and start <= episodes[-1][1]:
                episodes[-1][1] = max(episodes[-1][1], e_end)
                episodes[-1][2].append(r)
                episodes[-1][3] = episodes[-1][3] or end is None
            else:
                episodes.append([start, e_end, [r], end is None])
        out = []
        conn_addr = {f.conn.index: _addr(f.conn.client) for f in self.g.connections}
        for start, end, reqs, ongoing in episodes:
            waiting = [r for r in reqs if r.served_ts is None]
            chans = sorted({conn_addr.get(r.connection, "?") for r in reqs}
                           | {conn_addr.get(r.served_by, "?") for r in reqs if r.served_by is not None})
            out.append({
                "kind": "page-request",
                "start": _r(start),
                "end": None if ongoing else _r(end),
                "ongoing_at_capture_end": ongoing,
                "duration": _r(end - start),
                "channels": chans,
                "outstanding_requests": [{"block": r.block, "addr": hex(r.addr), "time": _r(r.ts)}
                                         for r in waiting[:20]],
                "evidence": [f"{len(reqs)} page request(s) waited more than {thr:g} s for their page; "
                             f"{len(waiting)} never served in the capture"]
                + [f"they waited across the postcopy pause from {_fmt(p['paused_at'])} (connection lost) to "
                   f"{_fmt(p['resumed_at'])} (resumed on port {p['port']})"
                   for p in pauses or [] if start <= p["resumed_at"] and end >= p["paused_at"]],
                "across_pause": any(start <= p["resumed_at"] and end >= p["paused_at"] for p in pauses or []),
            })
        return out

    def no_progress(self) -> dict[str, Any] | None:
        """No byte from the source on any channel for ``progress_timeout`` seconds, up to the capture's end or
        to the first close that ended the silence (a hung migration torn down from outside)."""
        conns = self.g.connections
        if any(f.first_event("main.eof") for f in conns):
            return None
        last = max((f.conn.last_data_ts[0] or 0.0) for f in conns)
        closes = [t for f in conns for t in (*f.conn.fin_ts, *f.conn.rst_ts) if t is not None and t > last]
        end = min(closes) if closes else None
        quiet = (end if end is not None else self.capture_end) - last
        if quiet < self.opt.progress_timeout:
            return None
        open_conns = [f for f in conns if not any(t is not None and t <= last
                                                  for t in (*f.conn.fin_ts, *f.conn.rst_ts))]
        where = (f"until the first close at {_fmt(end)}" if end is not None else "before the capture ends")
        return {
            "kind": "no-progress",
            "start": _r(last),
            "end": _r(end),
            "ongoing_at_capture_end": end is None,
            "duration": _r(quiet),
            "channels": [_addr(f.conn.client) for f in open_conns],
            "outstanding_requests": [],
            "evidence": [f"no byte from the source on any channel for {quiet:.1f} s {where}, "
                         f"{len(open_conns)} connection(s) still open, no EOF"],
        }

    # -- outcome ----------------------------------------------------------------------------------
    def postcopy_summary(self) -> dict[str, Any]:
        mains = [f for f in self.g.connections if f.kind in ("main", "main-recovery")]

        def first(cmd: str) -> float | None:
            ts = [r.ts for f in mains for r in f.commands(cmd)]
            return _r(min(ts)) if ts else None

        keys = {self.ledger.key(f.endpoint) for f in self.g.connections}
        sample = [r for ep in keys for r in self.ledger.served.get(ep, [])]
        lat = sorted(r.latency for r in sample if r.latency is not None and not r.in_flight)
        return {
            "advise_time": first("POSTCOPY_ADVISE"),
            "listen_time": first("POSTCOPY_LISTEN"),
            "run_time": first("POSTCOPY_RUN"),
            "page_requests": sum(f.counts.get("rp.req_pages.seen", 0) for f in mains),
            "served_requests": sum(self.ledger.served_count.get(ep, 0) for ep in keys),
            "already_in_flight": sum(self.ledger.in_flight_count.get(ep, 0) for ep in keys),
            "unserved_requests": sum(len(self.ledger.waiting(ep)) for ep in keys),
            "median_latency": _r(lat[len(lat) // 2]) if lat else None,
            "max_latency": _r(lat[-1]) if lat else None,
        }

    def after_stall(self, stall: dict[str, Any]) -> str | None:
        """How a silent-channel stall ended, from the closes after it began; None if it outlasts the capture."""
        if stall["end"] is None:
            return None
        start = stall["start"] or 0.0
        closes: list[tuple[float, str, str]] = []
        for f in self.g.current:
            c = f.conn
            for side, who in ((0, "source"), (1, "destination")):
                for t, how in ((c.fin_ts[side], "closed"), (c.rst_ts[side], "reset")):
                    if t is not None and t >= start:
                        closes.append((t, who, how))
        silent = "Failed to peek at channel" if stall["kind"] == "peek-blocked" else "Not a migration stream"
        if not closes:
            msg = "unknown channel magic" if stall["kind"] == "peek-blocked" else silent
            return (f"the source wrote on the silent channel at {_fmt(stall['end'])}; a destination in this "
                    f"state fails there (QEMU: {msg})")
        t, who, how = min(closes)
        by_dest = [c for c in closes if c[1] == "destination"]
        if who == "destination":
            return (f"the destination {how} the channels from {_fmt(t)} (QEMU: {silent}; "
                    f"{len(by_dest)} close(s) by the destination)")
        tail = f"; the destination then closed {len(by_dest)} channel(s)" if by_dest else ""
        return (f"the source closed its channels at {_fmt(t)} (stopped from outside){tail}; a destination "
                f"in this state then fails (QEMU: {silent})")

    def tls_outcome(self, conns: list[ConnectionFacts], postcopy: bool = False,
                    cut: B.Cut | None = None) -> dict[str, Any]:
        """The verdict TCP and the TLS record layer allow when the contents are hidden (no key log).
        ``postcopy``: the record layer shows a postcopy set-up, whose destination closes the channels itself
        once it has loaded everything (a precopy source closes first). ``cut``: ``first_cut`` of ``conns``."""
        hidden = f"judged from TCP and TLS evidence, contents not verified: {_keylog_hint(conns)}"
        # ties (one time stamp) broken by the connection's index: ConnectionFacts do not compare
        alerts = sorted(((ts, d, f) for f in conns for d, ts in f.tls_alerts),
                        key=lambda a: (a[0], a[1], a[2].conn.index))
        if alerts:
            ts, d, f = alerts[0]
            who = "destination" if d == 1 else "source"
            return {"status": "failed", "reason": f"the {who} sent a TLS alert on {_addr(f.conn.client)} at {_fmt(ts)} "
                                                  f"(the TLS session was refused or broken); {hidden}"}
        first = [f for f in conns if _abort(f.conn) is not None or f.conn.closed_by == "server"]
        acked = any(f.tls_shape.acknowledged() for f in conns)
        if postcopy and first and all(_closed_after_source(f) for f in conns) and acked:
            return {"status": "completed",
                    "reason": "every channel carried data and the destination closed each one cleanly after the "
                              "source's last record, as a postcopy destination does once it has loaded the whole "
                              "stream, its last record on the return path of the size of SHUT; "
                              f"{hidden}"}
        main = tls_main(conns)
        main_open = main is not None and not B.ended(main.conn)
        if (postcopy and first and (acked or main_open) and not any(_abort(f.conn) is not None for f in conns)
                and all(_closed_after_source(f) for f in conns if B.closed_both_ways(f.conn) is not None)
                and any(B.closed_both_ways(f.conn) is None for f in conns)):
            # A postcopy destination that has loaded everything closes its channels itself (the preempt channel
            # before it sends SHUT on main), then the source closes them: a completion under way, not a
            # dropped channel, until every channel is closed both ways (a live view must not say "failed")
            done = ("sent a record of SHUT's size after the source's last one and closes its channels" if acked
                    else f"closed {_addr(first[0].conn.client)} while the main channel is still open")
            return {"status": "incomplete",
                    "reason": f"the destination {done}, as a postcopy destination that has loaded the whole "
                              f"stream does; the capture ends before every channel is closed both ways; {hidden}"}
        src_first = sorted(((f.conn.fin_ts[0], f) for f in conns
                            if f.conn.closed_by == "client" and f.conn.fin_ts[0] is not None),
                           key=lambda x: (x[0], x[1].conn.index))
        if postcopy and src_first and not acked:
            t, f = src_first[0]
            return {"status": "unknown",
                    "reason": f"encrypted (TLS): postcopy ended unacknowledged: the source closed "
                              f"{_addr(f.conn.client)} at {_fmt(t)} and the destination sent no record of the size "
                              "of SHUT after the source's last one (a destination that has loaded everything "
                              "does): a pause (migrate-pause or a lost connection; a recovery reconnects to the "
                              "port given to migrate-recover, a migration of its own here without the key log) or "
                              f"a failure; {hidden}"}
        if not postcopy and first and all(_closed_after_source(f) and f.client_sent() for f in conns):
            # A precopy source with nothing left to write learns of a destination's close only when it writes
            # (no return path): a clean close of every channel after its last record means it had finished the
            # stream. The destination then closes once it has loaded it, racing the source's own closes (a
            # source older than 10.0 sends no close_notify); a load that failed on the last bytes (a device
            # section) closes the same way, so only the contents tell the two apart.
            f = min(first, key=lambda x: (x.conn.fin_ts[1], x.conn.index))
            return {"status": "unknown",
                    "reason": f"encrypted (TLS); the destination closed {len(first)} channel(s) first (from "
                              f"{_addr(f.conn.client)} at {_fmt(f.conn.fin_ts[1])}), every channel cleanly and after "
                              "the source's last record: it had loaded the whole stream, or its load failed on the "
                              f"last bytes (a device section); {hidden}"}
        if first:
            if cut is not None and cut.by == "source":
                what = "reset" if cut.reset else "closed"
                return {"status": "failed",
                        "reason": f"the source stopped mid-stream at {_fmt(cut.at)}: it {what} "
                                  f"{_addr(cut.channel.conn.client)} while its other channels were open, and the "
                                  "destination ended them before the source did (a source that completes closes "
                                  "every channel first); QEMU's migrate_cancel does this, and so does a source "
                                  f"that fails, exits or is killed; {hidden}"}
            if cut is not None and cut.whole:
                return {"status": "failed",
                        "reason": f"{self.cut_reason(cut, [], None if postcopy else False)}; {hidden}"}
            f = first[0]
            how = "reset" if _abort(f.conn) is not None else f"closed by {f.conn.closed_by}"
            return {"status": "failed",
                    "reason": f"{_addr(f.conn.client)} {how} before the source closed it; {hidden}"}
        if all(f.conn.closed_by == "client" and f.conn.fin_ts[0] is not None and f.client_sent() for f in conns):
            return {"status": "completed", "reason": f"every channel carried data and the source closed each one "
                                                     f"cleanly; {hidden}"}
        closes = [f.conn for f in conns if f.conn.closed_by]
        how = ", ".join(sorted({f"closed by {c.closed_by}" for c in closes})) or "still open"
        return {"status": "unknown", "reason": f"encrypted (TLS): the outcome cannot be read; connections {how}"}

    def outcome(self, misc: list[dict[str, Any]], stalls: list[dict[str, Any]], lost: int = 0,
                unreadable: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        conns = self.g.legs[-1]          # an earlier leg's channels were dropped at the pause, by design
        mains = [f for f in self.g.connections if f.kind in ("main", "main-recovery")]
        eof = [r for f in mains for r in f.events if r.kind == "main.eof"]
        shut = [r for f in mains for r in f.events if r.kind == "rp.shut"]
        bad_shut = [r for r in shut if r.fields.get("status", r.fields.get("value", 0))]
        stall_kinds = {s["kind"] for s in stalls}
        if misc:
            if stall_kinds & {"preempt-as-main", "peek-blocked"}:
                s = next(x for x in stalls if x["kind"] in ("preempt-as-main", "peek-blocked"))
                then = self.after_stall(s)
                if then is None:
                    return {"status": "stalled", "reason": f"{s['kind']} from {_fmt(s['start'])}: {misc[0]['failure']}"}
                what = ("a silent preempt channel was taken as main" if s["kind"] == "preempt-as-main"
                        else "the destination waits in a peek on a silent channel")
                return {"status": "failed", "stalled_for": s["duration"],
                        "reason": f"stalled {s['duration']:.1f} s with no error ({what}); then {then}"}
            first = next((m for m in misc if m["role"] == P.MAIN), misc[0])   # QEMU's own error comes first
            hung = next((x for x in stalls if x["kind"] == "no-progress"), None)
            if hung is not None:
                how = ("until the end of the capture" if hung["end"] is None else
                       f"until the connections were closed at {_fmt(hung['end'])}")
                return {"status": "failed", "hung_for": hung["duration"],
                        "reason": f"{first['failure']}; then hung: no "
                                  f"progress for {hung['duration']:.1f} s {how}"}
            return {"status": "failed", "reason": first["failure"]}
        if bad_shut:
            r = bad_shut[0]
            return {"status": "failed", "reason": f"the destination sent SHUT with an error at {_fmt(r.ts)} "
                                                  "(Sibling indicated error)"}
        if eof:
            why = f"main channel reached EOF at {_fmt(eof[-1].ts)}"
            if shut:
                why += f"; the destination acknowledged with SHUT 0 at {_fmt(shut[-1].ts)}"
            return {"status": "completed", "reason": why}
        if stalls:
            s = stalls[0]
            return {"status": "stalled", "reason": f"{s['kind']} stall from {_fmt(s['start'])}"}
        tls_only = all(f.kind == "tls" for f in conns if f.client_sent())
        first_cut = B.first_cut(conns, None)          # (once per judgement: it walks every connection)
        cut = first_cut if conns and not tls_only else None
        if cut is not None and cut.by == "destination" and any(
                f.conn.last_data_ts[0] is not None and f.conn.last_data_ts[0] > cut.at for f in conns):
            # the source still sent after the destination ended a channel: the stream had not ended there,
            # whatever the capture missed (in-flight segments dropped after a dead destination's resets)
            return {"status": "failed", "reason": self.cut_reason(cut, mains)}
        if unreadable:
            u = unreadable[0]
            return {"status": "incomplete", "reason": f"no EOF seen; {u['client']} ({u['role']}, {u['direction']}) "
                                                      f"cannot be read past offset {u['offset']}: {u['reason']}"}
        # holes hide an EOF only on the main channel (under TLS without a key log no EOF is seen anyway): a
        # migration cut short whose main channel is whole up to its close is judged by the cut
        hidden_eof = any(_missed(f.conn)[0] for f in conns if f.kind in ("main", "main-recovery"))
        if lost and (hidden_eof or first_cut is None):
            return {"status": "incomplete", "reason": f"no EOF seen, and the capture misses {lost} bytes of the "
                                                      "streams (lost or snaplen-cut packets)"}
        if conns and tls_only:
            return self.tls_outcome(conns, postcopy=self.tls_postcopy, cut=first_cut)
        if cut is not None and not (cut.by == "source" and mains and not any(B.ended(f.conn) for f in mains)):
            # a source's close is a cut once the main channel has ended with no EOF: while main is open the
            # stream may still end well (and a live view must not say "failed" before it knows)
            return {"status": "failed", "reason": self.cut_reason(cut, mains)}
        return {"status": "incomplete", "reason": "the capture ends before the migration does"}

    def cut_reason(self, cut: B.Cut, mains: list[ConnectionFacts], postcopy: bool | None = False) -> str:
        """Who ended the migration before the main channel's EOF, and what QEMU does about it. The first
        clause is the headline's. ``postcopy``: whether postcopy ran, read from ``mains`` (POSTCOPY_RUN) when
        they are readable; None: a postcopy set-up under TLS, whether it had started is hidden."""
        what = "reset" if cut.reset else "closed"
        chan = cut.channel
        kind = ("TLS connection" if chan.kind == "tls" else "silent connection" if chan.kind is None
                else chan.kind.removesuffix("-candidate"))
        name = f"{'main' if chan in mains else kind} {_addr(chan.conn.client)}"
        if postcopy is not None:
            postcopy = postcopy or any(f.commands("POSTCOPY_RUN") for f in mains)
        if cut.by == "source":
            why = f"the source stopped mid-stream at {_fmt(cut.at)} ({what} {name}, no EOF on the main channel); "
            if postcopy:
                return why + ("postcopy was running: a source that failed, exited or was killed, or a "
                              "migrate_cancel, which QEMU 7.2 still accepts in postcopy (10.0 and 11.1 refuse it: "
                              "\"Postcopy migration in progress, cannot cancel.\"); the guest already runs on the "
                              "destination, which does not fail but pauses (postcopy-paused) and waits for a "
                              "recovery; the pages still on the source are lost unless the source recovers")
            return why + ("QEMU's migrate_cancel does this, and so does a source that fails, exits or is killed (the "
                          "wire cannot tell them apart); the destination then fails on the cut stream")
        if postcopy:
            after = ("in postcopy the source does not fail but pauses (postcopy-paused) and waits for a recovery; "
                     "the guest, which ran on the destination, is lost unless that destination recovers")
        elif postcopy is None:
            after = ("the source fails on the broken channels, or, if postcopy had started (the set-up has a "
                     "preempt channel; TLS hides whether it ran), pauses (postcopy-paused) and waits for a recovery")
        else:
            after = "the source fails on the broken channels"
        if cut.whole:
            kept = cut.ended - cut.refused
            # (a channel it refused at once, as 7.2 refuses the real main read as multifd, leaves the others
            # open: behaviour.prompt_drop; channels ended a moment after their first bytes all at once are a
            # stop too, so "none a moment after its first bytes" was not always true)
            which = (f"all {kept} channels (first {name}), none refused while the others stayed open" if kept > 1
                     else f"its only channel ({name}), not a moment after its first bytes")
            if cut.refused:
                which += (f", and refused {cut.refused} later connect(s) (a reset answered the SYN: nothing "
                          "listened on the port any more)")
            why = (f"the destination stopped as a whole at {_fmt(cut.at)}: it {what} {which}, before the main "
                   "channel's EOF, with no error on the return path; its QEMU failed to load the stream, exited, "
                   f"crashed or was killed (Linux resets a socket closed with unread data in it); {after}")
        else:
            why = f"the destination {what} {name} at {_fmt(cut.at)} before the main channel's EOF"
            if postcopy or postcopy is None:
                why += f"; {after}"
        return why


def _closed_after_source(f: ConnectionFacts) -> bool:
    """Closed with FINs both ways and no reset before them, the destination's FIN after the source's last
    data."""
    c = f.conn
    last = c.last_data_ts[0]
    return (_abort(c) is None and c.fin_ts[0] is not None and c.fin_ts[1] is not None and last is not None
            and c.fin_ts[1] >= last)


SET_UP_WINDOW_S = 0.5   # a set-up preempt connect follows main within milliseconds; postcopy starts later


def preempt_early_without_listen(main: ConnectionFacts, pre: ConnectionFacts) -> tuple[bool | None, str]:
    """Whether the preempt channel was connected at set-up when the main channel never got as far as
    POSTCOPY_LISTEN (a kill, a cancel or a failed preempt connect in ``postcopy_start``, which then sends
    none), with what to add to the evidence. A channel that connected after main had ended is not: a set-up
    connect comes right after main's, never that late. Else, 8.0+ connects it only after a PONG on the
    return path, so one opened before the destination's first return-path byte is set-up (7.2); one opened
    after that byte and well after main is postcopy start (8.0+); else unknown. Without this a 10.0 source
    whose preempt connect at postcopy start was refused (the destination had just died) read as a <= 7.2
    set-up connect."""
    opened = start_ts(pre)
    main_end = min((t for t in (*main.conn.fin_ts, *main.conn.rst_ts) if t is not None), default=None)
    if main_end is not None and opened > main_end:
        return False, (f" (no POSTCOPY_LISTEN: it connected {opened - main_end:.3f} s after the main channel had "
                       "ended, which a connect at set-up never does)")
    answered = main.conn.first_data_ts[1]
    if answered is None or opened < answered:
        return True, ""
    if opened - start_ts(main) > SET_UP_WINDOW_S:
        return False, ""
    return None, ""


def order_window(order: list[ConnectionFacts]) -> float:
    """How far apart two handshakes seen here may be and still have reached the destination the other way
    round: the spread of the round trips measured on this path (0 where the capture shows the
    destination's own accept times: same host, or near the destination)."""
    v = vantage(order)
    if v["guess"] in ("same-host", "destination", "unknown"):
        return 0.0
    rtts = [f.conn.synack_ts - f.conn.syn_ts for f in order
            if f.conn.syn_ts is not None and f.conn.synack_ts is not None]
    return max(rtts) - min(rtts) if len(rtts) > 1 else 0.0


def order_certainty(order: list[ConnectionFacts], window: float) -> list[bool]:
    """Per connection (in the order seen), whether its place in the destination's accept order is sure:
    no neighbour's handshake lies within ``window`` of its own."""
    times = [role_ts(f) for f in order]
    out = []
    for i, t in enumerate(times):
        near = (i > 0 and t - times[i - 1] < window) or (i + 1 < len(times) and times[i + 1] - t < window)
        out.append(not near)
    return out


MAX_ORDERS = 5040


def candidate_orders(n: int, certain: list[bool]) -> list[tuple[int, ...]]:
    """Accept orders to try, the order seen first, then every other one that keeps the certain connections in
    place and permutes each run of uncertain neighbours, fewest inversions first (bounded)."""
    seen = tuple(range(n))
    runs: list[list[int]] = []
    for i in range(n):
        if not certain[i]:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
    total = 1
    for run in runs:
        total *= math.factorial(len(run))
    if total == 1 or total > MAX_ORDERS:
        return [seen]
    orders = [seen]
    for combo in itertools.product(*(itertools.permutations(run) for run in runs)):
        perm = list(seen)
        for run, p in zip(runs, combo, strict=True):
            for slot, idx in zip(run, p, strict=True):
                perm[slot] = idx
        if tuple(perm) != seen:
            orders.append(tuple(perm))
    orders[1:] = sorted(orders[1:], key=_inversions)
    return orders


def _inversions(perm: tuple[int, ...]) -> int:
    return sum(1 for i in range(len(perm)) for j in range(i + 1, len(perm)) if perm[i] > perm[j])


def _keylog_hint(conns: list[ConnectionFacts]) -> str:
    """What would read hidden TLS contents: a key log, or (one was given) why it did not."""
    if any(f.tls is not None for f in conns):
        return "the key log given did not decrypt them (capture.keylog.problems says why)"
    return "pass --keylog to read them"


def _fmt(ts: float | None) -> str:
    return "?" if ts is None else f"{ts:.6f}"


def vantage(conns: list[ConnectionFacts]) -> dict[str, Any]:
    """Where the capture was taken, judged from handshake timing."""
    a, b = [], []
    for f in conns:
        c = f.conn
        if c.syn_ts is not None and c.synack_ts is not None and c.handshake_ts is not None:
            a.append(c.synack_ts - c.syn_ts)
            b.append(c.handshake_ts - c.synack_ts)
    if not a:
        return {"guess": "unknown", "note": "no complete handshake seen: accept order is the order of first packets"}
    ma, mb = sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]
    if ma < 2e-4 and mb < 2e-4:
        guess, note = "same-host", ("SYN-ACK and ACK both follow within 0.2 ms (loopback or one host): "
                                    "handshake times are the destination's accept-queue times")
    elif ma < mb / 4:
        guess, note = "destination", ("SYN-ACK is immediate and the ACK takes a round trip: captured near the "
                                      "destination, handshake times are accept-queue times")
    elif mb < ma / 4:
        guess, note = "source", ("the ACK follows the SYN-ACK at once: captured near the source; the "
                                 "destination queued each connection about half a round trip after the time shown")
    else:
        guess, note = "between", "captured between the hosts: accept times are shifted by part of a round trip"
    return {"guess": guess, "median_syn_to_synack": round(ma, 6), "median_synack_to_ack": round(mb, 6),
            "note": note}
