"""Pages a QEMU 7.2 multifd source sent twice: the race fixed in 8.0 by ddbe628c97c3.

In 7.2 ``multifd_queue_page`` hands a full batch to a channel and then tests ``pages->block != block``
on the batch it just gave away; when the channel thread has already cleared ``block``, the same page is
queued again as the first page of the next batch. ``ram_save_multifd_page`` counts it once, so the wire
carries more normal pages than ``query-migrate`` reports (docs/research/multifd-72-counts.md).

Signature in a capture: packet ``n`` is full (``normal_pages == pages_alloc``) and its last page is the
first page of packet ``n + 1``, same RAMBlock. 7.2 also folds a SYNC request into a channel's pending
page job and then sends that job under the SYNC's packet number, so the repeat can open a SYNC packet
``m`` a few numbers on while number ``n + 1`` never goes out (research note, "43 -> 49"): that counts
too, once the capture has ended without ``n + 1``. Packet numbers are global to a migration (keyed by
its destination endpoint and multifd UUID, so that the two legs through a relay stay apart) and the two
packets travel on different channels, so packets are matched online across
channels inside a sliding window of packet numbers: memory is bounded per migration, never by capture
size.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

WINDOW = 4096          # packet numbers kept behind the highest seen, per migration
EXAMPLES = 5           # repeats kept as evidence, per migration
RENUMBERED = 16        # how far on a renumbered successor (a SYNC packet) may be
CANDIDATES = 1000      # renumbered successors waiting for the end of the capture, per migration


class _Packet(NamedTuple):
    block: str
    first: int
    last: int
    full: bool
    sync: bool
    ts: float


@dataclass
class _Migration:
    recent: dict[int, _Packet] = field(default_factory=dict)
    highest: int = -1
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    renumbered: dict[int, tuple[int, str, int, float]] = field(default_factory=dict)  # n -> (m, block, offset, ts)


class RepeatedPages:
    """Collects, per migration (destination endpoint, multifd UUID), the pages sent twice by the 7.2 race."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], _Migration] = {}

    def packet(self, key: tuple[str, str], num: int, block: str, alloc: int, normal: int, first: int, last: int,
               ts: float, sync: bool = False) -> None:
        """One multifd RAM packet with ``normal`` > 0 pages (``first``/``last``: their offsets)."""
        m = self._by_key.setdefault(key, _Migration())
        this = _Packet(block, first, last, normal == alloc, sync, ts)
        recent = m.recent
        m.renumbered.pop(num - 1, None)          # n + 1 did go out: its n had no renumbered successor
        before = recent.get(num - 1)
        if before is not None and before.full and before.block == block and before.last == first:
            self._found(m, num - 1, num, block, first, ts)
        elif sync and len(m.renumbered) < CANDIDATES:
            for n in range(num - 2, max(num - RENUMBERED, -1) - 1, -1):
                p = recent.get(n)
                if p is not None and p.full and p.block == block and p.last == first and n + 1 not in recent:
                    m.renumbered[n] = (num, block, first, ts)
                    break
        after = recent.get(num + 1)
        if after is not None and this.full and after.block == block and after.first == last:
            self._found(m, num, num + 1, block, last, ts)
        elif this.full:
            for n in range(num + 2, num + RENUMBERED + 1):
                p = recent.get(n)
                if (p is not None and p.sync and p.block == block and p.first == last and num + 1 not in recent
                        and len(m.renumbered) < CANDIDATES):
                    m.renumbered[num] = (n, block, last, p.ts)
                    break
        recent[num] = this
        if num > m.highest:
            m.highest = num
        if len(recent) > 2 * WINDOW:
            floor = m.highest - WINDOW
            m.recent = {n: p for n, p in recent.items() if n >= floor}

    @staticmethod
    def _found(m: _Migration, num: int, successor: int, block: str, offset: int, ts: float) -> None:
        m.count += 1
        if len(m.examples) < EXAMPLES:
            m.examples.append({"packets": [num, successor], "block": block, "offset": offset,
                               "time": round(ts, 6)})

    def __len__(self) -> int:
        """Migration keys held."""
        return len(self._by_key)

    def retire(self, keys: Collection[tuple[str, str]]) -> None:
        """The migrations with these keys were judged for good and dropped (a live view,
        ``analysis.live``): their window of recent packets goes (up to ``2 * WINDOW`` packets each, a few
        hundred KB on a real migration), and so does the key itself when it found no repeat. A key that
        did keeps its count, examples and pending successors (at most ``EXAMPLES`` + ``CANDIDATES``
        small entries), so that a later migration on the same key sums them as ``analyze`` does."""
        for key in keys:
            m = self._by_key.get(key)
            if m is None:
                continue
            if m.count or m.renumbered:
                m.recent = {}
            else:
                del self._by_key[key]

    def summary(self, keys: set[tuple[str, str]]) -> dict[str, Any] | None:
        """The repeats of the migrations with these (endpoint, multifd UUID) keys as if the capture ended
        now (pending renumbered packets count), or None. Changes nothing: a live view asks it repeatedly."""
        found: list[tuple[int, list[dict[str, Any]]]] = []
        for key in sorted(keys):
            m = self._by_key.get(key)
            if m is None:
                continue
            count = m.count + len(m.renumbered)
            examples = list(m.examples)
            for n, (succ, block, offset, ts) in sorted(m.renumbered.items()):
                if len(examples) >= EXAMPLES:
                    break
                examples.append({"packets": [n, succ], "block": block, "offset": offset, "time": round(ts, 6)})
            if count:
                found.append((count, examples))
        if not found:
            return None
        return {"count": sum(c for c, _ in found),
                "examples": [e for _, ex in found for e in ex][:EXAMPLES]}
