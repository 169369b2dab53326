"""Our decoded device state rendered the way QEMU's scripts/analyze-migration.py prints it (``-d state``),
so that its output on the same stream (kept in tests/data/vmstate/) is compared value for value.

Its representation, learnt from reading the script: integers as ``0x%0{2*size}x`` (negative ones with the
signed value in brackets), bools as bools, buffers and any type it does not decode as space-separated hex,
structs and subsections as objects, arrays (``array_len``) as lists, repeated names as lists. Where we
decode more (``int32 le`` little-endian, ``timer``, ``float64``, ``pci irq state``, ``tmp`` structs, the
``uint8 equal`` sign), the value is turned back into its bytes and shown as the script shows those.
"""

from __future__ import annotations

import struct
from typing import Any

from dissectors.vmstate.decode import SIGNED, UNSIGNED

_AM_SIGNED = (SIGNED - {"timer"}) | {"uint8 equal", "uint16 equal"}      # what the script reads signed
_AM_UNSIGNED = UNSIGNED - {"uint8 equal", "uint16 equal"}


def _spaced(raw: bytes) -> str:
    return " ".join(f"{c:02x}" for c in raw)


def _int_repr(raw: bytes, signed: bool) -> str:
    fmt = f"0x%0{len(raw) * 2}x"
    u = int.from_bytes(raw, "big")
    s = int.from_bytes(raw, "big", signed=True)
    if signed and s < 0:
        return f"{fmt % u} ({s})"
    return fmt % u


def _leaf(entry: dict[str, Any], value: Any, size: int, body: bytes, offset: int) -> Any:
    typ = entry["type"]
    raw = body[offset:offset + size]
    if isinstance(value, list) and typ not in ("pci irq state",):      # tmp (a struct the script does not walk)
        return _spaced(raw)
    # our value must be what those bytes say (the script's form is built from the bytes)
    if typ in SIGNED or typ in UNSIGNED:
        assert value == int.from_bytes(raw, "big", signed=typ in SIGNED), (entry, value)
    elif typ == "int32 le":
        assert value == int.from_bytes(raw, "little", signed=True), (entry, value)
    elif typ == "bool":
        assert value is (raw != b"\0"), (entry, value)
    elif typ == "pci irq state":
        assert value == list(struct.unpack(">4i", raw)), (entry, value)
    elif isinstance(value, str) and typ not in ("capability", "float64"):
        assert value == raw.hex(), (entry, value)
    if typ in _AM_SIGNED:
        return _int_repr(raw, True)
    if typ in _AM_UNSIGNED:
        return _int_repr(raw, False)
    if typ == "int32 le":
        return _int_repr(raw, True)
    if typ == "bool":
        return value
    if typ == "nullptr":
        return "nullptr"
    if typ == "float64" and isinstance(value, float):
        assert struct.pack(">d", value) == raw
    return _spaced(raw)


def _put(out: dict[str, Any], name: str, value: Any) -> None:
    if name not in out:
        out[name] = value
    elif isinstance(out[name], list):
        out[name].append(value)
    else:
        out[name] = [out[name], value]


def analyze_shape(entries: list[dict[str, Any]], body: bytes) -> dict[str, Any]:
    """Our entries as analyze-migration.py's dict of one struct/section."""
    out: dict[str, Any] = {}
    for e in entries:
        if e["type"] == "subsection":
            out[e["name"]] = analyze_shape(e["value"], body)
            continue
        n = e.get("array_len")
        values = e["value"] if n is not None else [e["value"]]
        size = e["size"] // max(len(values), 1) if values else 0
        for i, v in enumerate(values):
            off = e["offset"] + i * size
            if e["type"] == "struct":
                _put(out, e["name"], analyze_shape(v, body))
            else:
                _put(out, e["name"], _leaf(e, v, size, body, off))
    return out
