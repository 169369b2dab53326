"""Progress on stderr, drawn by tqdm: a bar with bytes, rate and ETA when the size is known, bytes and rate
for a stream (pipe, FIFO, standard input); nothing when stderr is not a terminal (unless forced).

tqdm (not rich): one small pure-Python package with no dependencies, the de-facto bar for byte counts
(``unit="B"``, rate, ETA, redraw to the terminal's width, clearing on close), and imported only when a
bar is drawn, so a run that shows none pays nothing for it.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Progress:
    """``progress(done, total)``: ``done`` of ``total`` bytes; ``total`` None for a stream (no size)."""

    def __init__(self, label: str, stream: TextIO | None = None, min_interval: float = 0.2,
                 force: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.enabled = force or _isatty(self.stream)
        self.label = label
        self.min_interval = min_interval
        self.bar: Any = None

    @property
    def shown(self) -> bool:
        return self.bar is not None

    def _open(self, total: int | None, **extra: Any) -> Any:
        from tqdm import tqdm  # only here: runs without a bar do not import it

        self.bar = tqdm(total=total, desc=self.label, file=self.stream, unit="B", unit_scale=True,
                        unit_divisor=1000, mininterval=self.min_interval, leave=False, dynamic_ncols=True,
                        smoothing=0.1, **extra)
        return self.bar

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        bar = self._open(total) if self.bar is None else self.bar
        if done != bar.n:
            bar.update(done - bar.n)

    def clear(self) -> None:
        """Take the bar off the line (before writing something else to the terminal)."""
        if self.bar is not None:
            self.bar.clear()

    def refresh(self) -> None:
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
