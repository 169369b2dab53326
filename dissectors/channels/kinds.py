# SPDX-License-Identifier: GPL-2.0-or-later
"""Every record kind the channel parsers emit, declared once: its stable name, the Scapy layer that
dissects the record's kept bytes, and the wire code that selects it.

A :class:`RecordKind` *is* its name (a ``str``), so ``rec.kind == "ram.page"``, ``dissect -t 'ram.*'``
and the JSON ``type`` keep working; ``rec.kind.layer`` is the Scapy class. The Lua export and
``Record.layer()`` read this table instead of re-deriving names from prefixes.

A kind names its layer as ``"module.Class"`` of ``dissectors.layers`` and imports it when ``layer`` is
first read (``dissect``, the Lua export), so the parsers' import path stays free of Scapy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dissectors.layers import derived as d

if TYPE_CHECKING:
    from scapy.packet import Packet


class RecordKind(str):
    """A record kind's name, with the layer that dissects it and the code that selects it on the wire
    (a main-stream record type, a RAM flag, a return-path message type; None when none does)."""

    layer_name: str | None          # "module.Class" in dissectors.layers
    code: int | None
    family: str

    def __new__(cls, name: str, layer_name: str | None = None, code: int | None = None) -> RecordKind:
        self = super().__new__(cls, name)
        self.layer_name = layer_name
        self.code = code
        self.family = name.split(".", 1)[0]
        return self

    @property
    def layer(self) -> type[Packet] | None:
        """The Scapy class that dissects this kind's bytes (imports the layers on first use)."""
        if self.layer_name is None:
            return None
        module, _, cls = self.layer_name.partition(".")
        return getattr(importlib.import_module(f"dissectors.layers.{module}"), cls)  # type: ignore[no-any-return]


def _k(name: str, layer_name: str | None = None, code: int | None = None) -> RecordKind:
    return RecordKind(name, layer_name, code)


# -- main channel (source -> destination) ---------------------------------------------------------
MAIN_HEADER = _k("main.header", "main_stream.QemuFileHeader")
MAIN_CONFIG = _k("main.config", "main_stream.MainRecord", d.QEMU_VM_CONFIGURATION)
MAIN_SUBSECTION = _k("main.subsection", "main_stream.MainRecord", d.QEMU_VM_SUBSECTION)
MAIN_SECTION_START = _k("main.section_start", "main_stream.MainRecord", d.QEMU_VM_SECTION_START)
MAIN_SECTION_PART = _k("main.section_part", "main_stream.MainRecord", d.QEMU_VM_SECTION_PART)
MAIN_SECTION_END = _k("main.section_end", "main_stream.MainRecord", d.QEMU_VM_SECTION_END)
MAIN_SECTION_FULL = _k("main.section_full", "main_stream.MainRecord", d.QEMU_VM_SECTION_FULL)
MAIN_FOOTER = _k("main.footer", "main_stream.MainRecord", d.QEMU_VM_SECTION_FOOTER)
MAIN_EOF = _k("main.eof", "main_stream.MainRecord", d.QEMU_VM_EOF)
MAIN_VMDESC = _k("main.vmdesc", "main_stream.MainRecord", d.QEMU_VM_VMDESCRIPTION)
MAIN_CMD = _k("main.cmd", "main_stream.MainRecord", d.QEMU_VM_COMMAND)
DEVICE_STATE = _k("device.state")            # a device section's body (no layout: the device's own)
DEVICE_VMSTATE = _k("device.vmstate")        # a device section decoded along the VMDESCRIPTION (dissect)

# -- RAM records (main channel "ram" sections, preempt channel) -----------------------------------
RAM_PAGE = _k("ram.page", "ram.RamRecord", d.RAM_SAVE_FLAG_PAGE)
RAM_ZERO = _k("ram.zero", "ram.RamRecord", d.RAM_SAVE_FLAG_ZERO)
RAM_EOS = _k("ram.eos", "ram.RamRecord", d.RAM_SAVE_FLAG_EOS)
RAM_MULTIFD_FLUSH = _k("ram.multifd_flush", "ram.RamRecord", d.RAM_SAVE_FLAG_MULTIFD_FLUSH)
RAM_MEM_SIZE = _k("ram.mem_size", "ram.RamRecord", d.RAM_SAVE_FLAG_MEM_SIZE)
RAM_XBZRLE = _k("ram.xbzrle", "ram.RamRecord", d.RAM_SAVE_FLAG_XBZRLE)
RAM_COMPRESS = _k("ram.compress", "ram.RamRecord", d.RAM_SAVE_FLAG_COMPRESS_PAGE)

# -- return path (destination -> source on the main connection) -----------------------------------
RP_SHUT = _k("rp.shut", "return_path.RpMessage", d.MIG_RP_MSG_SHUT)
RP_PONG = _k("rp.pong", "return_path.RpMessage", d.MIG_RP_MSG_PONG)
RP_REQ_PAGES = _k("rp.req_pages", "return_path.RpMessage", d.MIG_RP_MSG_REQ_PAGES)   # REQ_PAGES_ID too
RP_RECV_BITMAP = _k("rp.recv_bitmap", "return_path.RpMessage", d.MIG_RP_MSG_RECV_BITMAP)
RP_RESUME_ACK = _k("rp.resume_ack", "return_path.RpMessage", d.MIG_RP_MSG_RESUME_ACK)
RP_SWITCHOVER_ACK = _k("rp.switchover_ack", "return_path.RpMessage", d.MIG_RP_MSG_SWITCHOVER_ACK)

# -- multifd channels ------------------------------------------------------------------------------
MULTIFD_HELLO = _k("multifd.hello", "multifd.MultifdHello")
MULTIFD_PACKET = _k("multifd.packet", "multifd.MultifdPacketHdr")
MULTIFD_SYNC = _k("multifd.sync", "multifd.MultifdPacketHdr", d.MULTIFD_FLAG_SYNC)
MULTIFD_DEVICE_STATE = _k("multifd.device_state", "multifd.MultifdPacketHdr", d.MULTIFD_FLAG_DEVICE_STATE)

# -- TLS (carried opaque without a key log) --------------------------------------------------------
TLS_RECORD = _k("tls.record", "tls.TlsRecordHeader")

# -- reports of any channel -------------------------------------------------------------------------
MALFORMED = _k("malformed")      # bytes that break the layout; the parser goes opaque after them
GAP = _k("gap")                  # bytes never captured
TRUNCATED = _k("truncated")      # a record cut by a gap or by the stream's end
OPAQUE = _k("opaque")            # bytes carried without decoding (after a malformed record or a gap)

#: Every kind by name.
KINDS: dict[str, RecordKind] = {k: k for k in globals().values() if isinstance(k, RecordKind)}


def by_code(family: str) -> dict[int, RecordKind]:
    """The kinds of one family (``main``, ``ram``, ``rp``) by their wire code."""
    return {k.code: k for k in KINDS.values() if k.family == family and k.code is not None}


#: Return-path message type -> kind (REQ_PAGES_ID is a REQ_PAGES naming its block).
RP_KINDS: dict[int, RecordKind] = {**by_code("rp"), d.MIG_RP_MSG_REQ_PAGES_ID: RP_REQ_PAGES}
