"""capture: read pcap / pcapng files (optionally gzip-compressed) into TCP segments.

Knows nothing of QEMU or of TCP reassembly. ``open_capture(path)`` returns a ``Capture`` whose
``keyed_segments()`` yields what the ``tcp`` room takes (``(key, ts, seq, flags, payload, missing)``) and
``tcp_segments()`` the same segments as plain tuples laid out as ``TcpSegment`` (frame numbers and
acknowledgements too, for the recorder and tests); ``writer`` builds captures for tests.
"""

from .reader import Capture, open_capture
from .records import CaptureStats, KeyedSegment, TcpSegment

__all__ = ["Capture", "CaptureStats", "KeyedSegment", "TcpSegment", "open_capture"]
