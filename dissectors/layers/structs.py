# SPDX-License-Identifier: GPL-2.0-or-later
"""Derive fast ``struct.Struct`` formats from Scapy ``fields_desc`` declarations.

The Scapy class is the only spelling of a wire structure. The hot-path parsers unpack with a
``struct.Struct`` built here from a run of fixed-size fields of that class, so the two cannot drift.
Runs of consecutive bit fields (for example a 52-bit address plus 12 flag bits) become one integer.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from functools import cache
from typing import Any

from scapy.fields import (
    ConditionalField,
    Field,
    FieldListField,
    StrFixedLenField,
    _BitField,
    _PacketField,
    _StrField,
)
from scapy.packet import Packet

_INT_CHAR = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _fixed_char(fld: Field) -> str:
    """Format characters of one fixed-size, big-endian field; raise ValueError otherwise."""
    if isinstance(fld, StrFixedLenField):
        try:
            size = fld.length_from(None)
        except (AttributeError, TypeError) as exc:
            raise ValueError(f"field {fld.name!r} has a variable length") from exc
        return f"{size}s"
    if isinstance(fld, (_StrField, _PacketField, FieldListField)):
        raise ValueError(f"field {fld.name!r} ({type(fld).__name__}) has a variable length")
    fmt = getattr(fld, "fmt", "")
    char = fmt.lstrip("!<>=@")
    if fmt[:1] == "<":
        raise ValueError(f"field {fld.name!r} is little-endian")
    if len(char) != 1 or char not in "BbHhIiQq" or struct.calcsize("!" + char) != fld.sz:
        raise ValueError(f"field {fld.name!r} ({type(fld).__name__}) is not a fixed-size scalar")
    return char


@cache
def layout_of(
    cls: type[Packet], first: str | None = None, last: str | None = None
) -> tuple[str, tuple[str, ...]]:
    """Return ``(struct format, item names)`` for fields ``first``..``last`` (inclusive) of ``cls``.

    A run of bit fields yields one item named ``"a+b"``. Conditional or variable-length fields in the
    range raise ValueError.
    """
    fields = list(cls.fields_desc)
    names = [f.name for f in fields]
    lo = names.index(first) if first else 0
    hi = names.index(last) if last else len(fields) - 1
    chars: list[str] = []
    items: list[str] = []
    bits = 0
    bit_names: list[str] = []
    for fld in fields[lo:hi + 1]:
        if isinstance(fld, ConditionalField):
            raise ValueError(f"field {fld.name!r} is conditional")
        if isinstance(fld, _BitField):
            bits += fld.size
            bit_names.append(fld.name)
            if bits % 8 == 0:
                if bits // 8 not in _INT_CHAR:
                    raise ValueError(f"bit run ending at {fld.name!r} is {bits} bits")
                chars.append(_INT_CHAR[bits // 8])
                items.append("+".join(bit_names))
                bits, bit_names = 0, []
            continue
        if bits:
            raise ValueError(f"bit run before {fld.name!r} is not byte aligned")
        chars.append(_fixed_char(fld))
        items.append(fld.name)
    if bits:
        raise ValueError(f"bit run at the end of {cls.__name__} is not byte aligned")
    return ">" + "".join(chars), tuple(items)


@cache
def struct_of(cls: type[Packet], first: str | None = None, last: str | None = None) -> struct.Struct:
    """``struct.Struct`` for fields ``first``..``last`` of ``cls`` (all fields by default)."""
    return struct.Struct(layout_of(cls, first, last)[0])


def fixed_size(cls: type[Packet], first: str | None = None, last: str | None = None) -> int:
    """Byte size of fields ``first``..``last`` of ``cls``."""
    return struct_of(cls, first, last).size


@cache
def item_struct(cls: type[Packet], name: str) -> struct.Struct:
    """``struct.Struct`` of one element of the ``FieldListField`` ``name`` of ``cls`` (e.g. a be64 offset)."""
    fld = next(f for f in cls.fields_desc if f.name == name)
    if not isinstance(fld, FieldListField):
        raise ValueError(f"field {name!r} of {cls.__name__} is not a list")
    return struct.Struct(">" + _fixed_char(fld.field))


class Layout:
    """A ``struct.Struct`` over fields ``first``..``last`` of a layer that unpacks into a named tuple whose
    names are the layer's own (a bit run ``a+b`` is named ``a_b``): no positional unpacking."""

    __slots__ = ("struct", "names", "size", "_make")

    def __init__(self, cls: type[Packet], first: str | None = None, last: str | None = None) -> None:
        fmt, items = layout_of(cls, first, last)
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.names = tuple(name.replace("+", "_") for name in items)
        self._make = namedtuple(f"{cls.__name__}Fields", self.names)._make  # type: ignore[misc]

    def unpack_from(self, buf: Any, offset: int = 0) -> Any:
        return self._make(self.struct.unpack_from(buf, offset))

    def pack(self, *values: Any) -> bytes:
        return self.struct.pack(*values)


@cache
def named(cls: type[Packet], first: str | None = None, last: str | None = None) -> Layout:
    """The :class:`Layout` of fields ``first``..``last`` of ``cls`` (all fields by default)."""
    return Layout(cls, first, last)
