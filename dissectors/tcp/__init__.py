"""tcp: sort captured TCP segments into connections and hand each connection's two reassembled byte
streams (client to server, server to client) to a sink, in order, with every lost byte declared as a gap.

Knows nothing of QEMU or of files: it takes *keyed segments* ``(key, ts, seq, flags, payload, missing)``
(what ``dissectors.capture``'s ``Capture.keyed_segments()`` yields; :func:`segment_key` builds ``key``
from a 4-tuple) and calls the ``data`` / ``gap`` / ``end`` methods of one :class:`StreamSink` per
connection, which the caller supplies. Connection facts (endpoints, handshake times, bytes, gaps,
retransmissions, how it ended) are on :attr:`TcpTracker.connections` (:class:`Connection`).

Usage::

    from dissectors.capture import open_capture
    from dissectors.tcp import TcpTracker

    class Printer:                                   # a StreamSink
        def data(self, direction, offset, data, ts):
            print(direction, offset, len(data))      # copy ``data`` (a view into the capture) to keep it
        def gap(self, direction, offset, length, ts):
            print(direction, offset, "lost", length)
        def end(self, direction, offset, ts, how):
            print(direction, offset, how)

    tracker = TcpTracker(lambda conn: Printer())     # called once per new connection; None: count only
    with open_capture("migration.pcap") as cap:
        tracker.feed_keyed(cap.keyed_segments())     # call it again with more segments if you have them
        tracker.finish()                             # end of capture: remaining holes become gaps
    for conn in tracker.connections:
        print(conn.to_dict())
"""

from .connection import Connection
from .sink import (
    CLIENT_TO_SERVER,
    END_CAPTURE,
    END_FIN,
    END_RST,
    END_SUPERSEDED,
    SERVER_TO_CLIENT,
    StreamSink,
)
from .tracker import TcpTracker, segment_key

__all__ = [
    "CLIENT_TO_SERVER",
    "END_CAPTURE",
    "END_FIN",
    "END_RST",
    "END_SUPERSEDED",
    "SERVER_TO_CLIENT",
    "Connection",
    "StreamSink",
    "TcpTracker",
    "segment_key",
]
