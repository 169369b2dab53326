"""The analyse report as text for people: a headline, then per migration its findings first (evidence
indented under them), the context (policy, generations, vantage; said once when every migration shares
it), and a table of channels per leg. A relay's two legs are one migration. Wrapped to the terminal's
width (80 when piped; ``COLUMNS`` honoured); times in the format of :mod:`dissectors.outputs.timefmt`."""

from __future__ import annotations

import shutil
import textwrap
from typing import Any

from dissectors.analysis.policies import BLOCKED
from dissectors.analysis.wording import leg_connections
from dissectors.outputs.timefmt import TimeFormat

#: Outcome statuses, worst first: the headline speaks of the worst migration.
SEVERITY = ("failed", "stalled", "unknown", "incomplete", "completed")


def terminal_width() -> int:
    """The width to wrap to: ``COLUMNS``, else the terminal's, else 80 (a pipe)."""
    return max(shutil.get_terminal_size((80, 24)).columns, 40)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _short_size(n: float) -> str:
    """A size for a table cell, as ``ls -h``: ``639B``, ``4.2K``, ``110K``, ``18M`` (powers of 1024)."""
    if n < 1024:
        return f"{n:.0f}B" if n else "0"
    for unit in "KMGT":
        n /= 1024
        if n < 1024 or unit == "T":
            return f"{n:.1f}{unit}" if n < 10 else f"{n:.0f}{unit}"
    return str(n)


def table(rows: list[list[str]], header: list[str], width: int = 0) -> list[str]:
    """Columns two spaces apart, one when that is what fits in ``width``."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    gap = " " if width and sum(widths) + 2 * (len(widths) - 1) > width else "  "
    fmt = gap.join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*map(str, r)) for r in rows]
    return [line.rstrip() for line in out]


class _Writer:
    """Lines wrapped to ``width``: a paragraph keeps its indent, and continues under its text."""

    def __init__(self, width: int, tf: TimeFormat, base: float | None = None) -> None:
        self.width, self.tf, self.base = width, tf, base
        self.lines: list[str] = []

    def para(self, text: str, indent: int = 0, hang: int = 2) -> None:
        text = self.tf.retime(text, self.base)
        self.lines += textwrap.wrap(text, self.width, initial_indent=" " * indent,
                                    subsequent_indent=" " * (indent + hang), break_on_hyphens=False,
                                    break_long_words=False) or [""]

    def raw(self, line: str) -> None:
        self.lines.append(line)

    def at(self, ts: float | None) -> str:
        return self.tf.at(ts, self.base)


# -- grouping ------------------------------------------------------------------------------------------
def items(report: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The migrations as people count them: ``(migration, its relay's source-side leg or None)``; a relay's
    destination-side leg stands for both, in the place of the first of the two."""
    by_id = {m["id"]: m for m in report["migrations"]}
    merged: set[int] = set()
    out = []
    for m in report["migrations"]:
        relay = m.get("relay") or {}
        peer = by_id.get(relay.get("peer"))
        if peer is not None and (peer.get("relay") or {}).get("peer") == m["id"]:
            if m["id"] in merged:
                continue
            merged |= {m["id"], peer["id"]}
            dst, src = (m, peer) if relay.get("side") == "destination" else (peer, m)
            out.append((dst, src))
        else:
            out.append((m, None))
    return out


def _start(m: dict[str, Any], src: dict[str, Any] | None) -> float | None:
    starts = [x["start_time"] for x in (m, src) if x is not None and x.get("start_time") is not None]
    return min(starts) if starts else None


def taken_as(assigned: str) -> str:
    """How the destination takes a channel, for a sentence ("the destination ..."): a blocked peek gives
    no role ("takes it as blocked" said nothing to a reader)."""
    if assigned == BLOCKED:
        return "gives it no role, stuck in a peek"
    return f"takes it as {assigned}"


# -- headline ------------------------------------------------------------------------------------------
def _destination(policy: dict[str, Any], given: str | None = None) -> str:
    """The destination as the headline names it: the version given with ``--qemu-version`` (6.0 is judged
    by qemu-7.2's rules but is not a QEMU 7.2), else the generation whose rules judged it, said to be
    assumed when the capture fits other generations' rules too."""
    if given:
        return f"QEMU {given}"
    name = policy["name"]
    dest = f"QEMU {name[5:]}" if name.startswith("qemu-") else name
    return f"{dest} (assumed)" if len(policy.get("fits_capture") or ()) > 1 else dest


def _stall_gist(s: dict[str, Any]) -> str:
    dur = f" for {s['duration']:.1f} s" if s.get("duration") is not None else ""
    ongoing = " (still at the capture's end)" if s.get("ongoing_at_capture_end") else ""
    return {"page-request": f"postcopy page requests unanswered{dur}{ongoing}",
            "preempt-as-main": f"the silent preempt channel taken as main: no progress{dur}{ongoing}",
            "peek-blocked": f"the destination waits on a silent channel{dur}{ongoing}",
            "no-progress": f"no byte on any channel{dur}{ongoing}"}.get(s["kind"], f"{s['kind']} stall{dur}")


def gist(m: dict[str, Any], qemu_version: str | None = None) -> str:
    """What matters about one migration, in a few words, read off its findings and outcome
    (``qemu_version``: the destination's, as given with ``--qemu-version``)."""
    out = m["outcome"]
    status = out["status"]
    dest = _destination(m["policy"], qemu_version)
    mis = sorted(m["misclassifications"], key=lambda x: (x["leg"], x["accept_index"]))
    if mis:
        x = mis[0]
        if x["assigned_role"] == BLOCKED:
            silent = not any(c.get("bytes_to_server") for c in m.get("channels", []) if c["client"] == x["client"])
            return (f"a {dest} destination stuck in a peek on the silent {x['role']} channel" if silent else
                    f"{x['role']} channel never taken in: a {dest} destination stuck in a peek")
        if x["assigned_role"] == "main":
            return f"{x['role']} channel accepted before main on a {dest} destination"
        return f"{x['role']} channel taken as {x['assigned_role']} by a {dest} destination"
    if m["stalls"]:
        return _stall_gist(m["stalls"][0])
    for u in m.get("unsupported", []):
        return f"{u['text'].split(': ')[0]}, unsupported by {dest.removesuffix(' (assumed)')}"   # its text says which
    for u in m.get("unreadable", []):
        return f"malformed record on the {u['role']} channel {u['client']} at offset {u['offset']}"
    if status == "unknown":
        tail = out["reason"].split("; ", 1)[1:]
        return "TLS not decrypted (give --keylog)" + (f"; {tail[0]}" if tail else "")
    if status in ("failed", "incomplete"):
        return out["reason"].split("; ")[0]
    shape = _shape(m)
    if any(not c["verifiable"] for c in m["channels"]):
        shape += "; TLS, not decrypted" if any(
            c.get("role_inferred") for c in m["channels"]) else "; some roles not verifiable"
    return shape


def _shape(m: dict[str, Any]) -> str:
    """``precopy, main + 4 multifd, 19.0 MiB in 1.23 s``."""
    setup = (m.get("legs") or [{}])[0].get("setup", {})
    kind = "postcopy" if setup.get("postcopy") else "precopy"
    pc = m.get("postcopy") or {}
    if kind == "postcopy" and pc.get("advise_time") is not None and pc.get("listen_time") is None \
            and pc.get("run_time") is None:
        # the main channel was read (ADVISE seen) and never switched: QEMU ran a precopy with postcopy-ram on
        kind = "precopy (postcopy enabled, never started)"
    roles = [c["role"] for c in m["channels"] if c["leg"] == 0]
    parts = ["main"] + [f"{roles.count(r)} {r}" if roles.count(r) > 1 else r for r in ("multifd", "preempt")
                        if r in roles]
    if len(parts) == 1:
        parts = ["main channel only"]
    recov = sum(1 for leg in m.get("legs", []) if leg.get("kind") == "recovery")
    sent = sum(c["bytes_to_server"] for c in m["channels"])
    dur = (m["end_time"] - m["start_time"]) if m.get("end_time") and m.get("start_time") else None
    tail = f" in {dur:.2f} s" if dur is not None else ""
    rec = f", {recov} recovery leg(s)" if recov else ""
    return f"{kind}, {' + '.join(parts)}{rec}, {_size(sent)}{tail}"


def _worst(its: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The migration the headline speaks of: the worst outcome, then the most findings."""
    def rank(it: tuple[dict[str, Any], dict[str, Any] | None]) -> tuple[int, int]:
        s = it[0]["outcome"]["status"]
        return (SEVERITY.index(s) if s in SEVERITY else len(SEVERITY), -_migration_findings(it[0]))

    return min(its, key=rank)


def headline(report: dict[str, Any]) -> str:
    """The one line that matters: the worst migration's status and what went wrong (or its shape)."""
    cap = report["capture"]
    stopped = cap.get("stopped")
    cut = (f"capture cut at {stopped['where']} {stopped['offset']} ({stopped['reason'].split(':')[0].split(' (')[0]})"
           if stopped else "")
    its = items(report)
    if not its:
        conns = len(report.get("other_connections", [])) + sum(
            lim["over"] for lim in report.get("limits", []) if lim["limit"] == "other_connections_listed")
        what = f"no QEMU migration channel in {conns} TCP connection(s), {cap['tcp_segments']} segment(s)"
        if _hidden_tls_hint(report):
            what += " (TLS hidden: pass --keylog)"
        return f"NO MIGRATION: {what}" + (f"; {cut}" if cut else "")

    worst = _worst(its)
    m, src = worst
    status = m["outcome"]["status"]
    text = f"{status.upper()}: {gist(m, report.get('options', {}).get('qemu_version'))}"
    if status == "incomplete" and stopped:
        text = f"INCOMPLETE: {cut.replace('capture cut', 'capture cut short')}"
    elif cut:
        text += f"; {cut}"
    if len(its) > 1:
        others = [it[0]["outcome"]["status"] for it in its if it is not worst]
        counts = ", ".join(f"{others.count(s)} {s}" for s in SEVERITY if s in others)
        which = f"migrations {m['id']} and {src['id']}, through a relay" if src else f"migration {m['id']}"
        text += f" ({which}; {len(its) - 1} other(s): {counts})"
    return text


def one_line(text: str, width: int) -> str:
    """``text`` in ``width`` columns: cut at the last clause that fits, else at a word, marked with ``...``."""
    if len(text) <= width:
        return text
    room = text[:width - 4]
    for sep in ("; ", " (", ", ", " "):
        cut = room.rfind(sep)
        if cut > width // 2:
            return room[:cut] + " ..."
    return room + " ..."


def _migration_findings(m: dict[str, Any]) -> int:
    return len(m["misclassifications"]) + len(m["stalls"]) + len(m["unreadable"]) + len(m.get("unsupported", []))


def migrations_counted(its: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> str:
    """``items``' migrations counted as people count them: "1 migration(s), 1 through a relay (two legs)"."""
    relayed = sum(1 for _, src in its if src is not None)
    return f"{len(its)} migration(s)" + (f", {relayed} through a relay (two legs)" if relayed else "")


# -- the report ----------------------------------------------------------------------------------------
def render_report(report: dict[str, Any], tf: TimeFormat | None = None, width: int | None = None) -> str:
    tf = tf or TimeFormat()
    width = width or terminal_width()
    cap = report["capture"]
    w = _Writer(width, tf, cap.get("first_time"))
    its = items(report)
    # the headline's times count from the start of the migration it speaks of, as that migration's lines do
    head_base = _start(*_worst(its)) if its else None
    w.raw(one_line(tf.retime(headline(report), head_base if head_base is not None else cap.get("first_time")), width))
    shown = migrations_counted(its)
    first = f" from {tf.absolute(cap['first_time'])}" if cap.get("first_time") is not None else ""
    w.para(f"{cap['file']}: {cap['frames']} frames ({cap['tcp_segments']} TCP){first}; {shown}")
    stopped = cap.get("stopped")
    if stopped:
        w.para(f"! capture cut short: {stopped['file']}: {stopped['where']} {stopped['offset']}: "
               f"{stopped['reason']}; what follows covers the capture up to there", 2, 4)
    for warning in cap.get("warnings", []):
        if stopped and warning.endswith("stopped reading"):
            continue
        w.para(f"warning: {warning}", 2, 4)
    for lim in report.get("limits", []):
        w.para(f"! limit reached ({lim['limit']}, bound {lim['bound']}): {lim['effect']}", 2, 4)
    keylog = cap.get("keylog")
    if keylog:
        w.para(f"key log {keylog['file']}: {keylog['decrypted']} of {keylog['tls_connections']} TLS "
               f"connection(s) decrypted", 2)
        for problem in keylog["problems"]:
            w.para(f"TLS: {problem}", 2, 4)
    contexts = [_context(m, src) for m, src in its]
    common = contexts[0] if len(its) > 1 and all(c == contexts[0] for c in contexts) else None
    if common:
        w.para("Every migration:", 0)
        for line, indent in common:
            w.para(line, indent, 4)
    for m, src in its:
        w.raw("")
        w.lines += _migration(m, src, tf, width, with_context=common is None)
    others = report.get("other_connections", [])
    if others:
        w.raw("")
        since = " (times from the capture's start)" if tf.relative else ""
        w.para(f"Other TCP connections ({len(others)}), not part of a migration{since}:")
        rows = [[o["client"], o["server"], o.get("kind", ""), w.at(o.get("handshake_ts")),
                 o["directions"][0]["bytes"], o["directions"][1]["bytes"]] for o in others]
        w.lines += ["  " + x for x in table(rows, ["client", "server", "kind", "handshake", "to server",
                                                    "to client"])]
        hint = _hidden_tls_hint(report)
        if hint:
            w.para(hint, 2, 4)
    return "\n".join(w.lines) + "\n"


def _hidden_tls_hint(report: dict[str, Any]) -> str | None:
    """Why TLS connections left out of every migration may still be one: a plain precopy over TLS is a single
    connection, and one TLS connection alone says nothing of its contents (any TLS service looks the same)."""
    tls = sum(1 for o in report.get("other_connections", []) if o.get("kind") == "tls")
    if not tls or "keylog" in report["capture"]:
        return None
    return (f"{tls} TLS connection(s) with hidden contents: a lone one may be a migration's main channel (a "
            "precopy over TLS uses no other); pass --keylog to read it")


def render_migration(m: dict[str, Any], tf: TimeFormat | None = None, width: int | None = None) -> list[str]:
    """One migration's lines (without a relay peer), its context included."""
    return _migration(m, None, tf or TimeFormat(), width or terminal_width(), with_context=True)


def _context(m: dict[str, Any], src: dict[str, Any] | None) -> list[tuple[str, int]]:
    """Policy, generations and vantage: ``(text, indent)`` lines, the same for migrations judged alike."""
    pol = m["policy"]
    out = [(f"policy {pol['name']}: {pol['why']}", 2)]
    evidence = pol.get("evidence")
    if src is not None and src["policy"].get("evidence") and src["policy"].get("source_generation") != \
            pol.get("source_generation"):
        pol_src = src["policy"]           # the source side's stream may say more of the source
        out.append((f"source generation {pol_src['source_generation']} (read on the source side): "
                    + "; ".join(pol_src["evidence"]), 2))
    elif evidence:
        out.append((f"source generation {pol['source_generation']}: " + "; ".join(evidence), 2))
    fitting = pol.get("fits_capture")
    if fitting is not None:
        out.append((f"destination generation {pol.get('destination_generation')}: its behaviour fits "
                    f"{', '.join(fitting) or 'no policy'}", 2))
        for name, why in pol.get("ruled_out", {}).items():
            out.append((f"- not {name}: {why[0]}", 6))
    vantages = {x["vantage"].get("note", x["vantage"].get("guess")) for x in (m, src) if x is not None}
    for v in sorted(vantages):
        out.append((f"vantage: {v}", 2))
    return out


def _migration(m: dict[str, Any], src: dict[str, Any] | None, tf: TimeFormat, width: int,
               with_context: bool) -> list[str]:
    base = _start(m, src)
    w = _Writer(width, tf, base)
    out = m["outcome"]
    relay = m.get("relay")
    if src is not None:             # two JSON migrations, both ids said (the report's "migrations" list has both)
        name = (f"Migrations {m['id']} and {src['id']}, the destination and source sides of one migration to "
                f"{m['destination']} through a relay at {src['destination']}")
    elif relay:
        name = (f"Migration {m['id']} to {m['destination']} [relay leg, {relay['side']} side; the other leg, "
                f"migration {relay['peer']}, is not in the capture]")
    else:
        name = f"Migration {m['id']} to {m['destination']}"
    w.para(f"{name}: {out['status'].upper()}")
    if base is not None:          # said first: the reason's times count from it
        since = {"r": "relative to it", "a": "the local time of day", "ad": "local", "u": "the UTC time of day",
                 "ud": "UTC", "e": "seconds since the epoch"}[tf.mode]
        w.para(f"started {tf.absolute(base)}; times below are {since}", 2)
    w.para(out["reason"], 2, 2)
    _findings(w, m)
    if src is not None and src.get("unreadable"):
        w.para("source side:", 2)
        _findings(w, src)
    if with_context:
        for line, indent in _context(m, src):
            w.para(line, indent, 4)
    for note in m.get("notes", []):
        w.para(f"note: {note}", 2, 4)
    if src is None:
        _legs_table(w, m, 2)
    else:
        w.para(f"destination side, migration {m['id']}: the relay's connections to {m['destination']}, in the "
               "destination's accept order", 2, 4)
        _legs_table(w, m, 2)
        w.para(f"source side, migration {src['id']}: the source's connections to the relay at "
               f"{src['destination']}, in the source's connect order", 2, 4)
        _legs_table(w, src, 2)
    _postcopy(w, m)
    rep = m.get("multifd_repeated_pages")
    if rep:
        first = rep["examples"][0] if rep["examples"] else None
        example = (f", e.g. {first['block']} 0x{first['offset']:x} in packets {first['packets'][0]} and "
                   f"{first['packets'][1]}" if first else "")
        w.para(f"multifd: {rep['count']} page(s) sent twice by the QEMU 7.2 queueing race{example}; "
               "harmless, and query-migrate counts each once (fixed in 8.0 by ddbe628c97c3)", 2, 4)
    wi = []
    for name, legs in m.get("what_if", {}).items():
        verdicts = sorted({leg["verdict"] for leg in legs})
        ruled_out = any(leg.get("fits_capture") is False for leg in legs)
        wi.append(f"{name}: {'/'.join(verdicts)}" + (" (not what this destination did)" if ruled_out else ""))
    if wi:
        w.para("this accept order under each policy: " + ", ".join(wi), 2, 4)
    return w.lines


def _findings(w: _Writer, m: dict[str, Any]) -> None:
    unreadable = m.get("unreadable", [])
    if not (m["misclassifications"] or m["stalls"] or unreadable or m.get("unsupported")):
        return
    w.para("FINDINGS", 2)
    for u in m.get("unsupported", []):
        w.para(f"! unsupported ({u['policy']}): {u['text']}", 2, 4)
    for u in unreadable:
        w.para(f"! unreadable: {u['client']} ({u['role']}, {u['direction']}) from offset {u['offset']}: "
               f"{u['reason']}", 2, 4)
    sent = {c["client"]: c.get("bytes_to_server", 0) for c in m.get("channels", [])}
    for x in m["misclassifications"]:
        when = "its first bytes at" if sent.get(x["client"]) else "silent; accepted at"
        w.para(f"! misclassified: {x['client']} is {x['role']} but the destination {taken_as(x['assigned_role'])} "
               f"({x['policy']}); {when} {w.at(x['time'])}", 2, 4)
        w.para(f"QEMU would show: {x['failure']}", 6, 4)
        for e in x["evidence"]:
            w.para(f"- {e}", 6, 2)
    for s in m["stalls"]:
        end = "capture end" if s["ongoing_at_capture_end"] else w.at(s["end"])
        w.para(f"! stall ({s['kind']}): {w.at(s['start'])} to {end}, channels {', '.join(s['channels'])}", 2, 4)
        for e in s["evidence"]:
            w.para(f"- {e}", 6, 2)
        for r in s["outstanding_requests"][:5]:
            w.para(f"- waiting: {r['block']} {r['addr']} since {w.at(r['time'])}", 6, 2)


def _legs_table(w: _Writer, m: dict[str, Any], indent: int) -> None:
    legs = {c["leg"] for c in m["channels"]}
    rows = []
    for c in m["channels"]:
        role = c["role"] + (f" #{c['multifd_id']}" if c["multifd_id"] is not None else "")
        if c.get("role_inferred"):
            role += "?"                 # read off the TLS record layer, not the contents
        mark = " !!" if c["misclassified"] else (" ?" if not c["verifiable"] else "")
        if c.get("tls_handshake_done_time") is not None:
            accepted = w.at(c["tls_handshake_done_time"]) + " tls"
        elif c["syn_seen"]:
            accepted = w.at(c["handshake_time"])
        else:
            accepted = f"{w.at(c['first_data_time'])} (no SYN)"
        index = f"{c['leg']}.{c['accept_index']}" if len(legs) > 1 else str(c["accept_index"])
        if c.get("order_certain") is False:
            index += "~"            # its place in the destination's order is inferred, not seen
        rows.append([index, c["client"], accepted, role, c["assigned_role"] + mark,
                     _short_size(c["bytes_to_server"]), _short_size(c["bytes_to_client"]), c["closed_by"] or "-"])
    header = ["#", "client", "accepted", "true role", "assigned", "to dst", "to src", "closed"]
    w.lines += [" " * indent + x for x in table(rows, header, w.width - indent)]
    if len(legs) > 1:
        sets = ", ".join(f"{leg}.N {leg_connections(leg)}" for leg in sorted(legs))
        w.para(f"#: {sets}; N the place in that set's accept order, from 0", indent, 4)
    if any(c.get("tls_handshake_done_time") is not None for c in m["channels"]):
        if (m.get("vantage") or {}).get("guess") in ("source", "between"):
            when = ("the time the client's TLS Finished passed here; it completes the handshake at the "
                    "destination about half a round trip later")
        else:
            when = "the time its TLS handshake completed at the destination (the client's Finished arrived)"
        w.para(f"tls: {when}; QEMU gives a TLS channel its role then, so that is the order shown", indent, 4)
    if any(c.get("order_certain") is False for c in m["channels"]):
        w.para("~ handshakes closer together than the path's jitter at this vantage: the destination's order "
               "is inferred from its behaviour (order_certain: false)", indent, 4)


def _postcopy(w: _Writer, m: dict[str, Any]) -> None:
    for p in (m.get("postcopy") or {}).get("pauses", []):
        w.para(f"postcopy paused at {w.at(p['paused_at'])} (connection lost), resumed {p['duration']:.3f} s "
               f"later on port {p['port']} ({p['resumed_by']})"
               + (f"; {p['requests_waiting']} page request(s) waited across it (longest "
                  f"{p['longest_wait'] * 1000:.0f} ms)" if p.get("longest_wait") is not None else ""), 2, 4)
    pc = m.get("postcopy") or {}
    if pc.get("run_time") is not None or pc.get("page_requests"):
        lat = (f", latency median {pc['median_latency'] * 1000:.2f} ms, max {pc['max_latency'] * 1000:.2f} ms"
               if pc.get("max_latency") is not None else "")
        flight = f"{pc.get('already_in_flight', 0)} by a page already in flight"
        if (m.get("vantage") or {}).get("guess") in ("destination", "between"):
            # Here a request is seen leaving and a page arriving: a page the source had sent before the
            # request reached it arrives after the request left, so it looks served (the source's capture
            # tells them apart); latencies include the round trip.
            flight += ("; far from the source a page already on its way when the request reached the source "
                       "looks served")
            lat = lat.replace("latency", "latency as seen here (round trip included):", 1)
        w.para(f"postcopy: run at {w.at(pc.get('run_time'))}, {pc.get('page_requests', 0)} page "
               f"requests, {pc.get('served_requests', 0)} served ({flight}), "
               f"{pc.get('unserved_requests', 0)} never served{lat}", 2, 4)
