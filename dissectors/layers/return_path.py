# SPDX-License-Identifier: GPL-2.0-or-later
"""Return-path messages (destination -> source on the main connection): ``be16 type, be16 len, data``.

Source: ``migration/migration.c`` ``enum mig_rp_message_type``, ``rp_cmd_args``,
``migrate_send_rp_*``; ``migration/ram.c`` ``ramblock_recv_bitmap_send`` for the bitmap dump that
follows RECV_BITMAP outside its length.
"""

from __future__ import annotations

from scapy.fields import (
    IntField,
    LongField,
    ShortEnumField,
    ShortField,
    StrLenField,
    XLongField,
)
from scapy.packet import Packet, bind_layers

from dissectors.layers.strings import counted_string

MIG_RP_MSG_INVALID = 0
MIG_RP_MSG_SHUT = 1
MIG_RP_MSG_PONG = 2
MIG_RP_MSG_REQ_PAGES_ID = 3
MIG_RP_MSG_REQ_PAGES = 4
MIG_RP_MSG_RECV_BITMAP = 5
MIG_RP_MSG_RESUME_ACK = 6
MIG_RP_MSG_SWITCHOVER_ACK = 7

RP_TYPES: dict[int, str] = {
    MIG_RP_MSG_INVALID: "INVALID",
    MIG_RP_MSG_SHUT: "SHUT",
    MIG_RP_MSG_PONG: "PONG",
    MIG_RP_MSG_REQ_PAGES_ID: "REQ_PAGES_ID",
    MIG_RP_MSG_REQ_PAGES: "REQ_PAGES",
    MIG_RP_MSG_RECV_BITMAP: "RECV_BITMAP",
    MIG_RP_MSG_RESUME_ACK: "RESUME_ACK",
    MIG_RP_MSG_SWITCHOVER_ACK: "SWITCHOVER_ACK",
}

#: Fixed ``len`` per type, None when variable (``rp_cmd_args``).
RP_LENGTHS: dict[int, int | None] = {
    MIG_RP_MSG_SHUT: 4,
    MIG_RP_MSG_PONG: 4,
    MIG_RP_MSG_REQ_PAGES_ID: None,
    MIG_RP_MSG_REQ_PAGES: 12,
    MIG_RP_MSG_RECV_BITMAP: None,
    MIG_RP_MSG_RESUME_ACK: 4,
    MIG_RP_MSG_SWITCHOVER_ACK: 0,
}

RECV_BITMAP_ENDING = 0x0123456789ABCDEF
MIGRATION_RESUME_ACK_VALUE = 1


class RpMessage(Packet):
    name = "QEMU migration return-path message"
    fields_desc = [
        ShortEnumField("type", MIG_RP_MSG_PONG, RP_TYPES),
        ShortField("len", None),
    ]
    field_labels = {"len": "Message length"}

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.len is None:
            own = getattr(self.payload, "message_data_length", None)
            n = own() if callable(own) else len(pay)
            pkt = pkt[:2] + n.to_bytes(2, "big") + pkt[4:]
        return pkt + pay

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if self.len == 0:
            return RpMessage
        return super().guess_payload_class(payload)


class _NextRp(Packet):
    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return RpMessage


class RpShut(_NextRp):
    name = "MIG_RP_MSG_SHUT"
    fields_desc = [IntField("status", 0)]


class RpPong(_NextRp):
    name = "MIG_RP_MSG_PONG"
    fields_desc = [IntField("value", 1)]


class RpReqPages(_NextRp):
    name = "MIG_RP_MSG_REQ_PAGES"
    fields_desc = [XLongField("start", 0), IntField("len", 4096)]
    field_labels = {"start": "Page range start", "len": "Page range length"}


class RpReqPagesId(_NextRp):
    name = "MIG_RP_MSG_REQ_PAGES_ID"
    fields_desc = [*RpReqPages.fields_desc, *counted_string("block", "block_len")]
    field_labels = RpReqPages.field_labels


class RpRecvBitmap(Packet):
    """``u8 len + idstr``; a RecvBitmapDump follows outside ``RpMessage.len``."""

    name = "MIG_RP_MSG_RECV_BITMAP"
    fields_desc = [*counted_string("block", "block_len")]

    def message_data_length(self) -> int:
        return 1 + len(self.block)

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return RecvBitmapDump


class RecvBitmapDump(_NextRp):
    """be64 size (rounded up to 8), little-endian bitmap[size], be64 0x0123456789ABCDEF."""

    name = "received-pages bitmap"
    fields_desc = [
        LongField("size", None),
        StrLenField("bitmap", b"", length_from=lambda pkt: pkt.size),
        XLongField("ending", RECV_BITMAP_ENDING),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.size is None:
            pkt = len(self.bitmap).to_bytes(8, "big") + pkt[8:]
        return pkt + pay


class RpResumeAck(_NextRp):
    name = "MIG_RP_MSG_RESUME_ACK"
    fields_desc = [IntField("value", MIGRATION_RESUME_ACK_VALUE)]


_BINDINGS: tuple[tuple[type[Packet], int], ...] = (
    (RpShut, MIG_RP_MSG_SHUT),
    (RpPong, MIG_RP_MSG_PONG),
    (RpReqPagesId, MIG_RP_MSG_REQ_PAGES_ID),
    (RpReqPages, MIG_RP_MSG_REQ_PAGES),
    (RpRecvBitmap, MIG_RP_MSG_RECV_BITMAP),
    (RpResumeAck, MIG_RP_MSG_RESUME_ACK),
)
for _cls, _typ in _BINDINGS:
    bind_layers(RpMessage, _cls, type=_typ)
