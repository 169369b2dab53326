"""Timeline picture of the migrations' channels (``analyze --plot``).

One lane per connection, grouped by migration (a relay's two legs side by side): the bytes sent on it
over time against a byte scale (solid: to the destination, dashed: the return direction), its accept,
FIN and RST, page requests, stalls (filled band) and misclassified channels (hatched lane), with the
message QEMU would print written in the misread channel's lane. Labels are placed where they cover no
marker and no other label (``place_label``); what cannot be placed in a lane goes to numbered notes
under the picture.

matplotlib is imported only here, and only when a picture is asked for; the object-oriented API
(``Figure`` with the Agg canvas) keeps ``pyplot`` and its start-up cost out.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dissectors.analysis.engine import Analysis
from dissectors.analysis.wording import place_in_leg, place_in_leg_short
from dissectors.errors import InputError
from dissectors.outputs.text import items, migrations_counted

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

# Okabe & Ito's colour-blind safe palette; every meaning also has its own shape or pattern.
BLUE, SKY, GREEN, PURPLE, ORANGE, VERMILLION, YELLOW = ("#0072B2", "#56B4E9", "#009E73", "#CC79A7", "#E69F00",
                                                        "#D55E00", "#F0E442")
ROLE_COLOURS = {"main": BLUE, "main-recovery": SKY, "multifd": GREEN, "preempt": PURPLE, "tls": "#777777",
                "unknown": "#444444"}
STALL_COLOUR = YELLOW           # filled band
MISREAD_COLOUR = VERMILLION     # hatched lane, bar on the lane's left edge, its labels

WIDTH = 13.0                    # inches
DPI = 100
LEFT, RIGHT = 2.9, 0.85         # inches for the lane labels and the byte scale
LANE_H, LANE_GAP = 0.62, 0.05
HEAD_H, TITLE_H, AXIS_H, LEGEND_H, NOTE_H = 0.3, 0.55, 0.5, 0.42, 0.17
MAX_LANES = 60                  # channels drawn at most; the title says how many were left out
CURVE = (0.06, 0.70)            # axes fraction of a lane taken by the byte curves (0 bytes .. the lane's top)
STRIP = 0.86                    # axes fraction of the label strip above the curves
MARK_Y = {"accept": CURVE[0], "fin": 0.30, "rst": 0.50, "request": 0.20, "waiting": 0.20}
FONT = 7
LABEL_GAP = 14.0                # pixels between two labels in a lane
EPOCH = re.compile(r"\b1\d{9}\.\d+\b")


def plot_timeline(analysis: Analysis, path: str) -> None:
    """Write the timeline picture of ``analysis`` to ``path`` (PNG, SVG or PDF by its extension)."""
    fig = build_timeline(analysis).figure
    try:
        fig.savefig(path, dpi=DPI)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot write the timeline: {exc}", path=path) from exc


def build_timeline(analysis: Analysis) -> Timeline:
    """The timeline (a matplotlib ``Figure`` on the Agg canvas and its lanes), laid out, labels placed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise InputError("--plot needs matplotlib (pip install matplotlib)") from exc
    return _Timeline(analysis, Figure, FigureCanvasAgg).build()


def human_bytes(n: float) -> str:
    """``1.5 KiB`` style, as the text report writes sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"       # pragma: no cover - the loop returns


@dataclass
class _Label:
    """A label to put in a lane near ``x`` (seconds), or in the notes when the lane has no room for it."""

    lane: int
    x: float
    text: str
    colour: str
    weight: str = "normal"


@dataclass
class _Lane:
    migration: dict[str, Any]
    channel: dict[str, Any]
    facts: Any
    top: float = 0.0            # inches from the figure's top


@dataclass
class _Block:
    """A migration's lanes with the header above them (and the relay it belongs to, if any)."""

    migration: dict[str, Any]
    header: str
    lanes: list[_Lane] = field(default_factory=list)
    top: float = 0.0


class _Timeline:
    """Lays the picture out on one Axes: y in inches from the figure's top (negated), x in seconds."""

    def __init__(self, analysis: Analysis, figure_cls: Any, canvas_cls: Any) -> None:
        self.analysis = analysis
        self.report = analysis.report
        self.figure_cls = figure_cls
        self.canvas_cls = canvas_cls
        self.by_conn = {f.conn.index: f for f in analysis.facts}
        self.labels: list[_Label] = []
        self.notes: list[str] = []
        self.left_out = 0
        self.drawn: set[str] = set()       # legend entries with something drawn
        self.scale: list[tuple[float, str]] = []    # byte scale ticks (y, label) on the right

    # -- layout -------------------------------------------------------------------------------------
    def build(self) -> Timeline:
        blocks = self._blocks()
        lanes = [lane for b in blocks for lane in b.lanes]
        y = TITLE_H
        for b in blocks:
            b.top = y
            y += HEAD_H
            for lane in b.lanes:
                lane.top = y
                y += LANE_H + LANE_GAP
        self.body = max(y, TITLE_H + 1.0)
        self.height = self.body + AXIS_H + LEGEND_H
        fig = self.figure_cls(figsize=(WIDTH, self.height), dpi=DPI)
        self.canvas_cls(fig)
        self.fig = fig
        self.t0 = self._t0()
        self.blocks, self.lanes = blocks, lanes
        ax = fig.add_axes(self._rect())
        self.ax = ax
        ax.set_xlim(*self._x_range())
        ax.set_ylim(-self.body, -TITLE_H)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        ax.tick_params(axis="x", labelsize=FONT + 1)
        if not lanes:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no migration found", transform=ax.transAxes, ha="center", va="center",
                    fontsize=10)
        wall = datetime.fromtimestamp(self.t0, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        ax.set_xlabel(f"seconds since the first migration's start ({wall})", fontsize=FONT + 1)
        for i, lane in enumerate(lanes):
            self._lane(i, lane)
        for b in blocks:
            self._block_marks(b)
        self._relay_brackets(blocks)
        if lanes:
            ax.yaxis.tick_right()
            ax.set_yticks([t[0] for t in self.scale], [t[1] for t in self.scale])
            ax.tick_params(axis="y", labelsize=FONT - 0.5, length=2, pad=2, colors="#333333")
        self._title()
        self._legend()
        self._place_labels()
        if self.notes:
            self._add_notes()
        return Timeline(fig, [LaneBand(lane.migration["id"], lane.channel["client"], lane.channel["leg"],
                                       -(lane.top + LANE_H), -lane.top) for lane in lanes], ax)

    def _rect(self) -> tuple[float, float, float, float]:
        bottom = self.height - self.body
        return (LEFT / WIDTH, bottom / self.height, 1 - (LEFT + RIGHT) / WIDTH, (self.body - TITLE_H) / self.height)

    def _y(self, lane: _Lane, frac: float) -> float:
        """Data y of a fraction of a lane's height (0 its bottom, 1 its top)."""
        return -(lane.top + LANE_H) + frac * LANE_H

    def _blocks(self) -> list[_Block]:
        migrations = self.report["migrations"]
        by_id = {m["id"]: m for m in migrations}
        order: list[dict[str, Any]] = []
        seen: set[int] = set()
        for m in migrations:
            if m["id"] in seen:
                continue
            pair = [m]
            relay = m.get("relay")
            if relay and relay.get("peer") in by_id and relay["peer"] not in seen:
                peer = by_id[relay["peer"]]
                pair = [m, peer] if relay.get("side") == "source" else [peer, m]
            for x in pair:
                seen.add(x["id"])
                order.append(x)
        blocks = []
        budget = MAX_LANES
        for m in order:
            chans = m["channels"]
            take = chans[:max(budget, 0)]
            self.left_out += len(chans) - len(take)
            budget -= len(take)
            if not take:
                continue
            b = _Block(m, self._header(m))
            for ch in take:
                b.lanes.append(_Lane(m, ch, self.by_conn.get(ch["connection"])))
            blocks.append(b)
        return blocks

    def _header(self, m: dict[str, Any]) -> str:
        status = m["outcome"]["status"].upper()
        relay = m.get("relay")
        if relay and relay.get("side") == "source":
            where = f"relay leg 1/2: source \u2192 relay at {m['destination']} (leg 2 is migration {relay['peer']})"
        elif relay:
            where = f"relay leg 2/2: relay \u2192 destination {m['destination']} (leg 1 is migration {relay['peer']})"
        else:
            where = f"to {m['destination']}"
        # the report's id said as the text report says it ("Migration 0"), not "M0" for the reader to decode
        return f"Migration {m['id']}  {where}   {status}   rules: {m['policy']['name']}"

    def _t0(self) -> float:
        starts = [m["start_time"] for m in self.report["migrations"] if m["start_time"] is not None]
        return min(starts, default=self.report["capture"].get("first_time") or 0.0)

    def _x_range(self) -> tuple[float, float]:
        ends = [m["end_time"] for m in self.report["migrations"] if m["end_time"] is not None]
        end = max(ends, default=self.t0 + 1.0) - self.t0
        end = max(end, 1e-3)
        return -0.03 * end, 1.04 * end

    # -- one lane -----------------------------------------------------------------------------------
    def _lane(self, i: int, lane: _Lane) -> None:
        ax = self.ax
        m, ch, f = lane.migration, lane.channel, lane.facts
        colour = ROLE_COLOURS.get(ch["role"], "#444444")
        ax.axhline(self._y(lane, 0.0), color="#999999", lw=0.6, zorder=1)
        top = self._curves(lane, f, colour)
        base = self._y(lane, CURVE[0])
        self.scale.append((base, "0 B"))
        if top > 0:
            self.scale.append((self._y(lane, CURVE[1]), human_bytes(top)))
        self._markers(lane, ch, f, colour)
        self._lane_label(lane, m, ch)
        if ch["misclassified"]:
            from matplotlib.patches import Rectangle

            self.drawn.add("misread")
            y0 = self._y(lane, 0.0)
            ax.add_patch(Rectangle((0, y0), 1, LANE_H, transform=ax.get_yaxis_transform(), fill=False,
                                   hatch="////", edgecolor=MISREAD_COLOUR, lw=0, alpha=0.45, zorder=0.6))
            ax.add_patch(Rectangle((-0.004, y0), 0.004, LANE_H, transform=ax.get_yaxis_transform(),
                                   facecolor=MISREAD_COLOUR, lw=0, clip_on=False, zorder=0.7))
            mis = next((x for x in m["misclassifications"]
                        if x["client"] == ch["client"] and x["leg"] == ch["leg"]), None)
            if mis is not None:
                when = (mis["time"] if mis["time"] is not None else ch["handshake_time"] or self.t0) - self.t0
                msg = f"QEMU would show: {mis['failure']}"
                self.labels.append(_Label(i, when, msg, MISREAD_COLOUR, "bold"))

    def _curves(self, lane: _Lane, f: Any, colour: str) -> float:
        """Draw both directions' cumulative bytes on the lane's scale; the lane's top (bytes)."""
        if f is None:
            return 0.0
        series = [(d, f.dirs[d].progress.points) for d in (0, 1) if f.dirs[d].progress.points]
        top = float(max((max(p[1] for p in pts) for _, pts in series), default=0))
        if not top:
            return 0.0
        y0, k = self._y(lane, CURVE[0]), (CURVE[1] - CURVE[0]) * LANE_H / top
        for direction, pts in series:
            self.drawn.add("sent" if direction == 0 else "return")
            xs = [pts[0][0] - self.t0] + [p[0] - self.t0 for p in pts]       # from zero at the first bytes
            self.ax.plot(xs, [y0] + [y0 + p[1] * k for p in pts], color=colour,
                         lw=1.5 if direction == 0 else 1.0, ls="-" if direction == 0 else "--",
                         alpha=1.0 if direction == 0 else 0.75, zorder=2, drawstyle="steps-post",
                         gid=f"curve:{direction}")
        return top

    def _markers(self, lane: _Lane, ch: dict[str, Any], f: Any, colour: str) -> None:
        ax = self.ax
        c = f.conn if f is not None else None
        accept = ch["handshake_time"]
        if accept is not None:
            self.drawn.add("accept")
            ax.plot([accept - self.t0], [self._y(lane, MARK_Y["accept"])], marker=">", color=colour, ms=7, ls="",
                    mec="black", mew=0.5, zorder=4, gid="marker:accept")
        fins = [t - self.t0 for t in (c.fin_ts if c else ()) if t is not None]
        if fins:
            self.drawn.add("fin")
            ax.plot(fins, [self._y(lane, MARK_Y["fin"])] * len(fins), marker="|", color="black", ms=10, mew=1.6,
                    ls="", zorder=4, gid="marker:fin")
        rsts = [t - self.t0 for t in (c.rst_ts if c else ()) if t is not None]
        if rsts:
            self.drawn.add("rst")
            ax.plot(rsts, [self._y(lane, MARK_Y["rst"])] * len(rsts), marker="X", color="black", ms=8, ls="",
                    mec="white", mew=0.6, zorder=4, gid="marker:rst")

    def _lane_label(self, lane: _Lane, m: dict[str, Any], ch: dict[str, Any]) -> None:
        role = ch["role"] + (f" {ch['multifd_id']}" if ch["multifd_id"] is not None else "")
        if ch.get("tls") or (lane.facts is not None and lane.facts.encrypted):
            role += " (TLS)"
        # the place in words, short enough for the label margin; with postcopy recoveries, which one
        place = place_in_leg_short(ch["accept_index"], ch["leg"], len(m.get("legs") or []))
        to_dst, to_src = human_bytes(ch["bytes_to_server"]), human_bytes(ch["bytes_to_client"])
        tr = self.ax.get_yaxis_transform()
        self.ax.text(-0.008, self._y(lane, 0.66), f"{place}  {ch['client']}", transform=tr,
                     ha="right", va="center", fontsize=FONT, color="#222222", gid="label:lane")
        if ch["misclassified"]:
            second = f"{role}, TAKEN AS {ch['assigned_role'].upper()}"
            colour, weight = MISREAD_COLOUR, "bold"
        else:
            second = f"{role}   sent {to_dst}, return {to_src}"
            colour, weight = ROLE_COLOURS.get(ch["role"], "#444444"), "normal"
        self.ax.text(-0.008, self._y(lane, 0.28), second, transform=tr, ha="right", va="center", fontsize=FONT,
                     color=colour, weight=weight, gid="label:lane")

    # -- per migration ------------------------------------------------------------------------------
    def _block_marks(self, b: _Block) -> None:
        m = b.migration
        ax = self.ax
        colour = MISREAD_COLOUR if m["misclassifications"] else "black"
        ax.text(0.0, -(b.top + HEAD_H * 0.5), b.header, transform=ax.get_yaxis_transform(), fontsize=FONT + 1.5,
                weight="bold", color=colour, va="center", gid="label:header")
        lanes_by_client = {lane.channel["client"]: lane for lane in b.lanes}
        for s in m["stalls"]:
            start, end = s["start"], s["end"] if s["end"] is not None else m["end_time"]
            if start is None or end is None:
                continue
            from matplotlib.patches import Rectangle

            self.drawn.add("stall")
            hit = [lanes_by_client[c] for c in s["channels"] if c in lanes_by_client] or b.lanes
            for lane in hit:
                ax.add_patch(Rectangle((start - self.t0, self._y(lane, 0.0)), max(end - start, 1e-6), LANE_H,
                                       facecolor=STALL_COLOUR, alpha=0.45, lw=0, zorder=0.5))
            text = f"stall ({s['kind']})" + (f": {s['duration']:.1f} s" if s.get("duration") is not None else "")
            self.labels.append(_Label(self.lanes.index(hit[0]), start - self.t0, text, "#5c5000"))
        pc = m.get("postcopy") or {}
        if pc.get("run_time") is not None:
            x = pc["run_time"] - self.t0
            self.drawn.add("postcopy")
            ax.plot([x, x], [self._y(b.lanes[-1], 0.0), self._y(b.lanes[0], 1.0)], color=BLUE, ls=":", lw=1,
                    zorder=1)
            self.labels.append(_Label(self.lanes.index(b.lanes[0]), x, "postcopy starts", BLUE))
        self._requests(m, b)

    def _relay_brackets(self, blocks: list[_Block]) -> None:
        """A bracket left of a relay's two legs, drawn one after the other."""
        from matplotlib.lines import Line2D

        for a, b in zip(blocks, blocks[1:], strict=False):
            relay = a.migration.get("relay")
            if not relay or relay.get("side") != "source" or relay.get("peer") != b.migration["id"]:
                continue
            y0 = 1 - (a.top + 0.08) / self.height
            y1 = 1 - (b.lanes[-1].top + LANE_H) / self.height
            x = 0.16 / WIDTH
            self.fig.add_artist(Line2D([x + 0.06 / WIDTH, x, x, x + 0.06 / WIDTH], [y0, y0, y1, y1], color="#555555",
                                       lw=1.2))
            self.fig.text(x - 0.03 / WIDTH, (y0 + y1) / 2, "one migration through a relay", rotation=90,
                          ha="right", va="center", fontsize=FONT, color="#555555", gid="label:relay")

    def _requests(self, m: dict[str, Any], b: _Block) -> None:
        ledger = self.analysis.ledger
        if ledger is None:
            return
        mains = {lane.channel["connection"]: lane for lane in b.lanes
                 if lane.channel["role"] in ("main", "main-recovery")}
        if not mains:
            return
        served: dict[int, list[float]] = {}
        waiting: dict[int, list[float]] = {}
        for ep in {ledger.key(ch["server"]) for ch in m["channels"]}:
            for r in ledger.served.get(ep, [])[:3000]:
                served.setdefault(r.connection, []).append(r.ts - self.t0)
            for r in ledger.waiting(ep)[:3000]:
                waiting.setdefault(r.connection, []).append(r.ts - self.t0)
        for conn, lane in mains.items():
            xs = served.get(conn, [])
            if xs:
                self.drawn.add("request")
                self.ax.plot(xs, [self._y(lane, MARK_Y["request"])] * len(xs), marker="|", color="#555555", ms=6,
                             mew=0.8, ls="", zorder=3, gid="marker:request")
            xs = waiting.get(conn, [])
            if xs:
                self.drawn.add("waiting")
                self.ax.plot(xs, [self._y(lane, MARK_Y["waiting"])] * len(xs), marker="v", color="black", ms=5,
                             ls="", zorder=3, gid="marker:waiting")

    # -- figure furniture ---------------------------------------------------------------------------
    def _title(self) -> None:
        cap = self.report["capture"]
        title = f"{cap.get('file') or 'capture'}: {migrations_counted(items(self.report))}"   # as the text says
        if self.left_out:
            title += f" ({self.left_out} more channel(s) not drawn: at most {MAX_LANES} lanes)"
        self.fig.text(0.5, 1 - TITLE_H * 0.45 / self.height, title, ha="center", va="center", fontsize=FONT + 3,
                      gid="label:title")

    def _legend(self) -> None:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        every = {"sent": Line2D([], [], color="black", lw=1.5, label="bytes to the destination"),
                 "return": Line2D([], [], color="black", lw=1, ls="--", label="return direction"),
                 "accept": Line2D([], [], color="white", mec="black", marker=">", ls="", label="accepted"),
                 "fin": Line2D([], [], color="black", marker="|", mew=1.6, ls="", ms=9, label="FIN"),
                 "rst": Line2D([], [], color="black", marker="X", ls="", label="RST"),
                 "request": Line2D([], [], color="#555555", marker="|", ls="", ms=7, label="page request"),
                 "waiting": Line2D([], [], color="black", marker="v", ls="", ms=5, label="request not served"),
                 "postcopy": Line2D([], [], color=BLUE, ls=":", label="postcopy starts"),
                 "stall": Patch(facecolor=STALL_COLOUR, alpha=0.45, label="stall"),
                 "misread": Patch(facecolor="white", hatch="////", edgecolor=MISREAD_COLOUR,
                                  label="misclassified channel")}
        handles = [h for k, h in every.items() if k in self.drawn]
        handles += [Line2D([], [], color=c, lw=2, label=r) for r, c in ROLE_COLOURS.items()
                    if r in {ch["role"] for m in self.report["migrations"] for ch in m["channels"]}]
        self.legend = self.fig.legend(handles=handles or [Line2D([], [], color="white", label=" ")], loc="center",
                                      bbox_to_anchor=(0.5, (LEGEND_H * 0.5) / self.height),
                                      ncol=max(1, min(len(handles), 12)), fontsize=FONT, frameon=False)

    # -- labels -------------------------------------------------------------------------------------
    def _place_labels(self) -> None:
        if not self.labels:
            return
        renderer = self.fig.canvas.get_renderer()
        obstacles = marker_boxes(self.ax, renderer)
        for lab in self.labels:
            lane = self.lanes[lab.lane]
            text = "\n".join(textwrap.wrap(relative_times(lab.text, self.t0), 150)[:3])
            band = (self._y(lane, 0.0), self._y(lane, 1.0))
            placed = place_label(self.ax, renderer, band, lab.x, text, obstacles, colour=lab.colour,
                                 weight=lab.weight)
            if placed is None:
                n = len(self.notes) + 1
                ch = lane.channel       # a note has the width of the picture: the place in full words
                note = (f"Migration {lane.migration['id']}, {ch['client']} "
                        f"({place_in_leg(ch['accept_index'], ch['leg'])}): {lab.text}")
                ref = place_label(self.ax, renderer, band, lab.x, f"[{n}]", obstacles, colour=lab.colour,
                                  weight="bold")
                self.notes.append(f"[{n}] {note}" if ref is not None else f"[{n}] (not marked) {note}")

    def _add_notes(self) -> None:
        extra = NOTE_H * len(self.notes) + 0.1
        old = self.height
        self.height = old + extra
        self.fig.set_size_inches(WIDTH, self.height)
        self.ax.set_position(self._rect())
        for t in self.fig.texts:
            x, y = t.get_position()
            t.set_position((x, 1 - (1 - y) * old / self.height))
        from matplotlib.lines import Line2D

        for line in [*self.fig.lines, *self.fig.artists]:
            if isinstance(line, Line2D):
                line.set_ydata([1 - (1 - y) * old / self.height for y in line.get_ydata()])
        self.legend.set_bbox_to_anchor((0.5, (extra + LEGEND_H * 0.5) / self.height))
        for k, note in enumerate(self.notes):
            self.fig.text(LEFT / WIDTH, (extra - 0.08 - NOTE_H * (k + 0.5)) / self.height,
                          relative_times(note, self.t0), fontsize=FONT, va="center", gid="label:note")


@dataclass
class LaneBand:
    """Where a channel's lane lies on the picture's Axes (data y, bottom and top)."""

    migration: int
    client: str
    leg: int
    y0: float
    y1: float


@dataclass
class Timeline:
    """The drawn picture: its figure, the Axes the lanes share and each lane's band."""

    figure: Figure
    lanes: list[LaneBand]
    axes: Any

    def lane(self, client: str) -> LaneBand:
        return next(x for x in self.lanes if x.client == client)

    def texts_in(self, band: LaneBand, renderer: Any) -> list[Text]:
        """Texts drawn inside a lane (their box within its band)."""
        lo, hi = self.axes.transData.transform([(0, band.y0), (0, band.y1)])[:, 1]
        return [t for t in self.axes.texts if t.get_gid() == "label:lane-note"
                and lo - 0.5 <= text_box(t, renderer).y0 and text_box(t, renderer).y1 <= hi + 0.5]


def relative_times(text: str, t0: float) -> str:
    """Epoch times in a report sentence as seconds on the picture's axis (``1795633829.285342`` -> ``+21.677 s``)."""
    return EPOCH.sub(lambda mt: f"+{float(mt.group(0)) - t0:.3f} s", text)


# -- geometry shared with the tests -----------------------------------------------------------------
def marker_boxes(ax: Axes, renderer: Any) -> list[Any]:
    """Display-space boxes of every marker drawn in ``ax`` (clipped to the axes), one per point."""
    from matplotlib.transforms import Bbox

    frame = ax.get_window_extent(renderer)
    boxes = []
    # one call for all points of a line: the picture may hold thousands of page requests
    for line in ax.get_lines():
        marker = line.get_marker()
        if marker in (None, "None", "", " ") or not line.get_visible():
            continue
        half = (line.get_markersize() + line.get_markeredgewidth()) * renderer.points_to_pixels(1.0) / 2
        xy = line.get_transform().transform(line.get_xydata())
        for px, py in xy:
            x0, y0 = max(px - half, frame.x0), max(py - half, frame.y0)
            x1, y1 = min(px + half, frame.x1), min(py + half, frame.y1)
            if x0 < x1 and y0 < y1:
                boxes.append(Bbox.from_extents(x0, y0, x1, y1))
    return boxes


def text_box(t: Text, renderer: Any) -> Any:
    """A text's display box, its background box's padding included (computed, so valid before a draw)."""
    box = t.get_window_extent(renderer)
    patch = t.get_bbox_patch()
    if patch is not None:
        pad = getattr(patch.get_boxstyle(), "pad", 0.0) * renderer.points_to_pixels(t.get_fontsize())
        box = box.expanded(1 + 2 * pad / max(box.width, 1e-9), 1 + 2 * pad / max(box.height, 1e-9))
    return box


def place_label(ax: Axes, renderer: Any, band: tuple[float, float], x: float, text: str, obstacles: list[Any],
                colour: str = "black", weight: str = "normal") -> Text | None:
    """Put ``text`` in the lane ``band`` (data y, bottom and top) of ``ax`` as near time ``x`` as it goes
    without covering a box of ``obstacles`` or leaving the lane: the strip above the curves first, then lower
    rows, moving right then left. The placed text's box joins ``obstacles``; None when nowhere fits."""
    from matplotlib.transforms import Bbox

    ext = ax.get_window_extent(renderer)
    lo, hi = ax.transData.transform([(0, band[0]), (0, band[1])])[:, 1]
    frame = Bbox.from_extents(ext.x0, lo, ext.x1, hi)
    t = ax.text(0, 0, text, transform=ax.transAxes, ha="left", va="center", fontsize=FONT, color=colour,
                weight=weight, zorder=5, gid="label:lane-note",
                bbox={"boxstyle": "square,pad=0.15", "facecolor": "white", "alpha": 0.75, "edgecolor": "none"})
    anchor = ax.transAxes.transform((0.0, 0.5))
    t.set_position((0.0, 0.5))
    box0 = text_box(t, renderer)
    w, h = box0.width, box0.height
    ox, oy = box0.x0 - anchor[0], box0.y0 - anchor[1]      # text anchor -> box offsets
    want = ax.transData.transform((x, 0))[0]
    pad = 2.0
    step = max(6.0, frame.width / 120)
    offsets = [0.0]
    k = 1
    while k * step < frame.width:
        offsets += [k * step, -k * step]
        k += 1
    for row in (STRIP, 0.55, 0.12):
        cy = frame.y0 + row * frame.height
        for dx in offsets:
            x0 = want + dx
            bx0, by0 = x0 + ox, cy + oy
            if bx0 < frame.x0 + 1 or bx0 + w > frame.x1 - 1 or by0 < frame.y0 or by0 + h > frame.y1:
                continue
            if any(bx0 - pad < o.x1 and o.x0 < bx0 + w + pad and by0 - pad < o.y1 and o.y0 < by0 + h + pad
                   for o in obstacles):
                continue
            fx, fy = ax.transAxes.inverted().transform((x0, cy))
            t.set_position((fx, fy))
            placed = text_box(t, renderer)
            # other labels keep a wider berth, so two labels side by side do not read as one sentence
            obstacles.append(placed.expanded(1 + 2 * LABEL_GAP / max(placed.width, 1.0), 1.0))
            return t
    t.remove()
    return None
