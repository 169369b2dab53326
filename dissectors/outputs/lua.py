# SPDX-License-Identifier: GPL-2.0-or-later
"""``migshark export-wireshark``: write a Wireshark Lua plugin generated from the Scapy declarations.

The Scapy classes in ``dissectors/layers/`` are the only spelling of each wire structure. This module
walks their ``fields_desc`` and emits, as Lua tables:

* one ``ProtoField`` per field (``qmig.<group>.<name>``): type and size from the field, ``base.HEX``
  for the ``X*`` fields, value_strings from the enum fields, one boolean subfield per flag bit of a
  ``FlagsField``;
* one layout descriptor per class (field order, fixed sizes, which earlier field gives a length,
  conditions, lists), that the hand-written machinery in ``lua_template.lua`` walks;
* the constants and dispatch tables the machinery needs (magics, record types, payload classes by
  command / message type / RAM flag, header sizes), and the record kinds of ``channels.kinds``, so
  both tools name records alike.

The template holds only generic machinery: PDU walking with TCP desegmentation, state per TCP stream
and direction, the heuristic, preferences and expert infos. It never restates a layout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from scapy.fields import (
    ConditionalField,
    EnumField,
    Field,
    FieldLenField,
    FieldListField,
    FlagsField,
    PacketListField,
    StrFixedLenField,
    StrLenField,
    _BitField,
)
from scapy.packet import Packet

from dissectors.analysis import policies
from dissectors.channels import kinds
from dissectors.channels.main import AFTER_FOOTER
from dissectors.layers import commands, main_stream, multifd, ram, return_path, tls
from dissectors.layers.labels import field_label, name_label
from dissectors.layers.structs import fixed_size, struct_of

TEMPLATE_NAME = "lua_template.lua"
GENERATED_MARK = "--@@GENERATED@@"

#: Field names whose bytes are payload: shown as bytes (not text) and skipped by length when they
#: run past the segment, instead of waiting for TCP to reassemble them.
BINARY_PAYLOAD = frozenset({"data", "bitmap"})
#: Field names that may be skipped by length although they are text.
SKIPPABLE_TEXT = frozenset({"json"})


@dataclass(frozen=True)
class Group:
    """Scapy classes whose fields share one abbreviation prefix (``qmig.<prefix>.<field>``)."""

    prefix: str
    classes: tuple[type[Packet], ...]
    #: field name -> full abbreviation, for fields shared with another group (the record type byte).
    shared: dict[str, str] = field(default_factory=dict)


_MAIN_TYPE = {"type": "qmig.main.type"}

#: Every declared structure the plugin knows, grouped by abbreviation prefix. TLS is left to
#: Wireshark's own TLS dissector.
GROUPS: tuple[Group, ...] = (
    Group("main", (main_stream.MainRecord, main_stream.QemuFileHeader, main_stream.Configuration,
                   main_stream.Subsection, main_stream.SectionStart, main_stream.SectionFull, main_stream.SectionPart,
                   main_stream.SectionEnd, main_stream.SectionFooter, main_stream.Eof,
                   main_stream.VmDescription)),
    Group("main.config", (main_stream.ConfigTargetPageBits, main_stream.ConfigCapabilities,
                          main_stream.Capability, main_stream.ConfigUuid)),
    Group("cmd", (commands.Command,), _MAIN_TYPE),
    Group("cmd.ping", (commands.CmdPing,)),
    Group("cmd.advise", (commands.CmdPostcopyAdvise,)),
    Group("cmd.discard", (commands.CmdRamDiscard, commands.DiscardRange)),
    Group("cmd.packaged", (commands.CmdPackaged,)),
    Group("cmd.recv_bitmap", (commands.CmdRecvBitmap,)),
    Group("ram", (ram.RamRecord,)),
    Group("ram.zero", (ram.RamZero,)),
    Group("ram.page", (ram.RamPage,)),
    Group("ram.xbzrle", (ram.RamXbzrle,)),
    Group("ram.compress", (ram.RamCompress,)),
    Group("ram.mem_size", (ram.RamMemSize, ram.RamBlockInfo)),
    Group("rp", (return_path.RpMessage,)),
    Group("rp.shut", (return_path.RpShut,)),
    Group("rp.pong", (return_path.RpPong,)),
    Group("rp.req", (return_path.RpReqPages, return_path.RpReqPagesId)),
    Group("rp.bitmap", (return_path.RpRecvBitmap, return_path.RecvBitmapDump)),
    Group("rp.resume_ack", (return_path.RpResumeAck,)),
    Group("multifd.hello", (multifd.MultifdHello,)),
    Group("multifd", (multifd.MultifdPacketHdr, multifd.MultifdRamPacket, multifd.MultifdRamPacketV1)),
    Group("multifd.device", (multifd.MultifdDeviceStatePacket,),
          {"magic": "qmig.multifd.magic", "version": "qmig.multifd.version", "flags": "qmig.multifd.flags"}),
)

#: Zero-page records (ZERO|CONTINUE, 9 bytes each) in a row that the plugin shows as one tree item.
ZERO_RUN_MIN = 8

#: ``ConditionalField`` predicates the template implements (``COND.<name>``), by Python function name.
KNOWN_CONDITIONS = frozenset({"has_idstr"})


# --------------------------------------------------------------------------------------------------
# The model: ProtoFields and layout items


@dataclass
class ProtoFieldSpec:
    abbrev: str
    label: str
    ftype: str  # Lua constructor: uint8 / uint16 / uint24 / uint32 / uint64 / bytes / string / stringz / bool
    base: str | None = None  # "base.HEX" / "base.DEC" / bit width for bool
    valuestring: str | None = None  # name of a VS table
    mask: int | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.ftype, self.base, self.valuestring, self.mask)


@dataclass
class Item:
    """One entry of a layout descriptor (one Scapy field, or a run of bit fields)."""

    name: str
    kind: str  # u (unsigned), s (text), z (NUL-padded text), b (bytes), bits, list, plist
    abbrev: str | None = None
    size: int | None = None  # fixed byte size
    len_from: str | None = None  # earlier field holding the byte length
    count_from: str | None = None  # earlier field holding an element count (plist)
    count_attr: int | None = None  # fixed element count from a class attribute (list)
    elem_size: int | None = None
    elem: str | None = None  # element class name (plist)
    cond: str | None = None
    skip: bool = False
    bits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Model:
    fields: dict[str, ProtoFieldSpec] = field(default_factory=dict)
    valuestrings: dict[str, dict[int, str]] = field(default_factory=dict)
    layouts: dict[str, tuple[str, list[Item], int | None]] = field(default_factory=dict)

    def add_field(self, spec: ProtoFieldSpec) -> None:
        old = self.fields.get(spec.abbrev)
        if old is None:
            self.fields[spec.abbrev] = spec
        elif old.key() != spec.key():
            raise ValueError(f"{spec.abbrev}: declared twice with different types ({old.key()} vs {spec.key()})")

    def add_vs(self, name: str, table: dict[int, str]) -> str:
        old = self.valuestrings.get(name)
        if old is not None and old != table:
            raise ValueError(f"value_string {name} declared twice with different contents")
        self.valuestrings[name] = dict(table)
        return name


class _Probe:
    """Stands in for a packet to learn which attribute a ``length_from``/``count_from`` lambda reads."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def __getattr__(self, name: str) -> int:
        if name.startswith("__"):
            raise AttributeError(name)
        self.read.append(name)
        return 7919


def _source_of(fn: Callable[[Any], Any] | None) -> str | None:
    """Name of the single attribute ``fn(pkt)`` returns unchanged, or None."""
    if fn is None:
        return None
    probe = _Probe()
    try:
        value = fn(probe)
    except Exception:  # noqa: BLE001 - any failure means "not a plain attribute read"
        return None
    if value == 7919 and len(probe.read) == 1:
        return probe.read[0]
    return None


def _is_hex(fld: Field) -> bool:
    return any(k.__name__.startswith("X") for k in type(fld).__mro__)


def _uint_type(size: int) -> str:
    types = {1: "uint8", 2: "uint16", 3: "uint24", 4: "uint32", 8: "uint64"}
    if size not in types:
        raise ValueError(f"no Lua ProtoField for a {size}-byte integer")
    return types[size]




class _Builder:
    def __init__(self) -> None:
        self.model = Model()
        #: value_string names by content, so one enum gives one table.
        self._vs_by_content: dict[tuple[tuple[int, str], ...], str] = {}
        #: The layer being laid out: its ``field_labels`` name its fields (as ``dissect -V`` does).
        self.owner: type[Packet] | None = None

    def label(self, name: str) -> str:
        return field_label(self.owner, name) if self.owner is not None else name_label(name)

    def enum_vs(self, table: dict[int, str], hint: str) -> str:
        """One value_string per distinct enum (scapy copies the dict into every field)."""
        key = tuple(sorted(table.items()))
        name = self._vs_by_content.get(key)
        if name is None:
            name = "VS_" + hint.upper().replace(".", "_")
            self._vs_by_content[key] = name
            self.model.add_vs(name, table)
        return name

    def abbrev(self, group: Group, name: str) -> str:
        return group.shared.get(name, f"qmig.{group.prefix}.{name}")

    def flag_bits(self, abbrev: str, width: int, names: list[str]) -> None:
        """One boolean subfield per named bit of a FlagsField (``width``: bits of the parent field)."""
        for i, flag in enumerate(names[:width]):
            self.model.add_field(ProtoFieldSpec(f"{abbrev}.{flag.lower()}", flag, "bool", str(width), None, 1 << i))

    def scalar(self, group: Group, fld: Field, size: int) -> Item:
        abbrev = self.abbrev(group, fld.name)
        vs = None
        if isinstance(fld, EnumField):
            vs = self.enum_vs(fld.i2s, f"{group.prefix}_{fld.name}")
        base = "base.HEX" if _is_hex(fld) or isinstance(fld, FlagsField) else "base.DEC"
        self.model.add_field(ProtoFieldSpec(abbrev, self.label(fld.name), _uint_type(size), base, vs))
        if isinstance(fld, FlagsField) and fld.names:
            self.flag_bits(abbrev, size * 8, list(fld.names))
        return Item(fld.name, "u", abbrev, size=size)

    def string(self, group: Group, fld: Field, owner: type[Packet]) -> Item:
        abbrev = self.abbrev(group, fld.name)
        binary = fld.name in BINARY_PAYLOAD or _is_hex(fld)
        if isinstance(fld, StrFixedLenField):
            size = fld.length_from(None)
            kind = "b" if binary else "z"
            item = Item(fld.name, kind, abbrev, size=size)
        else:
            src = _source_of(getattr(fld, "length_from", None))
            if src is None or src not in {f.name for f in owner.fields_desc}:
                raise ValueError(f"{owner.__name__}.{fld.name}: length does not come from an earlier field")
            kind = "b" if binary else "s"
            item = Item(fld.name, kind, abbrev, len_from=src)
        item.skip = fld.name in BINARY_PAYLOAD or fld.name in SKIPPABLE_TEXT
        ftype = {"b": "bytes", "s": "string", "z": "stringz"}[kind]
        self.model.add_field(ProtoFieldSpec(abbrev, self.label(fld.name), ftype))
        return item

    def bit_run(self, group: Group, run: list[_BitField]) -> Item:
        total = sum(f.size for f in run)
        if total % 8 or total // 8 not in (1, 2, 4, 8):
            raise ValueError(f"bit run {[f.name for f in run]} is {total} bits")
        size = total // 8
        if len(run) == 1:
            return self.scalar(group, run[0], size)
        subs: list[dict[str, Any]] = []
        shift = total
        for fld in run:
            shift -= fld.size
            abbrev = self.abbrev(group, fld.name)
            # A field that keeps its position (scapy m2i shifts back, e.g. PageOffsetField) is shown
            # as the masked word, otherwise as the shifted-down value.
            keep = getattr(fld, "shift", 0) == shift and shift > 0
            shown_bits = fld.size + (shift if keep else 0)
            ftype = _uint_type(next(n for n in (1, 2, 4, 8) if n * 8 >= shown_bits))
            base = "base.HEX" if _is_hex(fld) or isinstance(fld, FlagsField) else "base.DEC"
            vs = self.enum_vs(fld.i2s, f"{group.prefix}_{fld.name}") if isinstance(fld, EnumField) else None
            self.model.add_field(ProtoFieldSpec(abbrev, self.label(fld.name), ftype, base, vs))
            if isinstance(fld, FlagsField) and fld.names:
                self.flag_bits(abbrev, int(ftype[4:]), list(fld.names)[: fld.size])
            subs.append({"n": fld.name, "f": abbrev, "shift": shift, "width": fld.size, "keep": keep,
                         "fsz": int(ftype[4:]) // 8})
        return Item("+".join(f.name for f in run), "bits", size=size, bits=subs)

    def one(self, group: Group, owner: type[Packet], fld: Field) -> Item:
        cond = None
        if isinstance(fld, ConditionalField):
            cond = fld.cond.__name__.lstrip("_")
            if cond not in KNOWN_CONDITIONS:
                raise ValueError(f"{owner.__name__}.{fld.name}: condition {cond!r} has no Lua predicate")
            fld = fld.fld
        if isinstance(fld, (StrFixedLenField, StrLenField)):
            item = self.string(group, fld, owner)
        elif isinstance(fld, FieldListField):
            elem = fld.field
            count = _source_of(fld.count_from)
            if count is None or not isinstance(getattr(owner, count, None), int):
                raise ValueError(f"{owner.__name__}.{fld.name}: list count is not a class constant")
            inner = self.scalar(group, _renamed(elem, fld.name), elem.sz)
            item = Item(fld.name, "list", inner.abbrev, count_attr=getattr(owner, count), elem_size=elem.sz)
        elif isinstance(fld, PacketListField):
            item = Item(fld.name, "plist", elem=fld.cls.__name__ if fld.cls else None,
                        count_from=_source_of(fld.count_from))
        elif isinstance(fld, FieldLenField):
            item = self.scalar(group, fld, fld.sz)
        else:
            sz = getattr(fld, "sz", None)
            if not isinstance(sz, int):
                raise ValueError(f"{owner.__name__}.{fld.name}: {type(fld).__name__} is not supported")
            item = self.scalar(group, fld, sz)
        item.cond = cond
        return item

    def layout(self, group: Group, cls: type[Packet]) -> None:
        items: list[Item] = []
        run: list[_BitField] = []
        self.owner = cls
        for fld in cls.fields_desc:
            if isinstance(fld, _BitField):
                run.append(fld)
                if sum(f.size for f in run) % 8 == 0:
                    items.append(self.bit_run(group, run))
                    run = []
                continue
            if run:
                raise ValueError(f"{cls.__name__}: bit run before {fld.name!r} is not byte aligned")
            items.append(self.one(group, cls, fld))
        if run:
            raise ValueError(f"{cls.__name__}: bit run at the end is not byte aligned")
        fixed: int | None = 0
        for it in items:
            if it.kind == "list" and fixed is not None:
                fixed += (it.count_attr or 0) * (it.elem_size or 0)
            elif it.size is not None and it.cond is None and fixed is not None:
                fixed += it.size
            else:
                fixed = None
        title = getattr(cls, "_name", None) or cls.__name__
        self.model.layouts[cls.__name__] = (title, items, fixed)


def _renamed(fld: Field, name: str) -> Field:
    """A copy of a list's element field under the list's name (the element is declared unnamed)."""
    clone = fld.copy()
    clone.name = name
    return clone


def build_model() -> Model:
    b = _Builder()
    for group in GROUPS:
        for cls in group.classes:
            b.layout(group, cls)
    return b.model


# --------------------------------------------------------------------------------------------------
# Constants and dispatch tables (all read from the layer modules)


def _payload_map(parent: type[Packet], key: str) -> dict[int, str]:
    """``bind_layers(parent, child, key=value)`` bindings as ``value -> child class name``."""
    out: dict[int, str] = {}
    for fields, child in parent.payload_guess:
        if set(fields) == {key}:
            out[int(fields[key])] = child.__name__
    return out


def constants() -> dict[str, Any]:
    ms, mf, r, rp = main_stream, multifd, ram, return_path
    page_size = ram.RamPage.fields_desc[0].length_from(None)
    ram_header = multifd.MultifdRamPacket
    return {
        "QEMU_VM_FILE_MAGIC": ms.QEMU_VM_FILE_MAGIC,
        "QEMU_VM_FILE_VERSION": ms.QEMU_VM_FILE_VERSION,
        "RAM_SECTION_IDSTR": ms.RAM_SECTION_IDSTR.decode(),
        "REC": {code: ms.record_class(code).__name__ for code in ms.RECORD_TYPES if code in ms.RECORD_CLASSES
                or code == ms.QEMU_VM_COMMAND},
        "REC_START": ms.QEMU_VM_SECTION_START, "REC_FULL": ms.QEMU_VM_SECTION_FULL,
        "REC_PART": ms.QEMU_VM_SECTION_PART, "REC_END": ms.QEMU_VM_SECTION_END,
        "REC_SUBSECTION": ms.QEMU_VM_SUBSECTION, "REC_COMMAND": ms.QEMU_VM_COMMAND,
        "REC_FOOTER": ms.QEMU_VM_SECTION_FOOTER, "REC_EOF": ms.QEMU_VM_EOF,
        "REC_VMDESC": ms.QEMU_VM_VMDESCRIPTION,
        #: type bytes that may follow a section footer (the Python parser's footer-scan rule)
        "AFTER_FOOTER": sorted(AFTER_FOOTER),
        "MAX_MEM_SIZE_BLOCKS": ram.MEM_SIZE_MAX_BLOCKS,
        "CONFIG_BODIES": {k.decode(): v.__name__ for k, v in ms.CONFIG_SUBSECTION_BODIES.items()},
        "CMD_PAYLOAD": _payload_map(commands.Command, "cmd"),
        "CMD_LENGTHS": {k: list(v) for k, v in commands.MIG_CMD_LENGTHS.items() if v is not None},
        "CMD_PACKAGED": commands.MIG_CMD_PACKAGED,
        "CMD_RECV_BITMAP": commands.MIG_CMD_RECV_BITMAP,
        "CMD_POSTCOPY_ADVISE": commands.MIG_CMD_POSTCOPY_ADVISE,
        "RP_PAYLOAD": _payload_map(rp.RpMessage, "type"),
        "RP_LENGTHS": {k: v for k, v in rp.RP_LENGTHS.items() if v is not None},
        "RP_RECV_BITMAP": rp.MIG_RP_MSG_RECV_BITMAP,
        "RECV_BITMAP_ENDING_HEX": struct_of(rp.RecvBitmapDump, "ending", "ending").pack(rp.RECV_BITMAP_ENDING).hex(),
        "RAM_PAYLOAD": {k: v.__name__ for k, v in r.RAM_PAYLOADS.items()},
        "RAM_FLAG_CONTINUE": r.RAM_SAVE_FLAG_CONTINUE,
        "RAM_FLAG_ZERO": r.RAM_SAVE_FLAG_ZERO,
        #: a run of at least this many ZERO|CONTINUE records in one call is one tree item (qmig.zero_run.*),
        #: shorter runs are shown record by record
        "ZERO_RUN_MIN": ZERO_RUN_MIN,
        "RAM_FLAG_EOS": r.RAM_SAVE_FLAG_EOS,
        "RAM_FLAG_MEM_SIZE": r.RAM_SAVE_FLAG_MEM_SIZE,
        "RAM_FLAG_MULTIFD_FLUSH": r.RAM_SAVE_FLAG_MULTIFD_FLUSH,
        "RAM_FLAGS_WITH_BLOCK": r.RAM_FLAGS_WITH_BLOCK,
        #: MEM_SIZE: the optional be64 after a block (page size / address), told apart by a 0 idstr length
        "MEM_SIZE_EXTRA_SIZE": fixed_size(r.RamBlockExtra),
        "RAM_FLAG_NAMES": list(r.RAM_FLAG_NAMES),
        "MULTIFD_FLAG_NAMES": list(mf.MULTIFD_FLAG_NAMES),
        "TARGET_PAGE_SIZE": page_size,
        "MULTIFD_MAGIC": mf.MULTIFD_MAGIC,
        "MULTIFD_VERSION": mf.MULTIFD_VERSION,
        "MULTIFD_FLAG_SYNC": mf.MULTIFD_FLAG_SYNC,
        "MULTIFD_FLAG_DEVICE_STATE": mf.MULTIFD_FLAG_DEVICE_STATE,
        "MULTIFD_FLAG_COMPRESSION_MASK": mf.MULTIFD_FLAG_COMPRESSION_MASK,
        "MULTIFD_COMPRESSION": dict(mf.MULTIFD_COMPRESSION),
        "MULTIFD_HEADER_SIZE": _fixed(ram_header),
        "MULTIFD_HDR_SIZE": _fixed(multifd.MultifdPacketHdr),
        "MULTIFD_HELLO_SIZE": _fixed(multifd.MultifdHello),
        # Connections to one destination the plugin gives a verdict for (a migration has at most a main,
        # 255 multifd and a preempt channel): keeps hostile captures of thousands of connections linear.
        "VERDICT_MAX": 512,
        #: first bytes of a recovered main stream: a command record's type and cmd (RECV_BITMAP)
        "RECOVERY_START": list(struct_of(commands.Command, "type", "cmd").pack(ms.QEMU_VM_COMMAND,
                                                                                commands.MIG_CMD_RECV_BITMAP)),
        "MIG_CMDS": dict(commands.MIG_CMDS),
        "RP_TYPES": dict(rp.RP_TYPES),
        "RP_INVALID": rp.MIG_RP_MSG_INVALID,
        "RECORD_TYPES": dict(ms.RECORD_TYPES),
        **record_kinds(),
        "FLAG_BITS": _flag_bits(),
        #: a TLS record's first bytes (content type, version's major byte): the TCP heuristic leaves such
        #: a stream to Wireshark's TLS dissector and walks its decrypted data instead
        "TLS_CONTENT_TYPES": sorted(tls.TLS_CONTENT_TYPES),
        "TLS_VERSION_MAJOR": tls.TlsRecordHeader().version >> 8,
        #: the destination's assignment rules the plugin applies, oldest first (analysis/policies.py)
        "POLICIES": list(policies.REAL_POLICIES),
        #: the roles of analysis/policies.py the plugin names (its own channel names are the same words)
        "ROLE": {"MAIN": policies.MAIN, "MULTIFD": policies.MULTIFD, "PREEMPT": policies.PREEMPT,
                 "BLOCKED": policies.BLOCKED, "REJECTED": policies.REJECTED, "UNKNOWN": policies.UNKNOWN},
    }


def _flag_bits() -> dict[str, list[str]]:
    """Parent field abbreviation -> its boolean bit subfields, in bit order."""
    out: dict[str, list[str]] = {}
    for spec in _model().fields.values():
        if spec.ftype == "bool":
            out.setdefault(spec.abbrev.rsplit(".", 1)[0], []).append(spec.abbrev)
    return out


def record_kinds() -> dict[str, dict[Any, str]]:
    """The record kinds of ``channels.kinds``, the one table of them, so both tools name records alike.

    ``MAIN_KIND`` / ``RAM_KIND`` / ``RP_KIND``: kind by wire code (record type byte, RAM flag, return-path
    message type; a code without a kind, e.g. RAM FULL or HOOK, is absent and its record is malformed).
    ``KIND``: every kind by its name in ``kinds`` (``C.KIND.MAIN_HEADER``), for the kinds no code selects.
    """
    return {
        "MAIN_KIND": {code: str(k) for code, k in sorted(kinds.by_code("main").items())},
        "RAM_KIND": {code: str(k) for code, k in sorted(kinds.by_code("ram").items())},
        "RP_KIND": {code: str(k) for code, k in sorted(kinds.RP_KINDS.items())},
        "KIND": {name: str(k) for name, k in vars(kinds).items() if isinstance(k, kinds.RecordKind)},
    }


_MODEL: Model | None = None


def _model() -> Model:
    global _MODEL
    if _MODEL is None:
        _MODEL = build_model()
    return _MODEL


def _fixed(cls: type[Packet]) -> int:
    fixed = _model().layouts[cls.__name__][2]
    if fixed is None:
        raise ValueError(f"{cls.__name__} has no fixed size")
    return fixed


# --------------------------------------------------------------------------------------------------
# Lua emission


def _lua_str(s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if ch in "\\\"":
            out.append("\\" + ch)
        elif 32 <= o < 127:
            out.append(ch)
        else:
            out.append(f"\\{o:03d}")
    return '"' + "".join(out) + '"'


def _lua(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _lua_str(v)
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(_lua(x) for x in v) + "}"
    if isinstance(v, dict):
        parts = []
        for k, x in v.items():
            key = f"[{k}]" if isinstance(k, int) else (k if k.isidentifier() else f"[{_lua_str(k)}]")
            parts.append(f"{key} = {_lua(x)}")
        return "{" + ", ".join(parts) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as Lua")


def _item_lua(it: Item) -> str:
    d: dict[str, Any] = {"n": it.name, "t": it.kind}
    if it.abbrev:
        d["f"] = it.abbrev
    for key, val in (("sz", it.size), ("lf", it.len_from), ("cf", it.count_from), ("cnt", it.count_attr),
                     ("esz", it.elem_size), ("elem", it.elem), ("cond", it.cond)):
        if val is not None:
            d[key] = val
    if it.skip:
        d["skip"] = True
    if it.bits:
        d["bits"] = it.bits
    return _lua(d)


def generated_lua(model: Model | None = None) -> str:
    """The generated part of the plugin: value_strings, ProtoFields, layouts, constants."""
    model = model or _model()
    lines = ["-- GENERATED by `migshark export-wireshark` from the Scapy declarations in dissectors/layers/.",
             "-- Do not edit: change the Scapy class and regenerate.", "", "local VS = {}"]
    for name, table in model.valuestrings.items():
        lines.append(f"VS.{name} = {_lua(table)}")
    lines += ["", "-- ProtoFields: abbrev -> ProtoField", "local F = {}", "local FIELD_ORDER = {}"]
    for spec in model.fields.values():
        args = [_lua(spec.abbrev), _lua(spec.label)]
        if spec.ftype == "bool":
            args += [spec.base or "nil", "nil", str(spec.mask)]
        elif spec.ftype.startswith("uint"):
            args += [spec.base or "base.DEC", f"VS.{spec.valuestring}" if spec.valuestring else "nil"]
        lines.append(f"F[{_lua(spec.abbrev)}] = ProtoField.{spec.ftype}({', '.join(args)})")
        lines.append(f"FIELD_ORDER[#FIELD_ORDER + 1] = {_lua(spec.abbrev)}")
    lines += ["", "-- Layouts: class name -> {name = <scapy name>, size = <fixed size or nil>, items = {...}}",
              "local S = {}"]
    for cls_name, (title, items, fixed) in model.layouts.items():
        body = ",\n  ".join(_item_lua(it) for it in items)
        lines.append(f"S.{cls_name} = {{name = {_lua(title)}, size = {_lua(fixed)}, items = {{\n  {body}\n}}}}")
    lines += ["", "local C = " + _lua(constants()), ""]
    return "\n".join(lines)


def template_text() -> str:
    return resources.files("dissectors.outputs").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def render_plugin() -> str:
    """The whole plugin: the template with the generated tables in place of its marker line."""
    tpl = template_text()
    if tpl.count(GENERATED_MARK) != 1:
        raise RuntimeError(f"{TEMPLATE_NAME} must hold the marker {GENERATED_MARK} exactly once")
    return tpl.replace(GENERATED_MARK, generated_lua())


def write_plugin(out: str | Path | None) -> Path | None:
    """Write the plugin to ``out`` (``-`` or None: stdout). Returns the path written, if any."""
    text = render_plugin()
    if out is None or str(out) == "-":
        sys.stdout.write(text)
        return None
    path = Path(out)
    path.write_text(text, encoding="utf-8")
    return path


#: What a user running Wireshark as root must know (docs/wireshark.md, "Running as root").
ROOT_NOTE = ("note: Wireshark 4.4 and later load no Lua plugin from -X lua_script: or the personal plugin "
             "folder when run as root, silently (the only symptom: '\"qmig\" is not a valid protocol or protocol "
             "field'); run tshark/Wireshark as an ordinary user (capture as root, read the file as yourself), or "
             "copy the plugin to the global Lua plugin folder (tshark -G folders: 'Global Lua Plugins'), which "
             "root still loads")


def run_export(out: str | None) -> int:
    """CLI entry: ``migshark export-wireshark [OUT.lua]`` (stdout when OUT is omitted or ``-``)."""
    path = write_plugin(out)
    if path is not None:
        print(f"Wireshark Lua plugin written to {path} "
              f"(load with: tshark -X lua_script:{path} ..., or copy to ~/.local/lib/wireshark/plugins/)",
              file=sys.stderr)
    print(ROOT_NOTE, file=sys.stderr)
    return 0


def field_abbrevs() -> list[str]:
    """Every generated ProtoField abbreviation (for tests and docs)."""
    return list(_model().fields)
