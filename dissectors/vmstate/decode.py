# SPDX-License-Identifier: GPL-2.0-or-later
"""One device section's body decoded along its VMDESCRIPTION entry (see ``description``).

Every decoded field is an entry ``{"name", "type", "offset", "size", "value"}`` (offset within the
section's body, size in bytes as read). ``value`` is: an int for QEMU's integer types (``int32 le``
little-endian, ``timer`` the signed expiry time, -1 when not armed), a bool, a float (``float64``), a
string (``capability``), None (``nullptr``), a list of four ints (``pci irq state``), hex digits for
buffers, bitmaps and any type not known here; for ``struct``/``tmp`` fields and subsections a list of
entries. An array (``array_len``) has ``array_len`` and a list of per-element values. A subsection entry
has ``type`` "subsection" and its ``version_id``. An entry that cannot be read has ``error`` and the walk
stops there: the device's ``problems`` say why; the bytes before stay decoded.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from dissectors.layers.derived import QEMU_VM_SUBSECTION
from dissectors.layers.unpack import counted_at, named
from dissectors.vmstate.description import MAX_DEPTH

_SUB_TYPE = named("Subsection", "type", "type")
_SUB_VERSION = named("Subsection", "version_id", "version_id")

#: Values decoded at most per device, and per stream (:class:`Budget`): a description may claim arrays
#: of any length, even of zero-size elements.
MAX_VALUES_PER_DEVICE = 100_000
MAX_VALUES_PER_STREAM = 1_000_000

SIGNED = frozenset({"int8", "int16", "int32", "int64", "int32 equal", "int64 equal", "timer"})
UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64", "uint8 equal", "uint16 equal", "uint32 equal",
                      "uint64 equal", "uint16 be", "uint32 be"})
LITTLE = frozenset({"int32 le"})
NULLPTR_MARKER = b"0"
_PCI_IRQ = struct.Struct(">4i")
_F64 = struct.Struct(">d")


@dataclass
class Budget:
    """Values left to decode in one stream."""

    left: int = MAX_VALUES_PER_STREAM


@dataclass
class DecodedDevice:
    """A device's fields, how many body bytes they covered, and what did not fit."""

    fields: list[dict[str, Any]] = field(default_factory=list)
    consumed: int = 0
    problems: list[str] = field(default_factory=list)


class _Stop(Exception):
    """The walk cannot go on (the reason is in ``problems``)."""


class _Walk:
    def __init__(self, body: bytes, budget: Budget) -> None:
        self.b = body
        self.pos = 0
        self.values = 0
        self.budget = budget
        self.problems: list[str] = []

    def stop(self, why: str) -> _Stop:
        self.problems.append(why)
        return _Stop()

    def struct(self, desc: Any, depth: int, out: list[dict[str, Any]]) -> None:
        """The fields, then the subsections, of a vmsd description, appended to ``out`` as they decode."""
        if depth > MAX_DEPTH:
            raise self.stop(f"structs nested deeper than {MAX_DEPTH} at offset {self.pos}")
        if not isinstance(desc, dict):
            raise self.stop(f"a struct description is not an object at offset {self.pos}")
        fields = desc.get("fields", [])
        if not isinstance(fields, list):
            raise self.stop(f"'fields' of {desc.get('vmsd_name', '?')} is not a list")
        for f in fields:
            self.field(f, depth, out)
        subs = desc.get("subsections", [])
        if not isinstance(subs, list):
            raise self.stop(f"'subsections' of {desc.get('vmsd_name', '?')} is not a list")
        for s in subs:
            self.subsection(s, depth, out)

    def field(self, d: Any, depth: int, out: list[dict[str, Any]]) -> None:
        if not isinstance(d, dict):
            raise self.stop(f"a field description is not an object at offset {self.pos}")
        name, typ = str(d.get("name", "?")), str(d.get("type", "unknown"))
        entry: dict[str, Any] = {"name": name, "type": typ, "offset": self.pos, "size": 0}
        out.append(entry)
        n = d.get("array_len")
        try:
            if n is None:
                entry["value"] = self.element(d, name, typ, depth)
            else:
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise self.stop(f"field {name}: array_len {n!r} is not a count")
                entry["array_len"] = n
                values: list[Any] = []
                entry["value"] = values
                for _ in range(n):
                    values.append(self.element(d, name, typ, depth))
        except _Stop:
            entry["error"] = self.problems[-1]
            raise
        finally:
            entry["size"] = self.pos - entry["offset"]

    def count(self) -> None:
        self.values += 1
        self.budget.left -= 1
        if self.values > MAX_VALUES_PER_DEVICE:
            raise self.stop(f"more than {MAX_VALUES_PER_DEVICE} values in one device")
        if self.budget.left < 0:
            raise self.stop(f"more than {MAX_VALUES_PER_STREAM} values in the stream")

    def element(self, d: dict[str, Any], name: str, typ: str, depth: int) -> Any:
        self.count()
        if typ == "struct" or (typ != "struct" and "fields" in d):   # a struct, or a tmp carrying its vmsd
            sub = d.get("struct") if typ == "struct" else d
            start = self.pos
            value: list[dict[str, Any]] = []
            try:
                self.struct(sub, depth + 1, value)
            finally:
                size = d.get("size")
                if isinstance(size, int) and self.pos - start != size and not self.problems:
                    self.problems.append(f"field {name}: {self.pos - start} bytes decoded, description says {size}")
            return value
        if typ == "capability":
            got = counted_at(self.b, self.pos, len(self.b))
            if got is None:
                raise self.stop(f"field {name}: capability string runs past the body at offset {self.pos}")
            self.pos = got[1]
            return got[0].decode("latin-1")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise self.stop(f"field {name} ({typ}) has no size in the description")
        if self.pos + size > len(self.b):
            raise self.stop(f"field {name} ({typ}) needs {size} bytes at offset {self.pos}, "
                            f"{len(self.b) - self.pos} left in the section")
        raw = self.b[self.pos:self.pos + size]
        self.pos += size
        return scalar(typ, raw)

    def subsection(self, s: Any, depth: int, out: list[dict[str, Any]]) -> None:
        want = s.get("vmsd_name", "?") if isinstance(s, dict) else "?"
        start = self.pos
        if start + _SUB_TYPE.size > len(self.b) or _SUB_TYPE.unpack_from(self.b, start).type != QEMU_VM_SUBSECTION:
            raise self.stop(f"subsection {want} not found at offset {start}")
        got = counted_at(self.b, start + _SUB_TYPE.size, len(self.b))
        if got is None or got[1] + _SUB_VERSION.size > len(self.b):
            raise self.stop(f"subsection {want}: header runs past the body at offset {start}")
        name = got[0].decode("latin-1")
        if name != want:
            raise self.stop(f"subsection {name} at offset {start}, the description expects {want}")
        version = _SUB_VERSION.unpack_from(self.b, got[1]).version_id
        self.pos = got[1] + _SUB_VERSION.size
        value: list[dict[str, Any]] = []
        entry = {"name": name, "type": "subsection", "offset": start, "size": 0, "version_id": version,
                 "value": value}
        out.append(entry)
        self.count()
        try:
            self.struct(s, depth + 1, value)
        finally:
            entry["size"] = self.pos - start


def scalar(typ: str, raw: bytes) -> Any:
    """One leaf value of QEMU vmstate type ``typ`` from its bytes (hex digits for a type not known here)."""
    if typ in SIGNED and raw:
        return int.from_bytes(raw, "big", signed=True)
    if typ in UNSIGNED and raw:
        return int.from_bytes(raw, "big")
    if typ in LITTLE and raw:
        return int.from_bytes(raw, "little", signed=True)
    if typ == "bool" and len(raw) == 1:
        return raw[0] != 0
    if typ == "float64" and len(raw) == _F64.size:
        f = _F64.unpack(raw)[0]
        return f if math.isfinite(f) else str(f)       # JSON has no NaN or infinity
    if typ == "nullptr" and raw == NULLPTR_MARKER:
        return None
    if typ == "pci irq state" and len(raw) == _PCI_IRQ.size:
        return list(_PCI_IRQ.unpack(raw))
    return raw.hex()


def decode_device(body: bytes, desc: dict[str, Any], budget: Budget | None = None) -> DecodedDevice:
    """Decode a device section's body along its description entry; never raises on bad input."""
    walk = _Walk(body, budget if budget is not None else Budget())
    out = DecodedDevice()
    try:
        if "fields" not in desc:
            raise walk.stop("the description has no fields for this device")
        walk.struct(desc, 0, out.fields)
    except _Stop:
        pass
    else:
        if walk.pos < len(body):
            walk.problems.append(f"{len(body) - walk.pos} bytes after the described fields, at offset {walk.pos}")
    out.consumed = walk.pos
    out.problems = walk.problems
    return out
