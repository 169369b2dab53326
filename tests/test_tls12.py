"""TLS 1.2 (dissectors.tls.tls12): the PRF against its published test vector, synthetic sessions of each
AEAD suite in any chunking, a record failing authentication, missing secrets, a CBC suite; the record layer
read without a key log; and the real TLS 1.2 captures of the corpus, decrypted and hidden."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import tls12_synth as Y
from cryptography.hazmat.primitives import hashes
from test_tls_decrypt import Collect, feed

from dissectors.analysis.judge import Options
from dissectors.cli.check import corpus_keylog
from dissectors.cli.pipeline import analyze_file
from dissectors.tls import KeyLog, TlsConnection, TlsStreamSink
from dissectors.tls.tls12 import SUITES12, key_block, prf

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
TLS12_CAPTURES = {
    "multifd-tls12-7.2": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "multifd-tls12-11.1": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "multifd-tls12-chacha-10.0": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}
SUITES = [Y.AES128_GCM, Y.AES256_GCM, Y.CHACHA20]


def test_prf_matches_the_published_sha256_vector() -> None:
    """The TLS 1.2 PRF (P_SHA256) test vector posted to the IETF TLS list (used by many implementations)."""
    out = prf(hashes.SHA256, bytes.fromhex("9bbe436ba940f017b17652849a71db35"), b"test label",
              bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"), 100)
    assert out.hex() == (
        "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af0fa0"
        "22f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff70187347b66")


def test_key_block_layout() -> None:
    """An AEAD suite's key block: client key, server key, client IV, server IV (no MAC keys)."""
    suite = SUITES12[Y.AES256_GCM]
    ms, cr, sr = bytes(48), b"c" * 32, b"s" * 32
    kb = key_block(suite, ms, cr, sr)
    block = prf(hashes.SHA384, ms, b"key expansion", sr + cr, 72)
    assert kb.keys == (block[:32], block[32:64]) and kb.ivs == (block[64:68], block[68:72])
    chacha = key_block(SUITES12[Y.CHACHA20], ms, cr, sr)
    assert [len(x) for x in (*chacha.keys, *chacha.ivs)] == [32, 32, 12, 12]


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("seed", [1, 2])
def test_every_aead_suite_any_chunking(suite: int, seed: int) -> None:
    s = Y.Tls12Session(suite)
    hello, server, client = s.opening()
    up = bytes(range(256)) * 300
    down = b"return path" * 40
    streams = [(0, hello), (1, server), (0, client), (1, s.server_finished()), (0, s.data(0, up[:30000])),
               (1, s.data(1, down)), (0, s.data(0, up[30000:], chunk=999)), (0, s.close_notify(0))]
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    feed(sink, streams, random.Random(seed))
    assert sink.status.decrypted and sink.status.problems == [], sink.status.problems
    assert sink.status.cipher == SUITES12[suite].name and sink.status.version == "TLS 1.2"
    assert bytes(inner.bufs[0]) == up and bytes(inner.bufs[1]) == down
    assert inner.ends == [(0, len(up), "fin"), (1, len(down), "fin")]
    assert sink.status.handshake_done_ts is not None


def test_records_one_byte_at_a_time_and_the_server_first() -> None:
    s = Y.Tls12Session(Y.CHACHA20)
    hello, server, client = s.opening()
    conn = TlsConnection(KeyLog.parse(s.keylog()))
    out = []
    for d, data in [(1, server), (0, hello), (0, client), (1, s.server_finished()), (0, s.data(0, b"QEVM" * 9))]:
        for i in range(len(data)):
            out += conn.feed(d, data[i:i + 1])
    assert b"".join(e.data for e in out if hasattr(e, "data")) == b"QEVM" * 9


def test_a_record_failing_authentication_stops_that_direction_only() -> None:
    s = Y.Tls12Session(Y.AES128_GCM)
    hello, server, client = s.opening()
    good, bad = s.data(0, b"a" * 100), bytearray(s.data(0, b"b" * 100))
    bad[-1] ^= 1                                      # the tag
    after = s.data(0, b"c" * 100)
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    feed(sink, [(0, hello), (1, server), (0, client), (1, s.server_finished()), (0, good), (0, bytes(bad)),
                (0, after), (1, s.data(1, b"rp"))])
    assert bytes(inner.bufs[0]) == b"a" * 100 and bytes(inner.bufs[1]) == b"rp"
    (problem,) = sink.status.problems
    assert "client to server" in problem and "record 6 failed authentication with the key log's secrets" in problem
    assert inner.gaps == [(0, 100, len(bad) + len(after))]


def test_a_wrong_master_secret_fails_authentication_at_the_finished() -> None:
    s = Y.Tls12Session()
    hello, server, client = s.opening()
    wrong = s.keylog().replace(s.master.hex(), "11" * 48)
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(wrong))
    feed(sink, [(0, hello), (1, server), (0, client), (1, s.server_finished()), (0, s.data(0, b"x" * 50))])
    assert not inner.bufs[0] and len(sink.status.problems) == 2
    assert all("failed authentication" in p for p in sink.status.problems)


def test_missing_secrets_are_said_as_for_tls13() -> None:
    s = Y.Tls12Session()
    hello, server, client = s.opening()
    stream = hello + client + s.data(0, b"x" * 500)
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(Y.Tls12Session().keylog()))    # another connection's secret
    feed(sink, [(1, server), (0, stream)], random.Random(3))
    assert bytes(inner.bufs[0]) == stream and not sink.status.decrypted
    assert "the key log has no secrets for this connection" in sink.status.problems[0]
    # the random is in the key log but only with TLS 1.3 labels: which line is missing is said
    only13 = f"CLIENT_TRAFFIC_SECRET_0 {s.random.hex()} {'22' * 48}\n"
    conn = TlsConnection(KeyLog.parse(only13))
    events = conn.feed(0, hello) + conn.feed(1, server) + conn.feed(0, client)
    (problem,) = events
    assert "the key log has no CLIENT_RANDOM line (the TLS 1.2 master secret)" in problem.why


def test_a_cbc_suite_is_said_not_decrypted() -> None:
    s = Y.Tls12Session()
    conn = TlsConnection(KeyLog.parse(s.keylog()))
    conn.feed(0, Y.client_hello12(s.random))
    events = conn.feed(1, Y.server_hello12(s.server_random, 0xC014))    # ECDHE_RSA_WITH_AES_256_CBC_SHA
    assert len(events) == 2 and all("0xc014 is not decrypted: only the AEAD suites" in e.why and "CBC" in e.why
                                    for e in events)


def test_a_cbc_connection_passes_through_encrypted_with_the_reason() -> None:
    """With secrets but a suite that is not decrypted, the inner sink gets the ciphertext as if there were no
    key log (so the record layer can still be read)."""
    s = Y.Tls12Session(Y.AES256_CBC_SHA)
    hello, server, client = s.opening()
    stream = hello + client + s.data(0, b"x" * 500)
    inner = Collect()
    sink = TlsStreamSink(inner, KeyLog.parse(s.keylog()))
    feed(sink, [(0, stream[:300]), (1, server), (0, stream[300:])], random.Random(5))
    assert bytes(inner.bufs[0]) == stream and bytes(inner.bufs[1]) == server
    assert not sink.status.decrypted and sink.status.version == "TLS 1.2"
    (problem,) = sink.status.problems
    assert "0xc014 is not decrypted" in problem and problem.endswith("passed through encrypted")


# -- synthetic TLS 1.2 migrations: decrypted, and read from the record layer alone ------------------
@pytest.mark.parametrize("suite", SUITES)
def test_a_tls12_migration_decrypted_and_hidden(tmp_path: Path, suite: int) -> None:
    cap = tmp_path / "tls12.pcap"
    keylog = KeyLog.load(Y.write_tls12_migration(cap, suite))
    (t,) = analyze_file(str(cap), Options(), keylog=keylog).report["migrations"]
    assert [c["role"] for c in t["channels"]] == ["main", "multifd", "multifd"]
    assert all(c["tls"]["decrypted"] and c["tls"]["version"] == "TLS 1.2" for c in t["channels"])
    (h,) = analyze_file(str(cap), Options()).report["migrations"]
    assert [c["role"] for c in h["channels"]] == ["main", "multifd", "multifd"]
    assert all(c["role_inferred"] for c in h["channels"])
    # the close_notify after the data is not a failure
    assert h["outcome"]["status"] == "completed" and "contents not verified" in h["outcome"]["reason"]
    assert [c["tls_handshake_done_time"] for c in h["channels"]] == \
        [c["tls_handshake_done_time"] for c in t["channels"]]


def test_a_cbc_migration_with_its_key_log_is_read_from_the_record_layer(tmp_path: Path) -> None:
    """Under a CBC suite the padding rounds every record up, yet a multifd hello's record still shows 64
    bytes once the Finished's overhead is taken off (HMAC-SHA1: 48 bytes for both)."""
    cap = tmp_path / "cbc.pcap"
    keylog = KeyLog.load(Y.write_tls12_migration(cap, Y.AES256_CBC_SHA))
    report = analyze_file(str(cap), Options(), keylog=keylog).report
    (m,) = report["migrations"]
    assert [c["role"] for c in m["channels"]] == ["main", "multifd", "multifd"]
    assert all(c["role_inferred"] and not c["tls"]["decrypted"] for c in m["channels"])
    assert all("0xc014 is not decrypted" in c["tls"]["problems"][0] for c in m["channels"])
    assert m["outcome"]["status"] == "completed"
    assert "the key log given did not decrypt them" in m["outcome"]["reason"]
    assert "0xc014 is not decrypted" in report["capture"]["keylog"]["problems"][0]


# -- the real TLS 1.2 captures ---------------------------------------------------------------------
def _cap(name: str) -> Path:
    return CAPTURES / f"{name}.pcap.gz"


def _report(name: str, keylog: bool) -> dict[str, Any]:
    return analyze_file(str(_cap(name)), Options(), keylog=corpus_keylog(_cap(name)) if keylog else None).report


@pytest.mark.parametrize("name", sorted(TLS12_CAPTURES))
def test_real_tls12_capture_decrypts_to_the_plaintext_migration(name: str) -> None:
    man = json.loads((CAPTURES / f"{name}.manifest.json").read_text())
    assert man["tls"]["priority"] == "NORMAL:-VERS-ALL:+VERS-TLS1.2" or man["tls"]["priority"].startswith(
        "NORMAL:-VERS-ALL:+VERS-TLS1.2:")
    (m,) = _report(name, keylog=True)["migrations"]
    chans = m["channels"]
    assert all(c["tls"]["decrypted"] and not c["tls"]["problems"] for c in chans)
    assert {c["tls"]["version"] for c in chans} == {"TLS 1.2"}
    assert {c["tls"]["cipher"] for c in chans} == {TLS12_CAPTURES[name]}
    assert [c["role"] for c in chans].count("main") == 1
    assert sorted(c["multifd_id"] for c in chans if c["role"] == "multifd") == [0, 1]
    assert m["outcome"]["status"] == man["outcome"] == "completed"
    main = next(c for c in chans if c["role"] == "main")
    assert main["records"].get("main.header", 0) == 1          # the QEVM magic and version, decrypted
    ram = man["query_migrate"]["source"]["ram"]
    totals: dict[str, int] = {}
    for c in chans:
        for k, v in c["records"].items():
            totals[k] = totals.get(k, 0) + v
    repeated = (m["multifd_repeated_pages"] or {}).get("count", 0)
    assert totals.get("ram.page", 0) + totals.get("multifd.normal_pages", 0) - repeated == ram["normal"]
    assert totals.get("ram.zero", 0) + totals.get("multifd.zero_pages", 0) == ram["duplicate"]


@pytest.mark.parametrize("name", sorted(TLS12_CAPTURES))
def test_real_tls12_capture_hidden_roles_equal_the_decrypted(name: str) -> None:
    (h,) = _report(name, keylog=False)["migrations"]
    (t,) = _report(name, keylog=True)["migrations"]
    assert [(c["client"], c["role"]) for c in h["channels"]] == [(c["client"], c["role"]) for c in t["channels"]]
    assert all(c["role_inferred"] for c in h["channels"])
    assert [c["tls_handshake_done_time"] for c in h["channels"]] == \
        [c["tls_handshake_done_time"] for c in t["channels"]]
    assert h["outcome"]["status"] == "completed" and "contents not verified" in h["outcome"]["reason"]


# -- the recorder's TLS priority -------------------------------------------------------------------
def test_the_recorder_passes_the_priority_string_to_both_sides(tmp_path: Path) -> None:
    from dissectors.recorder.qemus import GuestSpec, QemuInstall, qemu_command
    from dissectors.recorder.scenarios import SCENARIOS, TLS12_PRIORITY, with_overrides

    inst = QemuInstall("7.2", Path("/usr/bin/qemu-system-x86_64"))
    guest = GuestSpec(tmp_path / "g.elf", "fill=1", 16, "pc")
    for incoming in (True, False):
        cmd = qemu_command(inst, guest, qmp_socket=tmp_path / "q", serial_log=tmp_path / "s", incoming=incoming,
                           tls_dir=tmp_path / "tls", name="x", tls_priority="NORMAL:%COMPAT,x")
        creds = cmd[cmd.index("-object") + 1]
        assert creds.endswith(",verify-peer=on,priority=NORMAL:%COMPAT,,x")     # QemuOpts doubles a comma
    plain = qemu_command(inst, guest, qmp_socket=tmp_path / "q", serial_log=tmp_path / "s", incoming=True,
                         tls_dir=tmp_path / "tls", name="x")
    assert "priority=" not in plain[plain.index("-object") + 1]
    assert {SCENARIOS[n].tls_priority for n in ("multifd-tls12-7.2", "multifd-tls12-11.1")} == {TLS12_PRIORITY}
    assert SCENARIOS["multifd-tls-7.2"].tls_priority is None
    assert with_overrides(SCENARIOS["multifd-tls12-7.2"], tls_priority="").tls_priority is None
    assert with_overrides(SCENARIOS["multifd-tls-7.2"], tls_priority="X").tls_priority == "X"
