# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU's VMDESCRIPTION JSON (``migration/savevm.c`` ``qemu_savevm_state_complete_precopy_non_iterable``,
``migration/vmstate.c`` ``vmsd_desc_field_start``/``_end``), checked before anything walks it.

Shape: ``{"page_size": N, "configuration": {...}, "devices": [{"name", "instance_id", "vmsd_name",
"version", "fields": [...], "subsections": [...]}, ...]}``; a field is ``{"name", "type", "size",
["array_len"], ["index"], ["struct": {vmsd_name, version, fields, subsections}]}`` (a ``tmp`` field carries
``vmsd_name``/``fields`` itself). Hostile input is bounded: the text by :data:`MAX_DESCRIPTION`, nesting
by :data:`MAX_DEPTH` (Python's own JSON recursion limit included), and nothing here trusts a type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: A VMDESCRIPTION larger than this is not decoded (a PC guest's is ~100 KB; QEMU's own limit is its
#: JSON writer's memory). The record keeps its size.
MAX_DESCRIPTION = 16 << 20
#: Structs and subsections nested deeper than this are not walked (QEMU's deepest are ~6).
MAX_DEPTH = 32


class DescriptionError(ValueError):
    """The VMDESCRIPTION cannot be used; the message says why (no traceback for the user)."""


@dataclass
class Description:
    """A checked VMDESCRIPTION: the devices by ``(name, instance_id)``."""

    page_size: int | None
    devices: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    size: int = 0


def parse_description(data: bytes | bytearray | memoryview) -> Description:
    """Parse and check a VMDESCRIPTION's JSON text; raise :class:`DescriptionError` with a clear reason."""
    n = len(data)
    if n > MAX_DESCRIPTION:
        raise DescriptionError(f"VMDESCRIPTION of {n} bytes is above the {MAX_DESCRIPTION}-byte bound")
    try:
        doc = json.loads(bytes(data))
    except RecursionError:
        raise DescriptionError("VMDESCRIPTION JSON nests too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise DescriptionError(f"VMDESCRIPTION is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DescriptionError("VMDESCRIPTION JSON is not an object")
    devices = doc.get("devices")
    if not isinstance(devices, list):
        raise DescriptionError("VMDESCRIPTION has no 'devices' list")
    page_size = doc.get("page_size")
    out = Description(page_size if isinstance(page_size, int) and not isinstance(page_size, bool) else None,
                      size=n)
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict):
            raise DescriptionError(f"VMDESCRIPTION device #{i} is not an object")
        name, inst = dev.get("name"), dev.get("instance_id")
        if not isinstance(name, str) or not isinstance(inst, int) or isinstance(inst, bool):
            raise DescriptionError(f"VMDESCRIPTION device #{i} has no name or instance_id")
        out.devices[(name, inst)] = dev
    return out
