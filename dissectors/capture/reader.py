"""``open_capture``: detect the format by magic and hand out TCP segments with counters and warnings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from itertools import chain
from types import TracebackType
from typing import BinaryIO

from ..errors import InputError
from .pcap import PCAP_MAGICS, pcap_segments
from .pcapng import SHB_MAGIC, pcapng_segments
from .records import CaptureStats
from .scanner import Runs, scanner_coalesces
from .source import ByteSource, MmapSource, StreamSource, open_source, stream_source

#: How a walker's warning ends when it gives up before the end of the file.
STOPPED = "; stopped reading"


class Capture:
    """An open capture file. Iterate ``tcp_segments()``; read ``stats``, ``warnings``, ``position``/``size``.

    ``size`` is None for a live stream (standard input, a pipe, a FIFO): ``live`` is then its reader, whose
    ``on_idle`` and ``should_stop`` hooks a live watcher sets (see ``source.LiveRaw``).

    Payload memoryviews point into the file mapping: copy them (``bytes(payload)``) to keep them past
    ``close()``. Each call of ``tcp_segments()`` starts a fresh pass and resets ``stats``/``warnings``.
    """

    def __init__(self, path: str, source: ByteSource, is_pcapng: bool, reopenable: bool = True) -> None:
        self.path = path
        self._reopenable = reopenable
        self.source = source
        self.size = source.size
        self.live = source.live if isinstance(source, StreamSource) else None
        self.offset = 0
        self.stats = CaptureStats()
        self.warnings: list[str] = []
        #: Where and why a pass stopped before the end of the file (a record cut short, a corrupt block):
        #: ``{"offset", "where", "reason"}`` of the first such warning, else None.
        self.stopped: dict[str, object] | None = None
        #: Called without arguments every few MiB of a pass (``position``/``size`` tell how far it is).
        self.on_progress: Callable[[], None] | None = None
        self._is_pcapng = is_pcapng
        self._passes = 0
        self._where = "uncompressed offset" if source.compressed else "offset"

    @property
    def position(self) -> int:
        """Bytes consumed so far, comparable with ``size`` (compressed bytes for gzip input)."""
        return self.source.position(self.offset)

    def publish(self, offset: int, frames: int, non_tcp: int) -> None:
        """A walker's checkpoint: counters so far, pages behind ``offset`` dropped, progress reported."""
        st = self.stats
        st.frames, st.tcp_segments, st.non_tcp = frames, frames - non_tcp, non_tcp
        self.offset = offset
        self.source.release_behind(offset)
        if self.on_progress is not None:
            self.on_progress()

    def warn(self, offset: int, message: str) -> None:
        """A warning naming file and offset; one ending in ``; stopped reading`` (the walkers' wording when
        they give up before the end of the file) also sets ``stopped``."""
        prev = self.stopped
        if (message.endswith(STOPPED) and prev is not None and (prev["offset"], prev["where"]) == (offset, self._where)
                and self.warnings[-1].endswith(STOPPED)):
            # the same stop twice (a record cut short where the gzip stream ends early): one warning, with its cause
            self.warnings[-1] = f"{self.warnings[-1][:-len(STOPPED)]}; cause: {message}"
            return
        self.warnings.append(f"{self.path}: {self._where} {offset}: {message}")
        if message.endswith(STOPPED) and self.stopped is None:
            self.stopped = {"offset": offset, "where": self._where, "reason": message[:-len(STOPPED)]}

    def tcp_segments(self) -> Iterator[tuple]:
        """Yield a plain tuple ``(frame, ts, src, sport, dst, dport, seq, ack, flags, payload, missing)``
        (see ``TcpSegment``) for every TCP segment, in file order."""
        return self._walk(False)

    def keyed_segments(self) -> Iterator[tuple]:
        """Like ``tcp_segments()``, but yield the leaner ``(key, ts, seq, flags, payload, missing)``
        (see ``KeyedSegment``): the same segments, with addresses and ports in one ``bytes`` key.

        The walkers hand these over in lists of ``BATCH_BYTES`` (256 KiB) of capture each (see ``keyed_batches``)."""
        return chain.from_iterable(self._walk(True))

    def keyed_batches(self) -> Iterator[list[tuple]]:
        """``keyed_segments()`` in the walkers' own lists; progress and ``stats`` move between lists."""
        return self._walk(True)

    def keyed_runs(self, coalesce: Callable[..., tuple[list[tuple], float | None]], window: int, control: int,
                   exclude: dict[bytes, bool] | None = None) -> Iterator[tuple[list[tuple], float | None]]:
        """``keyed_batches()`` coalesced: ``(entries, last_ts)`` per list, as ``coalesce(batch, window, control,
        exclude)`` gives (``scanner.compiled_coalescer``; ``exclude`` is read again for every list). The compiled
        scanner coalesces as it reads; the lists the walkers build themselves go through ``coalesce``."""
        for item in self._walk(True, (window, control, exclude) if scanner_coalesces() else None):
            yield item if item.__class__ is tuple else coalesce(item, window, control, exclude)

    def _walk(self, keyed: bool, runs: Runs | None = None) -> Iterator[tuple]:
        if self._passes:
            self._restart()
        self._passes += 1
        self.stats = CaptureStats()
        self.warnings = []
        self.stopped = None
        self.offset = 0
        walker = pcapng_segments if self._is_pcapng else pcap_segments
        return walker(self, keyed, runs)

    def _restart(self) -> None:
        if self.live is not None:
            raise InputError("a stream (pipe, FIFO, standard input) can be read only once", path=self.path)
        if not isinstance(self.source, MmapSource):
            if not self._reopenable:
                raise InputError("an opened stream can be read once", path=self.path)
            self.source.close()
            self.source, _ = open_source(self.path)

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_capture(path: str | os.PathLike[str], live: bool = False, stream: BinaryIO | None = None) -> Capture:
    """Open a pcap or pcapng file (optionally gzip-compressed), recognised by its magic number.

    ``-`` reads standard input; pipes and FIFOs (and any input when ``live`` is set) are read as a stream
    as it arrives, with no size (see ``source.LiveRaw``). With ``stream`` (an open binary file object,
    e.g. a remote file opened through fsspec) the capture is read from it sequentially, ``path`` only names
    it in messages, and the capture closes it."""
    name = os.fspath(path)
    if name == "-" and os.isatty(0):
        raise InputError("standard input is a terminal: pipe a capture in (tcpdump -U -w - ... | migshark ... -)",
                         path=name)
    try:
        source, magic = open_source(name, live=live) if stream is None else stream_source(stream)
    except IsADirectoryError:
        raise InputError("is a directory", path=name) from None
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", path=name) from None
    streaming = source.size is None or stream is not None
    if (source.size == 0 and stream is None) or (streaming and not magic and not source.compressed):
        source.close()
        raise InputError("empty input: the stream ended before any byte" if streaming else "empty file",
                         path=name, offset=0)
    if magic in PCAP_MAGICS or magic == SHB_MAGIC:
        return Capture(name, source, magic == SHB_MAGIC, reopenable=stream is None)
    gzipped = source.compressed
    damage = None
    if gzipped and isinstance(source, StreamSource):
        if len(magic) == 4 and source.size is not None:
            source.first().release()   # inflate on a little: damaged deflate data may give a few bytes first
        damage = source.gzip_problem
    source.close()
    if damage is not None:
        # said as the damage it is, with its compressed offset: the same words for a capture and a raw
        # migration stream file (nothing inflated to tell them apart)
        if len(magic) < 4:
            raise InputError(f"not a readable gzip file: {damage}; {len(magic)} byte(s) inflated before it, too "
                             "few for a capture header or the QEVM magic", path=name)
        raise InputError(f"not a pcap or pcapng file (magic 0x{magic.hex()} inside the gzip stream), and the gzip "
                         f"data is damaged: {damage}", path=name)
    if gzipped and len(magic) < 4:
        raise InputError(f"the gzip stream ends after {len(magic)} uncompressed byte(s), before a capture header",
                         path=name, offset=0)
    if len(magic) < 4:
        raise InputError(f"too short for a capture header ({len(magic)} byte(s))", path=name, offset=0)
    what = " inside the gzip stream" if gzipped else ""
    raise InputError(f"not a pcap or pcapng file (magic 0x{magic.hex()}{what})", path=name, offset=0)
