# SPDX-License-Identifier: GPL-2.0-or-later
"""Scapy declarations of every QEMU migration wire structure (the single spelling of each layout).

Knows nothing of captures or files. ``structs`` derives the fast parsers' formats from them
(``struct_of``; ``named`` unpacks into named tuples with the layer's own field names).
"""

from dissectors.layers import commands, main_stream, multifd, ram, return_path, tls
from dissectors.layers.structs import fixed_size, layout_of, struct_of

__all__ = ["commands", "main_stream", "multifd", "ram", "return_path", "tls", "fixed_size", "layout_of",
           "struct_of"]
