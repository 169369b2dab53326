# SPDX-License-Identifier: GPL-2.0-or-later
"""The QEMU migration layers bound to TCP for Scapy users (docs/scapy.md).

>>> from scapy.all import rdpcap
>>> from dissectors.scapy import bind, QemuMigration
>>> bind(4444)                                  # the destination's migration port
>>> pkts = rdpcap("migration.pcap")             # doctest: +SKIP
>>> pkts[10][QemuMigration].show()              # doctest: +SKIP

Without a port, :func:`enable_heuristic` has TCP payloads that start a migration channel (``QEVM``, the
multifd magic) bind their destination port as they are read, so later segments of the same migration
decode too; :func:`guess_port` finds the port in packets already read. Either way, a TCP payload is
decoded when a record starts at its first byte (a segment holding whole records, as on loopback): a
segment in the middle of a RAM page stays ``Raw``. Scapy does not reassemble TCP; ``migshark dissect``
does.

Two dispatch layers pick the right declaration from ``dissectors.layers`` by the payload's first bytes:
:class:`QemuMigration` (source to destination: stream header, main records, multifd hello and packets,
RAM records of a preempt channel) and :class:`QemuReturnPath` (destination to source).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scapy.layers.inet import TCP
from scapy.packet import Packet, Raw, bind_layers

from dissectors.layers import commands as C
from dissectors.layers import main_stream as M
from dissectors.layers import multifd as F
from dissectors.layers import ram as R
from dissectors.layers import return_path as RP

__all__ = ["QemuMigration", "QemuReturnPath", "bind", "enable_heuristic", "guess_layer", "guess_port",
           "guess_return_path"]

_QEVM = M.QEMU_VM_FILE_MAGIC.to_bytes(4, "big")
_MULTIFD = F.MULTIFD_MAGIC.to_bytes(4, "big")
_HELLO_SIZE = len(F.MultifdHello())
_RAM_FLAGS = sum(1 << i for i in range(len(R.RAM_FLAG_NAMES)))


def _printable(b: bytes) -> bool:
    return bool(b) and all(32 <= c < 127 for c in b)


def _main_record(data: bytes) -> type[Packet] | None:
    """The main-stream record class if ``data`` plausibly starts with one (checked field by field)."""
    code = data[0]
    cls = M.record_class(code)
    if cls is Raw or code == M.QEMU_VM_EOF and len(data) != 1:
        return None
    try:
        pkt = cls(data)
    except Exception:  # noqa: BLE001 - bytes that do not fit the layer are not that record
        return None
    if isinstance(pkt, M.SectionStart):
        ok = _printable(bytes(pkt.idstr)) and pkt.idlen == len(pkt.idstr)
    elif isinstance(pkt, M.SectionPart | M.SectionFooter):
        ok = 0 < pkt.section_id < 1 << 16
    elif isinstance(pkt, M.Configuration):
        ok = 0 < pkt.len < 256 and _printable(bytes(pkt.machine))
    elif isinstance(pkt, C.Command):
        ok = pkt.cmd in C.MIG_CMDS and pkt.len < 1 << 16
    elif isinstance(pkt, M.Subsection):
        ok = _printable(bytes(pkt.idstr))
    else:
        ok = isinstance(pkt, M.VmDescription | M.Eof)
    return cls if ok else None


_RAM_KINDS = {R.RAM_SAVE_FLAG_ZERO, R.RAM_SAVE_FLAG_PAGE, R.RAM_SAVE_FLAG_XBZRLE, R.RAM_SAVE_FLAG_COMPRESS_PAGE}
#: Guest addresses above this are taken for data, not a RAM record's header.
_MAX_RAM_ADDR = 1 << 44


def _ram_record(data: bytes) -> bool:
    """Does ``data`` plausibly start with a RAM page record (a preempt channel's pages)?"""
    if len(data) < 9:
        return False
    word = int.from_bytes(data[:8], "big")
    flags = word & ((1 << R.TARGET_PAGE_BITS) - 1)
    if flags & ~R.RAM_SAVE_FLAG_CONTINUE not in _RAM_KINDS or word >= _MAX_RAM_ADDR:
        return False
    if flags & R.RAM_SAVE_FLAG_CONTINUE:
        return True
    return _printable(data[9:9 + data[8]]) and len(data) >= 9 + data[8]


def guess_layer(data: bytes) -> type[Packet]:
    """The layer that decodes ``data``, bytes sent by a migration source, from its first bytes (Raw: none)."""
    if data[:4] == _QEVM:
        return M.QemuFileHeader
    if data[:4] == _MULTIFD:
        return F.MultifdHello if len(data) == _HELLO_SIZE else F.MultifdPacketHdr.dispatch_hook(data)
    if not data:
        return Raw
    cls = _main_record(data)
    if cls is not None:
        return cls
    return R.RamRecord if _ram_record(data) else Raw


def guess_return_path(data: bytes) -> type[Packet]:
    """:class:`~dissectors.layers.return_path.RpMessage` if ``data`` starts with a return-path message."""
    if len(data) < 4:
        return Raw
    typ, length = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
    if typ not in RP.RP_LENGTHS:
        return Raw
    want = RP.RP_LENGTHS[typ]
    return RP.RpMessage if (want is None or want == length) and 4 + length <= len(data) else Raw


class QemuMigration(Packet):
    """Dispatcher for a TCP payload sent to the destination's migration port."""

    name = "QEMU migration (to the destination)"

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        return guess_layer(bytes(_pkt)) if _pkt else cls


class QemuReturnPath(Packet):
    """Dispatcher for a TCP payload sent from the destination's migration port (the return path)."""

    name = "QEMU migration return path"

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        return guess_return_path(bytes(_pkt)) if _pkt else cls


_bound: set[int] = set()
_multifd: set[tuple[bytes, int]] = set()     # (source address, port) of connections that sent a multifd hello


def _source(tcp: TCP) -> tuple[bytes, int]:
    ip = tcp.underlayer
    return (bytes(str(getattr(ip, "src", "")), "ascii"), int(tcp.sport))


_original_guess = TCP.guess_payload_class
_heuristic = False


def _guess(self: TCP, payload: bytes) -> type[Packet]:
    """TCP's payload guess, refined for the migration ports: a multifd channel's payloads are multifd
    packets or data, never main-stream or RAM records."""
    cls = _original_guess(self, payload)
    dport, sport = int(self.dport), int(self.sport)
    if dport not in _bound and _heuristic and cls is Raw and payload[:4] in (_QEVM, _MULTIFD):
        bind(dport)
    if dport in _bound:
        src = _source(self)
        if payload[:4] == _MULTIFD and len(payload) == _HELLO_SIZE:
            _multifd.add(src)
        if src in _multifd:
            return guess_layer(payload) if payload[:4] == _MULTIFD else Raw
        return guess_layer(payload)
    if sport in _bound:
        return guess_return_path(payload)
    return cls


def bind(port: int) -> None:
    """Decode TCP payloads to ``port`` as :class:`QemuMigration` and from it as :class:`QemuReturnPath`
    (``bind_layers``; building ``TCP()/QemuMigration()`` sets the port too)."""
    if port in _bound:
        return
    bind_layers(TCP, QemuMigration, dport=port)
    bind_layers(TCP, QemuReturnPath, sport=port)
    _bound.add(port)
    TCP.guess_payload_class = _guess  # type: ignore[method-assign]


def guess_port(packets: Iterable[Packet]) -> int | None:
    """The destination port of the first TCP payload that opens a migration channel (``QEVM`` or the
    multifd hello), or None."""
    for p in packets:
        if TCP in p:
            data = bytes(p[TCP].payload)
            if data[:4] in (_QEVM, _MULTIFD):
                return int(p[TCP].dport)
    return None


def enable_heuristic(on: bool = True) -> None:
    """From now on, a TCP payload starting with ``QEVM`` or the multifd magic binds its destination port
    (:func:`bind`), so that port's later segments decode too (``on=False``: no longer; ports already bound
    stay bound)."""
    global _heuristic
    _heuristic = on
    TCP.guess_payload_class = _guess  # type: ignore[method-assign]
