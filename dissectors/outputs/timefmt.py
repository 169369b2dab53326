"""Times for people, chosen with ``-t`` like tshark's time formats (docs/analysis.md, "Times").

``r`` (default) relative to the migration's start (``+1.0011s``); ``a`` / ``ad`` the local wall clock, time
of day / ISO 8601 date and time; ``u`` / ``ud`` the same in UTC; ``e`` seconds since the epoch. Where a
relative report shows an absolute time (a migration's start), it is ISO 8601 in UTC.

The analysis writes the times inside its sentences (evidence, outcome reasons) as capture timestamps with
six decimals (``1795633640.075779``); :meth:`TimeFormat.retime` rewrites them in the chosen format.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

#: ``-t`` letter -> what it shows (the help text and docs list these).
FORMATS = {
    "r": "relative to the migration's start (+1.0011s), the start itself in ISO 8601 UTC",
    "a": "local time of day (13:27:20.075779)",
    "ad": "local date and time, ISO 8601 (2026-11-26T13:27:20.075779+01:00)",
    "u": "UTC time of day (12:27:20.075779Z)",
    "ud": "UTC date and time, ISO 8601 (2026-11-26T12:27:20.075779Z)",
    "e": "seconds since the epoch (1795633640.075779)",
}

#: A capture timestamp as the analysis writes it into a sentence: 9 to 11 digits, a dot, 6 decimals.
_EPOCH = re.compile(r"(?<![\d.+])(\d{9,11}\.\d{6})(?![\d])")


class TimeFormat:
    def __init__(self, mode: str = "r") -> None:
        if mode not in FORMATS:
            raise ValueError(f"unknown time format {mode!r}: one of {', '.join(FORMATS)}")
        self.mode = mode

    @property
    def relative(self) -> bool:
        return self.mode == "r"

    def at(self, ts: float | None, base: float | None) -> str:
        """``ts`` as this format shows a point in time; relative to ``base`` (the migration's start)."""
        if ts is None:
            return "-"
        if self.mode == "r":
            if base is None:
                return self.absolute(ts)
            d = ts - base
            return f"{'-' if d < 0 else '+'}{abs(d):.4f}s"
        if self.mode == "e":
            return f"{ts:.6f}"
        local = self.mode in ("a", "ad")
        dt = _datetime(ts, local)
        if self.mode in ("a", "u"):
            return dt.strftime("%H:%M:%S.%f") + ("" if local else "Z")
        return _iso(dt)

    def absolute(self, ts: float) -> str:
        """An absolute time (a migration's start): ISO 8601, local for ``a``/``ad``, else UTC."""
        if self.mode == "e":
            return f"{ts:.6f}"
        return _iso(_datetime(ts, self.mode in ("a", "ad")))

    def retime(self, text: str, base: float | None) -> str:
        """``text`` with each capture timestamp the analysis wrote into it shown in this format."""
        if self.mode == "e":
            return text
        return _EPOCH.sub(lambda m: self.at(float(m.group(1)), base), text)


def _datetime(ts: float, local: bool) -> datetime:
    from datetime import UTC, datetime  # here: analyze --json and epoch times never format a date

    dt = datetime.fromtimestamp(ts, UTC)
    return dt.astimezone() if local else dt


def _iso(dt: datetime) -> str:
    from datetime import UTC

    text = dt.isoformat(timespec="microseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") and dt.tzinfo is UTC else text
