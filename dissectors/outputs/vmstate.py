"""Decoded device state (``device.vmstate`` records) for people: the record's line and, with ``-V``, one
line per field, nested structs and subsections indented under their parent."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from typing import Any

#: In the text tree, arrays show this many elements and buffers this many bytes; ``--json`` has them all.
TEXT_ELEMENTS = 16
TEXT_BYTES = 64


def device_matches(fields: dict[str, Any], patterns: Sequence[str]) -> bool:
    """Whether a device record's section name (``idstr``, ``idstr/instance`` or its vmsd name) matches a
    ``--device`` glob."""
    idstr = fields.get("idstr")
    if idstr is None:
        return False
    names = [idstr, f"{idstr}/{fields.get('instance_id')}"]
    if fields.get("vmsd_name"):
        names.append(fields["vmsd_name"])
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)


def line_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A ``device.vmstate`` record's fields for its one-line form: the tree counted, not printed."""
    out = {k: v for k, v in fields.items() if k not in ("state", "problems")}
    if "state" in fields:
        out["fields"] = _count(fields["state"])
    if fields.get("problems"):
        out["problems"] = len(fields["problems"])
    return out


def _count(entries: list[dict[str, Any]]) -> int:
    return len(entries)


def _scalar(v: Any, typ: str) -> str:
    if isinstance(v, bool) or v is None:
        return "nullptr" if v is None else str(v).lower()
    if isinstance(v, int):
        return str(v) if -10 < v < 10 else f"{v:#x} ({v})"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str) and typ not in ("capability",) and not v.startswith(("nan", "inf", "-inf")):
        n = len(v) // 2
        if n > TEXT_BYTES:
            return f"{v[:TEXT_BYTES * 2]}... ({n} bytes)"
        return v if v else "(empty)"
    return repr(v)


def _value_text(e: dict[str, Any], v: Any) -> str:
    if isinstance(v, list) and e["type"] == "pci irq state":
        return "[" + ", ".join(str(x) for x in v) + "]"
    return _scalar(v, e["type"])


def tree_lines(entries: list[dict[str, Any]], depth: int = 1) -> Iterator[str]:
    """One line per field (``name: type[size] @offset = value``), nested entries indented."""
    pad = "    " * depth
    for e in entries:
        head = f"{pad}{e['name']}: {e['type']}[{e['size']}] @{e['offset']}"
        if e["type"] == "subsection":
            yield f"{head} version {e.get('version_id')}"
            yield from tree_lines(e["value"], depth + 1)
        elif "array_len" in e:
            values = e["value"]
            nested = bool(values) and isinstance(values[0], list) and e["type"] != "pci irq state"
            if nested:
                yield f"{head} {e['array_len']} elements"
                for i, v in enumerate(values[:TEXT_ELEMENTS]):
                    yield f"{pad}    [{i}]"
                    yield from tree_lines(v, depth + 2)
            else:
                shown = ", ".join(_value_text(e, v) for v in values[:TEXT_ELEMENTS])
                yield f"{head} = [{shown}]"
            if len(values) > TEXT_ELEMENTS:
                yield f"{pad}    ... {len(values) - TEXT_ELEMENTS} more elements (--json has them all)"
        elif isinstance(e.get("value"), list) and e["type"] != "pci irq state":
            yield head
            yield from tree_lines(e["value"], depth + 1)
        else:
            yield f"{head} = {_value_text(e, e.get('value'))}"
        if "error" in e:
            yield f"{pad}    ! {e['error']}"


def device_tree(fields: dict[str, Any]) -> Iterator[str]:
    """The ``-V`` lines under a ``device.vmstate`` record: its fields, or why it was not decoded."""
    if "state" in fields:
        yield from tree_lines(fields["state"])
    for p in fields.get("problems", ()):
        yield f"    ! {p}"
