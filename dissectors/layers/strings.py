# SPDX-License-Identifier: GPL-2.0-or-later
"""Field helpers shared by the layers: QEMU's u8-length-prefixed strings (idstr, block names)."""

from __future__ import annotations

from scapy.fields import Field, FieldLenField, StrLenField


def counted_string(name: str, length_name: str, default: bytes = b"") -> tuple[Field, Field]:
    """An ``u8 length`` + ``bytes[length]`` pair, as written by ``qemu_put_counted_string``."""
    return (
        FieldLenField(length_name, None, length_of=name, fmt="B"),
        StrLenField(name, default, length_from=lambda pkt: getattr(pkt, length_name)),
    )
