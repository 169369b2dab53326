"""The fleet table: one row per migration, built from ``migshark analyze --json``'s report.

``COLUMNS`` is the schema (name, type, meaning): the Parquet schema, the CSV header and
docs/report-schema.md's fleet section all follow it. Types: ``str``, ``int``, ``float``, ``bool`` and
``list`` (of strings; a JSON array in CSV). Every value may be null. A capture that cannot be read
is one row with ``status`` ``error`` and ``error`` set; a capture read cleanly that holds no migration is
one row with ``status`` ``no-migration``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from dissectors.analysis.findings import migration_findings, no_migration_reason
from dissectors.analysis.policies import BLOCKED

ROLES = ("main", "multifd", "preempt", "main-recovery", "tls", "unknown")
STALL_KINDS = ("page-request", "preempt-as-main", "peek-blocked", "no-progress")

COLUMNS: list[tuple[str, str, str]] = [
    ("capture", "str", "the capture as named on the command line (path or URL)"),
    ("capture_bytes", "int", "its size on storage (compressed for .gz)"),
    ("migration", "int", "the migration's id in the capture's report; null on error / no-migration rows"),
    ("status", "str", "outcome: completed, failed, stalled, incomplete, unknown; or error, no-migration"),
    ("reason", "str", "the outcome's reason (report: outcome.reason)"),
    ("stalled_for", "float", "seconds a silent-channel stall lasted before the failure (outcome.stalled_for)"),
    ("destination", "str", "the destination's listening address"),
    ("relay_side", "str", "source / destination when the capture holds both legs of a relay, else null"),
    ("start_time", "float", "first handshake, seconds since the epoch"),
    ("end_time", "float", "last packet"),
    ("policy", "str", "the destination rules the roles were judged by (policy.name)"),
    ("policy_why", "str", "why that policy (policy.why)"),
    ("source_generation", "str", "the source's QEMU generation read from its stream (policy.source_generation)"),
    ("source_evidence", "list", "the stream features that generation rests on (policy.evidence)"),
    ("destination_generation", "str", "the destination's generation (policy.destination_generation)"),
    ("destination_known_by", "str", "given (--qemu-version), behaviour (the policies its behaviour fits), "
                                    "or not-judged (TLS without key log, a relay's source-side leg)"),
    ("destination_fits", "list", "the policies whose predictions agree with what the destination did "
                                 "(policy.fits_capture)"),
    ("qemu_version_given", "str", "the destination's version given with --qemu-version (the rules then judged by)"),
    *[(f"channels_{r.replace('-', '_')}", "int", f"channels whose bytes say {r}") for r in ROLES],
    ("misclassified", "int", "channels the destination takes for another role"),
    ("misclassified_channels", "list", "each as CLIENT TRUE-ROLE->ASSIGNED-ROLE"),
    ("predicted_failure", "str", "what QEMU would print for the first misclassified channel"),
    ("stalls", "int", "stalls of any kind"),
    *[(f"stalls_{k.replace('-', '_')}", "int", f"stalls of kind {k}") for k in STALL_KINDS],
    ("longest_stall", "float", "seconds, the longest stall (to the capture end when ongoing)"),
    ("longest_stall_kind", "str", "its kind"),
    ("unreadable", "int", "channels with a malformed record"),
    ("postcopy_page_requests", "int", "postcopy page requests on the return path"),
    ("postcopy_unserved", "int", "page requests never served"),
    ("postcopy_median_latency", "float", "seconds, request to page (postcopy.median_latency)"),
    ("postcopy_max_latency", "float", "seconds (postcopy.max_latency)"),
    ("bytes_to_destination", "int", "stream bytes towards the destination, all channels"),
    ("bytes_to_source", "int", "stream bytes back to the source (return path), all channels"),
    ("tls_decrypted", "str", "with a NAME.keylog beside the capture: 'D/T' TLS connections decrypted, else null"),
    ("findings", "int", "this migration's share of the report's findings (on a relay's source-side leg only its "
                         "unreadable channels)"),
    ("signature", "str", "what went wrong, without addresses and numbers: the summary groups by it"),
    ("capture_warnings", "int", "warnings reading the capture (cut records, gaps in the file...)"),
    ("first_warning", "str", "the first of them"),
    ("error", "str", "why the capture could not be analysed (error rows only)"),
    ("seconds", "float", "wall time of this capture's analysis on its worker"),
]
NAMES = [c[0] for c in COLUMNS]
TYPES = {c[0]: c[1] for c in COLUMNS}


def _empty(capture: str, size: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(NAMES)
    row["capture"], row["capture_bytes"] = capture, size
    return row


def error_row(capture: str, size: int, message: str) -> dict[str, Any]:
    row = _empty(capture, size)
    row.update(status="error", error=message, signature="error: " + mask(message.replace(capture, "CAPTURE")))
    return row


def rows_from_report(report: dict[str, Any], capture: str, size: int) -> list[dict[str, Any]]:
    """One row per migration of ``report`` (an ``analyze --json`` report); a capture without a
    migration is one row (``no-migration``, or ``error`` when it could not be read at all)."""
    cap = report["capture"]
    warnings = cap.get("warnings", [])
    common = {"capture_warnings": len(warnings), "first_warning": warnings[0] if warnings else None}
    keylog = cap.get("keylog")
    if keylog is not None:
        common["tls_decrypted"] = f"{keylog['decrypted']}/{keylog['tls_connections']}"
    if not report["migrations"]:
        why = no_migration_reason(report)
        if why and warnings:
            why = why.replace("(see the warnings)", "(first: " + warnings[0] + ")")
        row = error_row(capture, size, why) if why else _empty(capture, size) | {"status": "no-migration"}
        return [row | common]
    given = report["options"].get("qemu_version")
    return [_empty(capture, size) | common | migration_fields(m, given) for m in report["migrations"]]


def migration_fields(m: dict[str, Any], qemu_version_given: str | None) -> dict[str, Any]:
    pol, out, pc = m["policy"], m["outcome"], m["postcopy"]
    relay = m.get("relay") or {}
    channels = m["channels"]                     # every leg's, in accept order per leg
    roles = Counter(c["role"] for c in channels)
    stalls = m["stalls"]
    kinds = Counter(s["kind"] for s in stalls)
    longest = max(stalls, key=lambda s: s.get("duration") or 0.0, default=None)
    fits = pol.get("fits_capture")
    mis = m["misclassifications"]
    findings = migration_findings(m)
    row: dict[str, Any] = {
        "migration": m["id"],
        "status": out["status"],
        "reason": out.get("reason"),
        "stalled_for": out.get("stalled_for"),
        "destination": m["destination"],
        "relay_side": relay.get("side"),
        "start_time": m.get("start_time"),
        "end_time": m.get("end_time"),
        "policy": pol.get("name"),
        "policy_why": pol.get("why"),
        "source_generation": pol.get("source_generation"),
        "source_evidence": list(pol.get("evidence", [])),
        "destination_generation": pol.get("destination_generation"),
        "destination_known_by": "given" if qemu_version_given else ("not-judged" if fits is None else "behaviour"),
        "destination_fits": None if fits is None else list(fits),
        "qemu_version_given": qemu_version_given,
        "misclassified": len(mis),
        "misclassified_channels": [f"{x['client']} {x['role']}->{x['assigned_role']}" for x in mis],
        "predicted_failure": mis[0]["failure"] if mis else None,
        "stalls": len(stalls),
        "longest_stall": longest.get("duration") if longest else None,
        "longest_stall_kind": longest["kind"] if longest else None,
        "unreadable": len(m["unreadable"]),
        "postcopy_page_requests": pc.get("page_requests"),
        "postcopy_unserved": pc.get("unserved_requests"),
        "postcopy_median_latency": pc.get("median_latency"),
        "postcopy_max_latency": pc.get("max_latency"),
        "bytes_to_destination": sum(c["bytes_to_server"] for c in channels),
        "bytes_to_source": sum(c["bytes_to_client"] for c in channels),
        "findings": findings,
        "signature": signature(m),
    }
    for r in ROLES:
        row[f"channels_{r.replace('-', '_')}"] = roles.get(r, 0)
    for k in STALL_KINDS:
        row[f"stalls_{k.replace('-', '_')}"] = kinds.get(k, 0)
    return row


_ADDR = re.compile(r"\[?[0-9a-fA-F:.]+\]?:\d+\b")
_TIME = re.compile(r"(?<![\w.])(?:\d+\.\d{3,}|\d{7,}(?:\.\d+)?)(?![\w.])")
_INT = re.compile(r"(?<![\w.])\d+(?![\w.])")


def mask(text: str) -> str:
    """``text`` with endpoints, times and counts replaced (versions such as 7.2 kept), so that one kind of
    failure reads the same in every capture."""
    return _INT.sub("N", _TIME.sub("T", _ADDR.sub("ADDR", text)))


def _taken(assigned: str) -> str:
    """How the destination took a channel, after its true role: a blocked peek gives it no role."""
    return "given no role (a peek stuck on it)" if assigned == BLOCKED else f"taken as {assigned}"


def signature(m: dict[str, Any]) -> str | None:
    """What went wrong in one migration, in words that do not depend on the capture: the summary's key."""
    if (m.get("relay") or {}).get("side") == "source":
        return None
    parts = sorted({f"{x['role']} {_taken(x['assigned_role'])} ({x['policy']})" for x in m["misclassifications"]})
    if parts:
        return "misclassified: " + ", ".join(parts)
    kinds = sorted({s["kind"] for s in m["stalls"]})
    if kinds:
        return "stalled: " + ", ".join(kinds)
    if m["unreadable"]:
        return "unreadable: " + ", ".join(sorted({f"{u['role']} {u['direction']}" for u in m["unreadable"]}))
    status = m["outcome"]["status"]
    if status in ("failed", "stalled", "incomplete"):
        return f"{status}: {mask(m['outcome'].get('reason') or '')}"
    return None
