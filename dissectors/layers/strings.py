# SPDX-License-Identifier: GPL-2.0-or-later
"""Field helpers shared by the layers: QEMU's u8-length-prefixed strings (idstr, block names)."""

from __future__ import annotations

import struct
from typing import Any

from scapy.fields import Field, FieldLenField, StrLenField


def counted_string(name: str, length_name: str, default: bytes = b"") -> tuple[Field, Field]:
    """An ``u8 length`` + ``bytes[length]`` pair, as written by ``qemu_put_counted_string``."""
    return (
        FieldLenField(length_name, None, length_of=name, fmt="B"),
        StrLenField(name, default, length_from=lambda pkt: getattr(pkt, length_name)),
    )


#: The length prefix of a counted string, derived from the declaration above.
COUNTED_LENGTH = struct.Struct(">" + counted_string("s", "n")[0].fmt.lstrip("!<>=@"))
assert COUNTED_LENGTH.size == 1, "counted_at reads the length prefix as one byte"


def counted_at(buf: Any, pos: int, end: int) -> tuple[bytes, int] | None:
    """Read a counted string at ``buf[pos]``: ``(bytes, position after it)``, or None when it continues
    past ``end``. The one reader of the layout :func:`counted_string` declares."""
    if pos >= end:
        return None
    stop = pos + 1 + buf[pos]
    if stop > end:
        return None
    return bytes(buf[pos + 1:stop]), stop
