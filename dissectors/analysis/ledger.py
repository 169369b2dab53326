"""Outstanding postcopy page requests, matched online against pages arriving on any channel.

Only requests still waiting are kept, so memory follows the number of outstanding requests, never the
capture size (and a hard cap keeps a hostile capture from growing it).
"""

from __future__ import annotations

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

    def __init__(self, page_size: int = 4096, cap: int = 200_000) -> None:
        self.page_size = page_size
        self.cap = cap
        self.outstanding: dict[tuple[str, str, int], Request] = {}
        self.served: dict[str, list[Request]] = {}     # per endpoint, bounded sample of served requests
        self.dropped = 0
        self.requests = 0

    def request(self, endpoint: str, block: str, start: int, length: int, ts: float, conn: int) -> None:
        pages = max(1, min(512, length // self.page_size if length else 1))
        for i in range(pages):
            addr = start + i * self.page_size
            key = (endpoint, block, addr)
            if key in self.outstanding:
                continue
            if len(self.outstanding) >= self.cap:
                self.dropped += 1
                continue
            self.requests += 1
            self.outstanding[key] = Request(block, addr, ts, conn)

    def page(self, endpoint: str, block: str, addr: int, ts: float, conn: int) -> None:
        if not self.outstanding:
            return
        req = self.outstanding.pop((endpoint, block, addr - addr % self.page_size), None)
        if req is None:
            return
        req.served_ts = ts
        req.served_by = conn
        bucket = self.served.setdefault(endpoint, [])
        if len(bucket) < 10_000:
            bucket.append(req)

    def waiting(self, endpoint: str) -> list[Request]:
        return sorted((r for (ep, _, _), r in self.outstanding.items() if ep == endpoint), key=lambda r: r.ts)
