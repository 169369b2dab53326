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
