"""Demultiplex TCP segments into connections and feed each direction's reassembler (sans-IO).

The tracker takes one segment shape, the *keyed* segment ``(key, ts, seq, flags, payload, missing)``
(the capture reader's ``Capture.keyed_segments()``; ``capture.KeyedSegment`` names the fields):

- ``key`` is ``src + dst + be16 sport + be16 dport`` in one ``bytes`` (12 bytes for IPv4, 36 for IPv6),
  what :func:`segment_key` builds from a 4-tuple: one object to hash per segment;
- ``ts`` the capture time, ``seq`` the raw 32-bit sequence number, ``flags`` the TCP flag bits;
- ``payload`` the captured TCP payload (a memoryview into the capture, or bytes) and ``missing`` the
  payload bytes the IP header announces but the capture did not keep (snaplen cut).

Connections are found by ``key`` in one dict holding both directions' keys of every connection.

Fast path (the loop of :meth:`TcpTracker.feed_keyed`, inlined by hand: it runs once per segment of the
capture): a known key, the segment's sequence number equal to the one expected, no SYN/FIN/RST, nothing
cut by the snaplen and nothing buffered out of order. The counters are bumped and the payload goes
straight to ``sink.data``, unless it lies wholly inside the sink's skip window
(``HalfStream.skip_until``: one more integer compare). Everything else (new connections, handshakes,
retransmissions, reordering, cut segments, FIN/RST) takes :meth:`TcpTracker._slow`.

Runs (:meth:`TcpTracker.feed_coalesced`): the capture room's compiled ``coalesce`` hands a run of in-order
payload segments of one direction (same flags, no SYN/FIN/RST, nothing cut), or of its acknowledgments
without payload, as one entry whose ``missing``
is ``(payloads, times, ends, before, order)`` (see ``_pcapscan.c``). The segments of a run lying wholly
inside the sink's skip window are accounted for in one step (counters, offsets, times, the retransmission
tail: the same values as one by one); every segment that is delivered or leaves the fast path is handled
alone, with its own time, and only once every segment before it in the capture has been (``before`` and
``order`` say where it was; a run waits in a heap meanwhile). So the sinks see exactly the calls, in exactly
the order and with exactly the times, that segment-by-segment feeding gives.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Sequence
from heapq import heappop, heappush
from typing import Any

from .connection import (
    EPHEMERAL_PORT_MIN,
    ROLE_FIRST_PACKET,
    ROLE_PORT,
    ROLE_SYN,
    ROLE_SYNACK,
    Connection,
    ip_text,
)
from .flags import ACK, CONTROL, FIN, RST, SEQ_MASK, SYN
from .halfstream import _NO_TAIL, HalfStream
from .sink import END_CAPTURE, END_SUPERSEDED, StreamSink

SinkFactory = Callable[[Connection], "StreamSink | None"]
KeyedSegment = tuple[bytes, float, int, int, "memoryview | bytes", int]
_PORTS = struct.Struct("!HH")
#: A run that has to wait for other connections' segments after delivering more of its segments one by one
#: than it absorbed in a skip window (by this margin) marks its direction for one-by-one handover
#: (``TcpTracker.one_by_one``: a sink that takes every byte gains nothing from runs), retried every
#: ``RUNS_RETRY`` batches.
RUNS_MIN_ABSORBED = 4
RUNS_RETRY = 64
#: How long (capture time) after a reset a connection's holes wait for segments sent before it and reordered
#: on the path; then they are gaps (docs/limits.md). Reordering on a real path is a matter of milliseconds.
RESET_GRACE = 1.0
#: Connections tracked at most per capture (~2.5 KB each once closed); the segments of any connection
#: first seen after that are counted, not reassembled (docs/limits.md).
MAX_CONNECTIONS = 200_000


def segment_key(src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """The key of a keyed segment from ``src`` (packed IP address, 4 or 16 bytes) port ``sport`` to
    ``dst`` port ``dport``: ``src + dst + be16 sport + be16 dport``."""
    return bytes(src) + bytes(dst) + _PORTS.pack(sport, dport)


class TcpTracker:
    """Tracks every TCP connection in a capture and reassembles both directions of each.

    Feed it keyed segments in capture order with :meth:`feed_keyed` (as many calls as you like), then
    call :meth:`finish` once at the end of the capture.

    ``sink_factory(conn)`` is called once per connection, when it is first seen; it returns the sink
    for its two streams or ``None`` (the connection is still tracked and counted).
    ``ooo_limit`` bounds the out-of-order bytes buffered per direction; ``tail_segments`` is how many
    recently delivered pieces per direction are kept (by reference) to compare retransmissions with;
    with a chunked (gzip) capture source those references keep the reader's windows alive until the
    direction ends, so memory is bounded by open connections x 2 x window size (0 turns it off).
    ``server_ports`` helps guess roles of connections whose handshake was not captured.
    ``max_connections`` bounds the connections tracked (and so the memory); the segments of later ones are
    counted in ``untracked_segments``.
    """

    def __init__(self, sink_factory: SinkFactory, *, ooo_limit: int = 8 << 20, tail_segments: int = 256,
                 server_ports: Collection[int] = (), max_connections: int = MAX_CONNECTIONS) -> None:
        self.max_connections = max_connections
        self.untracked_segments = 0    # segments of connections first seen after max_connections were
        self._sink_factory = sink_factory
        self._ooo_limit = ooo_limit
        self._tail_segments = tail_segments
        self._server_ports = frozenset(server_ports)
        self._halves: dict[bytes, HalfStream] = {}   # by segment key: both directions of every connection
        self.connections: list[Connection] = []
        self._keys: dict[int, tuple[bytes, bytes]] = {}   # connection index -> its two segment keys
        self._opened = 0                                   # connections opened (forgotten ones too)
        self._deferred: list[tuple[int, int, list[Any]]] = []   # runs waiting for earlier segments
        #: Directions (segment keys) whose runs keep waiting for other connections' segments with little
        #: absorbed in between (a sink that wants every byte, interleaved traffic): for the coalescer to hand
        #: them one by one (its ``exclude``); forgotten every ``RUNS_RETRY`` batches.
        self.one_by_one: dict[bytes, bool] = {}
        self._batches = 0
        self._resetting: dict[int, Connection] = {}   # reset connections whose holes may still be filled
        self.first_ts: float | None = None   # time of the first and of the last segment fed (feed order)
        self.last_ts: float | None = None

    # ---- hot path ------------------------------------------------------------------------------

    def feed_keyed(self, segments: Iterable[KeyedSegment]) -> None:
        """Process every keyed segment ``(key, ts, seq, flags, payload, missing)`` of an iterable, in order.

        Call it once with the whole capture or once per batch: the state carries over between calls.
        """
        get = self._halves.get
        slow = self._slow
        control, mask = CONTROL, SEQ_MASK
        ts = self.last_ts
        for key, ts, seq, flags, payload, missing in segments:
            h = get(key)
            if h is None or seq != h.next_seq or flags & control or missing:
                slow(h, key, ts, seq, flags, payload, missing)
                continue
            h.frames += 1
            h.last_ts = ts
            n = len(payload)
            if n:
                off = h.offset
                h.offset = off + n
                h.next_seq = (seq + n) & mask
                if h.first_data_ts is None:
                    h.first_data_ts = ts
                h.last_data_ts = ts
                h.tail.append(payload)
                # HalfStream.in_order, inlined: this is the per-segment path of watch and dissect
                if off >= h.skip_until:             # at or beyond the end of the sink's skip window
                    if h.gather is not None:        # a gather window ends here: its pieces with it
                        h.hand_over(off, payload, ts)
                    elif h.deliver is not None:
                        k = h.deliver(h.direction, off, payload, ts)
                        if k:
                            h.window(off + n, k)
                elif off + n > h.skip_until:        # crossing its end; wholly inside: not delivered
                    h.hand_over(off, payload, ts)
                elif h.gather is not None:          # (but kept, in a gather window)
                    h.gather.append(payload)
                    if off + n == h.skip_until:     # its last byte: the window completes here
                        h.hand_gathered(ts)
        self.last_ts = ts
        if self._resetting:
            self._expire(ts)

    # ---- runs of coalesced segments ------------------------------------------------------------

    def feed_coalesced(self, entries: Sequence[tuple[Any, ...]], last_ts: float | None) -> None:
        """Process the entries of one ``coalesce`` call (keyed segments and runs, see the module doc); the
        segments, taken in capture order, have the same effect as :meth:`feed_keyed` of them. ``last_ts``
        is the time of the last segment (``coalesce`` says)."""
        get = self._halves.get
        slow = self._slow
        run = self._run
        control = CONTROL
        deferred: list[tuple[int, int, list[Any]]] = []
        self._deferred = deferred
        self._batches += 1
        if not self._batches % RUNS_RETRY:
            self.one_by_one.clear()
        count = len(entries)
        i = 0
        while i < count:
            while deferred and deferred[0][0] <= i:       # run segments that come before entry i
                run(heappop(deferred)[2], i)
            key, ts, seq, flags, payload, missing = entries[i]
            i += 1
            if missing.__class__ is tuple:
                run([key, missing, 0, seq, flags, 0], i)
                continue
            h = get(key)
            if h is None or seq != h.next_seq or flags & control or missing:
                slow(h, key, ts, seq, flags, payload, missing)
                continue
            h.frames += 1
            h.last_ts = ts
            if payload:
                h.in_order(seq, ts, payload)
        while deferred:
            run(heappop(deferred)[2], count)
        if last_ts is not None:
            self.last_ts = last_ts
        if self._resetting and self.last_ts is not None:
            self._expire(self.last_ts)

    def _run(self, state: list[Any], done: int) -> None:
        """Go on with a run (``state`` = key, run lists, next segment, its sequence number, flags) while
        ``done`` entries have been processed: absorb the segments inside the skip window, handle the
        others one by one once all that comes before them is done; else wait in the heap."""
        key, (payloads, times, ends, before, order), j, seq, flags, absorbed = state
        deferred = self._deferred
        mask = SEQ_MASK
        n = len(payloads)
        h = self._halves.get(key)
        acks = not ends[-1]                                 # a run of acknowledgments: no payload
        while j < n:
            if h is not None and seq == h.next_seq:
                if acks:                                    # the fast path only counts them
                    h.frames += n - j
                    h.last_ts = times[-1]
                    return
                start = ends[j - 1] if j else 0
                if h.deliver is None:
                    m = n
                else:
                    m = bisect_right(ends, start + h.skip_until - h.offset, j, n)
                if m > j:                                   # wholly inside the skip window: not delivered
                    size = ends[m - 1] - start
                    t = times[m - 1]
                    h.frames += m - j
                    h.last_ts = t
                    h.offset += size
                    seq = h.next_seq = (seq + size) & mask
                    if h.first_data_ts is None:
                        h.first_data_ts = times[j]
                    h.last_data_ts = t
                    h.tail.extend(payloads[j:m])
                    if h.gather is not None:
                        h.gather.extend(payloads[j:m])
                        if h.offset == h.skip_until:        # the last absorbed ends the gather window
                            h.hand_gathered(t)
                    absorbed += m - j
                    j = m
                    continue
            b = before[j]
            if b > done or (deferred and deferred[0][:2] < (b, order[j])):
                if j - absorbed > absorbed + RUNS_MIN_ABSORBED:   # mostly delivered, waiting: one by one
                    self.one_by_one[key] = True
                heappush(deferred, (b, order[j], [key, (payloads, times, ends, before, order), j, seq, flags,
                                                  absorbed]))
                return
            payload, ts = payloads[j], times[j]
            size = len(payload)
            if h is None or seq != h.next_seq:
                self._slow(h, key, ts, seq, flags, payload, 0)
                h = self._halves.get(key)
            elif not size:
                h.frames += 1
                h.last_ts = ts
            else:
                h.frames += 1
                h.last_ts = ts
                h.in_order(seq, ts, payload)
            seq = (seq + size) & mask
            j += 1

    # ---- everything else -----------------------------------------------------------------------

    def _slow(self, h: HalfStream | None, key: bytes, ts: float, seq: int, flags: int,
              payload: memoryview | bytes, missing: int) -> None:
        """One segment off the fast path; ``h`` is ``key``'s half, or None if ``key`` is not known yet."""
        if self.first_ts is None:
            self.first_ts = ts                     # a fresh tracker's first segment always comes here
        if h is None:
            if len(self.connections) >= self.max_connections:
                self.untracked_segments += 1
                return
            h = self._open(key, flags, ts)
        elif flags & SYN and self._starts_new(h, seq, flags):
            self._supersede(h, ts)
            if len(self.connections) >= self.max_connections:
                self.untracked_segments += 1
                return
            h = self._open(key, flags, ts)
        conn = h.conn
        assert conn is not None
        if self._resetting and conn.index in self._resetting:
            self._expire_one(conn, ts)               # too late to be a segment sent before the reset?
        h.frames += 1
        h.last_ts = ts
        n = len(payload)

        if flags & SYN:
            if h.isn is None:
                h.isn = seq
                if h.base is None:
                    h.base = (seq + 1) & SEQ_MASK
            if flags & ACK:
                if conn.synack_ts is None:
                    conn.synack_ts = ts
            else:
                if conn.syn_ts is None:
                    conn.syn_ts = ts
                    conn.syn_seen = True
                    h.awaiting_handshake = h.direction == 0
            seq = (seq + 1) & SEQ_MASK               # data in a SYN (TFO) follows the SYN's number
        elif h.base is None:
            h.base = seq
        if h.awaiting_handshake and flags & ACK and not flags & SYN:
            h.awaiting_handshake = False
            if conn.synack_ts is not None and conn.handshake_ts is None:
                conn.handshake_ts = ts

        if flags & RST:
            if h.rst_ts is None:
                h.rst_ts = ts
            h.ignored_bytes += n + missing
            if conn.closed_by is None:
                conn.closed_by = "client" if h.direction == 0 else "server"
            # The RST's sequence number is its sender's SND.NXT: the sender's direction carried at least that
            # much, though the capture may have missed the end of it (HalfStream.reset bounds and checks it).
            # A side seen for the first time took it as its base above: offset 0, nothing to add.
            sent = h.offset_of(seq)
            waiting = False
            for half in conn.halves:
                waiting = half.reset(ts, sent if half is h else None) or waiting
            if waiting:
                self._resetting[conn.index] = conn
            return

        if n or missing:
            h.accept(seq, payload, missing, ts)
        if flags & FIN:
            if conn.closed_by is None and h.ended is None:
                conn.closed_by = "client" if h.direction == 0 else "server"
            h.fin(h.offset_of((seq + n + missing) & SEQ_MASK), ts)
        h.refresh()

    def _expire(self, now: float) -> None:
        """Give up the holes of reset connections whose grace has passed at capture time ``now``."""
        for conn in list(self._resetting.values()):
            self._expire_one(conn, now)

    def _expire_one(self, conn: Connection, now: float) -> None:
        times = [h.reset_ts for h in conn.halves if h.reset_ts is not None]
        if not times:
            del self._resetting[conn.index]
        elif now - min(times) > RESET_GRACE:
            self._give_up(conn)

    def _give_up(self, conn: Connection) -> None:
        """A reset connection's holes are gaps now; it ends (at its last segment's time, whenever asked)."""
        self._resetting.pop(conn.index, None)
        when = conn.last_ts
        for half in conn.halves:
            half.flush(when)

    def _starts_new(self, h: HalfStream, seq: int, flags: int) -> bool:
        """Does this SYN or SYN-ACK open a new connection on the 4-tuple (rather than repeat one)?"""
        conn = h.conn
        assert conn is not None
        if conn.closed:
            return True
        if h.isn is not None:
            return h.isn != seq                      # same ISN: a retransmitted SYN / SYN-ACK
        if h.base is not None:
            return True                              # this side sent data without a SYN before
        return conn.halves[1 - h.direction].isn is None

    def _open(self, key: bytes, flags: int, ts: float) -> HalfStream:
        """Start tracking a connection whose first segment seen is ``key``'s; return ``key``'s half."""
        n = (len(key) - 4) >> 1                    # address length: 4 (IPv4) or 16 (IPv6)
        src, dst = key[:n], key[n:n << 1]
        sport, dport = _PORTS.unpack_from(key, n << 1)
        if flags & SYN:
            role = ROLE_SYNACK if flags & ACK else ROLE_SYN
            client_is_src = not flags & ACK
        elif (dport in self._server_ports) != (sport in self._server_ports):
            role, client_is_src = ROLE_PORT, dport in self._server_ports
        elif (dport < EPHEMERAL_PORT_MIN) != (sport < EPHEMERAL_PORT_MIN):
            role, client_is_src = ROLE_PORT, dport < EPHEMERAL_PORT_MIN
        else:
            role, client_is_src = ROLE_FIRST_PACKET, True
        reverse = segment_key(dst, dport, src, sport)
        if client_is_src:
            ckey, skey, client, server = key, reverse, (src, sport), (dst, dport)
        else:
            ckey, skey, client, server = reverse, key, (dst, dport), (src, sport)
        halves = (HalfStream(0, self._ooo_limit, self._tail_segments),
                  HalfStream(1, self._ooo_limit, self._tail_segments))
        conn = Connection(self._opened, (ip_text(client[0]), client[1]),
                          (ip_text(server[0]), server[1]), role, ts, halves)
        for half in halves:
            half.conn = conn
        self._halves[ckey] = halves[0]
        self._halves[skey] = halves[1]
        self._keys[conn.index] = (ckey, skey)
        self._opened += 1
        self.connections.append(conn)
        sink = self._sink_factory(conn)
        conn.sink = sink
        for half in halves:
            half.attach(sink)
        return halves[0] if client_is_src else halves[1]

    def _supersede(self, h: HalfStream, ts: float) -> None:
        conn = h.conn
        assert conn is not None
        for half in conn.halves:
            half.flush(ts)
            half.end(END_SUPERSEDED, ts)

    def forget(self, conns: Collection[Connection]) -> None:
        """Drop closed connections a consumer is done with (a long live capture frees their state). A later
        segment on the same 4-tuple then opens a new connection, as after a SYN with another ISN."""
        gone = {id(c) for c in conns}
        for conn in conns:
            for key, half in zip(self._keys.pop(conn.index, ()), conn.halves, strict=False):
                if self._halves.get(key) is half:
                    del self._halves[key]
            # Break the cycles (connection <-> halves, connection -> sink -> whoever holds the connection):
            # their memory then goes back at once, not at the cyclic collector's next full pass (which a
            # caller that froze the collector's view never makes).
            for half in conn.halves:
                half.conn = None
                half.sink = None
                half.deliver = None
                half.gather = None
                half.tail = _NO_TAIL
            conn.sink = None
        self.connections = [c for c in self.connections if id(c) not in gone]
        for conn in conns:
            self._resetting.pop(conn.index, None)

    def finish(self, ts: float | None = None) -> None:
        """End of capture: declare remaining holes as gaps, deliver buffered data, end open streams.

        ``ts`` defaults to each connection's last segment time. Calling it again does nothing.
        """
        self._resetting.clear()
        for conn in self.connections:
            if conn.closed:
                continue
            when = conn.last_ts if ts is None else ts
            for half in conn.halves:
                half.flush(when)
                half.end(END_CAPTURE, when)

