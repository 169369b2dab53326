"""What the destination visibly did, and which destination policies that behaviour agrees with.

A policy (analysis/policies.py) predicts the role the destination gives each connection; from those
roles follow things a capture shows without any knowledge of the destination's version:

- the destination writes only on the connection it took as main (its return path: PONG, SHUT, page
  requests), so return-path bytes name the destination's main channel;
- a real main channel read as a multifd channel fails the hello check at once: the destination closes
  or resets it a moment after its first bytes, and the migration never completes;
- a migration whose main channel reached EOF, with SHUT 0 on the return path or with every channel
  closed by the source first, was loaded: no policy that predicts a failure or a stall fits it;
- a destination that took a silent connection as main (or waits in a peek on it) never answers on the
  real main channel's return path, while one that reads main answers the source's PING at once;
- once the source has stopped mid-stream (cancelled, failed, killed), or when the destination drops every
  channel at once (a failed load, an exit, a kill), every destination closes its channels: those closes
  rule no policy out (:func:`first_cut`).

:func:`judge_policies` keeps the policies the capture agrees with and says why the others do not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dissectors.analysis import policies as P
from dissectors.analysis.facts import ConnectionFacts
from dissectors.tcp.connection import Connection, endpoint_text

#: A destination that rejects a channel does so within this long of its first bytes (7.2: 0.2 ms on
#: loopback; a delayed path adds round trips).
PROMPT_ABORT_S = 1.0
#: ... and when it ends every channel, one of them is that reaction only if it came this soon after the
#: channel's first application bytes (a fraction of a millisecond at the destination, a round trip later from
#: the source's side: 10-20 ms on the 5 +- 3 ms namespace path) and the destination lived on after it
#: (:func:`prompt_drop`); else the destination stopped as a whole.
PROMPT_DROP_S = 0.1
#: A destination that stops as a whole ends its channels within this long of one another (5 ms seen between
#: the first and last socket of a SIGKILLed 10.0 under load).
STOP_SPREAD_S = 0.1


@dataclass(frozen=True)
class Cut:
    """The first end of a leg's connections before the main channel's EOF: who cut the migration short.

    ``by`` "source": the source's FIN or reset came first (QEMU's ``migrate_cancel`` shuts its channels
    down; a source that fails or is stopped closes them too): every destination then fails on the cut
    stream, whatever its rules, so its own closes after this one say nothing about its policy.
    ``by`` "destination" and ``whole``: the destination ended every channel (its only one, in a plain
    precopy), none of them in a prompt drop (:func:`prompt_drop`: a channel it misread, dropped a moment after
    its first application bytes while the process lived on): its QEMU stopped as a whole (a failed load, an
    exit, a crash or a kill; Linux resets a socket closed with unread data in it)."""

    by: str
    at: float
    channel: ConnectionFacts
    reset: bool
    whole: bool = False
    ended: int = 1          # connections the destination ended (whole) or 1
    refused: int = 0        # of those, connects it refused (whole): never accepted, so never a channel of its own


def closed_both_ways(c: Connection) -> float | None:
    """When both sides' FINs had been seen (the later one), else None: a reset after that is teardown noise."""
    fin = c.fin_ts
    return None if fin[0] is None or fin[1] is None else max(fin[0], fin[1])


def ended(c: Connection) -> bool:
    """Either side closed or reset it."""
    return any(t is not None for t in (*c.fin_ts, *c.rst_ts))


def _first_end(c: Connection, side: int) -> tuple[float, bool] | None:
    """(time, is_reset) of one side's first FIN or reset; a reset after both FINs is teardown noise."""
    fin, rst = c.fin_ts, c.rst_ts
    done = closed_both_ways(c)
    r = rst[side] if rst[side] is not None and (done is None or rst[side] < done) else None
    ends = [(t, t == r) for t in (fin[side], r) if t is not None]
    return min(ends) if ends else None


def prompt_drop(at: float, f: ConnectionFacts, others: Sequence[float]) -> bool:
    """The destination ended ``f`` at ``at`` reacting to its first bytes (a channel it refused: QEMU 7.2
    reading the real main channel's QEVM where a multifd hello belongs), not as part of a stop of the whole
    process. ``others``: when the destination ended the leg's other channels.

    The reaction follows what the destination read, so it is timed from the source's first application
    data (``first_write_ts``): under TLS the destination reads nothing before the handshake ends, 2+ round
    trips after the ClientHello. And the process lives on after it: 7.2 prints the error and keeps the channel
    it took as main open until it is stopped (captures/holdback-multifd-7.2: open to the end;
    netpath-multifd4-7.2-misorder.dst: reset 6.3 s later), so another channel ends more than
    ``STOP_SPREAD_S`` after it; a process that is killed, crashes or exits ends every socket at once, however
    soon that comes after some channel's first bytes (kill-destination-tls-10.0: SIGKILLed 38-62 ms after each
    channel's first application data, all three reset within 0.2 ms). A lone channel shows nothing of the
    rest of the process: its timing alone decides."""
    first = f.first_write_ts
    if first is None or not 0 <= at - first <= PROMPT_DROP_S:
        return False
    return not others or max(others) - at > STOP_SPREAD_S


def first_cut(order: Sequence[ConnectionFacts], eof: float | None) -> Cut | None:
    """Who ended the leg first before the main channel's EOF (None: nobody, or only after EOF)."""
    ends = []
    for f in order:
        for side, who in ((0, "source"), (1, "destination")):
            e = _first_end(f.conn, side)
            if e is not None and (eof is None or e[0] < eof):
                ends.append((e[0], side, who, e[1], f))
    if not ends:
        return None
    t, _, who, reset, f = min(ends, key=lambda e: (e[0], e[1]))
    if who == "source":
        return Cut("source", t, f, reset)
    # every channel ended by the destination: before the source ended it (a source's reset answering the
    # destination's own comes after it; on a jittered path one channel's may come before another's), or
    # within STOP_SPREAD_S of its first end (a dying process's sockets close together, while the source,
    # already failing, may shut the others down in between)
    dest = []
    for g in order:
        d, c = _first_end(g.conn, 1), _first_end(g.conn, 0)
        if d is not None and (c is None or d[0] <= c[0] or d[0] - t <= STOP_SPREAD_S):
            dest.append((d, g))
    prompt = any(prompt_drop(e[0], g, [d[0] for d, h in dest if h is not g]) for e, g in dest)
    # (one channel too: a plain precopy's destination that drops its only channel late has stopped as a whole)
    whole = len(dest) == len(order) and not prompt
    return Cut("destination", t, f, reset, whole, len(dest) if whole else 1,
               # a connect the destination's kernel refused (a QEMU that died or gave up on the incoming
               # migration) never became a channel
               sum(g.conn.refused for _, g in dest) if whole else 0)


@dataclass(frozen=True)
class Observed:
    """The destination's visible behaviour on one leg's connections (in accept order)."""

    return_path: tuple[bool, ...]              # the destination wrote on it
    abort: tuple[float | None, ...]            # the destination closed/reset it before the source did
    abort_is_reset: tuple[bool, ...]
    first_data: tuple[float | None, ...]       # the source's first byte on it
    client_data: tuple[bool, ...]
    ended: tuple[bool, ...]                    # closed or reset, by either side
    main_eof: float | None                     # the real main channel's EOF record, if any
    shut_ok: bool                              # SHUT 0 on the return path
    source_closed_all: bool                    # every channel closed by the source, none by the destination
    encrypted: bool
    judged: bool = True                        # False: nothing here is the destination's behaviour
    cut: Cut | None = None                     # who ended the leg first, before the main channel's EOF

    @classmethod
    def unjudged(cls, obs: Observed) -> Observed:
        """The same leg with nothing to judge the destination by (a relay faces it, not the destination)."""
        n = len(obs.return_path)
        return cls((False,) * n, (None,) * n, (False,) * n, obs.first_data, obs.client_data, obs.ended, None,
                   False, False, obs.encrypted, judged=False, cut=obs.cut)

    @property
    def completed(self) -> bool:
        return self.main_eof is not None and (self.shut_ok or self.source_closed_all)


def observe(order: Sequence[ConnectionFacts], roles: Sequence[str]) -> Observed:
    """Aborts: a reset from the destination (Linux resets a socket closed with unread data in it, so the
    destination did not read all that arrived), or a close from the destination before the source's
    and before the main channel's EOF (after EOF a destination that loaded the stream closes first)."""
    mains = [f for f, r in zip(order, roles, strict=True) if r in (P.MAIN, P.RECOVERY)]
    eofs = [r.ts for f in mains for r in f.events if r.kind == "main.eof"]
    eof = min(eofs) if eofs else None
    aborts: list[float | None] = []
    resets: list[bool] = []
    for f in order:
        c = f.conn
        rst_s, rst_c = c.rst_ts[1], c.rst_ts[0]
        fin_s, fin_c = c.fin_ts[1], c.fin_ts[0]
        t: float | None = None
        if rst_s is not None and (rst_c is None or rst_s <= rst_c) and (fin_c is None or rst_s < fin_c):
            t = rst_s      # (after the source's FIN a reset is a destination dropping what it no longer needs)
        elif fin_s is not None and (fin_c is None or fin_s < fin_c) and (rst_c is None or fin_s < rst_c) \
                and (eof is None or fin_s < eof):
            t = fin_s
        aborts.append(t)
        resets.append(t is not None and t == rst_s)
    shut = [r for f in mains for r in f.events if r.kind == "rp.shut"]
    shut_ok = any(not r.fields.get("status", r.fields.get("value", 0)) for r in shut)
    closed_by_source = all(f.conn.closed_by == "client" for f in order) and bool(order)
    return Observed(
        return_path=tuple(f.wrote(1) for f in order),
        abort=tuple(aborts),
        abort_is_reset=tuple(resets),
        first_data=tuple(f.conn.first_data_ts[0] for f in order),
        client_data=tuple(f.wrote(0) for f in order),
        ended=tuple(ended(f.conn) for f in order),
        main_eof=eof,
        shut_ok=shut_ok,
        source_closed_all=closed_by_source,
        encrypted=any(r == P.TLS or (f.encrypted and not f.decrypted) for f, r in zip(order, roles, strict=True)),
        cut=first_cut(order, eof),
    )


@dataclass
class Fit:
    """How one policy's prediction fits what the destination did."""

    policy: str
    verdict: str
    fits: bool
    against: list[str] = field(default_factory=list)    # observations that contradict the prediction
    support: list[str] = field(default_factory=list)    # observations it predicts
    unjudged: str | None = None                         # why the capture cannot test the prediction


def verdict(views: Sequence[P.ChannelView], a: P.Assignment, obs: Observed | None = None) -> str:
    """ok / fails / stalls / "stalls, then fails", for one policy's roles on one leg."""
    bad = [i for i, (v, r) in enumerate(zip(views, a.roles, strict=True)) if P.misread(v.role, r)]
    if not bad:
        return "ok"
    stalled = [i for i in bad if a.roles[i] == P.BLOCKED or (views[i].role == P.PREEMPT and a.roles[i] == P.MAIN)]
    if not stalled:
        return "fails"
    if obs is not None and any(obs.client_data[i] or obs.ended[i] for i in stalled if a.roles[i] != P.BLOCKED
                               or views[i].role == P.PREEMPT):
        return "stalls, then fails"      # the source wrote on the silent channel at last, or it closed
    return "stalls"


def judge_policies(order: Sequence[ConnectionFacts], views: Sequence[P.ChannelView],
                   assignments: dict[str, P.Assignment], obs: Observed, paused: bool = False) -> dict[str, Fit]:
    """``paused``: a later recovery leg follows, so this leg's channels were dropped at a pause by design."""
    names = [endpoint_text(f.conn.client) for f in order]
    true_main = next((i for i, v in enumerate(views) if v.role == P.MAIN), None)
    fits: dict[str, Fit] = {}
    for name, a in assignments.items():
        v = verdict(views, a, obs)
        fit = Fit(name, v, True)
        fits[name] = fit
        if obs.encrypted or not obs.judged:
            fit.unjudged = ("TLS hides what the destination answers" if obs.encrypted else
                            "this leg faces a relay, whose closes are not the destination's")
            continue
        dest_main = next((i for i, r in enumerate(a.roles) if r == P.MAIN), None)
        # 1. Return-path bytes name the destination's main channel.
        writers = [i for i, w in enumerate(obs.return_path) if w]
        for i in writers:
            if i != dest_main:
                fit.against.append(f"the destination wrote on {names[i]} (return path), so it took that "
                                   f"connection as main; {name} gives main to "
                                   f"{names[dest_main] if dest_main is not None else 'none'}")
            else:
                fit.support.append(f"the destination answered on {names[i]}, the connection {name} makes main")
        # 2. A failing or stalling prediction cannot fit a migration the destination loaded to the end.
        if v != "ok" and obs.completed:
            how = "SHUT 0 on the return path" if obs.shut_ok else "every channel closed by the source"
            fit.against.append(f"the destination loaded the whole stream (main channel EOF, {how}), which "
                               f"{name} says {v}")
        # 3. The real main read as multifd: the destination drops it a moment after its first bytes.
        if true_main is not None and a.roles[true_main] == P.MULTIFD:
            t, first = obs.abort[true_main], obs.first_data[true_main]
            if t is not None and first is not None and t - first <= PROMPT_ABORT_S:
                how = "reset" if obs.abort_is_reset[true_main] else "closed"
                fit.support.append(f"the destination {how} {names[true_main]} {(t - first) * 1000:.1f} ms after "
                                   "its first bytes, as a failed multifd hello check does")
            elif t is None and (obs.main_eof is not None or obs.return_path[true_main]):
                fit.against.append(f"the destination kept reading {names[true_main]} (the real main channel) "
                                   f"{'to its EOF' if obs.main_eof is not None else ''}"
                                   f"{' and answered on it' if obs.return_path[true_main] else ''}, which "
                                   f"{name} reads as a multifd channel")
        # 4. A prediction of success: the destination does not drop a channel before the stream ends (unless
        # the source cut the stream first, or the destination stopped as a whole: every rule predicts that).
        if v == "ok" and not paused:
            cut = obs.cut
            for i, t in enumerate(obs.abort):
                if t is None or not obs.client_data[i]:
                    continue
                if cut is not None and (cut.whole or (cut.by == "source" and t >= cut.at)):
                    continue
                if obs.abort_is_reset[i]:
                    fit.against.append(f"the destination reset {names[i]} (closed it with unread data), "
                                       f"which {name} does not predict")
                else:
                    fit.against.append(f"the destination closed {names[i]} before the migration stream ended, "
                                       f"which {name} does not predict")
            if obs.completed:
                fit.support.append("the destination loaded the whole stream")
            # A destination reading main answers the source's PING on the return path at once (PONG).
            if dest_main is not None and order[dest_main].commands("PING") and not obs.return_path[dest_main]:
                fit.against.append(f"the destination never answered the PING on {names[dest_main]} (no "
                                   f"return-path byte), which {name} makes main: reading it, it would have")
        # 5. A stall with the real main channel unread: no answer on its return path.
        if v.startswith("stalls") and true_main is not None and obs.return_path[true_main] \
                and dest_main != true_main:
            fit.against.append(f"the destination answered on {names[true_main]}, the real main channel, "
                               f"which {name} leaves unread")
        fit.fits = not fit.against
    return fits
