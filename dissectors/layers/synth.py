# SPDX-License-Identifier: GPL-2.0-or-later
"""Build synthetic channel byte streams from the layers (for tests, benchmarks and crafted captures)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from dissectors.layers.commands import (
    MIG_CMD_OPEN_RETURN_PATH,
    MIG_CMD_POSTCOPY_LISTEN,
    MIG_CMD_POSTCOPY_RUN,
    CmdPackaged,
    CmdPing,
    Command,
)
from dissectors.layers.main_stream import (
    Configuration,
    Eof,
    QemuFileHeader,
    SectionEnd,
    SectionFooter,
    SectionFull,
    SectionPart,
    SectionStart,
    VmDescription,
)
from dissectors.layers.multifd import (
    MULTIFD_FLAG_SYNC,
    MultifdHello,
    MultifdRamPacket,
    multifd_page_count,
)
from dissectors.layers.ram import (
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_ZERO,
    RamBlockInfo,
    RamMemSize,
    RamRecord,
)


def ram_word(addr: int, flags: int) -> bytes:
    """The be64 record word (built by hand so page sizes other than the layer's 4 KiB work too)."""
    return (addr | flags).to_bytes(8, "big")


def ram_pages(block: bytes, addrs: Iterable[int], page_size: int = 4096, zero: bool = False,
              first_named: bool = True) -> bytes:
    """PAGE (or ZERO) records for ``addrs`` of ``block``: the first names the block, the rest CONTINUE."""
    out = bytearray()
    for i, addr in enumerate(addrs):
        kind = RAM_SAVE_FLAG_ZERO if zero else RAM_SAVE_FLAG_PAGE
        if i or not first_named:
            out += ram_word(addr, kind | RAM_SAVE_FLAG_CONTINUE)
        else:
            out += ram_word(addr, kind) + bytes([len(block)]) + block
        out += b"\0" if zero else bytes([(addr >> 12) & 0xFF or 1]) * page_size
    return bytes(out)


def ram_eos() -> bytes:
    return bytes(RamRecord(addr=0, flags=RAM_SAVE_FLAG_EOS))


def mem_size(blocks: dict[bytes, int]) -> bytes:
    total = sum(blocks.values())
    infos = [RamBlockInfo(idstr=name, used_length=size) for name, size in blocks.items()]
    return bytes(RamRecord(addr=total, flags=RAM_SAVE_FLAG_MEM_SIZE) / RamMemSize(blocks=infos))


def device_section(section_id: int, idstr: bytes, body: bytes, instance_id: int = 0, version_id: int = 1) -> bytes:
    head = SectionFull(section_id=section_id, idstr=idstr, instance_id=instance_id, version_id=version_id)
    return bytes(head) + body + bytes(SectionFooter(section_id=section_id))


def precopy_stream(pages: int = 8, zero_pages: int = 4, page_size: int = 4096, machine: bytes = b"pc-q35-7.2",
                   devices: Iterable[tuple[bytes, bytes]] = ((b"timer", b"\0" * 24), (b"cpu", b"\x7e" * 40)),
                   vmdesc: bytes = b'{"page_size": 4096, "devices": []}', return_path: bool = False) -> bytes:
    """A complete precopy main stream in QEMU's order: header, config, RAM START/PART/END, devices, EOF."""
    ram = b"pc.ram"
    out = bytearray(bytes(QemuFileHeader() / Configuration(machine=machine)))
    if return_path:
        out += bytes(Command(cmd=MIG_CMD_OPEN_RETURN_PATH)) + bytes(Command() / CmdPing(value=1))
    out += bytes(SectionStart(section_id=2, idstr=b"ram", instance_id=0, version_id=4))
    out += mem_size({ram: 1 << 20, b"pc.bios": 256 << 10}) + ram_eos() + bytes(SectionFooter(section_id=2))
    out += bytes(SectionPart(section_id=2))
    out += ram_pages(ram, range(0, pages * page_size, page_size), page_size)
    out += ram_pages(ram, range(0x80000, 0x80000 + zero_pages * page_size, page_size), page_size, zero=True,
                     first_named=False)
    out += ram_eos() + bytes(SectionFooter(section_id=2))
    out += bytes(SectionEnd(section_id=2)) + ram_eos() + bytes(SectionFooter(section_id=2))
    for i, (idstr, body) in enumerate(devices):
        out += device_section(10 + i, idstr, body)
    out += bytes(Eof())
    if vmdesc:
        out += bytes(VmDescription(json=vmdesc))
    return bytes(out)


def postcopy_package(devices: Iterable[tuple[bytes, bytes]] = ((b"timer", b"\0" * 24),)) -> bytes:
    """A PACKAGED command with its nested stream: LISTEN, device FULL sections, PING 3, RUN."""
    nested = bytes(Command(cmd=MIG_CMD_POSTCOPY_LISTEN))
    for i, (idstr, body) in enumerate(devices):
        nested += device_section(20 + i, idstr, body)
    nested += bytes(Command() / CmdPing(value=3)) + bytes(Command(cmd=MIG_CMD_POSTCOPY_RUN))
    return bytes(Command() / CmdPackaged() / nested)


@cache
def _ram_packet_class(count: int) -> type[MultifdRamPacket]:
    if count == MultifdRamPacket.page_count:
        return MultifdRamPacket
    return type(f"MultifdRamPacket{count}", (MultifdRamPacket,), {"page_count": count})


def multifd_packet(packet_num: int, normal: int, page_size: int = 4096, block: bytes = b"pc.ram",
                   flags: int = 0, zero: int = 0, offsets: list[int] | None = None) -> bytes:
    """A nocomp RAM packet (9.0+ header) with ``normal`` pages of data after it; ``offsets`` (normal then
    zero pages) default to the first pages of the block."""
    count = multifd_page_count(page_size)
    cls = _ram_packet_class(count)
    if offsets is None:
        offsets = [i * page_size for i in range(normal + zero)]
    elif len(offsets) != normal + zero:
        raise ValueError("one offset per normal and zero page")
    head = cls(flags=flags, pages_alloc=count if normal + zero else 0, normal_pages=normal, zero_pages=zero,
               next_packet_size=normal * page_size, packet_num=packet_num, ramblock=block if normal + zero else b"",
               offsets=offsets)
    return bytes(head) + bytes([packet_num & 0xFF or 1]) * (normal * page_size)


def multifd_stream(packets: int = 4, pages_per_packet: int = 128, channel_id: int = 0, page_size: int = 4096,
                   sync_every: int = 0) -> bytes:
    out = bytearray(bytes(MultifdHello(uuid=bytes(range(16)), id=channel_id)))
    for n in range(packets):
        out += multifd_packet(n + 1, pages_per_packet, page_size)
        if sync_every and (n + 1) % sync_every == 0:
            out += multifd_packet(n + 1, 0, page_size, flags=MULTIFD_FLAG_SYNC)
    return bytes(out)
