"""Timeline picture of a migration's channels: one lane per connection, bytes over time, marks for
handshakes, postcopy start, page requests, stalls and misclassified channels."""

from __future__ import annotations

from typing import Any

from dissectors.analysis.engine import Analysis

ROLE_COLOURS = {"main": "#1f77b4", "main-recovery": "#17becf", "multifd": "#2ca02c", "preempt": "#9467bd",
                "tls": "#7f7f7f", "unknown": "#8c564b"}


def plot_timeline(analysis: Analysis, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    migrations = analysis.report["migrations"]
    by_conn = {f.conn.index: f for f in analysis.facts}
    lanes = sum(len(m["channels"]) for m in migrations) or 1
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.55 * lanes))
    base = min((m["start_time"] for m in migrations if m["start_time"] is not None), default=0.0)
    y = 0
    labels = []
    for m in migrations:
        for ch in m["channels"]:
            f = by_conn.get(ch["connection"])
            colour = ROLE_COLOURS.get(ch["role"], "#000000")
            _lane(ax, y, f, ch, colour, base)
            tag = f"M{m['id']} #{ch['accept_index']} {ch['client']}\n{ch['role']}"
            if ch["multifd_id"] is not None:
                tag += f" {ch['multifd_id']}"
            tag += f" -> taken as {ch['assigned_role']}" if ch["misclassified"] else ""
            labels.append((y, tag, ch["misclassified"]))
            y += 1
        _migration_marks(ax, m, by_conn, base, y)
    ax.set_yticks([lab[0] + 0.4 for lab in labels])
    ax.set_yticklabels([lab[1] for lab in labels], fontsize=7)
    for tick, lab in zip(ax.get_yticklabels(), labels, strict=True):
        if lab[2]:
            tick.set_color("red")
    ax.set_ylim(-0.3, max(y, 1) + 0.2)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first connection")
    title = "; ".join(f"M{m['id']} {m['destination']} {m['outcome']['status']} ({m['policy']['name']})"
                      for m in migrations)
    ax.set_title(title or "no migration found", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _lane(ax: Any, y: int, f: Any, ch: dict[str, Any], colour: str, base: float) -> None:
    if f is None:
        return
    for direction, alpha in ((0, 0.9), (1, 0.45)):
        pts = f.dirs[direction].progress.points
        if not pts:
            continue
        top = max(p[1] for p in pts) or 1
        xs = [p[0] - base for p in pts]
        ys = [y + 0.8 - 0.8 * p[1] / top for p in pts]
        ax.plot(xs, ys, color=colour, alpha=alpha, lw=1.4 if direction == 0 else 1.0,
                ls="-" if direction == 0 else "--")
    c = f.conn
    if c.handshake_ts is not None:
        ax.plot([c.handshake_ts - base], [y + 0.8], marker=">", color=colour, ms=7)
    for t, mark in ((c.fin_ts[0], "|"), (c.fin_ts[1], "|")):
        if t is not None:
            ax.plot([t - base], [y + 0.4], marker=mark, color="black", ms=10)
    for t in c.rst_ts:
        if t is not None:
            ax.plot([t - base], [y + 0.4], marker="x", color="red", ms=9)
    if ch["misclassified"]:
        ax.axhspan(y - 0.05, y + 0.85, color="red", alpha=0.08)


def _migration_marks(ax: Any, m: dict[str, Any], by_conn: dict[int, Any], base: float, y_end: int) -> None:
    pc = m.get("postcopy") or {}
    if pc.get("run_time") is not None:
        ax.axvline(pc["run_time"] - base, color="#d62728", ls=":", lw=1)
        ax.text(pc["run_time"] - base, -0.25, " postcopy run", color="#d62728", fontsize=7)
    for s in m["stalls"]:
        start = s["start"]
        end = s["end"] if s["end"] is not None else m["end_time"]
        if start is not None and end is not None:
            ax.axvspan(start - base, end - base, color="orange", alpha=0.18)
            ax.text(start - base, y_end - 0.1, f" stall: {s['kind']}", color="#b35900", fontsize=7)
    for ch in m["channels"]:
        if ch["role"] not in ("main", "main-recovery"):
            continue
        f = by_conn.get(ch["connection"])
        if f is None:
            continue
        for r in f.events:
            if r.kind == "main.cmd" and r.fields.get("cmd") in ("POSTCOPY_ADVISE", "POSTCOPY_LISTEN"):
                ax.axvline(r.ts - base, color="#ff9896", ls=":", lw=0.8)
