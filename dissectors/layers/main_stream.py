# SPDX-License-Identifier: GPL-2.0-or-later
"""Main-channel records: file header, configuration, subsections, sections, footer, EOF, VMDESCRIPTION.

Layouts: QEMU ``migration/savevm.c`` (``qemu_savevm_state_header``, ``save_section_header``,
``save_section_footer``) and ``migration/vmstate.c`` (``vmstate_subsection_save``); see
docs/wire-format.md. ``MainRecord(raw)`` picks the record class from the first byte.
"""

from __future__ import annotations

from typing import Any

from scapy.fields import (
    ByteEnumField,
    FieldLenField,
    IntField,
    PacketListField,
    StrLenField,
    XIntField,
    XStrFixedLenField,
)
from scapy.packet import Packet, Raw

from dissectors.layers.strings import counted_string

QEMU_VM_FILE_MAGIC = 0x5145564D
QEMU_VM_FILE_VERSION = 3

QEMU_VM_EOF = 0x00
QEMU_VM_SECTION_START = 0x01
QEMU_VM_SECTION_PART = 0x02
QEMU_VM_SECTION_END = 0x03
QEMU_VM_SECTION_FULL = 0x04
QEMU_VM_SUBSECTION = 0x05
QEMU_VM_VMDESCRIPTION = 0x06
QEMU_VM_CONFIGURATION = 0x07
QEMU_VM_COMMAND = 0x08
QEMU_VM_SECTION_FOOTER = 0x7E

RECORD_TYPES: dict[int, str] = {
    QEMU_VM_EOF: "EOF",
    QEMU_VM_SECTION_START: "SECTION_START",
    QEMU_VM_SECTION_PART: "SECTION_PART",
    QEMU_VM_SECTION_END: "SECTION_END",
    QEMU_VM_SECTION_FULL: "SECTION_FULL",
    QEMU_VM_SUBSECTION: "SUBSECTION",
    QEMU_VM_VMDESCRIPTION: "VMDESCRIPTION",
    QEMU_VM_CONFIGURATION: "CONFIGURATION",
    QEMU_VM_COMMAND: "COMMAND",
    QEMU_VM_SECTION_FOOTER: "SECTION_FOOTER",
}

#: Section idstrs whose payload is walked record by record (RAM records, see ``ram.py``).
RAM_SECTION_IDSTR = b"ram"


class MainRecord(Packet):
    """Dispatcher: ``MainRecord(raw)`` builds the record class named by the first byte."""

    name = "QEMU migration record"
    fields_desc = [ByteEnumField("type", 0, RECORD_TYPES)]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        if _pkt:
            return record_class(_pkt[0])
        return cls


class _NextRecord(Packet):
    """Base for records after which the next main-stream record follows directly."""

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return MainRecord


class QemuFileHeader(_NextRecord):
    name = "QEMU migration stream header"
    fields_desc = [
        XIntField("magic", QEMU_VM_FILE_MAGIC),
        IntField("version", QEMU_VM_FILE_VERSION),
    ]


class Configuration(_NextRecord):
    name = "QEMU_VM_CONFIGURATION"
    fields_desc = [
        ByteEnumField("type", QEMU_VM_CONFIGURATION, RECORD_TYPES),
        FieldLenField("len", None, length_of="machine", fmt="!I"),
        StrLenField("machine", b"", length_from=lambda pkt: pkt.len),
    ]


class Subsection(Packet):
    """``0x05, u8 len, name, be32 version_id``, then the subsection's vmstate fields."""

    name = "QEMU_VM_SUBSECTION"
    fields_desc = [
        ByteEnumField("type", QEMU_VM_SUBSECTION, RECORD_TYPES),
        *counted_string("idstr", "idlen"),
        IntField("version_id", 1),
    ]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return CONFIG_SUBSECTION_BODIES.get(bytes(self.idstr), Raw)


class ConfigTargetPageBits(_NextRecord):
    name = "configuration/target-page-bits"
    fields_desc = [IntField("target_page_bits", 12)]


class Capability(Packet):
    name = "capability"
    fields_desc = [*counted_string("capability", "cap_len")]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


#: Capabilities in a configuration/capabilities subsection above this are not believed (QEMU has ~30).
MAX_CAPABILITIES = 256


class ConfigCapabilities(_NextRecord):
    name = "configuration/capabilities"
    fields_desc = [
        FieldLenField("count", None, count_of="caps", fmt="!I"),
        PacketListField("caps", [], Capability, count_from=lambda pkt: pkt.count, max_count=MAX_CAPABILITIES),
    ]


class ConfigUuid(_NextRecord):
    name = "configuration/uuid"
    fields_desc = [XStrFixedLenField("uuid", b"\0" * 16, length=16)]


CONFIG_SUBSECTION_BODIES: dict[bytes, type[Packet]] = {
    b"configuration/target-page-bits": ConfigTargetPageBits,
    b"configuration/capabilities": ConfigCapabilities,
    b"configuration/uuid": ConfigUuid,
}


class SectionStart(Packet):
    """SECTION_START: the payload (vmstate or RAM records) follows, then a SectionFooter."""

    name = "QEMU_VM_SECTION_START"
    fields_desc = [
        ByteEnumField("type", QEMU_VM_SECTION_START, RECORD_TYPES),
        IntField("section_id", 0),
        *counted_string("idstr", "idlen"),
        IntField("instance_id", 0),
        IntField("version_id", 0),
    ]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if bytes(self.idstr) == RAM_SECTION_IDSTR:
            from dissectors.layers.ram import RamRecord

            return RamRecord
        return Raw


class SectionFull(SectionStart):
    name = "QEMU_VM_SECTION_FULL"
    fields_desc = [ByteEnumField("type", QEMU_VM_SECTION_FULL, RECORD_TYPES), *SectionStart.fields_desc[1:]]


class SectionPart(Packet):
    """SECTION_PART: payload follows; which handler it belongs to is known from the START's id."""

    name = "QEMU_VM_SECTION_PART"
    fields_desc = [
        ByteEnumField("type", QEMU_VM_SECTION_PART, RECORD_TYPES),
        IntField("section_id", 0),
    ]


class SectionEnd(SectionPart):
    name = "QEMU_VM_SECTION_END"
    fields_desc = [ByteEnumField("type", QEMU_VM_SECTION_END, RECORD_TYPES), *SectionPart.fields_desc[1:]]


class SectionFooter(_NextRecord):
    name = "QEMU_VM_SECTION_FOOTER"
    fields_desc = [
        ByteEnumField("type", QEMU_VM_SECTION_FOOTER, RECORD_TYPES),
        IntField("section_id", 0),
    ]


class Eof(_NextRecord):
    name = "QEMU_VM_EOF"
    fields_desc = [ByteEnumField("type", QEMU_VM_EOF, RECORD_TYPES)]


class VmDescription(_NextRecord):
    name = "QEMU_VM_VMDESCRIPTION"
    fields_desc = [
        ByteEnumField("type", QEMU_VM_VMDESCRIPTION, RECORD_TYPES),
        FieldLenField("len", None, length_of="json", fmt="!I"),
        StrLenField("json", b"", length_from=lambda pkt: pkt.len),
    ]


#: Record classes by type byte, but QEMU_VM_COMMAND's (``commands.Command``, which builds on this module):
#: use :func:`record_class`.
RECORD_CLASSES: dict[int, type[Packet]] = {
    QEMU_VM_EOF: Eof,
    QEMU_VM_SECTION_START: SectionStart,
    QEMU_VM_SECTION_PART: SectionPart,
    QEMU_VM_SECTION_END: SectionEnd,
    QEMU_VM_SECTION_FULL: SectionFull,
    QEMU_VM_SUBSECTION: Subsection,
    QEMU_VM_VMDESCRIPTION: VmDescription,
    QEMU_VM_CONFIGURATION: Configuration,
    QEMU_VM_SECTION_FOOTER: SectionFooter,
}


def record_class(code: int) -> type[Packet]:
    """The layer of a main-stream record by its type byte (Raw for an unknown one)."""
    if code == QEMU_VM_COMMAND:
        from dissectors.layers.commands import Command

        return Command
    return RECORD_CLASSES.get(code, Raw)
