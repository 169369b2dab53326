"""The analyse report as text for people: findings first, then a table of channels per migration."""

from __future__ import annotations

from typing import Any


def _t(ts: float | None, base: float | None) -> str:
    if ts is None:
        return "-"
    if base is None:
        return f"{ts:.6f}"
    return f"+{ts - base:.4f}s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*map(str, r)) for r in rows]
    return [line.rstrip() for line in out]


def render_report(report: dict[str, Any]) -> str:
    cap = report["capture"]
    lines = [f"{cap['file']}: {cap['frames']} frames, {cap['tcp_segments']} TCP segments, "
             f"{len(report['migrations'])} migration(s)"]
    for w in cap.get("warnings", []):
        lines.append(f"  warning: {w}")
    for lim in report.get("limits", []):
        lines.append(f"  ! limit reached ({lim['limit']}, bound {lim['bound']}): {lim['effect']}")
    keylog = cap.get("keylog")
    if keylog:
        lines.append(f"  key log {keylog['file']}: {keylog['decrypted']} of {keylog['tls_connections']} TLS "
                     f"connection(s) decrypted")
        for problem in keylog["problems"]:
            lines.append(f"  TLS: {problem}")
    for m in report["migrations"]:
        lines.append("")
        lines += render_migration(m)
    others = report.get("other_connections", [])
    if others:
        lines.append("")
        lines.append(f"Other TCP connections ({len(others)}), not part of a migration:")
        rows = [[o["client"], o["server"], o.get("kind", ""), _t(o.get("handshake_ts"), None),
                 o["directions"][0]["bytes"], o["directions"][1]["bytes"]] for o in others]
        lines += ["  " + x for x in table(rows, ["client", "server", "kind", "handshake", "to server",
                                                  "to client"])]
    return "\n".join(lines) + "\n"


def render_migration(m: dict[str, Any]) -> list[str]:
    base = m.get("start_time")
    out = m["outcome"]
    pol = m["policy"]
    relay = m.get("relay")
    leg = f" [relay leg, {relay['side']} side]" if relay else ""
    lines = [f"Migration {m['id']} to {m['destination']}{leg}: {out['status'].upper()} ({out['reason']})",
             f"  policy {pol['name']}: {pol['why']}"]
    if pol.get("evidence"):
        lines.append(f"  source generation {pol['source_generation']}: " + "; ".join(pol["evidence"]))
    fitting = pol.get("fits_capture")
    if fitting is not None:
        lines.append(f"  destination generation {pol.get('destination_generation')}: its behaviour fits "
                     f"{', '.join(fitting) or 'no policy'}")
        for name, why in pol.get("ruled_out", {}).items():
            lines.append(f"      - not {name}: {why[0]}")
    lines.append(f"  vantage: {m['vantage'].get('note', m['vantage'].get('guess'))}")
    if relay:
        lines.append(f"  relay: {relay['note']} (other leg: migration {relay['peer']} to {relay['peer_destination']})")
    for note in m.get("notes", []):
        lines.append(f"  note: {note}")
    unreadable = m.get("unreadable", [])
    if m["misclassifications"] or m["stalls"] or unreadable or m.get("unsupported"):
        lines.append("  FINDINGS")
    for u in m.get("unsupported", []):
        lines.append(f"  ! unsupported ({u['policy']}): {u['text']}")
    for u in unreadable:
        lines.append(f"  ! unreadable: {u['client']} ({u['role']}, {u['direction']}) from offset {u['offset']}: "
                     f"{u['reason']}")
    for x in m["misclassifications"]:
        lines.append(f"  ! misclassified: {x['client']} is {x['role']} but the destination takes it as "
                     f"{x['assigned_role']} ({x['policy']}), at {_t(x['time'], base)}")
        lines.append(f"      QEMU would show: {x['failure']}")
        for e in x["evidence"]:
            lines.append(f"      - {e}")
    for s in m["stalls"]:
        end = "capture end" if s["ongoing_at_capture_end"] else _t(s["end"], base)
        lines.append(f"  ! stall ({s['kind']}): {_t(s['start'], base)} to {end}, "
                     f"channels {', '.join(s['channels'])}")
        for e in s["evidence"]:
            lines.append(f"      - {e}")
        for r in s["outstanding_requests"][:5]:
            lines.append(f"      - waiting: {r['block']} {r['addr']} since {_t(r['time'], base)}")
    for p in (m.get("postcopy") or {}).get("pauses", []):
        lines.append(f"  postcopy paused at {_t(p['paused_at'], base)} (connection lost), resumed "
                     f"{p['duration']:.3f} s later on port {p['port']} ({p['resumed_by']})"
                     + (f"; {p['requests_waiting']} page request(s) waited across it (longest "
                        f"{p['longest_wait'] * 1000:.0f} ms)" if p.get("longest_wait") is not None else ""))
    rows = []
    for c in m["channels"]:
        role = c["role"] + (f" #{c['multifd_id']}" if c["multifd_id"] is not None else "")
        if c.get("role_inferred"):
            role += "?"                 # read off the TLS record layer, not the contents
        mark = "!!" if c["misclassified"] else ("?" if not c["verifiable"] else "ok")
        if c.get("tls_handshake_done_time") is not None:
            accepted = _t(c["tls_handshake_done_time"], base) + " tls"
        elif c["syn_seen"]:
            accepted = _t(c["handshake_time"], base)
        else:
            accepted = f"{_t(c['first_data_time'], base)} (no SYN)"
        if c.get("order_certain") is False:
            accepted += " ~"        # its place in the destination's order is inferred, not seen
        rows.append([c["accept_index"], c["leg"], c["client"], accepted, role,
                     c["assigned_role"], mark, _size(c["bytes_to_server"]), _size(c["bytes_to_client"]),
                     c["closed_by"] or "-"])
    lines += ["  " + x for x in table(rows, ["#", "leg", "client", "accepted", "true role", "assigned", "",
                                           "to dst", "to src", "closed by"])]
    if any(c.get("tls_handshake_done_time") is not None for c in m["channels"]):
        lines.append("  tls: the time its TLS handshake completed at the destination (the client's Finished arrived); "
                     "QEMU gives a TLS channel its role then, so that is the order shown")
    if any(c.get("order_certain") is False for c in m["channels"]):
        lines.append("  ~ handshakes closer together than the path's jitter at this vantage: the destination's order "
                     "is inferred from its behaviour (order_certain: false)")
    pc = m.get("postcopy") or {}
    if pc.get("run_time") is not None or pc.get("page_requests"):
        lat = (f", latency median {pc['median_latency'] * 1000:.2f} ms, max {pc['max_latency'] * 1000:.2f} ms"
               if pc.get("max_latency") is not None else "")
        lines.append(f"  postcopy: run at {_t(pc.get('run_time'), base)}, {pc.get('page_requests', 0)} page "
                     f"requests, {pc.get('served_requests', 0)} served ({pc.get('already_in_flight', 0)} by a "
                     f"page already in flight), {pc.get('unserved_requests', 0)} never served{lat}")
    rep = m.get("multifd_repeated_pages")
    if rep:
        first = rep["examples"][0] if rep["examples"] else None
        example = (f", e.g. {first['block']} 0x{first['offset']:x} in packets {first['packets'][0]} and "
                   f"{first['packets'][1]}" if first else "")
        lines.append(f"  multifd: {rep['count']} page(s) sent twice by the QEMU 7.2 queueing race{example}; "
                     "harmless, and query-migrate counts each once (fixed in 8.0 by ddbe628c97c3)")
    wi = []
    for name, legs in m.get("what_if", {}).items():
        verdicts = sorted({leg["verdict"] for leg in legs})
        ruled_out = any(leg.get("fits_capture") is False for leg in legs)
        wi.append(f"{name}: {'/'.join(verdicts)}" + (" (not what this destination did)" if ruled_out else ""))
    if wi:
        lines.append("  this accept order under each policy: " + ", ".join(wi))
    return lines
