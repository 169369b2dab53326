"""migshark: dissect and analyse QEMU live-migration traffic captured as pcap/pcapng.

Rooms (one-way doors):
- ``capture``  reads capture files into TCP segments; knows nothing of QEMU.
- ``tcp``      tracks connections and reassembles streams; knows nothing of QEMU.
- ``layers``   Scapy declarations of every wire structure; knows nothing of captures.
- ``channels`` identifies each connection's channels and parses them into typed records (sans-IO, on ``layers``).
- ``analysis`` folds records into facts, groups connections into migrations and judges them.
- ``outputs``  text, JSON, plots, progress and the Wireshark Lua export.
- ``recorder`` drives real QEMU migrations and captures them.
- ``cli``      only wires the above together.
"""

__version__ = "0.1.0"
