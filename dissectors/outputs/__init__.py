"""outputs: what people read, at the edge: the text report, ``dissect`` lines and JSON lines, the timeline
plot, progress on stderr, and the generated Wireshark Lua plugin. Takes reports, records and plain
options; never reads captures or parses bytes itself."""
