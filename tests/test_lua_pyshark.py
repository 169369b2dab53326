"""The generated ``qmig`` plugin on every Wireshark a user has (Debian 12's 4.0, trixie's 4.4, sid's 4.6),
driven through pyshark as a user scripting Wireshark from Python would, against ``migshark dissect
--json``: every record of every channel, in order, with its fields, on plain captures and on TLS
captures that Wireshark decrypts with the key log beside them; one pass and two passes (``-2``),
with and without a display filter.

The tshark runs are unprivileged (see tests/tshark_helpers.py): Wireshark 4.4+ loads no Lua as root.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dissectors.outputs import lua
from tests.tshark_helpers import TsharkInstall, install_named

pyshark = pytest.importorskip("pyshark")

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "captures"
SERIES = ["4.0", "4.4", "4.6"]
PREFS = {"tcp.desegment_tcp_streams": "TRUE", "tcp.reassemble_out_of_order": "TRUE"}
#: Records the Python side reports that the plugin shows otherwise: device bodies (qmig.device_state),
#: capture damage (gaps, opaque bytes; the plugin stops walking with expert info).
NOT_RECORDS = {"device.state", "device.vmstate", "gap", "opaque", "malformed", "tls.record"}


def _install(series: str) -> TsharkInstall:
    inst = install_named(series)
    if inst is None:
        pytest.skip(f"no tshark {series} (scripts/install-tshark-roots.sh installs 4.4 and 4.6; chroot needs root)")
    return inst


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lua") / "qmig.lua"
    lua.write_plugin(path)
    return path


def _flat(tree: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            if isinstance(v, (dict, list)):
                _flat(v, out)
            else:
                out[k] = str(v)
    elif isinstance(tree, list):
        for v in tree:
            _flat(v, out)
    return out


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def qmig_layers(pkt: Any) -> list[Any]:
    """Every qmig layer of a packet: one per call of the dissector (a frame with several decrypted TLS
    records has several), which pyshark keeps as the first layer's ``duplicate_layers``."""
    out = []
    for layer in pkt.get_multiple_layers("qmig"):
        out += [layer, *getattr(layer, "duplicate_layers", [])]
    return out


@pytest.fixture(autouse=True)
def _event_loop() -> Iterator[None]:
    """pyshark asks asyncio for the main thread's event loop; an earlier test may have closed or unset it
    (Dask's LocalCluster in the fleet tests does), so each test here runs with a fresh one."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def lua_records(inst: TsharkInstall, plugin: Path, capture: Path, *, two_pass: bool, display_filter: str | None,
                keylog: Path | None = None, extra: list[str] | None = None) -> dict[tuple[str, str], list]:
    """(client endpoint, channel) -> [(record kind, {field: value})] as pyshark gives them.

    pyshark's close() sometimes reports a crash (exit 255, no error line) of a tshark that already gave
    every packet: asyncio lost the child's exit status ("Unknown child process pid"), seen under load on
    the chroot tsharks. Once every packet was read that report is ignored: a real crash loses packets,
    and the record-by-record comparison with dissect --json then fails."""
    params = ["-n", "-X", f"lua_script:{inst.stage(plugin)}", *(["-2"] if two_pass else []), *(extra or [])]
    prefs = dict(PREFS)
    if keylog is not None:
        prefs["tls.keylog_file"] = str(inst.stage(keylog))
        if inst.series == "4.0":  # 4.0's RDP heuristic on TLS claims the decrypted return path
            params += ["--disable-heuristic", "rdpmt_tls_"]
    cap = pyshark.FileCapture(str(inst.stage(capture)), tshark_path=str(inst.wrapper), use_json=True,
                              custom_parameters=params, override_prefs=prefs, display_filter=display_filter)
    out: dict[tuple[str, str], list] = defaultdict(list)
    read_all = False
    try:
        for pkt in cap:
            for layer in qmig_layers(pkt):
                fields = layer._all_fields
                conn = fields.get("qmig.connection")
                chan = fields.get("qmig.channel")
                kinds = _as_list(fields.get("qmig.record"))
                trees = _as_list(fields.get("qmig.record_tree"))
                if len(trees) != len(kinds):  # a record with no field (EOF, EOS) has no subtree
                    trees = [{}] * len(kinds) if not trees else trees + [{}] * (len(kinds) - len(trees))
                for kind, tree in zip(kinds, trees, strict=True):
                    out[(conn, chan)] += _expanded(kind, _flat(tree, {}))
        read_all = True
    finally:
        try:
            cap.close()
        except pyshark.capture.capture.TSharkCrashException:
            if not read_all:
                raise
    return out


def _expanded(kind: str, shown: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """One record, or the records of a zero-page run the plugin shows as one item (docs/wireshark.md): its
    length, and its first and last page addresses as those records' ``addr``."""
    pages = shown.get("qmig.zero_run.pages")
    if pages is None:
        return [(kind, shown)]
    n = int(pages)
    assert n >= lua.ZERO_RUN_MIN, shown
    return ([(kind, {"qmig.ram.addr": shown["qmig.zero_run.first"]})] + [(kind, {})] * (n - 2)
            + [(kind, {"qmig.ram.addr": shown["qmig.zero_run.last"]})])


def python_records(capture: Path, keylog: Path | None = None) -> dict[tuple[str, str], list]:
    args = [sys.executable, "-m", "dissectors.cli.main", "dissect", "--json", "--pages"]
    if keylog is not None:
        args += ["--keylog", str(keylog)]
    res = subprocess.run([*args, str(capture)], capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    out: dict[tuple[str, str], list] = defaultdict(list)
    for d in map(json.loads, res.stdout.splitlines()):
        if "type" not in d or d["type"] in NOT_RECORDS:
            continue
        if d["type"] == "truncated" and "expected" not in d["fields"]:
            continue  # a header cut by the end of the stream: TCP never hands the plugin its bytes again
        chan = "return-path" if d["direction"] == "to-client" else d["channel"]
        chan = "main" if chan == "main-recovery" else chan
        out[(d["client"], chan)].append((d["type"], d["fields"]))
    return out


def _same_value(py: Any, shown: str) -> bool | None:
    """Does the plugin's value equal the Python one? None when they cannot be compared (an enum name
    against its number, lists, booleans)."""
    if isinstance(py, bool) or isinstance(py, (list, dict)):
        return None
    if isinstance(py, int):
        try:
            return int(shown, 0) == py
        except ValueError:
            return None
    try:
        int(shown, 0)
        return None      # an enum's name on the Python side, its number in the field
    except ValueError:
        pass
    if ":" in shown and "-" in py:  # bytes: Wireshark's aa:bb:.. against a UUID's text
        return shown.replace(":", "") == py.replace("-", "")
    return shown == py


def compare(lua_recs: dict, py_recs: dict, two_pass: bool) -> int:
    """Assert the two record streams agree; return how many field values were compared."""
    assert set(lua_recs) == set(py_recs), (sorted(lua_recs), sorted(py_recs))
    compared = 0
    for key, want in py_recs.items():
        got = lua_recs[key]
        kinds_want = [t if t != "truncated" or two_pass else f["expected"] for t, f in want]
        assert [k for k, _ in got] == kinds_want, key
        for (kind, fields), (_, shown) in zip(want, got, strict=True):
            if kind == "truncated":
                continue
            for name, value in fields.items():
                matches = [v for k, v in shown.items() if k.endswith("." + name)]
                if len(matches) != 1:
                    continue
                same = _same_value(value, matches[0])
                if same is not None:
                    assert same, (key, kind, name, value, matches[0])
                    compared += 1
    return compared


#: Representative captures (CI time: every record of a capture goes through pyshark's JSON): small ones in
#: every mode; postcopy recovery (return path, preempt, recovered main) and postcopy-preempt over TLS in
#: the mode that broke, two passes without a display filter; and TLS 1.2 (ChaCha20-Poly1305) decrypted by
#: Wireshark.
SMALL = ["multifd4-10.0", "multifd-tls-10.0"]
LARGE = ["preempt-recover-10.0", "preempt-tls-11.1", "multifd-tls12-chacha-10.0"]
ONE_PASS = pytest.param(False, None, id="one-pass")
TWO_PASS = pytest.param(True, None, id="two-pass")
TWO_PASS_FILTER = pytest.param(True, "qmig", id="two-pass-filter")
CASES = [pytest.param(n, *m.values, id=f"{n}-{m.id}") for n in SMALL for m in (ONE_PASS, TWO_PASS, TWO_PASS_FILTER)]
CASES += [pytest.param(n, *TWO_PASS.values, id=f"{n}-{TWO_PASS.id}") for n in LARGE]


@pytest.mark.tshark
@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize("name,two_pass,dfilter", CASES)
def test_every_record_equals_dissect_json(plugin_file: Path, series: str, name: str, two_pass: bool,
                                          dfilter: str | None) -> None:
    inst = _install(series)
    capture = CORPUS / f"{name}.pcap.gz"
    keylog = capture.with_name(f"{name}.keylog")
    keylog = keylog if keylog.exists() else None
    py = python_records(capture, keylog)
    got = lua_records(inst, plugin_file, capture, two_pass=two_pass, display_filter=dfilter, keylog=keylog)
    assert compare(got, py, two_pass) > 100


@pytest.mark.tshark
@pytest.mark.parametrize("series", SERIES)
def test_without_key_log_tls_is_left_to_tls(plugin_file: Path, series: str) -> None:
    """Without the key log the plugin decodes nothing of a TLS capture and claims no stream."""
    inst = _install(series)
    got = lua_records(inst, plugin_file, CORPUS / "multifd-tls-7.2.pcap.gz", two_pass=False, display_filter="qmig")
    assert not got


@pytest.mark.tshark
@pytest.mark.parametrize("series", SERIES)
def test_misclassified_channels_in_wireshark_match_the_analyser(plugin_file: Path, series: str) -> None:
    """Per channel: the true role, the accept index and the destination's role under the policy the
    analyser chose, and expert info on the misclassified channels, equal to ``migshark analyze``."""
    inst = _install(series)
    name = "netpath-multifd4-7.2-misorder.dst"
    report = json.loads((CORPUS / f"{name}.expected.json").read_text())
    mig = report["migrations"][0]
    want = {c["client"]: (c["role"], c["accept_index"], c["assigned_role"], c["misclassified"])
            for c in mig["channels"]}
    policy = mig["policy"]["name"]
    cap = pyshark.FileCapture(str(inst.stage(CORPUS / f"{name}.pcap.gz")), tshark_path=str(inst.wrapper),
                              use_json=True, custom_parameters=["-n", "-X", f"lua_script:{inst.stage(plugin_file)}",
                                                                "-2"],
                              override_prefs={**PREFS, "qmig.policy": policy},
                              display_filter="qmig.channel.assigned && !(qmig.channel == \"return-path\")")
    got: dict[str, tuple] = {}
    experts: list[str] = []
    read_all = False
    try:
        for pkt in cap:
            for layer in qmig_layers(pkt):
                f = layer._all_fields
                got[f["qmig.connection"]] = (f["qmig.channel"], int(f["qmig.channel.accept_index"]),
                                            f["qmig.channel.assigned"], f["qmig.channel.misclassified"] == "1")
                experts += [str(m) for m in _as_list(_flat(f, {}).get("_ws.expert.message"))]
                experts += [v for k, v in _flat(f, {}).items() if k == "_ws.expert.message"]
        read_all = True
    finally:
        try:
            cap.close()
        except pyshark.capture.capture.TSharkCrashException:   # see lua_records: the packets decide
            if not read_all:
                raise
    assert got == want
    assert sum(w[3] for w in want.values()) == 2
    assert sorted(m for m in set(experts) if "is taken as" in m) == [
        f"main channel (accepted #1) is taken as multifd under {policy}",
        f"multifd channel (accepted #0) is taken as main under {policy}"]


@pytest.mark.tshark
@pytest.mark.parametrize("series", SERIES)
def test_root_loads_the_script_only_on_4_0(plugin_file: Path, series: str) -> None:
    """What docs/wireshark.md and export-wireshark say: run as root, Wireshark 4.4 and 4.6 silently load
    no ``-X lua_script:`` (nor the personal plugin folder); Debian 12's 4.0 does."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    inst = _install(series)
    args = ["-G", "protocols", "-X", f"lua_script:{inst.stage(plugin_file)}"]

    def has_qmig(res: subprocess.CompletedProcess[str]) -> bool:
        assert res.returncode == 0, res.stderr
        return any(line.split("\t")[2:3] == ["qmig"] for line in res.stdout.splitlines())

    assert has_qmig(inst.run(args))
    assert has_qmig(inst.run(args, as_root=True)) == (series == "4.0")
