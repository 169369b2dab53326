"""What the Lua plugin keeps per frame for a second pass (docs/wireshark.md, "Memory"), in real tshark.

The plugin must keep, for every call, what a second pass (``tshark -2``) and the GUI's re-dissection need
to start it again. That is allowed to grow with the capture, but only by a few dozen bytes a frame: a
copy of the stream state per call was ~950 bytes a frame here. The Lua heap is read after a full collection
by a tap's ``draw`` at the end of the run, on two captures of the same migration, one four times longer
than the other; the difference per added frame is the plugin's per-frame memory. No timing is involved:
Lua's collector runs by allocation, and the figure is measured after a full collection.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import synth as S
from tests.tshark_helpers import TsharkInstall, install_named

TCP_OPTS = ["-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tcp.reassemble_out_of_order:TRUE"]
#: Bytes of Lua heap per added frame (2,301 -> 9,171 frames). Kept now: 64 on 4.0 (Lua 5.2), 62 on 4.4
#: and 4.6 (Lua 5.4), one pass and -2 (a slot per call, the skip count while a page is skipped, a shared
#: state per record kind); a copy of the state per call: 990 / 920 on 4.0, 684 / 641 on 4.4 and 4.6.
PER_FRAME_BOUND = 200

PROBE = """
local frames = 0
local tap = Listener.new("frame")
function tap.packet() frames = frames + 1 end
function tap.reset() frames = 0 end
function tap.draw()
    collectgarbage("collect")
    collectgarbage("collect")
    io.stdout:write(string.format("LUAHEAP %d %d\\n", collectgarbage("count") * 1024, frames))
end
"""

pytestmark = [pytest.mark.tshark,
              pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")]


def _host() -> TsharkInstall:
    out = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout
    inst = install_named(".".join(out.split()[2].split(".")[:2]))
    assert inst is not None
    return inst


def _migration(path: Path, parts: int) -> None:
    """A main channel of ``parts`` SECTION_PARTs of 64 pages and a multifd channel of ``parts`` packets."""
    main = S.Conn(50001, 0.0).send(0.001, S.header() + S.ram_start(total=parts * 64 * S.PAGE))
    mfd = S.Conn(50002, 0.0005).send(0.0015, S.multifd_hello(0))
    for i in range(parts):
        main.send(0.01 + i * 0.01, S.ram_part([(i * 64 + j) * S.PAGE for j in range(64)]))
        mfd.send(0.015 + i * 0.01, S.multifd_packet(i + 1, 16, sync=i % 8 == 7))
    main.send(0.01 + parts * 0.01, S.eof()).close(0.02 + parts * 0.01)
    mfd.close(0.02 + parts * 0.01)
    S.write_capture(str(path), [main, mfd])


def _heap(inst: TsharkInstall, plugin: Path, probe: Path, capture: Path, two_pass: bool) -> tuple[int, int]:
    res = inst.run(["-n", "-q", "-X", f"lua_script:{inst.stage(plugin)}", "-X", f"lua_script:{inst.stage(probe)}",
                    *TCP_OPTS, *(["-2"] if two_pass else []), "-r", str(inst.stage(capture))])
    assert res.returncode == 0 and "Lua Error" not in res.stdout + res.stderr, res.stdout[-2000:] + res.stderr
    m = re.search(r"LUAHEAP (\d+) (\d+)", res.stdout)
    assert m, res.stdout[-2000:]
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from dissectors.outputs import lua

    d = tmp_path_factory.mktemp("luamem")
    out = {"plugin": d / "qmig.lua", "probe": d / "probe.lua", "small": d / "small.pcap", "large": d / "large.pcap"}
    lua.write_plugin(out["plugin"])
    out["probe"].write_text(PROBE)
    _migration(out["small"], 10)
    _migration(out["large"], 40)
    return out


@pytest.mark.parametrize("series", ["4.0", "4.4", "4.6"])
@pytest.mark.parametrize("two_pass", [False, True], ids=["one-pass", "two-pass"])
def test_per_frame_memory_is_a_few_dozen_bytes(files: dict[str, Path], two_pass: bool, series: str) -> None:
    inst = install_named(series)
    if inst is None:
        pytest.skip(f"tshark {series} is not installed (scripts/install-tshark-roots.sh)")
    small, n_small = _heap(inst, files["plugin"], files["probe"], files["small"], two_pass)
    large, n_large = _heap(inst, files["plugin"], files["probe"], files["large"], two_pass)
    assert n_large > 3 * n_small > 3000, (n_small, n_large)
    per_frame = (large - small) / (n_large - n_small)
    assert per_frame <= PER_FRAME_BOUND, f"{per_frame:.0f} bytes of Lua heap per frame ({n_small} -> {n_large} frames)"


def test_the_probe_sees_what_a_copy_per_call_would_keep(files: dict[str, Path], tmp_path: Path) -> None:
    """The measurement can fail: a plugin that keeps a 16-field table per frame goes over the bound."""
    inst = _host()
    leak = tmp_path / "leak.lua"
    leak.write_text(files["plugin"].read_text() + """
local kept = {}
local leak = Proto("qmig_leak", "per-frame copy")
function leak.dissector(tvb, pinfo, tree)
    if pinfo.visited then return end
    local c = {}
    for i = 1, 16 do c["field" .. i] = i end
    kept[pinfo.number] = c
end
register_postdissector(leak)
""")
    small, n_small = _heap(inst, leak, files["probe"], files["small"], True)
    large, n_large = _heap(inst, leak, files["probe"], files["large"], True)
    assert (large - small) / (n_large - n_small) > PER_FRAME_BOUND
