"""Watch events as one line of text each, or as JSON lines (docs/report-schema.md, "watch events")."""

from __future__ import annotations

import json
from typing import Any

from dissectors.analysis.wording import leg_connections, leg_owner, place_in_leg
from dissectors.outputs.text import taken_as
from dissectors.outputs.timefmt import TimeFormat


def event_json(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


class EventText:
    """Event lines ``TIME  migration N to DEST: what happened``; ``TIME`` is the event's capture time in the
    ``-t`` format (relative to that migration's start by default), else the wall clock when it was seen."""

    def __init__(self, tf: TimeFormat | None = None) -> None:
        self.tf = tf or TimeFormat()
        self.starts: dict[int, float] = {}

    def __call__(self, event: dict[str, Any]) -> str:
        mig = event["migration"]
        if event["event"] == "migration-start" and event.get("time") is not None:
            self.starts.setdefault(mig, event["time"])
        ts = event.get("time")
        stamp = self.tf.at(ts if ts is not None else event["wall"], self.starts.get(mig))
        head = f"{stamp:>10}  migration {mig} to {event['destination']}"
        if event.get("relay_side"):
            head += f" [relay leg, {event['relay_side']} side]"
        what = _what(event)
        if event["event"] == "migration-start" and ts is not None and self.tf.relative:   # what "+0" is
            what += f", at {self.tf.absolute(ts)}"
        return f"{head}: {self.tf.retime(what, self.starts.get(mig))}"


def event_text(event: dict[str, Any], tf: TimeFormat | None = None) -> str:
    """One event's line on its own (no migration start known: absolute times)."""
    return EventText(tf)(event)


def _what(e: dict[str, Any]) -> str:
    kind = e["event"]
    if kind == "migration-start":
        return f"migration starts (source QEMU {e['source_generation']}, judged by {e['policy']})"
    if kind == "source-generation":
        return f"source QEMU is {e['source_generation']} ({'; '.join(e['evidence'][-1:])})"
    if kind in ("channel", "channel-role"):
        mark = ("  ?? misread only under the assumed destination version (one the capture has not ruled out "
                "reads it right)" if e.get("policy_unsure") else "  !! MISREAD") if e["misclassified"] else ""
        place = place_in_leg(e["accept_index"], e["leg"])
        head = (f"channel {e['client']}, {place}, accepted: true role {e['role']}" if kind == "channel" else
                f"channel {e['client']} ({place}) now reads as {e['role']}")
        return f"{head}, the destination {taken_as(e['assigned_role'])}{mark}"
    if kind == "misclassified":
        silent = f", silent for {e['silent_for']:.1f} s ({e['clock']} clock)" if "silent_for" in e else ""
        return (f"MISCLASSIFIED {e['client']} is {e['role']} but the destination ({e['policy']}) "
                f"{taken_as(e['assigned_role'])}{silent}; QEMU would show: {e['qemu_would_show']}")
    if kind == "stall":
        state = "ongoing" if e["ongoing"] else "ended"
        return (f"STALL {e['kind']} since {e['time']:.6f} ({e['duration']:.1f} s, {state}, {e['clock']} clock) on "
                f"{', '.join(e['channels']) or '-'}: {e['evidence'][0] if e['evidence'] else ''}")
    if kind == "stall-end":
        return f"stall {e['kind']} ended after {e['duration']:.1f} s"
    if kind == "postcopy-start":
        return "postcopy starts (POSTCOPY_RUN)"
    if kind == "postcopy-pause":
        return f"postcopy paused: {leg_owner(e['leg'])} main channel was lost"
    if kind == "postcopy-recovery":
        return f"postcopy recovery: the migration resumes on {leg_connections(e['leg'])}"
    if kind == "outcome":
        return f"{e['status'].upper()}: {e['reason']}"
    return kind
