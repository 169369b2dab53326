"""``dissectors.scapy``: rdpcap() on a corpus capture gives the QEMU layers, record for record what
``migshark dissect`` finds in the same frames."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.packet import Raw
from scapy.utils import rdpcap

from dissectors import scapy as qs
from dissectors.cli.main import main
from dissectors.layers import multifd as F
from dissectors.layers import ram as R
from dissectors.layers import return_path as RP

CORPUS = Path(__file__).resolve().parent.parent / "captures"
PREEMPT = CORPUS / "multifd4-postcopy-preempt-11.1.pcap.gz"


def read(path: Path) -> list:
    with gzip.open(path) as f:
        return list(rdpcap(f))


def single_frame_records(capsys: pytest.CaptureFixture[str], path: Path) -> list[dict]:
    assert main(["dissect", "--json", "--pages", str(path)]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    return [r for r in recs if r["first_frame"] == r["last_frame"] and r["first_frame"] is not None]


def test_bound_port_decodes_every_channel_as_dissect_does(capsys: pytest.CaptureFixture[str]) -> None:
    recs = single_frame_records(capsys, PREEMPT)
    port = qs.guess_port(read(PREEMPT))
    assert port == 55605
    qs.bind(port)
    pkts = read(PREEMPT)
    checked = {"preempt": 0, "return-path": 0, "multifd": 0}
    # the first record of each frame: the one the frame's payload starts with
    first_in_frame: dict[int, dict] = {}
    for r in recs:
        first_in_frame.setdefault(r["first_frame"], r)
    for frame, rec in first_in_frame.items():
        tcp = pkts[frame - 1][TCP]
        if rec["channel"] == "preempt":
            layer = tcp.payload
            assert isinstance(layer, R.RamRecord) and layer.addr == rec["fields"]["addr"], (frame, rec)
        elif rec["channel"] == "return-path":
            assert isinstance(tcp.payload, RP.RpMessage), (frame, rec)
            assert RP.RP_TYPES[tcp.payload.type] == rec["fields"]["type"]
        elif rec["type"] == "multifd.hello":
            assert isinstance(tcp.payload, F.MultifdHello) and tcp.payload.id == rec["fields"]["id"]
        elif rec["type"] == "multifd.packet":
            assert isinstance(tcp.payload, F.MultifdRamPacket)
            assert tcp.payload.packet_num == rec["fields"]["packet_num"]
        else:
            continue
        checked[rec["channel"]] += 1
    assert checked["preempt"] == 61 and checked["return-path"] > 50 and checked["multifd"] >= 4, checked
    # multifd page data is never taken for main-stream or RAM records
    multifd_ports = {int(r["client"].rsplit(":", 1)[1]) for r in recs if r["channel"] == "multifd"}
    for p in pkts:
        if TCP in p and p[TCP].sport in multifd_ports and len(p[TCP].payload):
            assert isinstance(p[TCP].payload, F.MultifdHello | F.MultifdRamPacket | Raw), p.summary()


def test_heuristic_learns_the_port_from_the_stream_header() -> None:
    path = CORPUS / "multifd-postcopy-7.2.pcap.gz"
    qs.enable_heuristic()
    try:
        pkts = read(path)
    finally:
        qs.enable_heuristic(False)
    names = {type(p[TCP].payload).__name__ for p in pkts if TCP in p and len(p[TCP].payload)}
    assert {"QemuFileHeader", "MultifdHello", "MultifdRamPacket", "RpMessage", "SectionFooter", "Command"} <= names
    header = next(p for p in pkts if TCP in p and bytes(p[TCP].payload)[:4] == b"QEVM")
    assert header[TCP].payload.version == 3


def test_built_packets_on_the_bound_port_dissect_back() -> None:
    qs.bind(4444)
    from scapy.layers.inet import IP

    hello = IP(bytes(IP() / TCP(sport=40000, dport=4444) / F.MultifdHello(id=2)))
    assert hello[F.MultifdHello].id == 2
    pong = IP(bytes(IP() / TCP(sport=4444, dport=40000) / RP.RpMessage() / RP.RpPong(value=7)))
    assert pong[RP.RpPong].value == 7
    other = IP(bytes(IP() / TCP(sport=40000, dport=4445) / F.MultifdHello(id=2)))
    assert isinstance(other[TCP].payload, Raw)


def test_the_doc_page_example() -> None:
    """docs/scapy.md, as written."""
    path = CORPUS / "multifd-postcopy-7.2.pcap.gz"
    port = qs.guess_port(read(path))
    assert port == 45317
    qs.bind(port)
    pkts = read(path)
    assert pkts[707].summary() == "Ether / IP / TCP 127.0.0.1:45317 > 127.0.0.1:38016 PA / RpMessage / RpReqPages"
    assert pkts[707][RP.RpReqPages].start == 0x92C000 and pkts[707][RP.RpReqPages].len == 4096
