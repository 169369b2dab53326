"""``TlsStreamSink``: a TCP stream sink that decrypts a TLS connection for the sink behind it.

The client's first bytes decide: a TLS handshake record starts TLS mode, anything else passes every call
through unchanged (skip windows included). In TLS mode the ClientHello's random is looked up in the key
log and the ServerHello read: with secrets and a version and suite that are decrypted, the inner sink gets
each direction's application data as a plaintext stream (its own offsets from 0); otherwise (no secrets,
TLS 1.1 or older, a TLS 1.2 CBC suite) it gets the ciphertext unchanged, as if there were no key log, so
the record layer can still be read. Whatever cannot
be decrypted (a gap, a record failing authentication, a missing secret) is in ``status.problems`` and
reaches the inner sink as a gap, so nothing after it is read as if it followed on.

Skip windows: the inner sink's (``data`` returning k) are kept in plaintext offsets and given to the TLS
state, which then frames rather than decrypts the records wholly inside one and says which ciphertext
it no longer needs: ``data`` returns that as this sink's own window, so the TCP room
skips those segments as it does for a plain stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dissectors.layers.derived import TLS_HANDSHAKE, TLS_VERSIONS
from dissectors.tls.connection import Event, HandshakeDone, Plaintext, TlsConnection, TlsProblem
from dissectors.tls.keylog import KeyLog

#: Bytes held while the ClientHello is incomplete (then the connection is passed through as it is).
HOLD_LIMIT = 1 << 16
DIRECTION_NAMES = ("client to server", "server to client")


@dataclass
class TlsStatus:
    tls: bool = False                   # the connection starts with a TLS handshake record
    decrypted: bool = False             # the key log had its secrets and the suite is supported
    version: str | None = None
    cipher: str | None = None
    client_random: str | None = None
    plaintext_bytes: list[int] = field(default_factory=lambda: [0, 0])
    handshake_done_ts: float | None = None    # when the client's Finished arrived (the server completed)
    first_plaintext_ts: list[float | None] = field(default_factory=lambda: [None, None])  # first app data
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"decrypted": self.decrypted, "version": self.version, "cipher": self.cipher,
                "client_random": self.client_random, "plaintext_bytes": list(self.plaintext_bytes),
                "problems": list(self.problems)}


class TlsStreamSink:
    """StreamSink wrapper: ``inner`` sees plaintext (TLS with secrets) or the bytes as they are."""

    def __init__(self, inner: Any, keylog: KeyLog, skip_unread: bool = True) -> None:
        self.inner = inner
        #: Records whose plaintext the inner sink skips are framed, not decrypted (their tags unchecked);
        #: False decrypts and authenticates every record.
        self.skip_unread = skip_unread
        self.keylog = keylog
        self.status = TlsStatus()
        self.mode: str | None = None          # None (undecided), "hold" (TLS, ClientHello pending), "plain", "tls"
        self._conn: TlsConnection | None = None
        self._held: list[tuple[str, int, int, Any, float, str]] = []   # calls made while undecided
        self._held_bytes = 0
        self._held_events: list[Event] = []    # what the TLS state said while the hellos were awaited
        self._out = [0, 0]                     # plaintext offsets handed to inner
        self._broken_at: list[int | None] = [None, None]   # ciphertext offset where decryption stopped
        self._ended = 0                        # directions ended (TLS state is dropped after both)

    # -- StreamSink -----------------------------------------------------------------------------------
    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int | None:
        if self.mode == "tls":                 # the hot path: one call per segment
            conn = self._conn
            assert conn is not None
            d = conn.dirs[direction]
            buf = d.buf
            if len(buf) + len(data) < d.need and offset == d.offset + len(buf):
                buf += data                        # inside a record (``conn.feed``'s first step, inlined)
                return 0
            events = conn.feed(direction, data, offset)
            while events:
                self._events(events, ts)
                events = conn.resume(direction) if d.paused else None   # with the inner sink's new window
            skip = d.offset + len(buf) - offset - len(data)   # ``conn.want(direction)``, inlined
            if skip > 0:
                return skip
            return len(buf) - d.need if d.need > len(buf) else 0   # the rest of the record in one piece
        if self.mode == "plain":
            return self.inner.data(direction, offset, data, ts)
        if self.mode is None:
            if direction == 1:
                self._hold("data", direction, offset, bytes(data), ts)
                return 0
            if len(data) >= 2 and not (data[0] == TLS_HANDSHAKE and data[1] == 3):
                return self._go_plain(("data", direction, offset, data, ts, ""))
            if len(data) < 2 and not self._held_bytes and data and data[0] != TLS_HANDSHAKE:
                return self._go_plain(("data", direction, offset, data, ts, ""))
            self.mode = "hold"
            self.status.tls = True
            self._conn = TlsConnection(self.keylog)
            self._conn.windows = True
            self._conn.skip_unread = self.skip_unread
            for call, d, _, value, _, _ in self._held:      # the server's bytes that came before
                if call == "data":
                    self._conn.feed(d, value)
        # "hold": feed the TLS state until the ClientHello is known, keeping the calls to replay
        self._hold("data", direction, offset, bytes(data), ts)
        conn = self._conn
        assert conn is not None
        self._held_events += conn.feed(direction, data)
        if conn.client_random is not None:
            self.status.client_random = conn.client_random.hex()
            if not conn.keys_known:
                self.status.problems.append(f"the key log has no secrets for this connection (client random "
                                            f"{self.status.client_random[:16]}...): passed through encrypted")
                return self._go_plain(None)
            if conn.version is not None and conn.suite is None:
                # the ServerHello names what is not decrypted: the record layer is still there to read
                self._describe(conn)
                for ev in self._held_events:
                    if isinstance(ev, TlsProblem):
                        self.status.problems.append(f"{ev.why}: passed through encrypted")
                        break
                return self._go_plain(None)
            if conn.version is not None or self._held_bytes > HOLD_LIMIT:
                self._start_decrypting(ts)
        elif self._held_bytes > HOLD_LIMIT:
            self.status.problems.append("no complete ClientHello in the first bytes: passed through encrypted")
            return self._go_plain(None)
        return 0

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        if self.mode == "tls":
            assert self._conn is not None
            self._events(self._conn.gap(direction, offset), ts)
            return
        if self.mode in (None, "hold"):
            if self.mode == "hold":
                self.status.problems.append(f"bytes missing before {self._awaited()} completed: passed through "
                                            "encrypted")
            self._go_plain(("gap", direction, offset, length, ts, ""))
            return
        self.inner.gap(direction, offset, length, ts)

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        if self.mode == "tls":
            assert self._conn is not None
            broken_before = self._broken_at[direction] is not None
            self._events(self._conn.finish(direction, offset), ts)
            plain = self._conn.dirs[direction].plain      # records skipped since the last plaintext count
            self._out[direction] = max(self._out[direction], plain)
            self.status.plaintext_bytes[direction] = max(self.status.plaintext_bytes[direction], plain)
            stopped = self._broken_at[direction]
            # A stream that ends inside a TLS record (a source that shut its socket mid-write) ends the
            # plaintext there: the inner parser sees its last record cut short, as on a plain stream; only a
            # break earlier on (missing bytes, a bad tag) leaves unreadable bytes to pass on as a gap.
            if stopped is not None and offset > stopped and broken_before:
                self.inner.gap(direction, self._out[direction], offset - stopped, ts)
                self._out[direction] += offset - stopped
            self.inner.end(direction, self._out[direction], ts, how)
            self._ended += 1
            if self._ended == 2:
                self._conn = None       # both directions over: the keys, ciphers and buffers go now
            return
        if self.mode in (None, "hold"):
            if self.mode == "hold":
                self.status.problems.append(f"the connection ended before {self._awaited()} completed")
            self._go_plain(("end", direction, offset, 0, ts, how))
            return
        self.inner.end(direction, offset, ts, how)

    # -- modes ----------------------------------------------------------------------------------------
    def _hold(self, call: str, direction: int, offset: int, data: bytes, ts: float) -> None:
        self._held.append((call, direction, offset, data, ts, ""))
        self._held_bytes += len(data)

    def _go_plain(self, now: tuple[str, int, int, Any, float, str] | None) -> int | None:
        """Pass everything through from here: replay what was held, then ``now``."""
        self.mode = "plain"
        self._conn = None
        held, self._held = self._held, []
        if now is not None:
            held.append(now)
        result: int | None = 0
        for call, direction, offset, value, ts, how in held:
            if call == "data":
                result = self.inner.data(direction, offset, value, ts)
            elif call == "gap":
                self.inner.gap(direction, offset, value, ts)
            else:
                self.inner.end(direction, offset, ts, how)
        return result if now is not None and now[0] == "data" else 0

    def _awaited(self) -> str:
        return "the ServerHello" if self._conn is not None and self._conn.client_random is not None \
            else "its ClientHello"

    def _start_decrypting(self, ts: float) -> None:
        self.mode = "tls"
        self._held = []
        self.status.decrypted = True
        events, self._held_events = self._held_events, []
        self._events(events, ts)
        conn = self._conn
        assert conn is not None
        for direction in (0, 1):            # what waited behind a plaintext while the hellos were awaited
            while conn.dirs[direction].paused:
                self._events(conn.resume(direction), ts)

    def _describe(self, conn: TlsConnection) -> None:
        if conn.suite is not None:
            self.status.cipher = conn.suite.name
        if conn.version is not None:
            self.status.version = TLS_VERSIONS.get(conn.version, hex(conn.version))

    def _events(self, events: list[Event], ts: float) -> None:
        conn = self._conn
        assert conn is not None
        if self.status.cipher is None or self.status.version is None:
            self._describe(conn)
        for ev in events:
            if isinstance(ev, HandshakeDone):
                if self.status.handshake_done_ts is None:
                    self.status.handshake_done_ts = ts
            elif isinstance(ev, Plaintext):
                d = ev.direction
                data = ev.data
                if self.status.first_plaintext_ts[d] is None and len(data):
                    self.status.first_plaintext_ts[d] = ts
                at = ev.offset                     # records nobody reads were skipped before it
                self._out[d] = end = at + len(data)
                self.status.plaintext_bytes[d] = end
                state = conn.dirs[d]
                if end <= state.wanted:            # wholly inside the inner sink's skip window
                    continue
                if at < state.wanted:              # delivered from the window's end, as TCP does
                    data = memoryview(data)[state.wanted - at:]
                    at = state.wanted
                skip = self.inner.data(d, at, data, ts)
                if skip:
                    state.wanted = end + skip
            else:
                if self._broken_at[ev.direction] is None:
                    self._broken_at[ev.direction] = ev.offset
                if not conn.keys_known or conn.suite is None:
                    self.status.decrypted = False
                self.status.problems.append(f"{DIRECTION_NAMES[ev.direction]}, ciphertext offset {ev.offset}: "
                                            f"{ev.why}")
