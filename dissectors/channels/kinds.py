# SPDX-License-Identifier: GPL-2.0-or-later
"""Every record kind the channel parsers emit, declared once: its stable name, the Scapy layer that
dissects the record's kept bytes, and the wire code that selects it.

A :class:`RecordKind` *is* its name (a ``str``), so ``rec.kind == "ram.page"``, ``dissect -t 'ram.*'``
and the JSON ``type`` keep working; ``rec.kind.layer`` is the Scapy class. The Lua export and
``Record.layer()`` read this table instead of re-deriving names from prefixes.
"""

from __future__ import annotations

from scapy.packet import Packet

from dissectors.layers import main_stream as ms
from dissectors.layers import multifd as mf
from dissectors.layers import ram
from dissectors.layers import return_path as rp
from dissectors.layers.tls import TlsRecordHeader


class RecordKind(str):
    """A record kind's name, with the layer that dissects it and the code that selects it on the wire
    (a main-stream record type, a RAM flag, a return-path message type; None when none does)."""

    layer: type[Packet] | None
    code: int | None
    family: str

    def __new__(cls, name: str, layer: type[Packet] | None = None, code: int | None = None) -> RecordKind:
        self = super().__new__(cls, name)
        self.layer = layer
        self.code = code
        self.family = name.split(".", 1)[0]
        return self


def _k(name: str, layer: type[Packet] | None = None, code: int | None = None) -> RecordKind:
    return RecordKind(name, layer, code)


# -- main channel (source -> destination) ---------------------------------------------------------
MAIN_HEADER = _k("main.header", ms.QemuFileHeader)
MAIN_CONFIG = _k("main.config", ms.MainRecord, ms.QEMU_VM_CONFIGURATION)
MAIN_SUBSECTION = _k("main.subsection", ms.MainRecord, ms.QEMU_VM_SUBSECTION)
MAIN_SECTION_START = _k("main.section_start", ms.MainRecord, ms.QEMU_VM_SECTION_START)
MAIN_SECTION_PART = _k("main.section_part", ms.MainRecord, ms.QEMU_VM_SECTION_PART)
MAIN_SECTION_END = _k("main.section_end", ms.MainRecord, ms.QEMU_VM_SECTION_END)
MAIN_SECTION_FULL = _k("main.section_full", ms.MainRecord, ms.QEMU_VM_SECTION_FULL)
MAIN_FOOTER = _k("main.footer", ms.MainRecord, ms.QEMU_VM_SECTION_FOOTER)
MAIN_EOF = _k("main.eof", ms.MainRecord, ms.QEMU_VM_EOF)
MAIN_VMDESC = _k("main.vmdesc", ms.MainRecord, ms.QEMU_VM_VMDESCRIPTION)
MAIN_CMD = _k("main.cmd", ms.MainRecord, ms.QEMU_VM_COMMAND)
DEVICE_STATE = _k("device.state")            # a device section's body (no layout: the device's own)
DEVICE_VMSTATE = _k("device.vmstate")        # a device section decoded along the VMDESCRIPTION (dissect)

# -- RAM records (main channel "ram" sections, preempt channel) -----------------------------------
RAM_PAGE = _k("ram.page", ram.RamRecord, ram.RAM_SAVE_FLAG_PAGE)
RAM_ZERO = _k("ram.zero", ram.RamRecord, ram.RAM_SAVE_FLAG_ZERO)
RAM_EOS = _k("ram.eos", ram.RamRecord, ram.RAM_SAVE_FLAG_EOS)
RAM_MULTIFD_FLUSH = _k("ram.multifd_flush", ram.RamRecord, ram.RAM_SAVE_FLAG_MULTIFD_FLUSH)
RAM_MEM_SIZE = _k("ram.mem_size", ram.RamRecord, ram.RAM_SAVE_FLAG_MEM_SIZE)
RAM_XBZRLE = _k("ram.xbzrle", ram.RamRecord, ram.RAM_SAVE_FLAG_XBZRLE)
RAM_COMPRESS = _k("ram.compress", ram.RamRecord, ram.RAM_SAVE_FLAG_COMPRESS_PAGE)

# -- return path (destination -> source on the main connection) -----------------------------------
RP_SHUT = _k("rp.shut", rp.RpMessage, rp.MIG_RP_MSG_SHUT)
RP_PONG = _k("rp.pong", rp.RpMessage, rp.MIG_RP_MSG_PONG)
RP_REQ_PAGES = _k("rp.req_pages", rp.RpMessage, rp.MIG_RP_MSG_REQ_PAGES)   # REQ_PAGES_ID too
RP_RECV_BITMAP = _k("rp.recv_bitmap", rp.RpMessage, rp.MIG_RP_MSG_RECV_BITMAP)
RP_RESUME_ACK = _k("rp.resume_ack", rp.RpMessage, rp.MIG_RP_MSG_RESUME_ACK)
RP_SWITCHOVER_ACK = _k("rp.switchover_ack", rp.RpMessage, rp.MIG_RP_MSG_SWITCHOVER_ACK)

# -- multifd channels ------------------------------------------------------------------------------
MULTIFD_HELLO = _k("multifd.hello", mf.MultifdHello)
MULTIFD_PACKET = _k("multifd.packet", mf.MultifdPacketHdr)
MULTIFD_SYNC = _k("multifd.sync", mf.MultifdPacketHdr, mf.MULTIFD_FLAG_SYNC)
MULTIFD_DEVICE_STATE = _k("multifd.device_state", mf.MultifdPacketHdr, mf.MULTIFD_FLAG_DEVICE_STATE)

# -- TLS (carried opaque without a key log) --------------------------------------------------------
TLS_RECORD = _k("tls.record", TlsRecordHeader)

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
RP_KINDS: dict[int, RecordKind] = {**by_code("rp"), rp.MIG_RP_MSG_REQ_PAGES_ID: RP_REQ_PAGES}
