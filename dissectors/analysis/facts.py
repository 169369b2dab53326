"""Per-connection facts: the analysis fold over one connection's records.

The channels room (``ChannelSink``) identifies the connection's channels and parses them; this keeps
only what the analyser needs of the records (the multifd hello, commands with times, counts, malformed
records, pages into the ledger), so memory stays bounded whatever the capture size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dissectors.analysis.ledger import PageLedger
from dissectors.analysis.repeats import RepeatedPages
from dissectors.analysis.tls_shape import NO_SHAPE, TlsShape
from dissectors.channels import TARGET_PAGE_SIZE, ChannelSink, Record
from dissectors.channels.ram_walk import expand_zero_run
from dissectors.channels.sink import Direction
from dissectors.tcp import Connection

if TYPE_CHECKING:
    from dissectors.tls import TlsStatus

EVENT_LIMIT = 5000             # commands / return-path events kept per connection
MALFORMED_LIMIT = 50

# Records worth keeping with their time for the report and the timeline.
KEPT = {
    "main.header", "main.config", "main.cmd", "main.eof", "main.vmdesc", "main.section_start",
    "rp.shut", "rp.pong", "rp.recv_bitmap", "rp.resume_ack", "rp.switchover_ack",
    "multifd.hello", "truncated", "gap", "opaque",
}


_NONE: tuple[()] = ()


class ConnectionFacts:
    """What the analysis knows of one connection; ``sink`` is the TCP sink that feeds it."""

    __slots__ = ("conn", "ledger", "repeats", "endpoint", "sink", "events", "malformed", "requests_seen", "hello",
                 "first_record_ts", "features", "last_page_ts", "page_records", "tls", "tls_alerts", "tls_shape")

    def __init__(self, conn: Connection, ledger: PageLedger, page_size: int = TARGET_PAGE_SIZE,
                 repeats: RepeatedPages | None = None) -> None:
        self.conn = conn
        self.ledger = ledger
        self.repeats = repeats
        self.endpoint = f"{conn.server[0]}:{conn.server[1]}"
        self.sink = ChannelSink(self.take, page_size, self._last_data_ts)
        # Lists and the feature set start as one shared empty tuple and are made on first use: a capture
        # may hold 100,000s of connections that never carry a record.
        self.events: list[Record] = _NONE  # type: ignore[assignment]
        self.malformed: list[tuple[int, Record]] = _NONE  # type: ignore[assignment]   # (direction, record)
        self.requests_seen = 0
        self.hello: dict[str, Any] | None = None
        self.first_record_ts: float | None = None
        self.features: set[str] = _NONE  # type: ignore[assignment]
        self.last_page_ts: float | None = None
        self.page_records = 0
        self.tls: TlsStatus | None = None       # set when a key log was given (decrypted or not)
        self.tls_alerts: list[tuple[int, float]] = _NONE  # type: ignore[assignment]   # (direction, time) of TLS alerts in clear
        # Record sizes and times when TLS contents stay hidden; one shared empty shape until a TLS record.
        self.tls_shape: TlsShape = NO_SHAPE

    def release(self) -> None:
        """Break the cycle with the channel sink (it calls back into these facts) once the connection is
        retired: the facts stay readable, their memory goes back as soon as nothing holds them."""
        self.sink.on_records = None
        self.sink.last_data_ts = None

    def _last_data_ts(self, direction: int) -> float | None:
        return self.conn.halves[direction].last_data_ts

    def _feature(self, name: str) -> None:
        if not self.features:
            self.features = set()
        self.features.add(name)

    @property
    def kind(self) -> str | None:
        """The channel kind of the client's stream (``identify_stream``), None until known."""
        return self.sink.kind

    @property
    def dirs(self) -> tuple[Direction, Direction]:
        """Per direction: its kind, first bytes and arrival series (the channel sink's)."""
        return self.sink.dirs

    @property
    def magic(self) -> bytes | None:
        return self.sink.magic

    @property
    def counts(self) -> dict[str, int]:
        """Records per kind (both directions, counted by the parsers) and page requests seen."""
        out = dict(self.sink.counts)
        if self.requests_seen:
            out["rp.req_pages.seen"] = self.requests_seen
        return out

    def channel_kind(self, direction: int) -> str:
        return self.sink.channel_kind(direction)

    @property
    def encrypted(self) -> bool:
        """The connection runs TLS (its records were decrypted, or it shows as ``kind == "tls"``)."""
        return self.kind == "tls" or (self.tls is not None and self.tls.tls)

    @property
    def tls_done_ts(self) -> float | None:
        """When the server completed this connection's TLS handshake (the client's Finished arrived): read
        from the decrypted handshake, else from the record sizes (``TlsShape``); None if unknown."""
        if self.tls is not None and self.tls.handshake_done_ts is not None:
            return self.tls.handshake_done_ts
        return self.tls_shape.client_finished_ts

    @property
    def decrypted(self) -> bool:
        return self.tls is not None and self.tls.decrypted

    @property
    def first_write_ts(self) -> float | None:
        """When the source first wrote on the channel what its role reads: its first payload byte on plain
        TCP; under TLS its first application data (decrypted: its first plaintext; hidden: its first
        application record after its Finished), not the ClientHello it sends as soon as it connects."""
        if not self.encrypted:
            return self.conn.first_data_ts[0]
        if self.tls is not None and self.tls.first_plaintext_ts[0] is not None:
            return self.tls.first_plaintext_ts[0]
        return self.tls_shape.sides[0].first_ts

    # -- records ----------------------------------------------------------------------------------
    def take(self, direction: int, records: list[Record]) -> None:
        for rec in records:
            kind = rec.kind
            if self.first_record_ts is None and direction == 0:
                self.first_record_ts = rec.ts
            if kind == "ram.page" or kind == "ram.zero":
                self.last_page_ts = rec.ts
                f = rec.fields
                if "pages" in f:          # a zero-page run: its pages matter only to a listening ledger
                    self.page_records += f["pages"]
                    if self.ledger.matching(self.endpoint):
                        for one in expand_zero_run(rec):
                            self.ledger.page(self.endpoint, f["block"], one.fields["addr"], rec.ts, self.conn.index)
                    continue
                self.page_records += 1
                self.ledger.page(self.endpoint, f.get("block", ""), f.get("addr", 0), rec.ts, self.conn.index)
                continue
            if kind == "multifd.packet" or kind == "multifd.sync":
                f = rec.fields
                if f.get("zero_pages"):
                    self._feature("zero_pages")
                normal = f.get("normal_pages")
                if f.get("next_packet_size_ignored") and not normal:
                    self._feature("stale_next_packet_size")
                if normal and self.repeats is not None and self.hello is not None:
                    self.repeats.packet((self.endpoint, self.hello["uuid"]), f["packet_num"], f["block"],
                                        f["pages_alloc"], normal, f["first_offset"], f["last_offset"], rec.ts,
                                        kind == "multifd.sync")
                self.last_page_ts = rec.ts
                continue
            if kind == "ram.multifd_flush":
                self._feature("multifd_flush")
                continue
            if kind == "rp.req_pages":
                f = rec.fields
                self.ledger.request(self.endpoint, f.get("block") or "", f.get("start", 0), f.get("len", 0),
                                    rec.ts, self.conn.index)
                self.requests_seen += 1
                continue
            if kind == "multifd.hello":
                self.hello = dict(rec.fields)
            if kind == "main.cmd":
                cmd = rec.fields.get("cmd")
                if cmd == "SWITCHOVER_START":
                    self._feature("switchover_start")
                elif cmd == "POSTCOPY_LISTEN":
                    self.ledger.listen(self.endpoint)
                elif cmd == "RECV_BITMAP":
                    self.ledger.resume(self.endpoint)
            if kind == "tls.record":
                if rec.fields.get("content_type") == "alert":
                    if self.tls_shape.protected_close(direction):
                        continue        # TLS 1.2: most likely a close_notify after the data (tls_shape.py)
                    if not self.tls_alerts:
                        self.tls_alerts = []
                    if len(self.tls_alerts) < MALFORMED_LIMIT:
                        self.tls_alerts.append((direction, rec.ts))
                else:
                    if self.tls_shape is NO_SHAPE:
                        self.tls_shape = TlsShape()
                    self.tls_shape.take(direction, rec)
                continue
            if kind == "malformed":
                if not self.malformed:
                    self.malformed = []
                if len(self.malformed) < MALFORMED_LIMIT:
                    self.malformed.append((direction, rec))
                continue
            if kind in KEPT and len(self.events) < EVENT_LIMIT:
                if not self.events:
                    self.events = []
                self.events.append(rec)

    # -- queries ----------------------------------------------------------------------------------
    def commands(self, name: str | None = None) -> list[Record]:
        return [r for r in self.events if r.kind == "main.cmd" and (name is None or r.fields.get("cmd") == name)]

    def first_event(self, kind: str, **match: Any) -> Record | None:
        for r in self.events:
            if r.kind == kind and all(r.fields.get(k) == v for k, v in match.items()):
                return r
        return None

    def client_sent(self) -> int:
        return self.conn.bytes[0]

    def wrote(self, direction: int) -> bool:
        """Did this side send migration data? Under decrypted TLS, application data only: both sides of
        every TLS connection write during the handshake."""
        if self.decrypted:
            assert self.tls is not None
            return self.tls.plaintext_bytes[direction] > 0
        return self.conn.bytes[direction] > 0

    def server_sent(self) -> int:
        return self.conn.bytes[1]
