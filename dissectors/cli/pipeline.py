"""Wiring: a capture through the reader, the TCP tracker and a sink factory (the analysis or the
dissect printer). The only place that opens capture files for them."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, Protocol

from dissectors.analysis.engine import RETIRE_AFTER, SWEEP_EVERY, Analysis, Analyzer
from dissectors.analysis.judge import Options
from dissectors.capture import open_capture
from dissectors.capture.scanner import COALESCE_WINDOW, compiled_coalescer
from dissectors.capture.source import FileBytes
from dissectors.errors import InputError
from dissectors.tcp import Connection, StreamSink, TcpTracker
from dissectors.tcp.flags import CONTROL
from dissectors.tls import KeyLog, KeyLogError

ProgressFn = Callable[[int, "int | None"], None]   # (bytes done, size; None for a stream)
SinkFactory = Callable[[Connection], "StreamSink | None"]


class SegmentSource(Protocol):
    """What reassembly needs of a capture (the capture room's reader fits)."""

    position: int
    size: int | None
    on_progress: Callable[[], None] | None
    stats: Any
    warnings: list[str]
    stopped: dict[str, Any] | None      # where reading stopped before the end of the file, if it did

    def keyed_segments(self) -> Iterable[tuple[Any, ...]]: ...

    def keyed_batches(self) -> Iterable[list[tuple[Any, ...]]]: ...


#: Every this many connections, the objects alive so far are moved out of the collector's sight.
FREEZE_EVERY = 4096


def _freezing(factory: SinkFactory) -> SinkFactory:
    """``factory``, calling ``gc.freeze()`` every :data:`FREEZE_EVERY` connections. Per-connection state
    (the tracker's halves, the sinks, the facts) lives until the report is built, so the cyclic collector
    finds nothing among it, yet its full passes would walk it all: with 100,000 connections that was two
    thirds of the run. Callers unfreeze (:func:`gc_unfrozen_after`) once the report is built."""
    count = 0

    def wrapped(conn: Connection) -> StreamSink | None:
        nonlocal count
        count += 1
        if count % FREEZE_EVERY == 0:
            gc.freeze()
        return factory(conn)

    return wrapped


@contextmanager
def gc_unfrozen_after() -> Iterator[None]:
    """Give what :func:`_freezing` froze in the block back to the collector when it ends.

    The collector can only unfreeze everything at once. So if the caller had frozen objects of its own
    before the block (a host program, a test), the block's are left frozen with them rather than undoing
    the caller's freeze: they are still freed when their last reference goes; only cycles among them wait
    for the caller's own ``gc.unfreeze()``."""
    before = gc.get_freeze_count()
    try:
        yield
    finally:
        if before == 0 and gc.get_freeze_count():
            gc.unfreeze()


def reassemble(source: SegmentSource, label: str, sink_factory: SinkFactory,
               progress: ProgressFn | None = None, freeze: bool = False,
               on_batch: Callable[[TcpTracker], None] | None = None,
               coalesce_runs: bool = True) -> tuple[TcpTracker, dict[str, Any]]:
    """Feed every TCP segment of ``source`` to a tracker; return it and a capture summary. ``freeze``:
    hide per-connection state from the cyclic collector as it piles up (:func:`_freezing`; the caller
    unfreezes, see :func:`gc_unfrozen_after`); a live run, which frees finished connections as it goes,
    does not ask for it.

    ``on_batch(tracker)`` (a live watcher) runs after each batch of segments the reader hands over (at
    least one per read of a live stream), with every segment read so far fed.

    ``coalesce_runs``: hand runs of in-order segments to the tracker as one entry where the compiled scanner
    can (``TcpTracker.feed_coalesced``: the same effect, fewer Python steps for segments the sinks skip).
    A sink that takes every byte gains nothing from it; the tracker then hands its segments one by one
    (``TcpTracker.one_by_one``). TLS decryption skips records as a plain sink skips bytes."""
    tracker = TcpTracker(_freezing(sink_factory) if freeze else sink_factory)
    if progress is not None:
        source.on_progress = lambda: progress(source.position, source.size)
    coalesce = compiled_coalescer() if coalesce_runs else None
    keyed_runs = getattr(source, "keyed_runs", None)
    if coalesce is not None and keyed_runs is not None:   # coalesced as the compiled scanner reads
        feed_runs = tracker.feed_coalesced
        for entries, last_ts in keyed_runs(coalesce, COALESCE_WINDOW, CONTROL, tracker.one_by_one):
            feed_runs(entries, last_ts)                   # every segment of the list fed
            if on_batch is not None:
                on_batch(tracker)
    elif coalesce is not None:        # runs of in-order payload as one entry each (same effect, fewer calls)
        feed_runs, one_by_one = tracker.feed_coalesced, tracker.one_by_one
        for batch in source.keyed_batches():
            feed_runs(*coalesce(batch, COALESCE_WINDOW, CONTROL, one_by_one))   # every segment of it fed
            if on_batch is not None:
                on_batch(tracker)
    elif on_batch is None:
        tracker.feed_keyed(source.keyed_segments())
    else:
        feed = tracker.feed_keyed
        for batch in source.keyed_batches():
            feed(batch)
            on_batch(tracker)
    tracker.finish()
    if progress is not None:
        progress(source.size if source.size is not None else source.position, source.size)
    st = source.stats
    summary = {
        "file": label,
        "frames": st.frames,
        "tcp_segments": st.tcp_segments,
        "non_tcp": st.non_tcp,
        "truncated_frames": st.truncated_frames,
        "link_types": sorted(st.link_types),
        "first_time": tracker.first_ts,
        "last_time": tracker.last_ts,
        "warnings": list(source.warnings),
    }
    stopped = getattr(source, "stopped", None)
    if stopped is not None:             # the rest of the file was not read: the report is partial
        summary["stopped"] = {"file": label, **stopped}
    if tracker.untracked_segments:
        summary["limits"] = [{
            "limit": "connections_tracked", "bound": tracker.max_connections, "over": tracker.untracked_segments,
            "effect": f"the capture holds more than {tracker.max_connections} TCP connections: the "
                      f"{tracker.untracked_segments} segment(s) of connections seen after that were counted, "
                      "not reassembled or analysed"}]
        summary["warnings"].append(summary["limits"][0]["effect"])
    if st.truncated_frames:
        summary["warnings"].append(
            f"{label}: {st.truncated_frames} frame(s) cut short by the snapshot length: their missing bytes "
            "are gaps in the streams")
    return tracker, summary


def load_keylog(path: str | None) -> KeyLog | None:
    """The key log at ``path`` (None: none given); an unreadable one is an input error."""
    if path is None:
        return None
    try:
        return KeyLog.load(path)
    except KeyLogError as exc:
        raise InputError(exc.why, path=exc.name) from exc
    except UnicodeDecodeError as exc:
        raise InputError("not a text file (an NSS key log is text)", path=path) from exc


def decrypting(factory: SinkFactory, keylog: KeyLog | None) -> SinkFactory:
    """``factory``'s sinks behind TLS decryption with ``keylog`` (unchanged without one)."""
    if keylog is None:
        return factory
    from dissectors.tls import TlsStreamSink

    def wrapped(conn: Connection) -> StreamSink | None:
        inner = factory(conn)
        return TlsStreamSink(inner, keylog) if inner is not None else None

    return wrapped


def analyze_file(path: str, options: Options | None = None, progress: ProgressFn | None = None,
                 keylog: KeyLog | None = None, stream: BinaryIO | None = None) -> Analysis:
    """The analysis of the capture at ``path`` (or read from ``stream``, which ``path`` then names)."""
    analyzer = Analyzer(options, keylog=keylog)
    with gc_unfrozen_after():
        with open_capture(path, stream=stream) as cap:
            if cap.live is not None:          # a pipe: the report comes at the end, so read whole windows
                cap.live.prompt = False
            _, capture = reassemble(cap, str(path), analyzer.sink_for, progress, freeze=True,
                                    on_batch=sweeping(analyzer))
        return analyzer.finish(capture)


def sweeping(analyzer: Analyzer) -> Callable[[TcpTracker], None]:
    """An ``on_batch`` that retires closed connections outside migrations (``Analyzer.sweep``) once
    :data:`SWEEP_EVERY` are held, then again once as many more came as are still held (at least that many): memory then
    follows the connections open at a time (and the migrations), not all a capture ever held, in linear
    time."""
    next_at = SWEEP_EVERY

    def on_batch(tracker: TcpTracker) -> None:
        nonlocal next_at
        held = len(analyzer.facts)
        if held >= next_at and tracker.last_ts is not None:
            analyzer.sweep(tracker.last_ts, tracker.forget)
            held = len(analyzer.facts)
            next_at = held + max(held, SWEEP_EVERY)

    return on_batch


def forgetting() -> Callable[[TcpTracker], None]:
    """An ``on_batch`` that drops the tracker's closed connections quiet for ``RETIRE_AFTER`` capture
    seconds, once :data:`SWEEP_EVERY` connections are held, then once as many more came as are still held
    (linear time): for a consumer that needs nothing of a connection once it ended (``dissect``)."""
    next_at = SWEEP_EVERY

    def on_batch(tracker: TcpTracker) -> None:
        nonlocal next_at
        conns = tracker.connections
        if len(conns) >= next_at and tracker.last_ts is not None:
            now = tracker.last_ts
            tracker.forget([c for c in conns if c.closed and now - c.last_ts >= RETIRE_AFTER])
            held = len(tracker.connections)
            next_at = held + max(held, SWEEP_EVERY)

    return on_batch


def reassemble_file(path: str, sink_factory: SinkFactory, progress: ProgressFn | None = None,
                    forget_closed: bool = False) -> tuple[TcpTracker, dict[str, Any]]:
    """``reassemble`` a capture file; ``forget_closed``: drop connections once they ended (``forgetting``),
    so memory follows the connections open at a time (the tracker returned then holds the rest only)."""
    with gc_unfrozen_after(), open_capture(path) as cap:
        return reassemble(cap, str(path), sink_factory, progress, freeze=True,
                          on_batch=forgetting() if forget_closed else None)


# -- raw migration stream files (what ``migrate "exec:cat > FILE"`` or ``file:FILE`` writes) ---------------
STREAM_FILE_CHUNK = 1 << 20


def is_migration_stream(path: str) -> bool:
    """Does the regular file at ``path`` (gzip-compressed or not) start with the QEVM magic, not a capture
    header? (A pipe or standard input is read as a capture.)"""
    import os

    from dissectors.layers.derived import QEMU_VM_FILE_MAGIC

    if path == "-" or not os.path.isfile(path):
        return False
    try:
        with FileBytes(path) as f:          # a damaged gzip stream reads short: then read as a capture
            return f.read(4) == QEMU_VM_FILE_MAGIC.to_bytes(4, "big")
    except OSError:
        return False


def feed_stream_file(path: str, sink: StreamSink, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Hand the bytes of a raw migration stream file to ``sink`` as the client-to-server stream of one
    connection (sans-IO: the sink does not know it is a file) and end both directions; return what was
    read (``bytes``, ``warnings``)."""
    import os

    size = os.path.getsize(path)
    offset = 0
    warnings: list[str] = []
    with FileBytes(path) as f:
        while chunk := f.read(STREAM_FILE_CHUNK):
            sink.data(0, offset, chunk, 0.0)
            offset += len(chunk)
            if progress is not None:
                progress(min(f.position(), size), size)
        if f.problem:
            warnings.append(f"{path}: uncompressed offset {offset}: {f.problem}; stopped reading")
        if f.warning:
            warnings.append(f"{path}: uncompressed offset {offset}: {f.warning}")
    sink.end(0, offset, 0.0, "fin")
    sink.end(1, 0, 0.0, "fin")
    return {"file": path, "format": "migration-stream", "bytes": offset, "warnings": warnings}
