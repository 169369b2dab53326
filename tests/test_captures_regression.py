"""The real-capture corpus: each capture against its reviewed expected report, and against the truth
its recorder wrote down (QEMU's own outcome, error messages, query-migrate counters, the proxy's log)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from dissectors.analysis.judge import Options
from dissectors.analysis.policies import policy_for_version
from dissectors.cli.check import check_one, corpus_keylog, destination_version, find_captures, sibling
from dissectors.cli.pipeline import analyze_file

CAPTURES = find_captures([str(Path(__file__).resolve().parent.parent / "captures")])
IDS = [c.name.split(".pcap")[0] for c in CAPTURES]


@cache
def manifest(cap: Path) -> dict[str, Any]:
    return json.loads(sibling(cap, ".manifest.json").read_text())


@cache
def report(cap: Path) -> dict[str, Any]:
    """The default analysis, as a user runs it (no --qemu-version)."""
    return analyze_file(str(cap), Options(), keylog=corpus_keylog(cap)).report


@cache
def versioned(cap: Path) -> dict[str, Any]:
    """The analysis told the destination's real QEMU version (from the recorder's manifest)."""
    return analyze_file(str(cap), Options(qemu_version=destination_version(cap)), keylog=corpus_keylog(cap)).report


def named(name: str) -> Path:
    return next(c for c in CAPTURES if c.name.startswith(name + ".pcap"))


def destination_side(cap: Path) -> list[dict[str, Any]]:
    """Migrations as the destination saw them (the proxy-facing leg of a relay is left out)."""
    return [m for m in report(cap)["migrations"] if m.get("relay", {}).get("side") != "source"]


def test_corpus_is_there():
    assert len(CAPTURES) >= 15, "captures/ lost its corpus"


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_expected_report_unchanged(cap):
    status, diff = check_one(cap, update=False)
    assert status == "ok", "\n".join(diff[:80])


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_outcome_agrees_with_qemu(cap):
    truth = manifest(cap)["outcome"]
    (m,) = [m for m in destination_side(cap) if m["channels"]][-1:]
    got = m["outcome"]["status"]
    if all(c["role"] == "tls" for c in m["channels"]):
        assert got == "unknown"
    elif truth == "stalled" and got == "failed":
        # QEMU stalled (the recorder's verdict while it ran); the capture goes on to the final state: the
        # stall ended in a failure once the source wrote on or closed the silent channel, or the
        # destination printed its error and hung until the teardown (a capture that stops sooner than the
        # progress timeout after the failure shows the failure, not yet the hang)
        assert m["outcome"].get("stalled_for") or m["outcome"].get("hung_for") or m["misclassifications"], \
            m["outcome"]
    else:
        assert got == truth, m["outcome"]


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_default_run_agrees_with_the_destinations_version(cap):
    """Without --qemu-version the verdict is the one the destination's real version gives, and the
    destination's real rules are among those its behaviour fits."""
    policy = policy_for_version(destination_version(cap))
    for a, b in zip(report(cap)["migrations"], versioned(cap)["migrations"], strict=True):
        if a.get("relay", {}).get("side") == "source":
            continue
        assert a["outcome"]["status"] == b["outcome"]["status"], (a["outcome"], b["outcome"])
        assert sorted(x["client"] for x in a["misclassifications"]) == \
            sorted(x["client"] for x in b["misclassifications"])
        fits = a["policy"]["fits_capture"]
        assert fits is None or policy in fits, (policy, a["policy"]["ruled_out"])


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_every_plain_byte_is_a_record(cap):
    for m in destination_side(cap):
        for c in m["channels"]:
            if c["role"] == "tls":
                continue
            bad = {k: v for k, v in c["records"].items() if k in ("malformed", "opaque", "truncated", "gap")}
            if c["closed_by"] != "client" or c["rst_time"] is not None:
                # dropped by the destination, or still open when the capture stopped (the failure
                # scenarios): only the last record may be cut
                assert bad.pop("truncated", 0) <= 1
                sc = manifest(cap).get("scenario", {})
                if (sc.get("interrupt") or sc.get("recover")) and c["closed_by"] == "server":
                    # a destination killed, or a postcopy paused, on a delayed path: segments that reach the
                    # destination's side after its reset (reordered, some filling earlier holes) are not taken
                    # by the reassembly, so the tail of the stream has holes (and what follows one cannot be
                    # framed)
                    bad.pop("gap", None)
                    bad.pop("opaque", None)
            assert not bad and not c["malformed"], (c["client"], c["role"], bad, c["malformed"])


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_page_counts_agree_with_query_migrate(cap):
    man = manifest(cap)
    ram = (man["query_migrate"]["source"] or {}).get("ram")   # None: the source was killed
    if not ram or man["outcome"] != "completed" or any(c["role"] == "tls" for m in destination_side(cap)
                                                        for c in m["channels"]):
        pytest.skip("no completed plain-text migration to count")
    totals: dict[str, int] = {}
    for m in destination_side(cap):
        for c in m["channels"]:
            for k, v in c["records"].items():
                totals[k] = totals.get(k, 0) + v
    normal = totals.get("ram.page", 0) + totals.get("multifd.normal_pages", 0)
    zero = totals.get("ram.zero", 0) + totals.get("multifd.zero_pages", 0)
    if man["scenario"].get("recover") and man["scenario"].get("path") == "netns":
        # QEMU counts a page once written to the channel: what sat in the source's socket buffer when the
        # paused connection was reset never left the host (and was sent again after the recovery)
        assert zero <= ram["duplicate"] and normal <= ram["normal"]
        return
    assert zero == ram["duplicate"]
    # QEMU 7.2 sends a few multifd pages twice and counts them once (race on MultiFDPages_t.block, fixed
    # in 8.0 by ddbe628c97c3; docs/research/multifd-72-counts.md): the analyser finds each repeat.
    repeated = sum((m["multifd_repeated_pages"] or {}).get("count", 0) for m in destination_side(cap))
    assert normal - repeated == ram["normal"]
    if man["qemu"]["source"]["name"] != "7.2":
        assert repeated == 0


def test_72_race_repeats_are_the_researched_ones():
    """multifd4-7.2: the 11 pairs of docs/research/multifd-72-counts.md, the renumbered 43 -> 49 included."""
    cap = next(c for c in CAPTURES if c.name.startswith("multifd4-7.2."))
    (m,) = destination_side(cap)
    rep = m["multifd_repeated_pages"]
    assert rep["count"] == 11
    assert [e["packets"] for e in rep["examples"]] == [[26, 27], [27, 28], [28, 29], [30, 31], [31, 32]]
    assert rep["examples"][0]["offset"] == 0xD5A000 and rep["examples"][0]["block"] == "pc.ram"
    assert m["policy"]["source_generation"] == "7.2"


def test_multifd_first_on_72_names_qemus_error():
    cap = next(c for c in CAPTURES if c.name.startswith("holdback-multifd-7.2."))
    (m,) = destination_side(cap)
    stderr = manifest(cap)["stderr"]["destination"]
    main = next(x for x in m["misclassifications"] if x["role"] == "main")
    assert main["failure"] in stderr
    assert m["what_if"]["qemu-8.0-10.0"][0]["verdict"] == "ok"


@pytest.mark.parametrize("name", ["holdback-preempt-7.2", "holdback-preempt-7.2-to-10.0"])
def test_preempt_first_stalls(name):
    cap = next(c for c in CAPTURES if c.name.startswith(name + "."))
    (m,) = destination_side(cap)
    assert [(c["role"], c["assigned_role"]) for c in m["channels"]] == [("preempt", "main"), ("main", "preempt")]
    assert any(s["kind"] == "preempt-as-main" for s in m["stalls"])
    assert "Not a migration stream" in manifest(cap)["stderr"]["destination"]


def test_same_misorder_mapped_right_on_100():
    cap = next(c for c in CAPTURES if c.name.startswith("holdback-multifd-10.0."))
    (m,) = destination_side(cap)
    assert m["channels"][0]["role"] == "multifd" and m["channels"][0]["assigned_role"] == "multifd"
    assert not m["misclassifications"]
    assert m["what_if"]["qemu-7.2"][0]["verdict"] == "fails"


@pytest.mark.parametrize("cap", [c for c in CAPTURES if c.name.startswith(("holdback-", "tlsfin-"))],
                         ids=[i for i in IDS if i.startswith(("holdback-", "tlsfin-"))])
def test_accept_order_matches_the_proxy_log(cap):
    """The relay connected upstream in a known order: that is the destination's accept order."""
    proxy = manifest(cap)["proxy"]["connections"]
    want = [c["upstream_local_port"] for c in sorted(proxy, key=lambda c: c["upstream_order"])
            if c.get("upstream_local_port")]
    (m,) = destination_side(cap)
    got = [int(c["client"].rsplit(":", 1)[1]) for c in m["channels"] if c["leg"] == 0]
    assert got == want


def test_recovery_leg_is_linked():
    for cap in (c for c in CAPTURES if c.name.startswith("preempt-recover-")):
        (m,) = destination_side(cap)
        legs = [c["leg"] for c in m["channels"]]
        assert legs.count(1) == 2, legs
        recovered = [c for c in m["channels"] if c["leg"] == 1]
        assert {c["role"] for c in recovered} == {"main-recovery", "preempt"}
        assert not m["stalls"]


@pytest.mark.parametrize("name,generation", [("multifd4-7.2", "7.2"), ("multifd4-10.0", ">= 10.0"),
                                             ("preempt-10.0", ">= 10.0"), ("preempt-7.2", ">= 7.2"),
                                             # downward: a newer source speaks its older machine type's stream
                                             ("multifd4-11.1-to-10.0", ">= 10.0"),
                                             ("multifd4-10.0-to-7.2", ">= 7.2"), ("multifd4-11.1-to-7.2", ">= 7.2"),
                                             ("preempt-10.0-to-7.2", ">= 7.2")])
def test_source_generation_from_stream_features(name, generation):
    cap = next(c for c in CAPTURES if c.name.startswith(name + "."))
    (m,) = destination_side(cap)
    assert m["policy"]["source_generation"] == generation


def test_72_source_to_100_destination_multifd_first_is_not_a_failure():
    """A 7.2 source, a 10.0 destination, a multifd channel accepted first: 7.2's rules would fail, but the
    destination loaded everything; the default run must say completed, not QEMU 7.2's error."""
    (m,) = destination_side(named("holdback-multifd-7.2-to-10.0"))
    assert m["channels"][0]["role"] == "multifd" and m["outcome"]["status"] == "completed"
    assert not m["misclassifications"]
    assert m["policy"]["fits_capture"] == ["qemu-8.0-10.0", "qemu-10.1+"]
    assert "qemu-7.2" in m["policy"]["ruled_out"] and m["policy"]["destination_generation"] == ">= 8.0"
    assert m["what_if"]["qemu-7.2"][0] == {**m["what_if"]["qemu-7.2"][0], "verdict": "fails", "fits_capture": False}


def test_multifd_first_on_72_rules_out_later_generations():
    (m,) = destination_side(named("holdback-multifd-7.2"))
    assert m["policy"]["fits_capture"] == ["qemu-7.2"]
    assert "reset" in m["policy"]["ruled_out"]["qemu-8.0-10.0"][0]


@pytest.mark.parametrize("name", ["holdback-preempt-7.2", "holdback-preempt-7.2-to-10.0",
                                  "holdback-preempt-7.2-to-11.1"])
def test_silent_preempt_first_fails_after_a_stall(name):
    (m,) = destination_side(named(name))
    assert m["outcome"]["status"] == "failed" and m["outcome"]["stalled_for"] > 10
    assert m["what_if"]["qemu-7.2"][0]["verdict"] == "stalls, then fails"
    assert any(s["kind"] == "preempt-as-main" and s["end"] is not None for s in m["stalls"])


def test_72_to_111_preempt_first_blocks_the_peek():
    """11.1 peeks in the main thread: the silent preempt channel blocks it, and the real main channel queued
    behind it is never taken in (blocked, not 'preempt' nor 'ok')."""
    cap = named("holdback-preempt-7.2-to-11.1")
    (m,) = [x for x in versioned(cap)["migrations"] if x.get("relay", {}).get("side") != "source"]
    assert m["policy"]["name"] == "qemu-10.1+"
    assert [(c["role"], c["assigned_role"]) for c in m["channels"]] == [("preempt", "blocked"), ("main", "blocked")]
    assert [s["kind"] for s in m["stalls"]] == ["peek-blocked"]
    assert "Failed to peek at channel" in m["outcome"]["reason"]
    assert "Failed to peek at channel" in json.dumps(manifest(cap)["teardown"]) + manifest(cap)["stderr"]["destination"]


def test_multifd_postcopy_preempt_only_fits_101():
    (m,) = destination_side(named("multifd4-postcopy-preempt-11.1"))
    assert m["policy"]["fits_capture"] == ["qemu-10.1+"] and m["outcome"]["status"] == "completed"
    assert not m["unsupported"]
    roles = sorted(c["role"] for c in m["channels"])
    assert roles == ["main", "multifd", "multifd", "multifd", "multifd", "preempt"]


def test_multifd_postcopy_on_72_is_unsupported():
    cap = named("multifd-postcopy-7.2")
    (m,) = destination_side(cap)
    assert [u["kind"] for u in m["unsupported"]] == ["multifd+postcopy"]
    assert m["outcome"]["status"] == "failed" and "yank" in m["outcome"]["reason"]
    assert "yank_unregister_instance" in manifest(cap)["stderr"]["destination"]


@pytest.mark.parametrize("name", ["preempt-recover-7.2", "preempt-recover-10.0", "preempt-recover-11.1"])
def test_postcopy_pause_is_reported(name):
    cap = named(name)
    (m,) = destination_side(cap)
    (pause,) = m["postcopy"]["pauses"]
    assert pause["port"] == manifest(cap)["ports"]["recover"]
    assert 0 < pause["duration"] < 5 and pause["paused_at"] < pause["resumed_at"]


def test_natural_misorder_at_the_destination_fails_and_hangs():
    cap = named("netpath-multifd4-7.2-misorder.dst")
    (m,) = destination_side(cap)
    main = next(x for x in m["misclassifications"] if x["role"] == "main")
    assert main["failure"] in manifest(cap)["stderr"]["destination"]
    assert m["outcome"]["status"] == "failed" and m["outcome"]["hung_for"] >= 5
    assert all(c["order_certain"] for c in m["channels"])


def test_natural_misorder_seen_at_the_source_is_inferred():
    """At the source, main's handshake completed first; the destination's resets say otherwise. The order
    is marked uncertain and the inferred one is the order the destination-side capture shows."""
    (src,) = destination_side(named("netpath-multifd4-7.2-misorder.src"))
    (dst,) = destination_side(named("netpath-multifd4-7.2-misorder.dst"))
    assert not all(c["order_certain"] for c in src["channels"])
    assert [c["client"] for c in src["channels"]] == [c["client"] for c in dst["channels"]]
    assert [c["assigned_role"] for c in src["channels"]] == [c["assigned_role"] for c in dst["channels"]]
    assert src["outcome"]["status"] == "failed"
    assert any("most likely accepted" in n for n in src["notes"])


@pytest.mark.parametrize("vantage", ["src", "dst"])
def test_natural_path_without_misorder_is_clean(vantage):
    (m,) = destination_side(named(f"netpath-multifd4-7.2.{vantage}"))
    assert m["outcome"]["status"] == "completed" and not m["misclassifications"]


def test_111_packaged_loaded_ping_and_its_pong():
    """11.1 (10.2+): PING 0x42 (QEMU_VM_PING_PACKAGED_LOADED) inside the package just before POSTCOPY_RUN,
    answered by PONG 0x42 on the return path."""
    a = analyze_file(str(named("preempt-11.1")), Options())
    main = next(f for f in a.facts if f.kind == "main")
    cmds = [(r.fields["cmd"], r.fields.get("value"), r.fields.get("packaged", False)) for r in main.commands()]
    run = cmds.index(("POSTCOPY_RUN", None, True))
    assert cmds[run - 1] == ("PING", 0x42, True) and cmds[run - 2] == ("PING", 3, True)
    assert 0x42 in [r.fields["value"] for r in main.events if r.kind == "rp.pong"]


TLSFIN = [c for c in CAPTURES if c.name.startswith("tlsfin-")]


@pytest.mark.parametrize("cap", TLSFIN, ids=[i for i in IDS if i.startswith("tlsfin-")])
def test_held_tls_finished_serialises_the_destination(cap):
    """The relay held main's client bytes after its ClientHello (its Finished included) for 1 s. The source had
    completed main's handshake and opened its next channel during the hold, yet the destination answered that
    channel's ClientHello only after main's Finished reached it (its TLS handshake blocks the main loop), so
    main still completed first, was taken as main, and QEMU completed."""
    man = manifest(cap)
    held, *later = man["proxy"]["connections"]
    assert held["hold_at"] == "tls-finished" and held["hold_note"] is None
    assert held["hold_released_at"] - held["hold_started_at"] >= 0.95
    assert later and any(c["accepted_at"] < held["hold_released_at"] for c in later)
    assert all(c["first_reply_at"] >= held["hold_released_at"] for c in later)
    assert man["outcome"] == "completed" and man["exit_status"] == {"source": 0, "destination": 0}
    (m,) = destination_side(cap)
    assert m["channels"][0]["role"] == m["channels"][0]["assigned_role"] == "main"
    assert not m["misclassifications"] and m["outcome"]["status"] == "completed"


def test_a_newer_source_on_a_72_machine_opens_the_preempt_channel_at_set_up():
    """preempt-10.0-to-7.2: pc-i440fx-7.2 sets x-preempt-pre-7-2 (hw_compat_7_2) on the 10.0 source, so it
    connects the preempt channel at set-up, not at postcopy start (postcopy_preempt_establish_channel), and
    ends it with an EOS for the 7.2 destination's fast-load thread: nothing may place the source at 8.0+."""
    (m,) = destination_side(named("preempt-10.0-to-7.2"))
    main, pre = m["channels"]
    assert (main["role"], pre["role"]) == ("main", "preempt")
    assert pre["handshake_time"] - main["handshake_time"] < 0.05
    assert m["postcopy"]["run_time"] - pre["handshake_time"] > 1.0
    assert pre["records"].get("ram.eos") == 1 and pre["records"].get("ram.page", 0) > 0
    assert any("preempt channel opened at set-up" in e for e in m["policy"]["evidence"])
    assert m["outcome"]["status"] == "completed" and not m["misclassifications"]


@pytest.mark.parametrize("vantage", ["src", "dst"])
def test_tls_over_a_jittered_path_completes_with_and_without_the_key_log(vantage):
    """netpath-multifd-tls-11.1: the destination's kernel resets the finished main channel when a re-ACK
    of its FIN reaches the gone socket; the hidden verdict must not call that a failure."""
    cap = named(f"netpath-multifd-tls-11.1.{vantage}")
    (m,) = destination_side(cap)
    assert [c["role"] for c in m["channels"]] == ["main", "multifd", "multifd"]
    assert m["outcome"]["status"] == "completed"
    (hidden,) = analyze_file(str(cap), Options()).report["migrations"]
    assert hidden["channels"][0]["rst_time"] is not None
    assert hidden["outcome"]["status"] == "completed", hidden["outcome"]
