# SPDX-License-Identifier: GPL-2.0-or-later
"""Sans-IO streaming parsers per channel kind, built on ``dissectors.layers``.

``feed(data, ts)`` / ``gap(length, ts)`` / ``eof(ts)`` return lists of ``Record``; ``offset`` is the
number of stream bytes taken in; ``counts`` maps record kinds (and page counters) to totals.
"""

from dissectors.channels.identify import identify_stream
from dissectors.channels.main import MainParser
from dissectors.channels.multifd import MultifdParser
from dissectors.channels.preempt import PreemptParser
from dissectors.channels.record import Record
from dissectors.channels.return_path import ReturnPathParser
from dissectors.channels.tls import TlsParser
from dissectors.layers.main_stream import QEMU_VM_FILE_MAGIC
from dissectors.layers.multifd import MULTIFD_MAGIC
from dissectors.layers.ram import TARGET_PAGE_SIZE

__all__ = ["MULTIFD_MAGIC", "QEMU_VM_FILE_MAGIC", "TARGET_PAGE_SIZE", "MainParser", "MultifdParser",
           "PreemptParser", "Record", "ReturnPathParser", "TlsParser", "identify_stream"]
