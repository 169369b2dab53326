# SPDX-License-Identifier: GPL-2.0-or-later
"""Guess a channel's kind from its first bytes (what QEMU's destination would peek, and more)."""

from __future__ import annotations

from dissectors.layers.derived import (
    MIG_CMD_RECV_BITMAP,
    MULTIFD_MAGIC,
    MULTIFD_VERSION,
    QEMU_VM_COMMAND,
    QEMU_VM_FILE_MAGIC,
    RAM_FLAGS_WITH_BLOCK,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MULTIFD_FLUSH,
    TARGET_PAGE_SIZE,
    TLS_CONTENT_TYPES,
    TLS_HANDSHAKE,
)
from dissectors.layers.unpack import counted_at, struct_of

#: The first bytes of each channel kind, built from the declarations.
QEVM_MAGIC = struct_of("QemuFileHeader", "magic", "magic").pack(QEMU_VM_FILE_MAGIC)
MULTIFD_MAGIC_BYTES = struct_of("MultifdHello", "magic", "magic").pack(MULTIFD_MAGIC)
_MULTIFD = struct_of("MultifdHello", "magic", "version").pack(MULTIFD_MAGIC, MULTIFD_VERSION)
_RECOVERY = struct_of("Command", "type", "cmd").pack(QEMU_VM_COMMAND, MIG_CMD_RECV_BITMAP)
_TLS_HEAD = struct_of("TlsRecordHeader")
_WORD = struct_of("RamRecord", "addr", "flags")
#: Bytes after which a decision is always made (a RAM record word, a block name's length and name).
IDENTIFY_LIMIT = _WORD.size + 1 + 255


def _prefix_of(data: bytes, full: bytes) -> bool:
    n = min(len(data), len(full))
    return data[:n] == full[:n]


def looks_like_ram_record(b: bytes | memoryview, allow_continue: bool = False,
                          page_size: int = TARGET_PAGE_SIZE) -> bool | None:
    """Whether ``b`` starts with a RAM record: a lone EOS or MULTIFD_FLUSH word, or a record of one of
    the kinds that name a block, followed by a printable block name (unless CONTINUE is allowed and
    set). None = need more bytes."""
    if len(b) < _WORD.size:
        return None
    (word,) = _WORD.unpack_from(b, 0)
    flags = word & (page_size - 1)
    kind = flags & ~RAM_SAVE_FLAG_CONTINUE
    if kind in (RAM_SAVE_FLAG_EOS, RAM_SAVE_FLAG_MULTIFD_FLUSH):
        return word == kind
    if not kind or kind & ~RAM_FLAGS_WITH_BLOCK or kind & (kind - 1):
        return False                         # exactly one of the kinds that name a block
    if flags & RAM_SAVE_FLAG_CONTINUE:
        return allow_continue
    if len(b) < _WORD.size + 1:
        return None
    if b[_WORD.size] == 0:
        return False
    got = counted_at(b, _WORD.size, len(b))
    name = got[0] if got is not None else bytes(b[_WORD.size + 1:])
    if not all(0x20 < c < 0x7F for c in name):
        return False
    return True if got is not None else None


def identify_stream(first_bytes: bytes | bytearray | memoryview) -> str | None:
    """"main", "main-recovery", "multifd", "tls", "preempt-candidate", "unknown"; None = need more."""
    b = bytes(first_bytes[:IDENTIFY_LIMIT])
    if not b:
        return None
    final = len(b) >= IDENTIFY_LIMIT
    if b.startswith(QEVM_MAGIC):
        return "main"
    if b.startswith(_RECOVERY):
        return "main-recovery"
    if b.startswith(_MULTIFD):
        return "multifd"
    if len(b) >= _TLS_HEAD.size and b[0] in TLS_CONTENT_TYPES and b[1] == 3 and b[2] <= 4:
        if b[0] != TLS_HANDSHAKE:
            return "tls"
        if len(b) > _TLS_HEAD.size:
            return "tls"         # a handshake record (a ClientHello first on a new connection)
    candidates = [_prefix_of(b, QEVM_MAGIC), _prefix_of(b, _RECOVERY), _prefix_of(b, _MULTIFD),
                  len(b) < _TLS_HEAD.size and b[0] in TLS_CONTENT_TYPES]
    preempt = looks_like_ram_record(b)
    if preempt:
        return "preempt-candidate"
    if not final and (preempt is None or any(candidates)):
        return None
    return "unknown"
