"""What a worker runs for one capture: the CLI pipeline's analysis, turned into table rows.

Never raises for a bad capture: whatever stops the analysis (unreadable, truncated before any migration,
a key log that cannot be read, even a bug) becomes an error row naming the capture, so one capture
cannot end a fleet run.
"""

from __future__ import annotations

import time
from typing import Any

from dissectors.analysis.engine import Analysis
from dissectors.analysis.judge import Options
from dissectors.cli.pipeline import analyze_file, load_keylog
from dissectors.errors import InputError
from dissectors.fleet.inputs import CaptureInput, is_url
from dissectors.fleet.rows import error_row, rows_from_report
from dissectors.tls import KeyLog, KeyLogError


def analyse_capture(item: CaptureInput, options: Options | None = None) -> list[dict[str, Any]]:
    """The table rows of one capture (see ``rows``), with the analysis's wall time in ``seconds``."""
    start = time.perf_counter()
    rows = _rows(item, options or Options())
    elapsed = round(time.perf_counter() - start, 6)
    for row in rows:
        row["seconds"] = elapsed
    return rows


def _rows(item: CaptureInput, options: Options) -> list[dict[str, Any]]:
    if item.problem:
        return [error_row(item.url, item.size, f"{item.url}: {item.problem}")]
    try:
        report = _analysis(item, options).report
    except InputError as exc:
        return [error_row(item.url, item.size, exc.describe())]
    except OSError as exc:
        return [error_row(item.url, item.size, f"{item.url}: {exc.strerror or exc}")]
    except MemoryError:
        return [error_row(item.url, item.size, f"{item.url}: out of memory on the worker")]
    except Exception as exc:  # noqa: BLE001 - a bug on one capture must not end the run; it is reported
        return [error_row(item.url, item.size, f"{item.url}: internal error ({type(exc).__name__}: {exc}); "
                                               "please report it with the capture")]
    return rows_from_report(report, item.url, item.size)


def _analysis(item: CaptureInput, options: Options) -> Analysis:
    keylog = _keylog(item.keylog)
    if not is_url(item.url):
        return analyze_file(item.url, options, keylog=keylog)
    import fsspec

    url = item.url
    with fsspec.open(url, "rb") as f:          # streamed: read sequentially, never downloaded whole first
        return analyze_file(url, options, keylog=keylog, stream=f)


def _keylog(name: str | None) -> KeyLog | None:
    if name is None or not is_url(name):
        return load_keylog(name)
    import fsspec

    try:
        with fsspec.open(name, "rt", encoding="ascii", errors="replace") as f:
            return KeyLog.parse(f.read(), name)
    except KeyLogError as exc:
        raise InputError(exc.why, path=exc.name) from exc
