"""tcp: track TCP connections and reassemble their byte streams. Knows nothing of QEMU or of files.

>>> tracker = TcpTracker(lambda conn: MySink())     # doctest: +SKIP
>>> tracker.feed_all(capture.tcp_segments())        # or tracker.feed(seg) one at a time
>>> tracker.finish()
>>> tracker.connections[0].to_dict()
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
from .tracker import TcpTracker

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
]
