"""Outstanding postcopy page requests, matched online against pages arriving on any channel.

Only requests still waiting are kept (plus a bounded sample of served ones), so memory follows the
number of outstanding requests, never the capture size; hard caps keep a hostile capture from growing it.

Pages are matched only once postcopy is listening on the destination (POSTCOPY_LISTEN): a copy sent
during precopy was discarded and cannot serve a request. A page sent after LISTEN but before the
request was in flight and does serve it (QEMU does not send a page twice). A recovered main channel on
a new port is an alias of the paused migration's endpoint, so requests made before the pause can be
served by pages sent after the resume.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from dissectors.channels import TARGET_PAGE_SIZE


@dataclass(slots=True)
class Request:
    block: str
    addr: int
    ts: float
    connection: int        # index of the main connection whose return path asked
    served_ts: float | None = None
    served_by: int | None = None
    in_flight: bool = False    # the page had been sent before the request: when it was placed is unknown

    @property
    def latency(self) -> float | None:
        return None if self.served_ts is None else max(0.0, self.served_ts - self.ts)


class PageLedger:
    """Page requests per destination (endpoint, or the endpoint a recovery resumes)."""

    def __init__(self, page_size: int = TARGET_PAGE_SIZE, cap: int = 200_000, recent: int = 1 << 16,
                 sample: int = 10_000, late_after: float = 1.0) -> None:
        self.page_size = page_size
        self.cap = cap
        self.recent: OrderedDict[tuple[str, str, int], tuple[float, int]] = OrderedDict()
        self.recent_cap = recent
        self.sample = sample
        self.outstanding: dict[tuple[str, str, int], Request] = {}
        self.served: dict[str, list[Request]] = {}       # per destination: a bounded sample
        self.served_count: dict[str, int] = {}
        self.in_flight_count: dict[str, int] = {}
        self.late: dict[str, list[Request]] = {}         # served later than ``late_after`` (bounded)
        self.late_after = late_after
        self.listening: set[str] = set()                 # destinations in postcopy (after LISTEN)
        self.alias: dict[str, str] = {}                  # recovery endpoint -> the paused one
        self.last_listening: str | None = None
        self.dropped = 0
        self.requests = 0

    def key(self, endpoint: str) -> str:
        return self.alias.get(endpoint, endpoint)

    def listen(self, endpoint: str) -> None:
        """POSTCOPY_LISTEN on this destination: from now on pages are matched to requests."""
        ep = self.key(endpoint)
        self.listening.add(ep)
        self.last_listening = ep
        for k in [k for k in self.recent if k[0] == ep]:
            del self.recent[k]

    def resume(self, endpoint: str) -> None:
        """A recovered main channel on ``endpoint``: it continues the latest postcopy destination."""
        if endpoint not in self.listening and self.last_listening and endpoint != self.last_listening:
            self.alias[endpoint] = self.last_listening
        self.listening.add(self.key(endpoint))

    def request(self, endpoint: str, block: str, start: int, length: int, ts: float, conn: int) -> None:
        ep = self.key(endpoint)
        self.listening.add(ep)
        pages = max(1, min(512, length // self.page_size if length else 1))
        for i in range(pages):
            addr = start + i * self.page_size
            key = (ep, block, addr)
            if key in self.outstanding:
                continue
            self.requests += 1
            early = self.recent.get(key)
            if early is not None:                   # already in flight when asked for
                self._served(ep, Request(block, addr, ts, conn, early[0], early[1], in_flight=True))
                continue
            if len(self.outstanding) >= self.cap:
                self.dropped += 1
                continue
            self.outstanding[key] = Request(block, addr, ts, conn)

    def matching(self, endpoint: str) -> bool:
        """Are pages towards ``endpoint`` matched to requests now (postcopy is listening)?"""
        return self.alias.get(endpoint, endpoint) in self.listening

    def page(self, endpoint: str, block: str, addr: int, ts: float, conn: int) -> None:
        ep = self.alias.get(endpoint, endpoint)
        if ep not in self.listening:
            return
        key = (ep, block, addr - addr % self.page_size)
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
        self._served(ep, req)

    def _served(self, ep: str, req: Request) -> None:
        self.served_count[ep] = self.served_count.get(ep, 0) + 1
        if req.in_flight:
            self.in_flight_count[ep] = self.in_flight_count.get(ep, 0) + 1
        bucket = self.served.setdefault(ep, [])
        if len(bucket) < self.sample:
            bucket.append(req)
        if req.latency is not None and req.latency > self.late_after:
            late = self.late.setdefault(ep, [])
            if len(late) < self.sample:
                late.append(req)

    def waiting(self, endpoint: str) -> list[Request]:
        ep = self.key(endpoint)
        return sorted((r for (e, _, _), r in self.outstanding.items() if e == ep), key=lambda r: r.ts)
