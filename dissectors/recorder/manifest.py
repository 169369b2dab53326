# SPDX-License-Identifier: GPL-2.0-or-later
"""The JSON manifest written next to every capture: what was run, and what really happened."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

FORMAT = "migshark-capture-manifest/1"
OUTCOMES = ("completed", "failed", "stalled")


def jsonable(value: Any) -> Any:
    """Turn dataclasses, paths, sets and tuples into plain JSON values (recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically (temp file + rename). ``outcome`` must be one of OUTCOMES."""
    if manifest.get("outcome") not in OUTCOMES:
        raise ValueError(f"manifest outcome must be one of {OUTCOMES}, not {manifest.get('outcome')!r}")
    data = {"format": FORMAT, **jsonable(manifest)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a migshark capture manifest")
    return data
