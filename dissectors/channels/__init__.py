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

__all__ = ["MainParser", "MultifdParser", "PreemptParser", "Record", "ReturnPathParser", "TlsParser",
           "identify_stream"]
