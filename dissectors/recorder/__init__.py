# SPDX-License-Identifier: GPL-2.0-or-later
"""recorder: drives real QEMU migrations on loopback and captures them (``migshark record``)."""

from .command import add_arguments, run

__all__ = ["add_arguments", "run"]
