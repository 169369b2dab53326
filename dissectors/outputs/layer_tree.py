"""A record's Scapy packet as a tshark ``-V`` style tree: one heading per layer, ``Label: value`` per field.

Labels come from the layer declarations (``dissectors.layers.labels``); within one record every label is
distinct: a label that two layers of the record would share is qualified with its layer's name. Entries of
a packet list (RAM blocks, capabilities, discard ranges) are numbered subtrees.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from scapy.fields import ConditionalField, EnumField, Field
from scapy.packet import NoPayload, Packet, Raw

from dissectors.layers.labels import field_label

INDENT = "    "
#: Byte strings longer than this are shown cut, with their length.
BYTES_SHOWN = 32


def _fields(layer: Packet) -> list[Field[Any, Any]]:
    out = []
    for f in layer.fields_desc:
        if isinstance(f, ConditionalField):
            if not f._evalcond(layer):
                continue
            f = f.fld
        out.append(f)
    return out


def _layers(pkt: Packet) -> list[Packet]:
    out = []
    p: Packet = pkt
    while p is not None and not isinstance(p, NoPayload):
        out.append(p)
        p = p.payload
    return out


def _text(f: Field[Any, Any], layer: Packet, v: Any) -> str:
    if isinstance(v, bytes):
        text = v.rstrip(b"\0")                 # a NUL-padded name (a multifd packet's RAM block)
        if text and all(32 <= b < 127 for b in text):
            return text.decode()
        shown = v[:BYTES_SHOWN].hex()
        return shown + (f"... ({len(v)} bytes)" if len(v) > BYTES_SHOWN else "")
    shown = f.i2repr(layer, v)
    if str(shown) == "" and v is not None:      # an empty flag set
        shown = "0"
    if isinstance(f, EnumField) and isinstance(v, int) and str(shown) != str(v):
        return f"{shown} ({v})"
    return str(shown)


def _label(layer: Packet, f: Field[Any, Any]) -> str:
    return "Data" if isinstance(layer, Raw) else field_label(type(layer), f.name)


def layer_tree(pkt: Packet) -> list[str]:
    """The lines of ``pkt``'s tree (no trailing newlines), unindented at the top."""
    layers = _layers(pkt)
    used = Counter(_label(layer, f) for layer in layers for f in _fields(layer))
    lines: list[str] = []
    for layer in layers:
        lines.append("Data" if isinstance(layer, Raw) else layer.name)
        lines += _field_lines(layer, used, INDENT)
    return lines


def _field_lines(layer: Packet, used: Counter[str], indent: str) -> list[str]:
    lines = []
    for f in _fields(layer):
        label = _label(layer, f)
        if used[label] > 1:
            label = f"{label} ({layer.name})"
        v = layer.getfieldval(f.name)
        if isinstance(v, list) and v and all(isinstance(x, Packet) for x in v):
            lines.append(f"{indent}{label}: {len(v)}")
            for i, sub in enumerate(v, 1):
                lines.append(f"{indent}{INDENT}[{i}] {sub.name}")
                inner = Counter(_label(sub, g) for g in _fields(sub))
                lines += _field_lines(sub, inner, indent + INDENT * 2)
            continue
        if isinstance(v, Packet):
            lines.append(f"{indent}{label}: {v.name}")
            lines += _field_lines(v, Counter(_label(v, g) for g in _fields(v)), indent + INDENT)
            continue
        if isinstance(v, list):
            shown = ", ".join(_text(f, layer, x) if not isinstance(x, int) else hex(x) for x in v[:8])
            more = f", ... ({len(v)} in all)" if len(v) > 8 else ""
            lines.append(f"{indent}{label}: [{shown}{more}]")
            continue
        lines.append(f"{indent}{label}: {_text(f, layer, v)}")
    return lines
