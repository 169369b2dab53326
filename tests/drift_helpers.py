"""Drift checking: a channel parser's record against the Scapy layer's decode of the same bytes.

The layers in ``dissectors.layers`` are the single spelling of every wire structure; the fast parsers
in ``dissectors.channels`` derive their formats from them. :func:`check_record` decodes one record's
bytes with the layer its kind names (``dissectors.channels.kinds``), walks that packet and its payload
layers, and compares every parsed field:

* a field whose name is also a field of the layer (the deepest layer holding that name) is compared
  directly, after the layer's own representation: an enum field's name, a flags field's integer,
  bytes decoded as latin-1 where the parser gives text;
* a field the parser derives (a decoded C string, a formatted UUID, a list of ranges...) or takes from
  the stream's context (the block named by an earlier record, the section an id belongs to, the
  PACKAGED stream around a record) is compared by the explicit :data:`DERIVED` table;
* any other parsed field is a failure, so that a new field cannot slip by unchecked.

Also checked: the kind agrees with the code the layer reads (record type, RAM flags, message type,
multifd flags), the layer explains exactly the record's bytes (no byte left over, or exactly the
opaque payload the header announces), and ``raw`` (when kept) is the record's first bytes and builds
the same Scapy class through ``Record.layer()``.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import synth as S
from hypothesis import strategies as st
from scapy.fields import ConditionalField, Field, FlagValue
from scapy.packet import NoPayload, Packet, Padding, Raw

from dissectors.channels import MainParser, MultifdParser, PreemptParser, Record, ReturnPathParser, TlsParser
from dissectors.channels.kinds import KINDS
from dissectors.channels.ram_walk import expand_zero_run
from dissectors.layers import commands as C
from dissectors.layers import main_stream as M
from dissectors.layers import multifd as F
from dissectors.layers import ram as R
from dissectors.layers import return_path as RP
from dissectors.layers import synth as L
from dissectors.layers import tls as T
from dissectors.layers.structs import fixed_size

#: Records that report on the stream (no wire structure of their own).
REPORT_KINDS = frozenset({"malformed", "gap", "truncated", "opaque"})
#: Kinds without a layer on purpose: a device section's body has the device's own layout.
NO_LAYER_KINDS = frozenset({"device.state"})

ABSENT = object()       # expected: the parser must not report this field


@dataclass(frozen=True)
class OneOf:
    """Expected: any of these values (the bytes alone cannot tell which)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Present:
    """Expected: present with a non-empty value (a free-text note; its wording is not compared)."""


# -- the decoded layer, flattened -------------------------------------------------------------------

@dataclass
class LayerView:
    """A Scapy packet and its payload layers: each field name's value in the deepest layer holding it."""

    packets: list[Packet]
    values: dict[str, Any]
    fields: dict[str, Field]
    leftover: int            # bytes in a trailing Raw / Padding layer (not explained by any layer)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


#: Layers that start a record: a payload of one of these after the first layer is the next record.
RECORD_STARTS: tuple[type[Packet], ...] = (
    M.MainRecord, M.QemuFileHeader, *M.RECORD_CLASSES.values(), C.Command, R.RamRecord, RP.RpMessage, F.MultifdHello,
    F.MultifdPacketHdr, F.MultifdRamPacket, F.MultifdRamPacketV1, F.MultifdDeviceStatePacket, T.TlsRecordHeader,
)


def view_of(pkt: Packet) -> LayerView:
    """Walk ``pkt`` and its payload layers up to the end of the record (a following record, raw bytes)."""
    packets: list[Packet] = []
    values: dict[str, Any] = {}
    fields: dict[str, Field] = {}
    leftover = 0
    p: Packet | None = pkt
    while p is not None and not isinstance(p, NoPayload):
        if isinstance(p, (Raw, Padding)) or (packets and isinstance(p, RECORD_STARTS)):
            leftover = len(bytes(p))
            break
        packets.append(p)
        for fld in p.fields_desc:
            if isinstance(fld, ConditionalField):
                if not fld._evalcond(p):
                    continue
                fld = fld.fld
            values[fld.name] = p.getfieldval(fld.name)
            fields[fld.name] = fld
        p = p.payload
    return LayerView(packets, values, fields, leftover)


def _text(b: Any) -> str:
    return bytes(b).decode("latin-1")


def _cstr(b: Any) -> str:
    return bytes(b).split(b"\0", 1)[0].decode("latin-1")


def _same(parsed: Any, value: Any, fld: Field | None) -> tuple[bool, Any]:
    """Whether a parsed field equals the layer's value, in the layer's own representation; and the
    value it was compared with."""
    if isinstance(value, FlagValue):
        value = int(value)
    if isinstance(parsed, str):
        i2s = getattr(fld, "i2s", None)
        if isinstance(value, int) and isinstance(i2s, dict):
            value = i2s.get(value, value)
        elif isinstance(value, bytes | bytearray):
            value = _text(value)
    if isinstance(parsed, bool) != isinstance(value, bool):
        return False, value
    return parsed == value, value


# -- the stream's context (what a record's own bytes cannot tell) ------------------------------------

@dataclass
class StreamContext:
    """What earlier records of the same stream said, taken from their parsed fields (each of which is
    checked against its own bytes when that record is checked)."""

    records: int = 0
    recovered: bool = False                  # a main channel that starts without the QEVM header
    sections: dict[int, str | None] = field(default_factory=dict)
    section_id: int | None = None            # the last section header's id
    packages: list[tuple[int, int]] = field(default_factory=list)   # nested PACKAGED streams [start, end)
    ram_block: str | None = None             # the block of the channel's last RAM record
    rp_block: str | None = None              # the block of the last REQ_PAGES_ID
    tls_plain: bool = True                   # no non-handshake TLS record yet

    def in_package(self, offset: int) -> bool:
        return any(a <= offset < b for a, b in self.packages)

    def update(self, rec: Record) -> None:
        f = rec.fields
        if not self.records and rec.kind.startswith("main."):
            self.recovered = rec.kind != "main.header"
        self.records += 1
        kind = rec.kind
        if kind in ("main.section_start", "main.section_full"):
            self.sections[f["section_id"]] = f["idstr"]
            self.section_id = f["section_id"]
        elif kind in ("main.section_part", "main.section_end"):
            self.section_id = f["section_id"]
            if f.get("idstr") is not None:
                self.sections.setdefault(f["section_id"], f["idstr"])
        elif kind == "main.cmd" and f.get("cmd") == "PACKAGED":
            start = rec.offset + rec.length
            self.packages.append((start, start + f["length"]))
        elif kind in RAM_BLOCK_KINDS:
            self.ram_block = f.get("block")
        elif kind == "rp.req_pages" and f.get("type") == "REQ_PAGES_ID":
            self.rp_block = f.get("block")
        elif kind == "tls.record" and f.get("content_type") != "handshake":
            self.tls_plain = False


# -- derived and context fields: the explicit mapping -------------------------------------------------

Derive = Callable[[LayerView, Record, StreamContext], Any]

RAM_BLOCK_KINDS = ("ram.page", "ram.zero", "ram.xbzrle", "ram.compress")
MULTIFD_RAM_KINDS = ("multifd.packet", "multifd.sync")
MAIN_KINDS = tuple(k for k in KINDS if k.startswith("main.")) + ("device.state",)


def multifd_data_length(v: LayerView, page_size: int = R.TARGET_PAGE_SIZE) -> int:
    """Bytes after a multifd RAM packet header as QEMU's receiver reads them: the normal pages without
    compression, next_packet_size with it, nothing when the packet has no normal pages."""
    normal = v["normal_pages"]
    if not normal:
        return 0
    if int(v["flags"]) & F.MULTIFD_FLAG_COMPRESSION_MASK:
        return v["next_packet_size"]
    return normal * page_size


def _uuid(b: bytes) -> str:
    return str(uuid_mod.UUID(bytes=bytes(b)))


def _packaged(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    return True if ctx.in_package(rec.offset) else ABSENT


def _ram_block(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    if "idstr" in v:                     # a record that names its block
        return _text(v["idstr"])
    return ctx.ram_block                 # CONTINUE: the channel's previous block


def _part_idstr(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    sid = v["section_id"]
    if sid in ctx.sections:
        return ctx.sections[sid]
    # a recovered channel never saw the START naming the id: RAM (told by the records after it) or not
    return OneOf(("ram", None)) if ctx.recovered else None


def _device_idstr(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    return ctx.sections.get(rec.fields.get("section_id"))


def _multifd_ignored(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    return True if multifd_data_length(v) != v["next_packet_size"] else ABSENT


def _first_offset(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    return v["offsets"][0] if v["normal_pages"] else ABSENT


def _last_offset(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    n = v["normal_pages"]
    return v["offsets"][n - 1] if n else ABSENT


def _device_invalid(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    return Present() if not v["next_packet_size"] or int(v["flags"]) & F.MULTIFD_FLAG_SYNC else ABSENT


def _tls_handshake(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    if v["content_type"] != T.TLS_HANDSHAKE or not v["len"] or not ctx.tls_plain or "msg_type" not in v:
        return ABSENT
    return T.TLS_HANDSHAKE_TYPES.get(v["msg_type"], v["msg_type"])


def _rp_block(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    if "block" in v:                     # REQ_PAGES_ID names its block
        return _text(v["block"])
    return ctx.rp_block                  # REQ_PAGES: the block of the previous REQ_PAGES_ID


def _mem_size_blocks(v: LayerView, rec: Record, ctx: StreamContext) -> Any:
    """The layer's list holds blocks and the extra words after them; the parser nests the extras."""
    out: list[dict[str, Any]] = []
    for entry in v.get("blocks", []):
        if isinstance(entry, R.RamBlockExtra):
            if not out:
                return ["an extra word before any block"]
            out[-1].setdefault("extra", []).append(entry.value)
        else:
            out.append({"idstr": _text(entry.idstr), "used_length": entry.used_length})
    return out


#: kind -> parsed field -> how its expected value is derived from the layer (and the stream's context).
DERIVED: dict[str, dict[str, Derive]] = {}


def _derive(kinds: tuple[str, ...] | str, name: str, fn: Derive) -> None:
    for k in (kinds,) if isinstance(kinds, str) else kinds:
        DERIVED.setdefault(k, {})[name] = fn


_derive(MAIN_KINDS, "packaged", _packaged)                                  # context: inside PACKAGED
_derive("main.subsection", "name", lambda v, r, c: _text(v["idstr"]))
_derive("main.subsection", "uuid", lambda v, r, c: bytes(v["uuid"]).hex() if "uuid" in v else ABSENT)
_derive("main.subsection", "capabilities",
        lambda v, r, c: [_text(x.capability) for x in v["caps"]] if "caps" in v else ABSENT)
_derive(("main.section_part", "main.section_end"), "idstr", _part_idstr)   # context: the START's idstr
_derive("main.cmd", "ranges",
        lambda v, r, c: [(x.start, x.length) for x in v["ranges"]] if "ranges" in v else ABSENT)
_derive("device.state", "section_id", lambda v, r, c: c.section_id)        # context: its section header
_derive("device.state", "idstr", _device_idstr)
_derive(RAM_BLOCK_KINDS, "block", _ram_block)
_derive("ram.mem_size", "total", lambda v, r, c: v["addr"])
_derive("ram.mem_size", "blocks", _mem_size_blocks)
_derive("rp.req_pages", "block", _rp_block)
_derive("rp.recv_bitmap", "bitmap_size", lambda v, r, c: v.get("size", ABSENT))
_derive("multifd.hello", "uuid", lambda v, r, c: _uuid(v["uuid"]))
_derive(MULTIFD_RAM_KINDS, "block", lambda v, r, c: _cstr(v["ramblock"]))
_derive(MULTIFD_RAM_KINDS, "compression",
        lambda v, r, c: F.MULTIFD_COMPRESSION.get(int(v["flags"]) & F.MULTIFD_FLAG_COMPRESSION_MASK))
_derive(MULTIFD_RAM_KINDS, "first_offset", _first_offset)
_derive(MULTIFD_RAM_KINDS, "last_offset", _last_offset)
_derive(MULTIFD_RAM_KINDS, "next_packet_size_ignored", _multifd_ignored)
_derive("multifd.device_state", "idstr", lambda v, r, c: _cstr(v["idstr"]))
_derive("multifd.device_state", "invalid", _device_invalid)
_derive("tls.record", "handshake", _tls_handshake)
# every record whose payload is skipped may carry "gap": checked records have no gap in their bytes
for _k in (*RAM_BLOCK_KINDS, *MULTIFD_RAM_KINDS, "multifd.device_state", "tls.record", "main.vmdesc"):
    _derive(_k, "gap", lambda v, r, c: ABSENT)


# -- the checks -------------------------------------------------------------------------------------

def _kind_problem(rec: Record, v: LayerView) -> str | None:
    """Whether the record's kind is the one the layer's code selects."""
    kind = KINDS[rec.kind]
    first = v.packets[0] if v.packets else None
    if first is None:
        return "layer decoded nothing"
    family = kind.family
    if rec.kind == "main.header":
        return None if isinstance(first, M.QemuFileHeader) else f"decoded as {type(first).__name__}"
    if family == "main":
        got = first.getfieldval("type") if "type" in first.fields else None
        return None if got == kind.code else f"type {got!r} selects another kind than {rec.kind}"
    if family == "ram":
        got = int(v["flags"]) & ~R.RAM_SAVE_FLAG_CONTINUE
        return None if got == kind.code else f"RAM flags {got:#x} select another kind than {rec.kind}"
    if family == "rp":
        got = v["type"]
        ok = got == kind.code or (rec.kind == "rp.req_pages" and got == RP.MIG_RP_MSG_REQ_PAGES_ID)
        return None if ok else f"message type {got!r} selects another kind than {rec.kind}"
    if family == "multifd":
        if rec.kind == "multifd.hello":
            return None if isinstance(first, F.MultifdHello) else f"decoded as {type(first).__name__}"
        flags = int(v["flags"])
        want = ("multifd.device_state" if flags & F.MULTIFD_FLAG_DEVICE_STATE
                else "multifd.sync" if flags & F.MULTIFD_FLAG_SYNC else "multifd.packet")
        return None if want == rec.kind else f"flags {flags:#x} select {want}"
    if family == "tls":
        return None if isinstance(first, T.TlsRecordHeader) else f"decoded as {type(first).__name__}"
    return f"no kind check for family {family!r}"


def _length_problem(rec: Record, v: LayerView, size: int) -> str | None:
    """Whether the layer explains exactly the record's ``size`` bytes."""
    if rec.kind in MULTIFD_RAM_KINDS:
        want = multifd_data_length(v)
        return None if v.leftover == want else f"{v.leftover} bytes after the header, QEMU reads {want}"
    if rec.kind == "multifd.device_state":
        want = v["next_packet_size"]
        return None if v.leftover == want else f"{v.leftover} bytes after the header, next_packet_size {want}"
    if rec.kind == "tls.record":
        want = fixed_size(T.TlsRecordHeader) + v["len"]
        return None if size == want else f"record of {size} bytes, header says {want}"
    if v.leftover:
        return f"the layer leaves {v.leftover} of {size} bytes undecoded"
    return None


def check_record(rec: Record, data: bytes | None, ctx: StreamContext) -> list[str]:
    """Mismatches between ``rec`` and the layer's decode of ``data`` (the stream's bytes
    ``[rec.offset, rec.offset + rec.length)``, or None to use ``rec.raw``). Does not update ``ctx``."""
    if rec.kind in REPORT_KINDS:
        return []
    problems: list[str] = []
    if rec.raw is not None and data is not None and data[:len(rec.raw)] != rec.raw:
        problems.append(f"raw {rec.raw[:48].hex()} is not the record's first bytes {data[:48].hex()}")
    if data is None:
        data = rec.raw
    if rec.kind in NO_LAYER_KINDS:
        v = LayerView([], {}, {}, 0)
        size = rec.length
    else:
        kind = KINDS.get(rec.kind)
        cls = kind.layer if kind is not None else None
        if cls is None:
            return problems + [f"kind {rec.kind!r} has no layer in dissectors.channels.kinds"]
        if data is None:
            return problems + ["no bytes to decode (no raw and no stream)"]
        try:
            pkt = cls(data)
        except Exception as exc:  # noqa: BLE001 - any failure of the layer is the finding
            return problems + [f"the layer {cls.__name__} cannot decode the bytes: {exc!r}"]
        if rec.raw is not None:
            try:
                own = rec.layer()
            except Exception as exc:  # noqa: BLE001
                own = exc
            if own is None or type(own) is not type(pkt):
                problems.append(f"Record.layer() gives {own!r:.80}, the bytes decode as {type(pkt).__name__}")
        v = view_of(pkt)
        size = len(data)
        problem = _kind_problem(rec, v)
        if problem:
            problems.append(f"kind: {problem}")
        if size == rec.length:
            problem = _length_problem(rec, v, size)
            if problem:
                problems.append(f"length: {problem}")
        else:
            problems.append(f"length: the record says {rec.length} bytes, {size} were decoded")
    derived = DERIVED.get(rec.kind, {})
    for name, fn in derived.items():
        try:
            want = fn(v, rec, ctx)
        except Exception as exc:  # noqa: BLE001 - the layer does not hold what the mapping reads
            problems.append(f"{name}: cannot derive from the layer ({exc!r})")
            continue
        problem = _expect(name, rec.fields, want)
        if problem:
            problems.append(problem)
    for name, got in rec.fields.items():
        if name in derived:
            continue
        if name not in v:
            problems.append(f"{name}: parsed {got!r:.300} is neither a layer field nor in DERIVED")
            continue
        ok, want = _same(got, v[name], v.fields.get(name))
        if not ok:
            problems.append(f"{name}: parsed {got!r:.300} != layer {want!r:.300}")
    return problems


def _expect(name: str, fields: dict[str, Any], want: Any) -> str | None:
    """A derived or context field (:data:`DERIVED`) against what the layer and the stream imply."""
    present = name in fields
    got = fields.get(name)
    if want is ABSENT:
        return f"{name}: parsed {got!r:.300}, expected no such field" if present else None
    if not present:
        return f"{name}: missing, expected {want!r:.300}"
    if isinstance(want, Present):
        return None if got else f"{name}: parsed {got!r}, expected a note"
    if isinstance(want, OneOf):
        return None if got in want.values else f"{name}: parsed {got!r:.300}, expected one of {want.values!r}"
    ok, _ = _same(got, want, None)
    return None if ok else f"{name}: parsed {got!r:.300} != expected {want!r:.300}"


# -- a stream's bytes next to its records ----------------------------------------------------------

class StreamBytes:
    """One direction's bytes as delivered (holes for gaps), to cut records out by offset."""

    MAX_HOLE = 64 << 20

    def __init__(self) -> None:
        self.buf = bytearray()
        self.holes: list[tuple[int, int]] = []
        self.broken_from: int | None = None      # a hole too large to fill: nothing after it is kept

    def put(self, offset: int, data: bytes | memoryview) -> None:
        if self.broken_from is not None:
            return
        if offset != len(self.buf):
            self.hole(len(self.buf), offset - len(self.buf))
            if self.broken_from is not None:
                return
        self.buf += data

    def hole(self, offset: int, length: int) -> None:
        if self.broken_from is not None or length <= 0:
            return
        if length > self.MAX_HOLE:
            self.broken_from = offset
            return
        self.holes.append((offset, offset + length))
        self.buf += bytes(length)

    def record_bytes(self, rec: Record) -> bytes | None:
        a, b = rec.offset, rec.offset + rec.length
        if b > len(self.buf) or any(x < b and a < y for x, y in self.holes):
            return None
        return bytes(self.buf[a:b])


# -- checking a run of records ---------------------------------------------------------------------

@dataclass
class DriftReport:
    mismatches: list[str] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    without_bytes: Counter[str] = field(default_factory=Counter)

    def text(self, limit: int = 25) -> str:
        lines = self.mismatches[:limit]
        if len(self.mismatches) > limit:
            lines.append(f"... and {len(self.mismatches) - limit} more")
        return "\n".join(lines)


class DriftChecker:
    """Checks records as they come (every record updates its stream's context; a deterministic sample
    of each kind is decoded: the first ``first``, then every ``stride``-th, at most ``cap`` per kind)."""

    def __init__(self, label: str, first: int | None = None, stride: int = 1, cap: int | None = None) -> None:
        self.label = label
        self.first = first
        self.stride = stride
        self.cap = cap
        self.report = DriftReport()

    def _sampled(self, kind: str) -> bool:
        n = self.report.seen[kind]
        if self.first is None or n < self.first:
            return True
        if self.cap is not None and self.report.checked[kind] >= self.cap:
            return False
        return n % self.stride == 0

    def record(self, where: str, rec: Record, stream: StreamBytes | bytes | None, ctx: StreamContext) -> None:
        r = self.report
        if rec.kind not in REPORT_KINDS and self._sampled(rec.kind):
            if isinstance(stream, StreamBytes):
                data = stream.record_bytes(rec)
            elif stream is not None:
                data = bytes(stream[rec.offset:rec.offset + rec.length])
            else:
                data = None
            if data is None and rec.raw is None and rec.kind not in NO_LAYER_KINDS:
                r.without_bytes[rec.kind] += 1
            else:
                r.checked[rec.kind] += 1
                for problem in check_record(rec, data, ctx):
                    shown = (data if data is not None else rec.raw or b"")[:96].hex()
                    r.mismatches.append(f"{self.label} {where} {rec.kind} @{rec.offset}+{rec.length} "
                                        f"fields={rec.fields!r:.200} bytes[:96]={shown}: {problem}")
        r.seen[rec.kind] += 1
        ctx.update(rec)


def check_stream(label: str, parser: Any, data: bytes) -> DriftReport:
    """Feed ``data`` whole to ``parser`` and check every record against the stream's bytes."""
    checker = DriftChecker(label)
    ctx = StreamContext()
    for run in parser.feed(data, 1.0) + parser.eof(2.0):
        for rec in expand_zero_run(run):
            checker.record("", rec, data, ctx)
    return checker.report


# -- synthetic streams covering every kind ---------------------------------------------------------

def _cmd(cmd: int, payload: Packet | None = None) -> bytes:
    pkt = C.Command(cmd=cmd)
    return bytes(pkt / payload if payload is not None else pkt)


def _sub(name: bytes, body: Packet) -> bytes:
    return bytes(M.Subsection(idstr=name, version_id=1) / body)


def main_precopy() -> bytes:
    """Header, configuration subsections, every command, RAM records of every type, devices, EOF, JSON."""
    out = bytearray(bytes(M.QemuFileHeader()) + bytes(M.Configuration(machine=b"pc-i440fx-10.0")))
    out += _sub(b"configuration/target-page-bits", M.ConfigTargetPageBits(target_page_bits=12))
    out += _sub(b"configuration/capabilities",
                M.ConfigCapabilities(caps=[M.Capability(capability=b"x-ignore-shared"),
                                           M.Capability(capability=b"x-ignore-shared-2")]))
    # (not mapped-ram: with it QEMU writes each MEM_SIZE entry's header and pages at file offsets, a
    # layout of its own: tests/test_stream_files.py reads a real one)
    out += _sub(b"configuration/uuid", M.ConfigUuid(uuid=bytes(range(16))))
    out += _cmd(C.MIG_CMD_OPEN_RETURN_PATH) + _cmd(C.MIG_CMD_PING, C.CmdPing(value=1))
    out += _cmd(C.MIG_CMD_POSTCOPY_ADVISE, C.CmdPostcopyAdvise(ram_pagesize_summary=0x201000))
    out += _cmd(C.MIG_CMD_POSTCOPY_ADVISE)                   # dirty-bitmap-only postcopy: no data
    out += _cmd(C.MIG_CMD_ENABLE_COLO) + _cmd(C.MIG_CMD_SWITCHOVER_START)
    out += bytes(M.SectionStart(section_id=2, idstr=b"ram", instance_id=0, version_id=4))
    out += L.mem_size({b"pc.ram": 1 << 20, b"pc.bios": 256 << 10, b"/rom@etc/acpi/tables": 128 << 10})
    out += L.ram_eos() + bytes(M.SectionFooter(section_id=2))
    out += bytes(M.SectionPart(section_id=2))
    out += L.ram_pages(b"pc.ram", [0, 0x1000, 0x7000])
    out += L.ram_pages(b"pc.bios", [0x2000], zero=True)
    out += L.ram_pages(b"pc.bios", [0x3000, 0x4000], zero=True, first_named=False)
    out += bytes(R.RamRecord(addr=0x5000, flags="XBZRLE+CONTINUE") / R.RamXbzrle(data=b"\x01\x02\x03"))
    out += bytes(R.RamRecord(addr=0x6000, flags="XBZRLE", idstr=b"pc.ram") / R.RamXbzrle(data=b"xyz" * 9))
    out += bytes(R.RamRecord(addr=0x8000, flags="COMPRESS_PAGE", idstr=b"pc.rom") / R.RamCompress(data=b"z" * 30))
    out += bytes(R.RamRecord(addr=0x9000, flags="COMPRESS_PAGE+CONTINUE") / R.RamCompress(data=b"q" * 7))
    out += bytes(R.RamRecord(addr=0, flags="MULTIFD_FLUSH"))
    out += L.ram_eos() + bytes(M.SectionFooter(section_id=2))
    out += _cmd(C.MIG_CMD_POSTCOPY_RAM_DISCARD,
                C.CmdRamDiscard(block=b"pc.ram", ranges=[C.DiscardRange(start=0x1000, length=0x2000),
                                                         C.DiscardRange(start=0x80000, length=0x1000)]))
    out += _cmd(C.MIG_CMD_PING, C.CmdPing(value=2))
    out += L.postcopy_package(((b"timer", bytes(24)), (b"cpu", b"\x7e" * 40)))
    out += _cmd(C.MIG_CMD_PING, C.CmdPing(value=0x42))
    out += bytes(M.SectionEnd(section_id=2)) + L.ram_pages(b"pc.ram", [0xA000]) + L.ram_eos()
    out += bytes(M.SectionFooter(section_id=2))
    out += L.device_section(3, b"0000:00:02.0/vga", b"\x00\x01" * 20, instance_id=1, version_id=3)
    out += bytes(M.SectionStart(section_id=4, idstr=b"block", instance_id=0, version_id=1)) + b"\0" * 8
    out += bytes(M.SectionFooter(section_id=4))
    out += bytes(M.SectionEnd(section_id=4)) + b"\x11" * 5 + bytes(M.SectionFooter(section_id=4))
    out += bytes(M.Eof()) + bytes(M.VmDescription(json=b'{"page_size": 4096, "devices": []}'))
    return bytes(out)


def main_mem_size_extras() -> bytes:
    """MEM_SIZE with the optional be64 words QEMU writes after a block (``ram_save_setup``): the block's
    page size when postcopy-ram runs on a block whose page size is not the host's (pc.ram on 2 MiB
    hugepages), and the region's address with x-ignore-shared (every block)."""
    blocks = [(b"pc.ram", 1 << 20, [0x200000, 0]), (b"pc.bios", 256 << 10, [0xFFFC0000])]
    total = sum(size for _, size, _ in blocks)
    body = L.ram_word(total, R.RAM_SAVE_FLAG_MEM_SIZE)
    for name, size, extras in blocks:
        body += bytes([len(name)]) + name + size.to_bytes(8, "big") + b"".join(x.to_bytes(8, "big") for x in extras)
    return (bytes(M.QemuFileHeader()) + bytes(M.Configuration(machine=b"pc-i440fx-10.0"))
            + bytes(M.SectionStart(section_id=2, idstr=b"ram", instance_id=0, version_id=4)) + body
            + L.ram_eos() + bytes(M.SectionFooter(section_id=2))
            + bytes(M.SectionPart(section_id=2)) + L.ram_pages(b"pc.ram", [0x1000]) + L.ram_eos()
            + bytes(M.SectionFooter(section_id=2)) + bytes(M.Eof()))


def main_many_ram_blocks(count: int = 101) -> bytes:
    """MEM_SIZE listing more RAM blocks than Scapy's default list bound (``conf.max_list_count``, 100):
    each memory backend of a pc-dimm is a block, and a guest may have up to 256 DIMM slots."""
    blocks = {b"pc.ram": 1 << 20, **{f"/objects/mem{i}".encode(): 128 << 20 for i in range(count - 1)}}
    return (bytes(M.QemuFileHeader()) + bytes(M.Configuration(machine=b"pc-i440fx-10.0"))
            + bytes(M.SectionStart(section_id=2, idstr=b"ram", instance_id=0, version_id=4)) + L.mem_size(blocks)
            + L.ram_eos() + bytes(M.SectionFooter(section_id=2)) + bytes(M.Eof()))


def main_recovered() -> bytes:
    """A recovered main channel: RECV_BITMAP and RESUME, then RAM sections it never saw the START of."""
    out = _cmd(C.MIG_CMD_RECV_BITMAP, C.CmdRecvBitmap(block=b"pc.ram"))
    out += _cmd(C.MIG_CMD_RECV_BITMAP, C.CmdRecvBitmap(block=b"pc.bios"))
    out += _cmd(C.MIG_CMD_POSTCOPY_RESUME)
    out += bytes(M.SectionPart(section_id=2)) + L.ram_pages(b"pc.ram", [0x1000, 0x2000]) + L.ram_eos()
    out += bytes(M.SectionFooter(section_id=2))
    out += bytes(M.SectionEnd(section_id=2)) + L.ram_pages(b"pc.ram", [0x3000], zero=True) + L.ram_eos()
    out += bytes(M.SectionFooter(section_id=2)) + bytes(M.Eof())
    return out


def preempt_stream() -> bytes:
    return (L.ram_pages(b"pc.ram", [0x5000, 0x6000]) + L.ram_pages(b"pc.bios", [0x1000], zero=True)
            + L.ram_pages(b"pc.bios", [0x9000], first_named=False) + L.ram_eos())


def return_path_stream() -> bytes:
    m = RP.RpMessage
    return b"".join(bytes(p) for p in (
        m() / RP.RpPong(value=1),
        m(type=RP.MIG_RP_MSG_REQ_PAGES_ID) / RP.RpReqPagesId(start=0x7000, len=4096, block=b"pc.ram"),
        m(type=RP.MIG_RP_MSG_REQ_PAGES) / RP.RpReqPages(start=0x9000, len=8192),
        m(type=RP.MIG_RP_MSG_REQ_PAGES_ID) / RP.RpReqPagesId(start=0x1000, len=4096, block=b"pc.bios"),
        m(type=RP.MIG_RP_MSG_REQ_PAGES) / RP.RpReqPages(start=0x2000, len=4096),
        m(type=RP.MIG_RP_MSG_RECV_BITMAP) / RP.RpRecvBitmap(block=b"pc.ram") / RP.RecvBitmapDump(bitmap=b"\xff" * 24),
        m(type=RP.MIG_RP_MSG_RECV_BITMAP) / RP.RpRecvBitmap(block=b"pc.bios") / RP.RecvBitmapDump(bitmap=b""),
        m(type=RP.MIG_RP_MSG_RESUME_ACK) / RP.RpResumeAck(),
        m(type=RP.MIG_RP_MSG_SWITCHOVER_ACK),
        m() / RP.RpPong(value=0x42),
        m(type=RP.MIG_RP_MSG_SHUT) / RP.RpShut(status=1),
    ))


def multifd_packet_v1(num: int, normal: int) -> bytes:
    """A 7.2-8.2 RAM packet (``unused[4]`` where 9.0 has zero_pages), with a stale next_packet_size."""
    head = F.MultifdRamPacketV1(pages_alloc=128, normal_pages=normal, next_packet_size=0x20000, packet_num=num,
                                ramblock=b"pc.ram", offsets=[i * 4096 for i in range(normal)])
    return bytes(head) + b"\x5a" * (normal * 4096)


def multifd_stream(pages: int = 3) -> bytes:
    """Hello, RAM packets (normal, zero and compressed pages, SYNC, the 7.2-8.2 layout), device state."""
    out = bytearray(L.multifd_stream(packets=2, pages_per_packet=pages, channel_id=3, sync_every=2))
    out += L.multifd_packet(3, 2, zero=3)
    out += L.multifd_packet(4, 0, zero=5)
    out += bytes(F.MultifdRamPacket(flags="ZLIB", pages_alloc=128, normal_pages=2, next_packet_size=100,
                                    packet_num=5, ramblock=b"pc.ram", offsets=[0x1000, 0x3000])) + b"c" * 100
    out += bytes(F.MultifdRamPacket(flags="SYNC+ZSTD", packet_num=6, next_packet_size=7))
    out += multifd_packet_v1(7, 1) + multifd_packet_v1(8, 0)
    out += bytes(F.MultifdDeviceStatePacket(flags="DEVICE_STATE", idstr=b"0000:00:04.0/vfio", instance_id=1,
                                            next_packet_size=10)) + b"B" * 10
    out += bytes(F.MultifdDeviceStatePacket(flags="DEVICE_STATE+SYNC", idstr=b"vfio", next_packet_size=0))
    return bytes(out)


def tls_stream() -> bytes:
    rec = T.TlsRecordHeader
    return b"".join(bytes(p) for p in (
        rec(version=0x0301) / T.TlsHandshakeStart(msg_type=1, length=60) / Raw(b"h" * 22),
        rec() / T.TlsHandshakeStart(msg_type=2, length=50) / Raw(b"s" * 12),
        rec(content_type=T.TLS_CHANGE_CIPHER_SPEC) / Raw(b"\x01"),
        rec(content_type=T.TLS_HANDSHAKE) / Raw(b"E" * 80),            # encrypted handshake
        rec(content_type=T.TLS_APPLICATION_DATA) / Raw(bytes(range(256)) * 3),
        rec(content_type=T.TLS_ALERT) / Raw(b"\x01\x00"),
    ))


#: (name, parser factory, stream bytes) of every synthetic stream.
SYNTHETIC: list[tuple[str, Callable[[], Any], Callable[[], bytes]]] = [
    ("main-precopy", MainParser, main_precopy),
    ("main-synth-precopy", MainParser, lambda: L.precopy_stream(pages=3, zero_pages=2, return_path=True)),
    ("main-recovered", MainParser, main_recovered),
    ("main-mem-size-extras", MainParser, main_mem_size_extras),
    ("main-101-ram-blocks", MainParser, main_many_ram_blocks),
    ("preempt", PreemptParser, preempt_stream),
    ("return-path", ReturnPathParser, return_path_stream),
    ("multifd", MultifdParser, multifd_stream),
    ("tls", TlsParser, tls_stream),
]


# -- real captures through the pipeline ------------------------------------------------------------

class TapSink:
    """A connection's sink for the TCP tracker: keeps both streams' bytes and hands every byte to the
    pipeline's own per-connection sink (``ChannelSink``), whose records go to ``checker``. It asks for
    no skip window (the parsers see every byte: the same records, by the skip-window contract)."""

    def __init__(self, conn: Any, checker: DriftChecker) -> None:
        from dissectors.channels import ChannelSink

        self.conn = conn
        self.streams = (StreamBytes(), StreamBytes())
        self.contexts = (StreamContext(), StreamContext())
        self.checker = checker
        self.sink = ChannelSink(self._on_records)

    def _on_records(self, direction: int, records: list[Record]) -> None:
        where = f"#{self.conn.index} {'->' if direction == 0 else '<-'} {self.sink.channel_kind(direction)}"
        for rec in (r for run in records for r in expand_zero_run(run)):
            self.checker.record(where, rec, self.streams[direction], self.contexts[direction])

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int:
        self.streams[direction].put(offset, data)
        self.sink.data(direction, offset, data, ts)
        return 0

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        self.streams[direction].hole(offset, length)
        self.sink.gap(direction, offset, length, ts)

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        self.sink.end(direction, offset, ts, how)
        self.streams[direction].buf.clear()          # the stream's records are all out


def check_capture(path: str, first: int = 256, stride: int = 16, cap: int = 2000) -> DriftReport:
    """Reassemble a capture with the pipeline and check a deterministic sample of its records."""
    from dissectors.cli.pipeline import reassemble_file

    checker = DriftChecker(path.rsplit("/", 1)[-1], first=first, stride=stride, cap=cap)
    reassemble_file(path, lambda conn: TapSink(conn, checker))
    return checker.report


# -- streams for the properties: small valid streams per parser, and damaged copies of them --------------

PARSERS: dict[str, Callable[[], Any]] = {
    "main": MainParser,
    "multifd": MultifdParser,
    "preempt": PreemptParser,
    "return_path": ReturnPathParser,
    "tls": TlsParser,
}


def _main_small() -> bytes:
    return (S.header("pc-q35-10.0") + S.command(1) + S.ping(1) + S.ram_start(total=1 << 20)
            + S.ram_part([0x1000, 0x2000], flush=True) + S.ram_part([0x3000], end=True)
            + L.device_section(3, b"timer", bytes.fromhex("00000001a9d1787e") + b"\x00\x00\x00\x03" + bytes(12))
            + S.eof())


#: Small valid streams per parser (every record kind of the channel, few pages).
VALID: dict[str, list[bytes]] = {
    "main": [main_precopy(), main_recovered(), _main_small(),
             L.precopy_stream(pages=1, zero_pages=2, return_path=True), L.postcopy_package()],
    "multifd": [multifd_stream(pages=1), L.multifd_stream(packets=2, pages_per_packet=1, sync_every=1)],
    "preempt": [preempt_stream(), S.preempt_page(0x4000, True) + S.preempt_page(0x5000, False)],
    "return_path": [return_path_stream(), S.rp_pong(3) + S.rp_req_pages(0x1000) + S.rp_req_pages(0x2000, None)],
    "tls": [tls_stream()],
}


def records_of(parser: Any, data: bytes) -> list[Record]:
    return [r for run in parser.feed(data, 0.0) + parser.eof(0.0) for r in expand_zero_run(run)]


#: Record start offsets of each valid stream (mutations aim near them, where the headers are).
BOUNDS: dict[bytes, list[int]] = {
    data: sorted({r.offset for r in records_of(PARSERS[name](), data)} | {0})
    for name, streams in VALID.items() for data in streams
}

INTERESTING = [0x00, 0x01, 0x02, 0x04, 0x07, 0x08, 0x10, 0x20, 0x3F, 0x40, 0x7E, 0x7F, 0x80, 0xFE, 0xFF]


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A valid stream of the parser's channel with 1-4 mutations, most of them near record starts."""
    original = draw(st.sampled_from(VALID[name]))
    bounds = BOUNDS[original]
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        if not n:
            break
        if draw(st.booleans()):         # near a record start of the original (where the headers are)
            pos = min(n - 1, draw(st.sampled_from(bounds)) + draw(st.integers(0, 40)))
        else:
            pos = draw(st.integers(0, n - 1))
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from(INTERESTING))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:                       # a copy of another part of the stream (a record where it does not belong)
            a = draw(st.sampled_from(bounds))
            data[pos:pos] = original[a:a + draw(st.integers(1, 600))]
    return bytes(data)
