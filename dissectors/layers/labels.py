# SPDX-License-Identifier: GPL-2.0-or-later
"""People's labels for the fields of the layers (``dissect -V``), derived from the declarations.

A field's label is its name in words (``block_len`` -> "Block length", ``idstr`` -> "ID string"); a layer
whose field name alone would be ambiguous next to another layer of the same record says what it means in
its ``field_labels`` class attribute (``{"len": "Page range length"}``), beside its ``fields_desc``.
"""

from __future__ import annotations

from scapy.packet import Packet

#: Words of field names spelled out.
WORDS = {
    "len": "length", "id": "ID", "idstr": "ID string", "idlen": "ID length", "cmd": "command", "num": "number",
    "addr": "address", "uuid": "UUID", "cap": "capability", "caps": "capabilities", "ram": "RAM", "tls": "TLS",
    "msg": "message", "sz": "size",
}


def name_label(name: str) -> str:
    """``name`` in words, first letter upper case."""
    words = [WORDS.get(w, w) for w in name.strip("_").split("_") if w]
    text = " ".join(words) or name
    return text[:1].upper() + text[1:]


def field_label(layer: type[Packet], name: str) -> str:
    """The label of field ``name`` of ``layer``: its class's ``field_labels`` (nearest in the class
    hierarchy) or the name in words."""
    for cls in layer.__mro__:
        labels = cls.__dict__.get("field_labels")
        if labels and name in labels:
            return str(labels[name])
    return name_label(name)
