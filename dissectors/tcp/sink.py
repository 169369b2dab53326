"""What a consumer of reassembled TCP streams implements."""

from __future__ import annotations

from typing import Protocol

#: Direction numbers used in every sink call.
CLIENT_TO_SERVER = 0
SERVER_TO_CLIENT = 1

#: Values of ``how`` in :meth:`StreamSink.end`.
END_FIN = "fin"                  # the sender's FIN was reached in sequence space
END_RST = "rst"                  # either side reset the connection
END_CAPTURE = "capture-end"      # the capture ended with the stream still open
END_SUPERSEDED = "superseded"    # a new connection (SYN with another ISN) took over the 4-tuple


class StreamSink(Protocol):
    """Receives one connection's two byte streams, strictly in order and without overlaps.

    For each direction the calls cover ``[0, end_offset)`` exactly once (less the skip windows the sink
    asked for, below), as a sequence of ``data`` and ``gap`` calls with increasing offsets, followed by
    one ``end`` call. ``ts`` is the capture time at
    which the bytes became readable in order (so it never decreases within a direction).
    ``data`` may be handed a memoryview into the capture's buffer: copy what you keep.

    Skip window: ``data`` may return an int ``k`` (``None`` means 0): the sink does not need the next
    ``k`` bytes after this chunk. Data in ``[offset + len(data), offset + len(data) + k)`` is then not
    delivered (the next ``data`` call starts at or after the window's end; a segment crossing the end is
    delivered from it), so offsets may jump forward by at most ``k``. Gaps are still delivered where they
    are, even inside a window, and ``end`` may come inside one. Counters and times of the connection
    are not affected.

    Gather window: ``data`` may return ``-g < 0``: the sink needs the next ``g`` bytes only as a whole.
    They then come in one ``data`` call, at the time of the segment completing them (or, if a gap or the
    end comes first, what came of them, just before that gap or end).
    """

    def data(self, direction: int, offset: int, data: memoryview | bytes, ts: float) -> int | None:
        """Bytes ``[offset, offset + len(data))`` of ``direction``'s stream; return how many bytes after
        them the sink does not need (or None), or minus how many it wants in one piece."""

    def gap(self, direction: int, offset: int, length: int, ts: float) -> None:
        """Bytes ``[offset, offset + length)`` will never come (not captured, or given up waiting)."""

    def end(self, direction: int, offset: int, ts: float, how: str) -> None:
        """``direction``'s stream ended at ``offset``; ``how`` is one of the ``END_*`` values."""
