"""The optional compiled scanner (``_pcapscan.c``, built by ``setup.py``) and when to use it."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator

from .limits import BATCH_BYTES
from .linktypes import LINK_LAYOUTS as LINK_LAYOUTS  # the link layouts the scanner reads (declared there)

try:
    from . import _pcapscan
except ImportError:  # built without a C compiler or Python headers: the pure-Python walks do everything
    _pcapscan = None

SCAN_STOPPED_FOR_PYTHON = 1  # the scanner's status: it stopped at a record or block the Python loop must take
SCAN_COOLDOWN = 32  # records left to the Python loop after the scanner stopped almost at once


def compiled_scanner(kind: str = "pcap") -> Callable[..., tuple] | None:
    """``pcap_scan`` or ``pcapng_scan`` (``kind``), unless not built or ``MIGSHARK_PURE_PYTHON`` is set."""
    if _pcapscan is None or os.environ.get("MIGSHARK_PURE_PYTHON"):
        return None
    return getattr(_pcapscan, f"{kind}_scan")


#: Payload bytes of one connection direction handed over as one run at most (``coalesce``).
COALESCE_WINDOW = 64 << 10


def compiled_coalescer() -> Callable[[list[tuple], int, int], tuple[list[tuple], float | None]] | None:
    """``coalesce(segments, window, control) -> (entries, last_ts)`` of the compiled scanner (runs of in-order
    payload of one connection direction as one entry, see ``_pcapscan.c``), unless not built,
    ``MIGSHARK_PURE_PYTHON`` is set, or ``MIGSHARK_NO_COALESCE`` is set (segment by segment, as before)."""
    if _pcapscan is None or os.environ.get("MIGSHARK_PURE_PYTHON") or os.environ.get("MIGSHARK_NO_COALESCE"):
        return None
    return getattr(_pcapscan, "coalesce", None)   # None: a scanner built before it (pip install -e . rebuilds)


def scanner_coalesces() -> bool:
    """Do the compiled scanners coalesce as they read (``scan_runs``' ``runs``)? Not one built before they
    could (``pip install -e .`` rebuilds it): ``Capture.keyed_runs`` then coalesces every list itself."""
    return bool(getattr(_pcapscan, "SCAN_COALESCES", 0))


def scanner_status() -> str:
    """One line for ``migshark --version``: which reader runs and, if pure Python, why."""
    if _pcapscan is None:
        return "capture reader: pure Python (the compiled scanner was not built: install gcc and python3-dev, " \
               "then reinstall)"
    if os.environ.get("MIGSHARK_PURE_PYTHON"):
        return "capture reader: pure Python (MIGSHARK_PURE_PYTHON is set)"
    return "capture reader: compiled scanner"


#: What a keyed walk asked for runs (``Capture.keyed_runs``) passes its scanner: ``(window, control, exclude)``.
Runs = tuple[int, int, "dict[bytes, bool] | None"]


def scan_runs(scan: Callable[..., tuple], buf: object, pos: int, checkpoint: int, end: int,
              rest: tuple, runs: Runs | None = None
              ) -> Generator[list[tuple] | tuple, None, tuple[int, int, int, int, float | None]]:
    """Run ``scan(buf, pos, stop, end, *rest)`` from ``pos`` towards ``checkpoint``, ``BATCH_BYTES`` at a
    time, yielding the scanner's lists (the walker has handed over its own segments first). With ``runs``
    the scanner coalesces as it reads (``scan(..., *rest, *runs)``, see ``_pcapscan.c``): it yields
    ``(entries, last_ts)`` tuples, what ``coalesce`` would make of its list, without a tuple per segment
    that joins a run.

    Returns ``(pos, frames, truncated, cooldown, last_ts)``: ``cooldown`` is how many records the walker
    should take itself before trying again (the scanner stopped almost at once: the capture is not of
    the kind it reads)."""
    frames = cut_total = 0
    last_ts = None
    while pos < checkpoint:
        if runs is not None:
            entries, pos, count, cut, status, ts = scan(buf, pos, min(checkpoint, pos + BATCH_BYTES), end, *rest,
                                                        *runs)
            frames += count
            cut_total += cut
            if entries:
                last_ts = ts
                yield entries, ts
        else:
            segs, pos, count, cut, status = scan(buf, pos, min(checkpoint, pos + BATCH_BYTES), end, *rest)
            frames += count
            cut_total += cut
            if segs:
                last_ts = segs[-1][1]
                yield segs
        if status:
            cool = SCAN_COOLDOWN if status == SCAN_STOPPED_FOR_PYTHON and count < 8 else 0
            return pos, frames, cut_total, cool, last_ts
    return pos, frames, cut_total, 0, last_ts
