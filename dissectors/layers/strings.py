# SPDX-License-Identifier: GPL-2.0-or-later
"""Field helpers shared by the layers: QEMU's u8-length-prefixed strings (idstr, block names)."""

from __future__ import annotations

import struct

from scapy.fields import Field, FieldLenField, StrLenField

from dissectors.layers.unpack import counted_at


def counted_string(name: str, length_name: str, default: bytes = b"") -> tuple[Field, Field]:
    """An ``u8 length`` + ``bytes[length]`` pair, as written by ``qemu_put_counted_string``."""
    return (
        FieldLenField(length_name, None, length_of=name, fmt="B"),
        StrLenField(name, default, length_from=lambda pkt: getattr(pkt, length_name)),
    )


#: The length prefix of a counted string, derived from the declaration above.
COUNTED_LENGTH = struct.Struct(">" + counted_string("s", "n")[0].fmt.lstrip("!<>=@"))
assert COUNTED_LENGTH.size == 1, "counted_at reads the length prefix as one byte"

__all__ = ["COUNTED_LENGTH", "counted_at", "counted_string"]

