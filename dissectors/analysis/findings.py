"""What the report's ``findings`` count (docs/report-schema.md, top level), per migration."""

from __future__ import annotations

from typing import Any


def migration_findings(m: dict[str, Any]) -> int:
    """A migration's share of the report's ``findings`` (docs/report-schema.md): its misclassifications,
    stalls, unreadable channels, unsupported features, and 1 if it failed. A relay's source-side leg counts
    only its unreadable channels: its outcome is the destination-side leg's and its accept order is the
    relay's, both counted once on that leg."""
    unreadable = len(m["unreadable"])
    if (m.get("relay") or {}).get("side") == "source":
        return unreadable
    return (len(m["misclassifications"]) + len(m["stalls"]) + unreadable + len(m.get("unsupported", []))
            + (m["outcome"]["status"] == "failed"))


def no_migration_reason(report: dict[str, Any]) -> str | None:
    """Why a report without a migration is an error (``analyze`` exits 2, ``fleet`` writes an error row),
    or None when it has migrations or the capture was read whole and simply holds none."""
    if report["migrations"]:
        return None
    cap = report["capture"]
    if not cap["tcp_segments"]:
        frames = cap.get("frames", 0)
        why = ("no packet could be read (see the warnings)" if not frames and cap["warnings"] else
               "the capture holds no packet" if not frames else
               f"none of its {frames} frame(s) is a TCP segment" + (" (see the warnings)" if cap["warnings"] else ""))
    elif cap["warnings"]:
        why = "the capture could not be read completely (see the warnings)"
    else:
        return None
    return "no migration found: " + why
