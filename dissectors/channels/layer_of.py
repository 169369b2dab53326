# SPDX-License-Identifier: GPL-2.0-or-later
"""Which Scapy layer dissects the ``raw`` bytes kept by a Record of a given kind."""

from __future__ import annotations

from scapy.packet import Packet

from dissectors.layers.main_stream import MainRecord, QemuFileHeader
from dissectors.layers.multifd import MultifdHello, MultifdPacketHdr
from dissectors.layers.return_path import RpMessage
from dissectors.layers.tls import TlsRecordHeader


def layer_class(kind: str) -> type[Packet] | None:
    if kind == "main.header":
        return QemuFileHeader
    if kind.startswith("main."):
        return MainRecord
    if kind.startswith("rp."):
        return RpMessage
    if kind == "multifd.hello":
        return MultifdHello
    if kind.startswith("multifd."):
        return MultifdPacketHdr
    if kind == "tls.record":
        return TlsRecordHeader
    return None
