"""capture: read pcap / pcapng files (optionally gzip-compressed) into TCP segments.

Knows nothing of QEMU or of TCP reassembly. ``open_capture(path)`` returns a ``Capture`` whose
``tcp_segments()`` yields plain tuples laid out as ``TcpSegment``; ``writer`` builds captures for tests.
"""

from .reader import Capture, open_capture
from .records import CaptureStats, KeyedSegment, TcpSegment

__all__ = ["Capture", "CaptureStats", "KeyedSegment", "TcpSegment", "open_capture"]
