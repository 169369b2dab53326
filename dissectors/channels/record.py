# SPDX-License-Identifier: GPL-2.0-or-later
"""The one event type every channel parser emits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scapy.packet import Packet


@dataclass(slots=True)
class Record:
    """A complete record (or a report: malformed, gap, truncated, opaque) at a stream offset.

    ``length`` counts every byte of the record, payload included. ``ts`` is the capture time of the
    feed that completed it. ``raw`` keeps the bytes of rare, small records (commands, section headers,
    return-path messages, hellos) so that ``layer()`` can build the Scapy packet on demand.
    """

    kind: str
    offset: int
    length: int
    ts: float
    fields: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None

    def layer(self) -> Packet | None:
        """The Scapy dissection of ``raw`` (None when the record kept no bytes)."""
        if self.raw is None:
            return None
        from dissectors.channels.kinds import KINDS

        kind = KINDS.get(self.kind)
        cls = kind.layer if kind is not None else None
        return cls(self.raw) if cls is not None else None
