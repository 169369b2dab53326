# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU_VM_COMMAND (``0x08, be16 cmd, be16 len, data[len]``) and every MIG_CMD payload.

Source: ``migration/savevm.c`` ``enum qemu_vm_cmd``, ``mig_cmd_args``, ``qemu_savevm_send_*``.
PACKAGED's nested stream (be32 N bytes of main-stream records) follows OUTSIDE the command length,
so ``Command.len`` counts only the 4-byte size; the nested records follow as the next layers.
"""

from __future__ import annotations

from scapy.fields import (
    ByteEnumField,
    ByteField,
    IntEnumField,
    IntField,
    LongField,
    PacketListField,
    ShortEnumField,
    ShortField,
    XLongField,
)
from scapy.packet import Packet, bind_layers

from dissectors.layers.main_stream import QEMU_VM_COMMAND, RECORD_TYPES, MainRecord
from dissectors.layers.strings import counted_string

MIG_CMD_INVALID = 0
MIG_CMD_OPEN_RETURN_PATH = 1
MIG_CMD_PING = 2
MIG_CMD_POSTCOPY_ADVISE = 3
MIG_CMD_POSTCOPY_LISTEN = 4
MIG_CMD_POSTCOPY_RUN = 5
MIG_CMD_POSTCOPY_RAM_DISCARD = 6
MIG_CMD_PACKAGED = 7
MIG_CMD_ENABLE_COLO = 8
MIG_CMD_POSTCOPY_RESUME = 9
MIG_CMD_RECV_BITMAP = 10
MIG_CMD_SWITCHOVER_START = 11

MIG_CMDS: dict[int, str] = {
    MIG_CMD_INVALID: "INVALID",
    MIG_CMD_OPEN_RETURN_PATH: "OPEN_RETURN_PATH",
    MIG_CMD_PING: "PING",
    MIG_CMD_POSTCOPY_ADVISE: "POSTCOPY_ADVISE",
    MIG_CMD_POSTCOPY_LISTEN: "POSTCOPY_LISTEN",
    MIG_CMD_POSTCOPY_RUN: "POSTCOPY_RUN",
    MIG_CMD_POSTCOPY_RAM_DISCARD: "POSTCOPY_RAM_DISCARD",
    MIG_CMD_PACKAGED: "PACKAGED",
    MIG_CMD_ENABLE_COLO: "ENABLE_COLO",
    MIG_CMD_POSTCOPY_RESUME: "POSTCOPY_RESUME",
    MIG_CMD_RECV_BITMAP: "RECV_BITMAP",
    MIG_CMD_SWITCHOVER_START: "SWITCHOVER_START",
}

#: Allowed ``len`` per command (None: variable). ADVISE is 16, or 0 with dirty-bitmap-only postcopy.
MIG_CMD_LENGTHS: dict[int, tuple[int, ...] | None] = {
    MIG_CMD_OPEN_RETURN_PATH: (0,),
    MIG_CMD_PING: (4,),
    MIG_CMD_POSTCOPY_ADVISE: (0, 16),
    MIG_CMD_POSTCOPY_LISTEN: (0,),
    MIG_CMD_POSTCOPY_RUN: (0,),
    MIG_CMD_POSTCOPY_RAM_DISCARD: None,
    MIG_CMD_PACKAGED: (4,),
    MIG_CMD_ENABLE_COLO: (0,),
    MIG_CMD_POSTCOPY_RESUME: (0,),
    MIG_CMD_RECV_BITMAP: None,
    MIG_CMD_SWITCHOVER_START: (0,),
}

#: PING values with a fixed meaning (``postcopy_start``; 0x42 is QEMU_VM_PING_PACKAGED_LOADED, 10.2+).
PING_VALUES: dict[int, str] = {
    1: "after OPEN_RETURN_PATH",
    2: "after discards",
    3: "inside package",
    4: "after package",
    0x42: "PACKAGED_LOADED",
}

#: Bound on the nested PACKAGED stream (QEMU's MAX_VM_CMD_PACKAGED_SIZE is 1 << 24).
MAX_PACKAGED_SIZE = 1 << 24


class Command(Packet):
    name = "QEMU_VM_COMMAND"
    fields_desc = [
        ByteEnumField("type", QEMU_VM_COMMAND, RECORD_TYPES),
        ShortEnumField("cmd", MIG_CMD_PING, MIG_CMDS),
        ShortField("len", None),
    ]
    field_labels = {"len": "Command data length"}

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.len is None:
            own = getattr(self.payload, "command_data_length", None)
            n = own() if callable(own) else len(pay)
            pkt = pkt[:3] + n.to_bytes(2, "big") + pkt[5:]
        return pkt + pay

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if self.len == 0 and self.cmd != MIG_CMD_PACKAGED:
            return MainRecord
        return super().guess_payload_class(payload)


class _CmdData(Packet):
    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return MainRecord


class CmdPing(_CmdData):
    name = "MIG_CMD_PING"
    fields_desc = [IntEnumField("value", 1, PING_VALUES)]


class CmdPostcopyAdvise(_CmdData):
    name = "MIG_CMD_POSTCOPY_ADVISE"
    fields_desc = [
        XLongField("ram_pagesize_summary", 0x1000),
        LongField("target_page_size", 0x1000),
    ]


class DiscardRange(Packet):
    name = "discard range"
    fields_desc = [XLongField("start", 0), LongField("length", 0)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


#: Ranges one POSTCOPY_RAM_DISCARD can hold: as many as its 16-bit length leaves room for (QEMU sends
#: at most MAX_DISCARDS_PER_COMMAND, 12).
MAX_DISCARD_RANGES = 0xFFFF // 16


class CmdRamDiscard(_CmdData):
    """``u8 version (0), u8 len, name, u8 0, N x (be64 start, be64 length)``."""

    name = "MIG_CMD_POSTCOPY_RAM_DISCARD"
    fields_desc = [
        ByteField("version", 0),
        *counted_string("block", "block_len"),
        ByteField("terminator", 0),
        PacketListField(
            "ranges", [], DiscardRange,
            length_from=lambda pkt: (pkt.underlayer.len if pkt.underlayer else 0) - 3 - len(pkt.block),
            max_count=MAX_DISCARD_RANGES,
        ),
    ]


class CmdPackaged(_CmdData):
    """``be32 length``; that many bytes of nested main-stream records follow outside ``Command.len``."""

    name = "MIG_CMD_PACKAGED"
    fields_desc = [IntField("length", None)]
    field_labels = {"length": "Package length"}

    def command_data_length(self) -> int:
        return 4

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.length is None:
            pkt = len(pay).to_bytes(4, "big")
        return pkt + pay


class CmdRecvBitmap(_CmdData):
    name = "MIG_CMD_RECV_BITMAP"
    fields_desc = [*counted_string("block", "block_len")]


bind_layers(Command, CmdPing, cmd=MIG_CMD_PING)
bind_layers(Command, CmdPostcopyAdvise, cmd=MIG_CMD_POSTCOPY_ADVISE)
bind_layers(Command, CmdRamDiscard, cmd=MIG_CMD_POSTCOPY_RAM_DISCARD)
bind_layers(Command, CmdPackaged, cmd=MIG_CMD_PACKAGED)
bind_layers(Command, CmdRecvBitmap, cmd=MIG_CMD_RECV_BITMAP)
