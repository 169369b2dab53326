"""Wiring: a capture file through the reader, the TCP tracker and the analysis (the only place that
opens capture files for them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dissectors.analysis.engine import Analysis, ProgressFn, analyze, reassemble
from dissectors.analysis.judge import Options
from dissectors.capture import open_capture
from dissectors.tcp import TcpTracker
from dissectors.tcp.connection import Connection


def analyze_file(path: str, options: Options | None = None, progress: ProgressFn | None = None) -> Analysis:
    with open_capture(path) as cap:
        return analyze(cap, str(path), options, progress)


def reassemble_file(path: str, sink_factory: Callable[[Connection], Any],
                    progress: ProgressFn | None = None) -> tuple[TcpTracker, dict[str, Any]]:
    with open_capture(path) as cap:
        return reassemble(cap, str(path), sink_factory, progress)
