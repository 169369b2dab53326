# SPDX-License-Identifier: GPL-2.0-or-later
"""Scapy declarations of every QEMU migration wire structure (the single spelling of each layout).

Knows nothing of captures or files. ``structs`` derives the fast parsers' formats from them
(``struct_of``; ``named`` unpacks into named tuples with the layer's own field names). ``derived``, written
from them by ``python -m dissectors.layers.derive``, holds the same as plain data, and ``unpack`` builds the
layouts from it, so the fast parsers do not import Scapy. The submodules load when first used
(``dissectors.layers.ram``, or ``from dissectors.layers import ram``): importing ``derived`` or ``unpack``
does not pull the Scapy layers in.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["commands", "main_stream", "multifd", "ram", "return_path", "tls", "fixed_size", "layout_of",
           "struct_of"]

_STRUCTS = ("fixed_size", "layout_of", "struct_of")


def __getattr__(name: str) -> Any:
    if name in _STRUCTS:
        return getattr(importlib.import_module("dissectors.layers.structs"), name)
    if name in __all__:
        return importlib.import_module(f"dissectors.layers.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
