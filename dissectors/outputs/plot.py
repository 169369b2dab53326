"""Timeline picture of the migrations' channels: one lane per connection with the bytes sent over time
(solid: to the destination, dashed: the return direction), handshakes, FIN/RST, postcopy start, page
requests, stalls and misclassified channels marked."""

from __future__ import annotations

from typing import Any

from dissectors.analysis.engine import Analysis
from dissectors.errors import InputError

ROLE_COLOURS = {"main": "#1f77b4", "main-recovery": "#17becf", "multifd": "#2ca02c", "preempt": "#9467bd",
                "tls": "#7f7f7f", "unknown": "#8c564b"}
LANE = 0.8          # height of a lane's byte curve


def plot_timeline(analysis: Analysis, path: str) -> None:
    try:
        import matplotlib
    except ImportError as exc:
        raise InputError("--plot needs matplotlib (pip install matplotlib)", path=path) from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    migrations = analysis.report["migrations"]
    by_conn = {f.conn.index: f for f in analysis.facts}
    lanes = sum(len(m["channels"]) for m in migrations) or 1
    fig, ax = plt.subplots(figsize=(13, 1.6 + 0.6 * lanes))
    base = min((m["start_time"] for m in migrations if m["start_time"] is not None), default=0.0)
    y = 0
    labels: list[tuple[int, str, bool]] = []
    for m in migrations:
        top = y
        for ch in m["channels"]:
            f = by_conn.get(ch["connection"])
            _lane(ax, y, f, ch, ROLE_COLOURS.get(ch["role"], "#000000"), base)
            tag = f"M{m['id']} leg {ch['leg']} #{ch['accept_index']}  {ch['client']}\n{ch['role']}"
            if ch["multifd_id"] is not None:
                tag += f" {ch['multifd_id']}"
            tag += f", taken as {ch['assigned_role']}" if ch["misclassified"] else ""
            labels.append((y, tag, ch["misclassified"]))
            y += 1
        _migration_marks(ax, m, analysis, base, top, y)
        ax.axhline(y - 0.1, color="#444444", lw=0.6)
    ax.set_yticks([lab[0] + LANE / 2 for lab in labels])
    ax.set_yticklabels([lab[1] for lab in labels], fontsize=7)
    for tick, lab in zip(ax.get_yticklabels(), labels, strict=True):
        if lab[2]:
            tick.set_color("red")
    ax.set_ylim(max(y, 1) - 0.05, -0.45)
    ax.set_xlabel("seconds since the first connection")
    ax.set_title("; ".join(_title(m) for m in migrations) or "no migration found", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    legend = [Line2D([], [], color="black", lw=1.4, label="bytes to destination"),
              Line2D([], [], color="black", lw=1, ls="--", label="return direction"),
              Line2D([], [], color="black", marker=">", ls="", label="handshake (accept)"),
              Line2D([], [], color="black", marker="|", ls="", ms=10, label="FIN"),
              Line2D([], [], color="red", marker="x", ls="", label="RST"),
              Line2D([], [], color="#d62728", marker="|", ls="", ms=8, label="page request"),
              Patch(color="orange", alpha=0.25, label="stall"),
              Patch(color="red", alpha=0.1, label="misclassified")]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / max(lanes, 1)), ncol=8,
              fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(m: dict[str, Any]) -> str:
    relay = m.get("relay")
    side = f", {relay['side']}-side leg of a relay" if relay else ""
    return f"M{m['id']} to {m['destination']}: {m['outcome']['status']} ({m['policy']['name']}{side})"


def _lane(ax: Any, y: int, f: Any, ch: dict[str, Any], colour: str, base: float) -> None:
    if ch["misclassified"]:
        ax.axhspan(y - 0.05, y + LANE + 0.05, color="red", alpha=0.08)
    if f is None:
        return
    for direction, alpha in ((0, 0.9), (1, 0.5)):
        pts = f.dirs[direction].progress.points
        if not pts:
            continue
        top = max(p[1] for p in pts) or 1
        ax.plot([p[0] - base for p in pts], [y + LANE - LANE * p[1] / top for p in pts], color=colour,
                alpha=alpha, lw=1.4 if direction == 0 else 1.0, ls="-" if direction == 0 else "--")
    c = f.conn
    if c.handshake_ts is not None:
        ax.plot([c.handshake_ts - base], [y + LANE], marker=">", color=colour, ms=7)
    for t in c.fin_ts:
        if t is not None:
            ax.plot([t - base], [y + LANE / 2], marker="|", color="black", ms=10)
    for t in c.rst_ts:
        if t is not None:
            ax.plot([t - base], [y + LANE / 2], marker="x", color="red", ms=9)


def _migration_marks(ax: Any, m: dict[str, Any], analysis: Analysis, base: float, top: int, bottom: int) -> None:
    from matplotlib.patches import Rectangle

    pc = m.get("postcopy") or {}
    if pc.get("run_time") is not None:
        x = pc["run_time"] - base
        ax.plot([x, x], [top - 0.1, bottom - 0.1], color="#d62728", ls=":", lw=1)
        ax.text(x, top - 0.15, " postcopy run", color="#d62728", fontsize=7)
    end_time = m["end_time"]
    for s in m["stalls"]:
        start = s["start"]
        end = s["end"] if s["end"] is not None else end_time
        if start is None or end is None:
            continue
        ax.add_patch(Rectangle((start - base, top - 0.08), max(end - start, 1e-3), bottom - top, color="orange",
                               alpha=0.22, lw=0))
        ax.text(start - base, bottom - 0.2, f" stall: {s['kind']}", color="#b35900", fontsize=7)
    ledger = analysis.ledger
    if ledger is None:
        return
    mains = {ch["connection"]: top + i for i, ch in enumerate(m["channels"])
             if ch["role"] in ("main", "main-recovery")}
    requests = [r for ep in {ledger.key(ch["server"]) for ch in m["channels"]}
                for r in ledger.served.get(ep, []) + ledger.waiting(ep)]
    for r in requests[:3000]:
        lane = mains.get(r.connection)
        if lane is not None:
            ax.plot([r.ts - base], [lane + 0.1], marker="|", color="#d62728", ms=5, mew=0.7, alpha=0.6)
