# SPDX-License-Identifier: GPL-2.0-or-later
"""The fast parsers' side of the layers, without Scapy: ``struct`` layouts of the declarations.

``derived`` (generated from the Scapy classes by ``python -m dissectors.layers.derive``) holds every
layer's fields as a table: ``(name, kind, value)`` with kind ``fmt`` (a fixed-size big-endian scalar or
string: its ``struct`` character), ``bits`` (a bit field: its width), ``items`` (a list of fixed-size
elements: the element's character) or ``none`` (why the field has no fixed layout). This module turns a
run of fields of one layer into a ``struct.Struct`` and a named tuple; ``structs`` does the same for a
Scapy class through :func:`field_table`'s classification, with the same :func:`layout_from`, so the
generated tables and the classes cannot read differently. Importing it does not import Scapy.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Sequence
from functools import cache
from typing import Any

#: One field of a layer: ``(name, kind, value)`` (see the module's docstring).
FieldEntry = tuple[str, str, Any]

_INT_CHAR = {1: "B", 2: "H", 4: "I", 8: "Q"}


def layout_from(layer: str, fields: Sequence[FieldEntry], first: str | None = None,
                last: str | None = None) -> tuple[str, tuple[str, ...]]:
    """``(struct format, item names)`` of fields ``first``..``last`` (inclusive) of a field table.

    A run of bit fields yields one item named ``"a+b"``. A field without a fixed layout in the range
    raises ValueError.
    """
    names = [f[0] for f in fields]
    lo = names.index(first) if first else 0
    hi = names.index(last) if last else len(fields) - 1
    chars: list[str] = []
    items: list[str] = []
    bits = 0
    bit_names: list[str] = []
    for name, kind, value in fields[lo:hi + 1]:
        if kind == "bits":
            bits += value
            bit_names.append(name)
            if bits % 8 == 0:
                if bits // 8 not in _INT_CHAR:
                    raise ValueError(f"bit run ending at {name!r} is {bits} bits")
                chars.append(_INT_CHAR[bits // 8])
                items.append("+".join(bit_names))
                bits, bit_names = 0, []
            continue
        if bits:
            raise ValueError(f"bit run before {name!r} is not byte aligned")
        if kind == "items":
            raise ValueError(f"field {name!r} has a variable length")
        if kind != "fmt":
            raise ValueError(f"field {name!r} {value}")
        chars.append(value)
        items.append(name)
    if bits:
        raise ValueError(f"bit run at the end of {layer} is not byte aligned")
    return ">" + "".join(chars), tuple(items)


def item_from(layer: str, fields: Sequence[FieldEntry], name: str) -> struct.Struct:
    """``struct.Struct`` of one element of the list field ``name`` of a field table."""
    for fname, kind, value in fields:
        if fname == name:
            if kind != "items":
                raise ValueError(f"field {name!r} of {layer} is not a list")
            return struct.Struct(">" + value)
    raise ValueError(f"{layer} has no field {name!r}")


def _table(layer: str) -> tuple[FieldEntry, ...]:
    # Imported here, not at the top: the layers import this module too, and ``derive`` regenerates
    # ``derived`` from them (a missing or broken ``derived`` must not stop that).
    from dissectors.layers.derived import FIELDS

    try:
        return FIELDS[layer]
    except KeyError:
        raise KeyError(f"no layer {layer!r} in dissectors.layers.derived (regenerate it: "
                       "python -m dissectors.layers.derive)") from None


def wire_size(layer: str) -> int:
    """Byte size of the layer named ``layer`` when all its fields have a fixed size, even those ``struct``
    cannot spell (a 24-bit length); KeyError otherwise."""
    from dissectors.layers.derived import WIRE_SIZES

    return WIRE_SIZES[layer]


@cache
def layout_of(layer: str, first: str | None = None, last: str | None = None) -> tuple[str, tuple[str, ...]]:
    """``(struct format, item names)`` for fields ``first``..``last`` of the layer class named ``layer``."""
    return layout_from(layer, _table(layer), first, last)


@cache
def struct_of(layer: str, first: str | None = None, last: str | None = None) -> struct.Struct:
    """``struct.Struct`` for fields ``first``..``last`` of the layer named ``layer`` (all by default)."""
    return struct.Struct(layout_of(layer, first, last)[0])


def fixed_size(layer: str, first: str | None = None, last: str | None = None) -> int:
    """Byte size of fields ``first``..``last`` of the layer named ``layer``."""
    return struct_of(layer, first, last).size


@cache
def item_struct(layer: str, name: str) -> struct.Struct:
    """``struct.Struct`` of one element of the list field ``name`` of the layer named ``layer``."""
    return item_from(layer, _table(layer), name)


class Layout:
    """A ``struct.Struct`` over fields ``first``..``last`` of a layer that unpacks into a named tuple whose
    names are the layer's own (a bit run ``a+b`` is named ``a_b``): no positional unpacking."""

    __slots__ = ("struct", "names", "size", "layer", "_make")

    def __init__(self, layer: str, fmt: str, items: tuple[str, ...]) -> None:
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.layer = layer
        self.names = tuple(name.replace("+", "_") for name in items)
        self._make: Any = self._first_make   # the named tuple is made when first needed (start-up time)

    def _first_make(self, values: tuple[Any, ...]) -> Any:
        self._make = namedtuple(f"{self.layer}Fields", self.names)._make  # type: ignore[misc]
        return self._make(values)

    def unpack_from(self, buf: Any, offset: int = 0) -> Any:
        return self._make(self.struct.unpack_from(buf, offset))

    def pack(self, *values: Any) -> bytes:
        return self.struct.pack(*values)


@cache
def named(layer: str, first: str | None = None, last: str | None = None) -> Layout:
    """The :class:`Layout` of fields ``first``..``last`` of the layer named ``layer`` (all by default)."""
    return Layout(layer, *layout_of(layer, first, last))


def counted_at(buf: Any, pos: int, end: int) -> tuple[bytes, int] | None:
    """Read a counted string (``strings.counted_string``: u8 length, bytes) at ``buf[pos]``: ``(bytes,
    position after it)``, or None when it continues past ``end``. The one reader of that layout (its
    length prefix is one byte: ``strings`` asserts it of the declaration)."""
    if pos >= end:
        return None
    stop = pos + 1 + buf[pos]
    if stop > end:
        return None
    return bytes(buf[pos + 1:stop]), stop
