"""`migshark export-wireshark`: the generated Lua plugin against the Scapy declarations and, in real
tshark, against the Python dissector on the capture corpus (a differential test in the style of
Wireshark's test/suite_wslua.py: same captures, one-pass and two-pass, fields compared)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from scapy.fields import ConditionalField, PacketListField

from dissectors.channels import kinds
from dissectors.layers import commands, main_stream, multifd, ram, return_path
from dissectors.layers.structs import fixed_size, item_struct, layout_of
from dissectors.outputs import lua
from tests.tshark_helpers import TsharkInstall, install_named

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "captures"
HAVE_TSHARK = shutil.which("tshark") is not None and shutil.which("editcap") is not None
skip_no_tshark = pytest.mark.skipif(not HAVE_TSHARK, reason="tshark/editcap not installed")
#: The host's tshark (Debian 12: 4.0) runs unprivileged, as for users; tests/test_lua_pyshark.py covers
#: 4.4 and 4.6.

#: tshark options every run uses: reassembly on, and out-of-order segments put back in order
#: (loopback captures hold reordered segments; the Python reader orders by sequence number too).
TCP_OPTS = ["-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tcp.reassemble_out_of_order:TRUE"]
_FT = {1: "FT_UINT8", 2: "FT_UINT16", 3: "FT_UINT24", 4: "FT_UINT32", 8: "FT_UINT64"}


# ---------------------------------------------------------------------------------------------
# The generated text against the Scapy classes (no tshark needed)


@pytest.fixture(scope="module")
def plugin_text() -> str:
    return lua.render_plugin()


def _layout_block(text: str, cls_name: str) -> str:
    m = re.search(rf"^S\.{cls_name} = \{{.*?^\}}\}}", text, re.S | re.M)
    assert m, f"no layout for {cls_name}"
    return m.group(0)


def test_hello_fields_and_sizes_follow_scapy(plugin_text: str) -> None:
    fmt, names = layout_of(multifd.MultifdHello)
    sizes = [int(x[:-1]) if x.endswith("s") else {"B": 1, "H": 2, "I": 4, "Q": 8}[x]
             for x in re.findall(r"\d+s|[BHIQ]", fmt[1:])]
    block = _layout_block(plugin_text, "MultifdHello")
    assert f"size = {fixed_size(multifd.MultifdHello)}," in block
    for name, size in zip(names, sizes, strict=True):
        abbrev = f"qmig.multifd.hello.{name}"
        assert abbrev in lua.field_abbrevs()
        assert re.search(rf'n = "{name}", t = "[ubz]", f = "{re.escape(abbrev)}", sz = {size}\b', block), name
        ctor = re.search(rf'ProtoField\.(\w+)\("{re.escape(abbrev)}"', plugin_text)
        assert ctor, abbrev
        assert ctor.group(1) == ("bytes" if name in ("uuid", "unused1", "unused2") else f"uint{8 * size}")
    assert 'ProtoField.uint32("qmig.multifd.hello.magic", "Magic", base.HEX' in plugin_text


def _all_field_names(cls: type) -> list[str]:
    out = []
    for f in cls.fields_desc:
        f = f.fld if isinstance(f, ConditionalField) else f
        if not isinstance(f, PacketListField):
            out.append(f.name)
    return out


def test_every_declared_field_has_a_protofield_and_a_layout_item(plugin_text: str) -> None:
    abbrevs = set(lua.field_abbrevs())
    for group in lua.GROUPS:
        for cls in group.classes:
            block = _layout_block(plugin_text, cls.__name__)
            for name in _all_field_names(cls):
                abbrev = group.shared.get(name, f"qmig.{group.prefix}.{name}")
                assert abbrev in abbrevs, (cls.__name__, name)
                assert re.search(rf'n = "([\w+]*\+)?{name}(\+[\w+]*)?"', block), (cls.__name__, name)


def test_enums_constants_and_header_sizes_come_from_the_layers(plugin_text: str) -> None:
    c = lua.constants()
    assert c["MULTIFD_HELLO_SIZE"] == fixed_size(multifd.MultifdHello) == 64
    assert c["MULTIFD_HEADER_SIZE"] == (fixed_size(multifd.MultifdRamPacket, None, "ramblock")
                                        + item_struct(multifd.MultifdRamPacket, "offsets").size
                                        * multifd.MultifdRamPacket.page_count) == 1344
    assert c["MIG_CMDS"] == commands.MIG_CMDS and c["RP_TYPES"] == return_path.RP_TYPES
    assert c["TARGET_PAGE_SIZE"] == ram.TARGET_PAGE_SIZE
    assert c["REC"][main_stream.QEMU_VM_COMMAND] == "Command"
    assert c["CMD_PAYLOAD"][commands.MIG_CMD_PING] == "CmdPing"
    assert c["RP_PAYLOAD"][return_path.MIG_RP_MSG_PONG] == "RpPong"
    for code, name in commands.MIG_CMDS.items():
        assert f'[{code}] = "{name}"' in plugin_text
    # one boolean per flag bit, from the FlagsField names
    for i, name in enumerate(multifd.MULTIFD_FLAG_NAMES):
        assert re.search(rf'"qmig\.multifd\.flags\.{name.lower()}", "{name}", 32, nil, {1 << i}\)', plugin_text)
    assert 'ProtoField.uint64("qmig.ram.addr"' in plugin_text
    assert "--@@GENERATED@@" not in plugin_text


def test_record_kinds_are_the_channels_table() -> None:
    """The plugin names records with the kinds of ``channels.kinds`` (what ``migshark dissect`` prints):
    by wire code, and by name for the kinds the template picks itself; every code it dispatches on has
    one, and it spells none of them."""
    c = lua.constants()
    assert c["MAIN_KIND"] == kinds.by_code("main") and c["RAM_KIND"] == kinds.by_code("ram")
    assert c["RP_KIND"] == kinds.RP_KINDS
    assert c["KIND"] == {name: k for name, k in vars(kinds).items() if isinstance(k, kinds.RecordKind)}
    assert set(c["MAIN_KIND"]) == set(c["REC"])
    assert set(c["RAM_KIND"]) == {*c["RAM_PAYLOAD"], c["RAM_FLAG_EOS"], c["RAM_FLAG_MULTIFD_FLUSH"],
                                  c["RAM_FLAG_MEM_SIZE"]}
    assert set(c["RP_KIND"]) == set(c["RP_TYPES"]) - {c["RP_INVALID"]}
    template = lua.template_text()
    used = set(re.findall(r"\bK\.(\w+)", template))
    assert {"MAIN_HEADER", "MULTIFD_HELLO", "MULTIFD_PACKET", "DEVICE_STATE", "MALFORMED"} <= used <= set(c["KIND"])
    for name in kinds.KINDS:
        if "." in name:
            assert f'"{name}' not in template, name


def _template_code() -> str:
    """The template without its comments and string literals."""
    code = re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', lua.template_text())
    return re.sub(r"--[^\n]*", "", code)


#: Numbers the template may hold: Lua machinery, not wire layout (sizes, offsets, codes and magics come
#: from the generated layouts ``S`` and constants ``C``).
TEMPLATE_NUMBERS = {
    "0", "1", "2",       # counting, 1-based string positions, powers of two
    "4", "8", "64",      # Lua numbers hold 4-byte integers exactly; 8-byte ones are UInt64 (64 bits)
    "0xff",              # a byte
    "0x20", "0x7F",      # the printable block-name test of channels.identify.looks_like_ram_record
    "6",                 # record kinds shown in the Info column
    "4294967296",        # TCP's sequence number space (segments placed by tcp.seq), not a migration layout
}


def test_template_spells_no_wire_layout() -> None:
    numbers = set(re.findall(r"(?<![\w.])(0[xX][0-9a-fA-F]+|\d+)(?![\w.])", _template_code()))
    assert numbers <= TEMPLATE_NUMBERS, sorted(numbers - TEMPLATE_NUMBERS)


def test_constants_the_template_builds_on_follow_the_declarations() -> None:
    """What the template reads from ``C`` and ``S`` instead of spelling it, against the Scapy classes."""
    c = lua.constants()
    model = lua.build_model()
    # a recovered main stream starts with a RECV_BITMAP command's type and cmd
    n = fixed_size(commands.Command, "type", "cmd")
    assert bytes(c["RECOVERY_START"]) == bytes(commands.Command(cmd=commands.MIG_CMD_RECV_BITMAP, len=0))[:n]
    ending = fixed_size(return_path.RecvBitmapDump, "ending", "ending")
    assert c["RECV_BITMAP_ENDING_HEX"] == bytes(return_path.RecvBitmapDump(bitmap=b""))[-ending:].hex()
    assert c["RP_INVALID"] == return_path.MIG_RP_MSG_INVALID
    # MEM_SIZE: a block starts with its idstr length (never 0); otherwise an optional be64 follows
    lead, name = model.layouts["RamBlockInfo"][1][:2]
    assert (lead.kind, lead.size, name.len_from) == ("u", 1, lead.name)
    assert c["MEM_SIZE_EXTRA_SIZE"] == fixed_size(ram.RamBlockExtra) == len(bytes(ram.RamBlockExtra()))
    # looks_like_ram reads the word and the block name as RamRecord: addr + flags, then idstr
    word, idlen, idstr = model.layouts["RamRecord"][1]
    assert [b["n"] for b in word.bits] == ["addr", "flags"] and word.size == fixed_size(ram.RamRecord, "addr", "flags")
    assert idlen.cond == idstr.cond == "has_idstr" and idstr.len_from == idlen.name and idstr.kind == "s"
    # scan_device builds a footer from SectionFooter's items (type, section_id; up to 4-byte integers)
    items = model.layouts["SectionFooter"][1]
    vals = {"type": c["REC_FOOTER"], "section_id": 0x01020304}
    assert all(it.kind == "u" and it.size <= 4 and it.name in vals for it in items)
    built = b"".join(vals[it.name].to_bytes(it.size, "big") for it in items)
    assert built == bytes(main_stream.SectionFooter(section_id=0x01020304))


def test_drift_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field the generator cannot express stops the export instead of producing a wrong layout."""
    from scapy.fields import IntField
    from scapy.packet import Packet

    class Odd(Packet):
        fields_desc = [IntField("a", 0), ConditionalField(IntField("b", 0), lambda pkt: pkt.a == 7)]

    bad = (*lua.GROUPS, lua.Group("odd", (Odd,)))
    monkeypatch.setattr(lua, "GROUPS", bad)
    with pytest.raises(ValueError, match="no Lua predicate"):
        lua.build_model()


def test_run_export_writes_the_file(tmp_path: Path) -> None:

    out = tmp_path / "qmig.lua"
    assert lua.run_export(str(out)) == 0
    text = out.read_text()
    assert text.startswith("-- SPDX-License-Identifier") and 'Proto("qmig", "QEMU migration")' in text


# ---------------------------------------------------------------------------------------------
# Real tshark


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lua") / "qmig.lua"
    lua.write_plugin(path)
    return path


def _host() -> TsharkInstall:
    inst = install_named(".".join(subprocess.run(["tshark", "--version"], capture_output=True, text=True)
                                  .stdout.split()[2].split(".")[:2]))
    assert inst is not None
    return inst


def tshark(plugin: Path, capture: Path | str, *args: str, two_pass: bool = False) -> str:
    inst = _host()
    cmd = ["-n", "-X", f"lua_script:{inst.stage(plugin)}", *TCP_OPTS, *(["-2"] if two_pass else []),
           "-r", str(inst.stage(capture)), *args]
    res = inst.run(cmd)
    assert res.returncode == 0, res.stderr
    assert "Lua Error" not in res.stdout and "Lua Error" not in res.stderr, res.stdout[-2000:] + res.stderr
    return res.stdout


def python_records(capture: Path, pattern: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "dissectors.cli.main", "dissect", "--json", "-t", pattern,
                          str(capture)], capture_output=True, text=True, timeout=300, cwd=ROOT, check=True).stdout
    return [d for d in map(json.loads, out.splitlines()) if "type" in d]


def python_counts(capture: Path, channel: str | None = None) -> Counter[str]:
    out = subprocess.run([sys.executable, "-m", "dissectors.cli.main", "dissect", "--json", "--summary",
                          str(capture)], capture_output=True, text=True, timeout=300, cwd=ROOT, check=True).stdout
    counts: Counter[str] = Counter()
    for line in out.splitlines():
        for row in json.loads(line).get("summary", []):
            if row["channel"] != "tls" and channel in (None, row["channel"]):  # the plugin does not walk TLS
                counts[row["type"]] += row["count"]
    return counts


def lua_counts(plugin: Path, capture: Path, kinds: list[str], two_pass: bool,
               channel: str | None = None) -> Counter[str]:
    flt = " || ".join(f'qmig.record == "{k}"' for k in kinds)
    if channel:
        flt = f'qmig.channel == "{channel}" && ({flt})'
    out = tshark(plugin, capture, "-Y", flt, "-T", "fields", "-E", "occurrence=a", "-e", "qmig.record",
                 "-e", "qmig.zero_run.pages", two_pass=two_pass)
    counts: Counter[str] = Counter()
    for line in out.splitlines():
        records, _, runs = line.partition("\t")
        counts.update(k for k in records.split(",") if k in kinds)
        if "ram.zero" in kinds:      # a run of zero-page records is one "ram.zero" item with its length
            counts["ram.zero"] += sum(int(n) - 1 for n in runs.split(",") if n)
    return +counts


PASSES = [pytest.param(False, id="one-pass"), pytest.param(True, id="two-pass")]


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("two_pass", PASSES)
@pytest.mark.parametrize("name", ["multifd4-7.2", "multifd4-10.0"])
def test_multifd_hello_ids_match_python(plugin: Path, name: str, two_pass: bool) -> None:
    capture = CORPUS / f"{name}.pcap.gz"
    out = tshark(plugin, capture, "-Y", "qmig.multifd.hello.id", "-T", "fields", "-e", "tcp.stream",
                 "-e", "qmig.multifd.hello.id", two_pass=two_pass)
    lua_ids = sorted(int(line.split("\t")[1]) for line in out.splitlines())
    py_ids = sorted(r["fields"]["id"] for r in python_records(capture, "multifd.hello"))
    assert lua_ids == py_ids == [0, 1, 2, 3]


#: Record kinds whose counts must agree exactly (a record counts once its header is complete; the
#: corpus files below have no stream cut inside a record, where the Python side says "truncated").
COMPARED = ["multifd.hello", "multifd.packet", "multifd.sync", "rp.pong", "rp.req_pages", "rp.shut",
            "rp.recv_bitmap", "main.cmd", "main.section_start", "main.section_full", "main.section_part",
            "main.section_end", "main.footer", "main.eof", "main.vmdesc", "ram.eos", "ram.mem_size", "ram.page",
            "ram.zero"]


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("two_pass", PASSES)
@pytest.mark.parametrize("name", ["multifd4-7.2", "postcopy-7.2", "preempt-7.2", "preempt-recover-10.0"])
def test_record_counts_match_python(plugin: Path, name: str, two_pass: bool) -> None:
    capture = CORPUS / f"{name}.pcap.gz"
    py = python_counts(capture)
    got = lua_counts(plugin, capture, COMPARED, two_pass)
    want = Counter({k: py[k] for k in COMPARED if py[k]})
    assert got == want
    if name == "multifd4-7.2":
        assert got["multifd.packet"] + got["multifd.sync"] == 61
    if name == "postcopy-7.2":
        assert got["rp.pong"] == 4 and got["rp.req_pages"] == 49


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("two_pass", PASSES)
@pytest.mark.parametrize("name,pages", [("preempt-7.2", 112), ("preempt-10.0", 1012), ("preempt-recover-7.2", 97)])
def test_preempt_channel_is_claimed(plugin: Path, name: str, pages: int, two_pass: bool) -> None:
    """The preempt channel has no magic: the plugin claims a stream to a main channel's destination that
    starts with a RAM record, and walks it as RAM records, as the Python side does."""
    capture = CORPUS / f"{name}.pcap.gz"
    got = lua_counts(plugin, capture, ["ram.page", "ram.zero", "ram.eos"], two_pass, channel="preempt")
    want = python_counts(capture, channel="preempt")
    assert got["ram.page"] == want["ram.page"] == pages
    assert got == Counter({k: want[k] for k in ("ram.page", "ram.zero", "ram.eos") if want[k]})


@pytest.mark.tshark
@skip_no_tshark
def test_silent_preempt_channel_is_left_alone(plugin: Path) -> None:
    """7.2 took the silent preempt channel as main: the channel it really was never sends a page."""
    out = tshark(plugin, CORPUS / "holdback-preempt-7.2.pcap.gz", "-Y", 'qmig.channel == "preempt"')
    assert out.strip() == ""


@pytest.mark.tshark
@skip_no_tshark
def test_one_and_two_pass_give_the_same_fields(plugin: Path) -> None:
    capture = CORPUS / "preempt-recover-10.0.pcap.gz"
    args = ["-Y", 'qmig.record && !(qmig.record == "ram.zero") && !(qmig.record == "ram.page")', "-T", "fields",
            "-e", "frame.number", "-e", "qmig.record", "-e", "qmig.rp.type", "-e", "qmig.main.section_id",
            "-e", "qmig.cmd.cmd", "-e", "qmig.rp.pong.value"]
    assert tshark(plugin, capture, *args) == tshark(plugin, capture, *args, two_pass=True)


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("name", ["multifd4-7.2", "postcopy-7.2", "preempt-recover-7.2"])
def test_expert_shows_no_lua_error(plugin: Path, name: str) -> None:
    out = tshark(plugin, CORPUS / f"{name}.pcap.gz", "-q", "-z", "expert")
    assert "Lua" not in out
    assert not re.search(r"^\s*\d+\s+\w+\s+QMIG\s+(Bad magic|Unsupported version|Malformed)", out, re.M)


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("name", ["multifd4-7.2", "postcopy-7.2", "preempt-recover-10.0"])
def test_snaplen_cut_capture_has_no_lua_error(plugin: Path, tmp_path: Path, name: str) -> None:
    cut = tmp_path / f"{name}-s96.pcap"
    subprocess.run(["editcap", "-s", "96", str(CORPUS / f"{name}.pcap.gz"), str(cut)], check=True,
                   capture_output=True)
    out = tshark(plugin, cut, "-V")
    assert "QEMU migration" in out
    tshark(plugin, cut, "-2", "-q", "-z", "expert")


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("two_pass", PASSES)
@pytest.mark.parametrize("name", ["netpath-multifd4-7.2-misorder.dst", "preempt-recover-10.0", "multifd4-7.2-s96"])
def test_lean_calls_show_what_full_calls_show(plugin: Path, tmp_path: Path, name: str, two_pass: bool) -> None:
    """A call whose items nobody sees or filters on (tree not visible, qmig not referenced) builds none:
    its Info column, protocol column and expert infos equal those of a call that builds them all (a
    filter naming qmig). Both filters name ``frame`` so tshark builds a tree on a first pass either way."""
    capture = CORPUS / f"{name}.pcap.gz"
    if name.endswith("-s96"):   # cut by the snaplen: truncated-header expert infos
        capture = tmp_path / f"{name}.pcap"
        subprocess.run(["editcap", "-s", "96", str(CORPUS / f"{name[:-4]}.pcap.gz"), str(capture)], check=True,
                       capture_output=True)
    for extra in ([], ["-q", "-z", "expert"]):
        lean = tshark(plugin, capture, "-Y", "frame", *extra, two_pass=two_pass)
        full = tshark(plugin, capture, "-Y", "frame || qmig", *extra, two_pass=two_pass)
        assert lean == full
        assert "QMIG" in lean or extra


@pytest.mark.tshark
@skip_no_tshark
def test_decode_as_and_port_pref(plugin: Path) -> None:
    capture = CORPUS / "multifd4-7.2.pcap.gz"
    port = tshark(plugin, capture, "-c", "1", "-T", "fields", "-e", "tcp.dstport").strip()
    for extra in (["-d", f"tcp.port=={port},qmig"], ["-o", f"qmig.port:{port}"]):
        out = tshark(plugin, capture, "--disable-heuristic", "qmig_tcp", *extra, "-Y", "qmig.multifd.hello.id",
                     "-T", "fields", "-e", "qmig.multifd.hello.id")
        assert sorted(map(int, out.split())) == [0, 1, 2, 3]
    assert tshark(plugin, capture, "--disable-heuristic", "qmig_tcp", "-Y", "qmig").strip() == ""


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("two_pass", PASSES)
def test_accept_order_when_client_and_server_ports_are_equal(plugin: Path, tmp_path: Path, two_pass: bool) -> None:
    """The postdissector tells a connection's frames apart by port once it has seen the first; a client
    whose port is the server's (4444 -> 4444) is told apart by address. Its handshake completes first, its
    data comes last: accepted #0 all the same (taken for the server's, its ACK would never accept it and its
    data would, after the other connection)."""
    from tests import synth as S

    capture = tmp_path / "equal-ports.pcap"
    main = S.Conn(4444, 0.0).send(0.01, S.header() + S.eof())
    mfd = S.Conn(50002, 0.002).send(0.003, S.multifd_hello(0))
    S.write_capture(str(capture), [main, mfd], client="10.0.0.1", server="10.0.0.2")
    out = tshark(plugin, capture, "-Y", "qmig.channel.accept_index", "-T", "fields", "-e", "qmig.connection",
                 "-e", "qmig.channel.accept_index", two_pass=two_pass)
    assert set(out.splitlines()) == {"10.0.0.1:4444\t0", "10.0.0.1:50002\t1"}


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("two_pass", PASSES)
def test_verdicts_follow_a_fact_of_an_earlier_connection(plugin: Path, tmp_path: Path, two_pass: bool) -> None:
    """A destination's verdicts are judged again for the connections accepted since the last verdict
    only while nothing known of the earlier ones changed. Here the main channel, accepted after the
    multifd one, advises postcopy once both were judged: under qemu-8.0-10.0 the destination then peeks
    at no channel, so the first accepted one is taken as main and the main channel as multifd. A first
    pass shows that from the advice on; a second pass knows it from the start."""
    from tests import synth as S

    capture = tmp_path / "late-postcopy.pcap"
    b = S.Conn(50002, 0.0).send(0.001, S.multifd_hello(0)).send(0.015, S.multifd_packet(1, 0))
    a = S.Conn(50001, 0.002).send(0.003, S.header()).send(0.010, S.command(commands.MIG_CMD_POSTCOPY_ADVISE))
    a.send(0.020, S.ping(1))
    S.write_capture(str(capture), [b, a], client="10.0.0.1", server="10.0.0.2")
    out = tshark(plugin, capture, "-o", "qmig.policy:qemu-8.0-10.0", "-Y", "qmig.channel.assigned", "-T", "fields",
                 "-e", "qmig.connection", "-e", "qmig.channel.assigned", two_pass=two_pass)
    rows = [tuple(line.split("\t")) for line in out.splitlines()]
    main, mfd = "10.0.0.1:50001", "10.0.0.1:50002"
    first = [(mfd, "main"), (main, "multifd")] if two_pass else [(mfd, "multifd"), (main, "main")]
    assert rows == first + [(main, "multifd"), (mfd, "main"), (main, "multifd")]


@pytest.mark.tshark
@skip_no_tshark
@pytest.mark.parametrize("two_pass", PASSES)
def test_verdicts_follow_a_setup_changed_by_a_later_connection(plugin: Path, tmp_path: Path, two_pass: bool) -> None:
    """A connection accepted later can change the setup every verdict depends on: under qemu-7.2 the
    second connection is preempt while there is no multifd channel, and multifd once one connects."""
    from tests import synth as S

    capture = tmp_path / "late-multifd.pcap"
    conns = [S.Conn(50001, 0.0).send(0.001, S.header()),
             S.Conn(50003, 0.003).send(0.004, S.header()).send(0.012, S.ping(1)),
             S.Conn(50002, 0.007).send(0.008, S.multifd_hello(0))]
    S.write_capture(str(capture), conns, client="10.0.0.1", server="10.0.0.2")
    out = tshark(plugin, capture, "-o", "qmig.policy:qemu-7.2", "-Y", 'qmig.connection == "10.0.0.1:50003"',
                 "-T", "fields", "-e", "qmig.channel.assigned", two_pass=two_pass)
    assert out.split() == (["multifd", "multifd"] if two_pass else ["preempt", "multifd"])


@pytest.mark.tshark
@skip_no_tshark
def test_tshark_registers_the_generated_fields(plugin: Path) -> None:
    """The fields tshark knows (personal plugin dir) have the types the Scapy classes say."""
    inst = _host()
    home = inst.stage_dir / "home-fields"
    plugdir = home / ".local" / "lib" / "wireshark" / "plugins"
    plugdir.mkdir(parents=True)
    for d in (home, *home.rglob("*")):
        d.chmod(0o755)
    shutil.copy(plugin, plugdir / "qmig.lua")
    (plugdir / "qmig.lua").chmod(0o644)
    out = inst.run(["-G", "fields"], home=home).stdout
    types = {cols[2]: cols[3] for cols in (line.split("\t") for line in out.splitlines()) if len(cols) > 3
             and cols[2].startswith("qmig.")}
    fmt, names = layout_of(multifd.MultifdHello)
    for name, char in zip(names, re.findall(r"\d+s|[BHIQ]", fmt[1:]), strict=True):
        want = "FT_BYTES" if char.endswith("s") else _FT[{"B": 1, "H": 2, "I": 4, "Q": 8}[char]]
        assert types[f"qmig.multifd.hello.{name}"] == want, name
    assert types["qmig.main.section_id"] == "FT_UINT32" and types["qmig.rp.type"] == "FT_UINT16"
    assert types["qmig.ram.addr"] == "FT_UINT64" and types["qmig.ram.flags.page"] == "FT_BOOLEAN"
