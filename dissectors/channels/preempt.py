# SPDX-License-Identifier: GPL-2.0-or-later
"""Postcopy-preempt channel parser: bare RAM records (no header, no sections), EOS in 7.2-style mode."""

from __future__ import annotations

from dissectors.channels.engine import State
from dissectors.channels.ram_walk import RamWalker


class PreemptParser(RamWalker):
    """Emits ram.* records; its CONTINUE state is its own (QEMU tracks the last block per channel)."""

    def _initial_state(self) -> State:
        return self._st_ram
