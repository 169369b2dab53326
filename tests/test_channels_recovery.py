"""A recovered main channel (postcopy recovery) never sees the SECTION_START naming its RAM section."""

from channel_helpers import kinds

from dissectors.channels import MainParser
from dissectors.layers import commands as C
from dissectors.layers import main_stream as M
from dissectors.layers import synth as L


def recovered_stream() -> bytes:
    out = bytes(C.Command(cmd=C.MIG_CMD_RECV_BITMAP) / C.CmdRecvBitmap(block=b"pc.ram"))
    out += bytes(C.Command(cmd=C.MIG_CMD_POSTCOPY_RESUME))
    out += bytes(M.SectionPart(section_id=2)) + L.ram_pages(b"pc.ram", [0x1000, 0x2000]) + L.ram_eos()
    out += bytes(M.SectionFooter(section_id=2))
    out += bytes(M.SectionEnd(section_id=2)) + L.ram_pages(b"pc.ram", [0x3000], zero=True) + L.ram_eos()
    out += bytes(M.SectionFooter(section_id=2)) + bytes(M.Eof())
    return out


def test_recovered_channel_walks_ram_sections():
    data = recovered_stream()
    p = MainParser()
    recs = p.feed(data, 1.0) + p.eof(2.0)
    assert kinds(recs).count("ram.page") == 2
    assert kinds(recs).count("ram.zero") == 1
    assert "device.state" not in kinds(recs)
    assert "malformed" not in kinds(recs)
    assert recs[-1].kind == "main.eof"


def test_recovered_channel_byte_at_a_time():
    data = recovered_stream()
    whole = MainParser()
    ref = [(r.kind, r.offset, r.length) for r in whole.feed(data, 1.0) + whole.eof(1.0)]
    p = MainParser()
    got = []
    for i in range(len(data)):
        got += p.feed(data[i:i + 1], 1.0)
    got += p.eof(1.0)
    assert [(r.kind, r.offset, r.length) for r in got] == ref
