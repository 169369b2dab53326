"""A progress line on a terminal's stderr; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, min_interval: float = 0.2,
                 force: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.label = label
        self.min_interval = min_interval
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int | None) -> None:
        """``done`` of ``total`` bytes; ``total`` None for a stream (no size): bytes and rate only."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < self.min_interval and (total is None or done < total):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-6)
        rate = done / elapsed / 1e6
        if total is None:
            self.stream.write(f"\r{self.label}: {done / 1e6:,.1f} MB read  {rate:,.1f} MB/s\033[K")
        else:
            pct = 100.0 * done / total if total else 0.0
            self.stream.write(f"\r{self.label}: {pct:5.1f}%  {done / 1e6:,.0f}/{total / 1e6:,.0f} MB  "
                              f"{rate:,.0f} MB/s")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
