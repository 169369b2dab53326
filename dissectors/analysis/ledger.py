"""Outstanding postcopy page requests, matched online against pages arriving on any channel.

Only requests still waiting are kept, so memory follows the number of outstanding requests, never the
capture size (and a hard cap keeps a hostile capture from growing it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Request:
    block: str
    addr: int
    ts: float
    connection: int        # index of the main connection whose return path asked
    served_ts: float | None = None
    served_by: int | None = None


class PageLedger:
    """Page requests per destination endpoint; pages are matched to them as they arrive."""

    def __init__(self, page_size: int = 4096, cap: int = 200_000, recent: int = 1 << 16) -> None:
        self.page_size = page_size
        self.cap = cap
        # Pages seen lately, so a request for a page already in flight counts as served by it (QEMU
        # does not send a page twice when the request finds it already sent). FIFO-bounded.
        self.recent: OrderedDict[tuple[str, str, int], tuple[float, int]] = OrderedDict()
        self.recent_cap = recent
        self.outstanding: dict[tuple[str, str, int], Request] = {}
        self.served: dict[str, list[Request]] = {}     # per endpoint, bounded sample of served requests
        self.watched: set[str] = set()      # endpoints of migrations with postcopy advised
        self.dropped = 0
        self.requests = 0

    def watch(self, endpoint: str) -> None:
        """Start matching pages for this destination endpoint (postcopy was advised on it)."""
        self.watched.add(endpoint)

    def request(self, endpoint: str, block: str, start: int, length: int, ts: float, conn: int) -> None:
        self.watched.add(endpoint)
        pages = max(1, min(512, length // self.page_size if length else 1))
        for i in range(pages):
            addr = start + i * self.page_size
            key = (endpoint, block, addr)
            if key in self.outstanding:
                continue
            early = self.recent.get(key)
            if early is not None:
                self.requests += 1
                self._served(endpoint, Request(block, addr, ts, conn, early[0], early[1]))
                continue
            if len(self.outstanding) >= self.cap:
                self.dropped += 1
                continue
            self.requests += 1
            self.outstanding[key] = Request(block, addr, ts, conn)

    def page(self, endpoint: str, block: str, addr: int, ts: float, conn: int) -> None:
        if endpoint not in self.watched:
            return
        key = (endpoint, block, addr - addr % self.page_size)
        recent = self.recent
        recent[key] = (ts, conn)
        recent.move_to_end(key)
        if len(recent) > self.recent_cap:
            recent.popitem(last=False)
        if not self.outstanding:
            return
        req = self.outstanding.pop(key, None)
        if req is None:
            return
        req.served_ts = ts
        req.served_by = conn
        self._served(endpoint, req)

    def _served(self, endpoint: str, req: Request) -> None:
        bucket = self.served.setdefault(endpoint, [])
        if len(bucket) < 10_000:
            bucket.append(req)

    def waiting(self, endpoint: str) -> list[Request]:
        return sorted((r for (ep, _, _), r in self.outstanding.items() if ep == endpoint), key=lambda r: r.ts)
