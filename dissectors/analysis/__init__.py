"""analysis: fold each connection's records into facts, group connections into migrations and judge them
(true roles by content, the roles the destination's QEMU gave them, misclassifications, stalls, outcome).

Uses ``channels`` (records, through ``ChannelSink``) and ``tcp`` (connection facts); opens no files.
``engine.Analyzer`` is the entry: ``sink_for(conn)`` is the TCP sink factory, ``finish(capture)`` returns
the report (schema in docs/report-schema.md).

>>> analyzer = Analyzer(Options())                                  # doctest: +SKIP
>>> tracker = TcpTracker(analyzer.sink_for)                         # doctest: +SKIP
>>> tracker.feed_keyed(segments); tracker.finish()                  # doctest: +SKIP
>>> analyzer.finish({"last_time": tracker.last_ts, ...}).report     # doctest: +SKIP
"""
