# SPDX-License-Identifier: GPL-2.0-or-later
"""Derive fast ``struct.Struct`` formats from Scapy ``fields_desc`` declarations.

The Scapy class is the only spelling of a wire structure. :func:`field_table` classifies each field of a
class (a fixed-size scalar, a bit field, a list of fixed-size items, or no fixed layout);
``unpack.layout_from`` turns a run of those into a ``struct.Struct``, so the two cannot drift. Runs of
consecutive bit fields (for example a 52-bit address plus 12 flag bits) become one integer. The same
tables, generated into ``derived`` (``python -m dissectors.layers.derive``), give the fast parsers their
layouts without importing Scapy (``unpack``, which takes a layer's class name).
"""

from __future__ import annotations

import struct
from functools import cache

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

from dissectors.layers.unpack import FieldEntry, Layout, item_from, layout_from


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


def _why(exc: ValueError, name: str) -> str:
    """The reason of a ``_fixed_char`` error without its ``field 'name'`` prefix."""
    return str(exc).removeprefix(f"field {name!r} ")


def field_entry(fld: Field) -> FieldEntry:
    """One field as ``unpack`` reads it: ``(name, "fmt" | "bits" | "items" | "none", value)``."""
    if isinstance(fld, ConditionalField):
        return (fld.name, "none", "is conditional")
    if isinstance(fld, _BitField):
        return (fld.name, "bits", fld.size)
    if isinstance(fld, FieldListField):
        try:
            return (fld.name, "items", _fixed_char(fld.field))
        except ValueError as exc:
            return (fld.name, "none", _why(exc, fld.field.name))
    try:
        return (fld.name, "fmt", _fixed_char(fld))
    except ValueError as exc:
        return (fld.name, "none", _why(exc, fld.name))


@cache
def field_table(cls: type[Packet]) -> tuple[FieldEntry, ...]:
    """Every field of ``cls`` classified (:func:`field_entry`), in wire order."""
    return tuple(field_entry(f) for f in cls.fields_desc)


@cache
def layout_of(
    cls: type[Packet], first: str | None = None, last: str | None = None
) -> tuple[str, tuple[str, ...]]:
    """Return ``(struct format, item names)`` for fields ``first``..``last`` (inclusive) of ``cls``.

    A run of bit fields yields one item named ``"a+b"``. Conditional or variable-length fields in the
    range raise ValueError.
    """
    return layout_from(cls.__name__, field_table(cls), first, last)


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
    return item_from(cls.__name__, field_table(cls), name)


@cache
def named(cls: type[Packet], first: str | None = None, last: str | None = None) -> Layout:
    """The :class:`~dissectors.layers.unpack.Layout` of fields ``first``..``last`` of ``cls`` (all fields
    by default)."""
    return Layout(cls.__name__, *layout_of(cls, first, last))


__all__ = ["Layout", "field_entry", "field_table", "fixed_size", "item_struct", "layout_of", "named", "struct_of"]
