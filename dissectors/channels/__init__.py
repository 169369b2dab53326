# SPDX-License-Identifier: GPL-2.0-or-later
"""channels: turn a connection's two byte streams into typed QEMU records. Knows nothing of files.

``ChannelSink`` is the TCP room's sink for one connection: it identifies each direction's channel
(main, return path, multifd, preempt, TLS) from its first bytes, picks the parser from one table and
hands every ``Record`` to its consumer. The parsers are sans-IO, built on ``dissectors.layers``:
``feed(data, ts)`` / ``gap(length, ts)`` / ``eof(ts)`` return lists of ``Record``; every record kind is
declared once in ``kinds`` with the Scapy layer that dissects it.

>>> sink = ChannelSink(lambda direction, records: print(records))   # doctest: +SKIP
>>> TcpTracker(lambda conn: sink)                                     # doctest: +SKIP
"""

from dissectors.channels.identify import identify_stream
from dissectors.channels.main import MainParser
from dissectors.channels.multifd import MultifdParser
from dissectors.channels.preempt import PreemptParser
from dissectors.channels.record import Record
from dissectors.channels.return_path import ReturnPathParser
from dissectors.channels.sink import ChannelSink
from dissectors.channels.tls import TlsParser
from dissectors.layers.derived import MULTIFD_MAGIC, QEMU_VM_FILE_MAGIC, TARGET_PAGE_SIZE

__all__ = ["MULTIFD_MAGIC", "QEMU_VM_FILE_MAGIC", "TARGET_PAGE_SIZE", "MainParser", "MultifdParser",
           "PreemptParser", "Record", "ChannelSink", "ReturnPathParser", "TlsParser", "identify_stream"]
