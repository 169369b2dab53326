"""The fleet run on the terminal: a progress bar over captures while it runs, then the summary (counts
by outcome and by generation pair, the top failure signatures with an example capture each)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, TextIO

from dissectors.fleet.inputs import CaptureInput
from dissectors.outputs.progress import Progress

STATUSES = ("completed", "failed", "stalled", "incomplete", "unknown")


class FleetProgress(Progress):
    """``progress(item, rows)`` after each capture: a bar over the captures' bytes on stderr, with captures
    done, findings and errors; only on a terminal (or forced)."""

    def __init__(self, items: list[CaptureInput], engine: str, stream: TextIO | None = None,
                 force: bool = False, min_interval: float = 0.2) -> None:
        super().__init__("fleet", stream=stream, min_interval=min_interval, force=force)
        self.total = len(items)
        self.total_bytes = sum(i.size for i in items)
        self.engine = engine
        self.done = self.done_bytes = self.errors = self.findings = 0

    def __call__(self, item: CaptureInput, rows: list[dict[str, Any]]) -> None:  # type: ignore[override]
        self.done += 1
        self.done_bytes += item.size
        self.errors += any(r["status"] == "error" for r in rows)
        self.findings += sum(r.get("findings") or 0 for r in rows)
        if not self.enabled:
            return
        bar = self._open(self.total_bytes or None) if self.bar is None else self.bar
        bar.set_postfix_str(f"{self.done}/{self.total} captures, {self.findings} findings, {self.errors} errors",
                            refresh=False)
        bar.update(self.done_bytes - bar.n)


def _short(generation: str | None) -> str:
    """A generation for a column: ``unknown (encrypted: ...)`` -> ``unknown``."""
    if not generation:
        return "-"
    if generation.startswith("unknown (the capture fits every"):
        return "any (all fit)"
    if generation.startswith("unknown (encrypted"):
        return "unknown (TLS)"
    return generation.split(" (", 1)[0]


def _table(rows: list[list[Any]], header: list[str]) -> list[str]:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            .rstrip() for r in cells]


def render_summary(rows: list[dict[str, Any]], *, captures: int, seconds: float, engine: str,
                   table: str, top: int = 10, interrupted_of: int | None = None) -> str:
    """The terminal summary of ``rows`` (``captures`` analysed); ``interrupted_of``: the run was stopped
    (Ctrl-C) with that many captures in all, and says so first."""
    migrations = [r for r in rows if r["migration"] is not None]
    counted = [r for r in migrations if r["relay_side"] != "source"]
    errors = [r for r in rows if r["status"] == "error"]
    empty = [r for r in rows if r["status"] == "no-migration"]
    total_bytes = sum({r["capture"]: r["capture_bytes"] or 0 for r in rows}.values())
    findings = sum(r.get("findings") or 0 for r in rows)
    out = [f"migshark fleet: {captures} capture(s), {len(migrations)} migration(s), {findings} finding(s) in "
           f"{seconds:.1f} s "
           f"({total_bytes / 1e6:,.1f} MB) on {engine}",
           f"table: {table} ({len(rows)} rows)", ""]
    if interrupted_of is not None:
        out[:0] = [f"migshark fleet: interrupted (Ctrl-C) with {captures} of {interrupted_of} capture(s) analysed; "
                   "the table and this summary hold those only", ""]
    if not rows:
        return "\n".join(out[:-1]) + "\n"
    relays = len(migrations) - len(counted)
    out.append("Outcome" + (f" ({relays} relay source-side leg(s) counted with their destination-side leg)"
                            if relays else "") + ":")
    by_status = Counter(r["status"] for r in counted)
    for status in [*STATUSES, *sorted(set(by_status) - set(STATUSES))]:
        if by_status.get(status):
            misread = sum(1 for r in counted if r["status"] == status and r["misclassified"])
            extra = f"  ({misread} with misclassified channels)" if misread else ""
            out.append(f"  {status:<12} {by_status[status]:>5}{extra}")
    if empty:
        out.append(f"  {'no migration':<12} {len(empty):>5}  capture(s) read cleanly with no migration in them")
    if errors:
        out.append(f"  {'error':<12} {len(errors):>5}  capture(s) that could not be analysed (rows with 'error')")
    damaged = {r["capture"]: r for r in rows if r["status"] != "error" and r.get("capture_warnings")}
    if damaged:
        ex = next(iter(damaged.values()))
        out.append(f"  {len(damaged)} capture(s) read only in part (truncated or damaged; their rows say so in "
                   f"capture_warnings), e.g. {ex['first_warning']}")
    if counted:
        out += ["", "By generation pair (source -> destination as judged; 'given' = --qemu-version):"]
        pairs: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for r in counted:
            dst = _short(r["destination_generation"])
            if r["destination_known_by"] == "given":
                dst = f"{r['qemu_version_given']} (given)"
            c = pairs[(_short(r["source_generation"]), dst)]
            c["n"] += 1
            c[r["status"]] += 1
            c["misread"] += bool(r["misclassified"])
            c["stalls"] += bool(r["stalls"])
        body = [[s, d, c["n"], c["completed"], c["failed"], c["stalled"] + c["incomplete"], c["misread"],
                 c["stalls"]] for (s, d), c in sorted(pairs.items(), key=lambda kv: (-kv[1]["n"], kv[0]))]
        out += ["  " + line for line in _table(body, ["source", "destination", "migrations", "completed", "failed",
                                                     "stalled/incomplete", "misread", "with stalls"])]
    sigs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["signature"]:
            sigs[r["signature"]].append(r)
    if sigs:
        out += ["", f"Top failure signatures ({len(sigs)} distinct):"]
        for sig, hits in sorted(sigs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]:
            ex = hits[0]
            err = ex.get("error") or ""
            where = (f"migration {ex['migration']}" if ex["migration"] is not None else
                     err if err.startswith(ex["capture"]) else f"{ex['capture']}: {err}" if err else ex["capture"])
            pairs_seen = sorted({f"{_short(h['source_generation'])} -> {_short(h['destination_generation'])}"
                                 for h in hits if h["migration"] is not None})
            out.append(f"  {len(hits):>5}  {sig}")
            out.append(f"         e.g. {ex['capture']} ({where})" if ex["migration"] is not None
                       else f"         e.g. {where}")
            if pairs_seen:
                out.append(f"         generation pairs: {', '.join(pairs_seen[:6])}"
                           + (" ..." if len(pairs_seen) > 6 else ""))
    elif migrations:
        out += ["", "No failure signature: every migration completed cleanly."]
    slow = sorted((r for r in rows if r.get("seconds")), key=lambda r: -r["seconds"])[:1]
    if slow:
        out += ["", f"Slowest capture: {slow[0]['capture']} ({slow[0]['seconds']:.2f} s)"]
    return "\n".join(out) + "\n"


def exit_code(rows: list[dict[str, Any]]) -> int:
    """0 clean; 1 findings or some captures in error; 2 when no capture could be analysed at all."""
    if rows and all(r["status"] == "error" for r in rows):
        return 2
    if any(r["status"] == "error" or r.get("findings") for r in rows):
        return 1
    return 0
