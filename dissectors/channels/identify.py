# SPDX-License-Identifier: GPL-2.0-or-later
"""Guess a channel's kind from its first bytes (what QEMU's destination would peek, and more)."""

from __future__ import annotations

from dissectors.layers.commands import MIG_CMD_RECV_BITMAP
from dissectors.layers.main_stream import QEMU_VM_COMMAND, QEMU_VM_FILE_MAGIC, QEMU_VM_FILE_VERSION
from dissectors.layers.multifd import MULTIFD_MAGIC, MULTIFD_VERSION
from dissectors.layers.ram import (
    RAM_FLAGS_WITH_BLOCK,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    TARGET_PAGE_SIZE,
)
from dissectors.layers.tls import TLS_CONTENT_TYPES, TLS_HANDSHAKE

_QEVM = QEMU_VM_FILE_MAGIC.to_bytes(4, "big") + QEMU_VM_FILE_VERSION.to_bytes(4, "big")
_MULTIFD = MULTIFD_MAGIC.to_bytes(4, "big") + MULTIFD_VERSION.to_bytes(4, "big")
_RECOVERY = bytes([QEMU_VM_COMMAND]) + MIG_CMD_RECV_BITMAP.to_bytes(2, "big")
_EOS_WORD = RAM_SAVE_FLAG_EOS.to_bytes(8, "big")
#: Bytes after which a decision is always made.
IDENTIFY_LIMIT = 8 + 1 + 255


def _prefix_of(data: bytes, full: bytes) -> bool:
    n = min(len(data), len(full))
    return data[:n] == full[:n]


def _looks_like_preempt(b: bytes) -> bool | None:
    """A RAM record header naming its block (or a lone EOS). None = need more bytes."""
    if len(b) < 8:
        return None
    if b[:8] == _EOS_WORD:
        return True
    word = int.from_bytes(b[:8], "big")
    flags = word & (TARGET_PAGE_SIZE - 1)
    kind = flags & ~RAM_SAVE_FLAG_CONTINUE
    if flags & RAM_SAVE_FLAG_CONTINUE or not kind or kind & ~RAM_FLAGS_WITH_BLOCK or kind & (kind - 1):
        return False
    if len(b) < 9:
        return None
    n = b[8]
    if n == 0:
        return False
    name = b[9:9 + n]
    if not all(0x20 < c < 0x7F for c in name):
        return False
    return True if len(name) == n else None


def identify_stream(first_bytes: bytes | bytearray | memoryview) -> str | None:
    """"main", "main-recovery", "multifd", "tls", "preempt-candidate", "unknown"; None = need more."""
    b = bytes(first_bytes[:IDENTIFY_LIMIT])
    if not b:
        return None
    final = len(b) >= IDENTIFY_LIMIT
    if len(b) >= 4 and b[:4] == _QEVM[:4]:
        return "main"
    if len(b) >= 3 and b[:3] == _RECOVERY:
        return "main-recovery"
    if len(b) >= 8 and b[:8] == _MULTIFD:
        return "multifd"
    if len(b) >= 5 and b[0] in TLS_CONTENT_TYPES and b[1] == 3 and b[2] <= 4:
        if b[0] != TLS_HANDSHAKE:
            return "tls"
        if len(b) >= 6:
            return "tls" if b[5] == 1 else "tls"
    candidates = [_prefix_of(b, _QEVM[:4]), _prefix_of(b, _RECOVERY), _prefix_of(b, _MULTIFD),
                  len(b) < 5 and b[0] in TLS_CONTENT_TYPES]
    preempt = _looks_like_preempt(b)
    if preempt:
        return "preempt-candidate"
    if not final and (preempt is None or any(candidates)):
        return None
    return "unknown"
