"""Valid QEMU migration streams for the benchmark capture (``gen_capture.py --payload qemu_payload:payload_source``).

Connection 0 is a main channel (header, RAM section, then SECTION_PART records of 64 pages each);
connections 1.. are multifd channels (hello, then RAM packets of 128 pages, a SYNC every 16 packets).
Records are built once with the project's Scapy layers (tests/synth.py) and repeated, so generating a
gigabyte costs no Scapy work per page.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import synth as S  # noqa: E402

PAGES_PER_PART = 64
PAGES_PER_PACKET = 128


def _main() -> Iterator[bytes]:
    yield S.header("pc-i440fx-7.2") + S.ram_start(total=1 << 30)
    parts = [S.ram_part([(i * PAGES_PER_PART + j) * S.PAGE for j in range(PAGES_PER_PART)]) for i in range(8)]
    while True:
        yield from parts


def _multifd(channel: int) -> Iterator[bytes]:
    yield S.multifd_hello(channel)
    packets = []
    for i in range(16):
        packets.append(S.multifd_packet(i, PAGES_PER_PACKET))
    packets.append(S.multifd_packet(16, 0, sync=True))
    while True:
        yield from packets


def payload_source(conn_index: int) -> Iterator[bytes]:
    return _main() if conn_index == 0 else _multifd(conn_index - 1)
