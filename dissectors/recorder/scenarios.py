# SPDX-License-Identifier: GPL-2.0-or-later
"""Named migration scenarios: which QEMUs, which capabilities, what to break, what the lab notes expect."""

from __future__ import annotations

from dataclasses import dataclass, replace

MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    src: str = "7.2"
    dst: str = "7.2"
    multifd: int = 0
    postcopy: bool = False
    preempt: bool = False
    recover: bool = False
    tls: bool = False
    # GnuTLS priority string for both sides' tls-creds-x509 (``priority=``, QEMU 2.9+); None: QEMU's default
    # (TLS 1.3 here). "NORMAL:-VERS-ALL:+VERS-TLS1.2" forces TLS 1.2 (the key log then has CLIENT_RANDOM).
    tls_priority: str | None = None
    hold_back: str | None = None  # main | multifd | preempt
    hold_delay_s: float = 1.0
    # What the proxy holds: "connect" (the upstream connect) or "tls-finished" (the client's bytes after its
    # first TLS record: its second flight, Finished included, so the destination completes that handshake late)
    hold_at: str = "connect"
    max_bandwidth: int = 64 * MIB
    max_postcopy_bandwidth: int = 0  # 0 = unlimited
    postcopy_after_s: float = 1.5
    memory_mib: int = 64
    fill_mib: int = 16
    dirty_pages: int = 2048
    dirty_rate: int = 2000
    timeout_s: float = 60.0
    expect: str = "completed"  # completed | failed | stalled
    lab_note: str = ""
    # "loopback" (127.0.0.1, tcpdump on lo) or "netns" (source and destination namespaces joined through a
    # middle one by a userspace relay delaying every frame by max(0, N(delay_ms, jitter_ms)); netpath.py)
    path: str = "loopback"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    relay_seed: int | None = None  # None: a random seed, written to the manifest
    # Migrate a stopped source whose "timer" section (id 0) has a cpu_ticks_offset ending in this byte:
    # before migrating, run and stop the guest for a few ms at a time, probing with a migration to a file,
    # until it does (timer_probe.py). 0x7e puts a footer-like 7e 00 00 00 00 + zeros in the timer body.
    timer_low_byte: int | None = None
    timer_max_attempts: int = 3000
    # Break the migration from outside, interrupt_after_s after ``migrate``: "cancel" (``migrate_cancel`` on
    # the source) or "kill-destination" / "kill-source" (SIGKILL to that QEMU's process group, as a crash or
    # an OOM kill: its kernel closes the sockets). None: let it run.
    interrupt: str | None = None
    interrupt_after_s: float = 1.0

    @property
    def machine(self) -> str:
        """Same versions: the default ``pc``; mixed versions need the older side's versioned type."""
        if self.src == self.dst:
            return "pc"
        older = min(self.src, self.dst, key=lambda v: tuple(int(x) for x in v.split(".")))
        return f"pc-i440fx-{older}"

    @property
    def uses_proxy(self) -> bool:
        return self.hold_back is not None


# What --interrupt can do to a running migration (driver.py, Run._interrupt).
INTERRUPTS = ("cancel", "kill-destination", "kill-source")

_PC = dict(postcopy=True, max_bandwidth=8 * MIB, max_postcopy_bandwidth=4 * MIB)
_PRE = dict(_PC, preempt=True)
_HOLD_PRE = dict(_PRE, hold_back="main")
_TINY_HOLD_PRE = dict(_HOLD_PRE, memory_mib=16, fill_mib=1, dirty_pages=64, dirty_rate=100)
# Multifd + postcopy (10.1+): max-bandwidth does not slow multifd, so postcopy must start early, and every
# page left for postcopy goes out whole on main (zero pages too): a smaller guest keeps the capture small.
_MP_PRE_SMALL = dict(_PRE, postcopy_after_s=0.05, memory_mib=32, fill_mib=8, dirty_pages=1024, dirty_rate=1000)
# TLS records do not gzip: a small guest keeps those captures at a few MB.
# A namespace path with 5 +- 3 ms one way (frames overtake each other) carries a few MB/s: a small guest
# that converges at that rate, and a capture at each end of the path.
_NETPATH = dict(path="netns", delay_ms=5.0, jitter_ms=3.0, memory_mib=32, fill_mib=4, dirty_pages=128,
                dirty_rate=200)
_TLS = dict(tls=True, memory_mib=32, fill_mib=2, dirty_pages=256, dirty_rate=500)
TLS12_PRIORITY = "NORMAL:-VERS-ALL:+VERS-TLS1.2"
# TLS 1.2 (issue 10): the default suite GnuTLS picks (AES-256-GCM, extended master secret); a smaller fill
# than _TLS keeps these captures at ~1.5 MB.
_TLS12 = dict(_TLS, tls_priority=TLS12_PRIORITY, memory_mib=16, fill_mib=1, dirty_pages=64, dirty_rate=100)
# Postcopy-preempt over TLS: the TLS guest, with the bandwidth scaled down as the fill is (2 MiB at 1 MiB/s,
# as _PRE's 16 MiB at 8 MiB/s), so postcopy still starts mid-migration 1.5 s in.
_PRE_TLS = dict(_PRE, **dict(_TLS, max_bandwidth=1 * MIB, max_postcopy_bandwidth=1 * MIB))
# The proxy holds back the main channel's TLS second flight (Finished included) for 1 s (proxy.py,
# hold_at="tls-finished"): the source has completed main's handshake, the destination has not. A tiny guest
# keeps these TLS captures small; the preempt ones at 512 KiB/s so postcopy still starts mid-migration.
_TLSFIN = dict(tls=True, memory_mib=16, fill_mib=1, dirty_pages=64, dirty_rate=100, hold_back="main",
               hold_at="tls-finished")
_TLSFIN_PRE = dict(_PRE, **dict(_TLSFIN, max_bandwidth=MIB // 2, max_postcopy_bandwidth=MIB // 2))
# TLS 1.3 with TLS_AES_128_GCM_SHA256 only (GnuTLS picks AES-256-GCM by default).
TLS13_AES128_PRIORITY = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM"
TLS13_CHACHA_PRIORITY = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305"
# Postcopy-preempt over TLS 1.2: the tiny TLS guest at 512 KiB/s; 11.1 converged it in 1.35 s (max-bandwidth
# did not hold it back), so postcopy starts 0.4 s in, mid-migration; with _TLS12's 64 dirtied pages no page
# was requested in postcopy (a silent preempt channel), with 256 at 500 pages/s 60 were.
_PRE_TLS12 = dict(_PRE, **dict(_TLS12, max_bandwidth=MIB // 2, max_postcopy_bandwidth=MIB // 2,
                               dirty_pages=256, dirty_rate=500, postcopy_after_s=0.4))

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("precopy-7.2", "plain precopy, one main channel", lab_note="completes"),
        Scenario("precopy-10.0", "plain precopy, one main channel", src="10.0", dst="10.0", lab_note="completes"),
        Scenario(
            "multifd4-7.2",
            "multifd with 4 channels",
            multifd=4,
            lab_note="completes; channels not always accepted in id order",
        ),
        Scenario(
            "multifd4-10.0",
            "multifd with 4 channels",
            src="10.0",
            dst="10.0",
            multifd=4,
            lab_note="completes; channels not always accepted in id order",
        ),
        Scenario(
            "multifd4-7.2-to-10.0",
            "cross-version multifd, machine pc-i440fx-7.2",
            dst="10.0",
            multifd=4,
            lab_note="(not in the table) expected to complete",
        ),
        Scenario(
            "multifd-tls-7.2",
            "multifd with 2 channels over TLS (x509, SSLKEYLOGFILE kept)",
            multifd=2,
            **_TLS,
            lab_note="(not in the table) expected to complete; TLS 1.3",
        ),
        Scenario("postcopy-7.2", "precopy then postcopy (no preempt)", **_PC, lab_note="completes"),
        Scenario(
            "preempt-7.2",
            "postcopy with the preempt channel",
            **_PRE,
            lab_note="preempt channel connects ~1 ms after main, at setup",
        ),
        Scenario(
            "preempt-10.0",
            "postcopy with the preempt channel",
            src="10.0",
            dst="10.0",
            **_PRE,
            lab_note="preempt channel connects only at postcopy start",
        ),
        Scenario(
            "preempt-recover-7.2",
            "postcopy-preempt, migrate-pause, migrate-recover, migrate resume=true",
            **dict(_PRE, max_postcopy_bandwidth=2 * MIB),
            recover=True,
            lab_note="new main starts with 08 00 0a (RECV_BITMAP), new preempt, no new multifd",
        ),
        Scenario(
            "preempt-recover-10.0",
            "postcopy-preempt, migrate-pause, migrate-recover, migrate resume=true",
            src="10.0",
            dst="10.0",
            **dict(_PRE, max_postcopy_bandwidth=2 * MIB),
            recover=True,
            lab_note="new main starts with 08 00 0a (RECV_BITMAP), new preempt, no new multifd",
        ),
        Scenario(
            "holdback-multifd-7.2",
            "multifd 4, proxy holds back main by 1 s",
            multifd=4,
            hold_back="main",
            expect="failed",
            timeout_s=30,
            lab_note="fails fast: multifd received packet magic 5145564d expected 11223344",
        ),
        Scenario(
            "holdback-preempt-7.2",
            "postcopy-preempt, proxy holds back main by 1 s",
            **_HOLD_PRE,
            expect="stalled",
            timeout_s=20,
            lab_note="silent preempt taken as main: no progress, no error until killed",
        ),
        Scenario(
            "holdback-multifd-10.0",
            "multifd 4, proxy holds back main by 1 s",
            src="10.0",
            dst="10.0",
            multifd=4,
            hold_back="main",
            lab_note="mapped right (magic peek)",
        ),
        Scenario(
            "holdback-preempt-10.0",
            "postcopy-preempt, proxy holds back main by 1 s",
            src="10.0",
            dst="10.0",
            **_HOLD_PRE,
            lab_note="no effect: preempt opens too late to race",
        ),
        Scenario(
            "holdback-preempt-7.2-to-10.0",
            "postcopy-preempt 7.2 -> 10.0, proxy holds back main by 1 s",
            dst="10.0",
            **_HOLD_PRE,
            expect="failed",
            timeout_s=20,
            lab_note="fails: 10.0 does not peek with postcopy on; Not a migration stream",
        ),
        Scenario(
            "holdback-preempt-tiny-7.2",
            "as holdback-preempt-7.2 with a tiny guest (1 MiB filled, 16 MiB RAM)",
            **_TINY_HOLD_PRE,
            expect="failed",
            timeout_s=20,
            lab_note="tiny guest: the source sends EOS on preempt first; Not a migration stream",
        ),
        Scenario(
            "holdback-preempt-tiny-7.2-to-10.0",
            "as holdback-preempt-7.2-to-10.0 with a tiny guest",
            dst="10.0",
            **_TINY_HOLD_PRE,
            expect="failed",
            timeout_s=20,
            lab_note="fails: Not a migration stream",
        ),
        Scenario(
            "holdback-tls-7.2",
            "multifd 2 over TLS, proxy holds back main by 1 s",
            multifd=2,
            **_TLS,
            hold_back="main",
            lab_note="mapped right: other channels open after main's TLS handshake",
        ),
        Scenario(
            "holdback-multifd-7.2-to-10.0",
            "multifd 4 7.2 -> 10.0, proxy holds back main by 1 s",
            dst="10.0",
            multifd=4,
            hold_back="main",
            lab_note="the 10.0 destination peeks the magic: mapped right although a multifd channel is accepted "
            "first (a 7.2 destination fails)",
        ),
        Scenario(
            "holdback-multifd-conn-7.2",
            "multifd 4, proxy holds back a multifd connection",
            multifd=4,
            hold_back="multifd",
            lab_note="harmless",
        ),
        # QEMU 11.1 runs in a Debian trixie chroot (scripts/install-qemu-11.sh, recorder/chroot.py).
        Scenario("precopy-11.1", "plain precopy, one main channel", src="11.1", dst="11.1", lab_note="completes"),
        Scenario(
            "multifd4-11.1",
            "multifd with 4 channels",
            src="11.1",
            dst="11.1",
            multifd=4,
            lab_note="completes",
        ),
        Scenario(
            "preempt-11.1",
            "postcopy with the preempt channel",
            src="11.1",
            dst="11.1",
            **_PRE,
            lab_note="completes; preempt channel connects only at postcopy start (1.5 s after main)",
        ),
        Scenario(
            "multifd4-postcopy-preempt-11.1",
            "multifd 4 + postcopy + preempt together (allowed since 10.1), postcopy started 0.05 s in",
            src="11.1",
            dst="11.1",
            multifd=4,
            **_MP_PRE_SMALL,
            lab_note="completes; max-bandwidth does not slow multifd, so postcopy starts 0.05 s after migrate; "
            "preempt connects ~0.1 s after main, after the 4 multifd; the pages left for postcopy go whole on main",
        ),
        Scenario(
            "holdback-multifd-11.1",
            "multifd 4, proxy holds back main by 1 s",
            src="11.1",
            dst="11.1",
            multifd=4,
            hold_back="main",
            lab_note="mapped right (magic peek)",
        ),
        Scenario(
            "multifd4-10.0-to-11.1",
            "cross-version multifd, machine pc-i440fx-10.0",
            src="10.0",
            dst="11.1",
            multifd=4,
            lab_note="completes",
        ),
        Scenario(
            "holdback-preempt-7.2-to-11.1",
            "postcopy-preempt 7.2 -> 11.1, proxy holds back main so the silent preempt channel comes first",
            dst="11.1",
            **_HOLD_PRE,
            expect="stalled",
            timeout_s=20,
            lab_note="the 11.1 destination blocks in its peek at the silent preempt channel in the main thread: "
            "QMP hangs, the held-back main is never accepted, no error; the 7.2 source goes from active to "
            "postcopy-active (or stays active) and stalls; once the source exits: Failed to peek at channel, "
            "destination status failed, exit status 1",
        ),
        Scenario(
            "preempt-recover-11.1",
            "postcopy-preempt, migrate-pause, migrate-recover, migrate resume=true",
            src="11.1",
            dst="11.1",
            **dict(_PRE, max_postcopy_bandwidth=2 * MIB),
            recover=True,
            lab_note="completes; new main starts with 08 00 0a (RECV_BITMAP), new preempt, no new multifd; "
            "stderr (paused on purpose): Detected IO failure for postcopy. Migration paused.",
        ),
        Scenario(
            "multifd-tls-11.1",
            "multifd with 2 channels over TLS (x509, SSLKEYLOGFILE kept)",
            src="11.1",
            dst="11.1",
            multifd=2,
            **_TLS,
            lab_note="completes",
        ),
        # TLS across versions, postcopy-preempt and the reordering proxy (issue 10: decrypt with the key log).
        Scenario(
            "multifd-tls-10.0",
            "multifd with 2 channels over TLS (x509, SSLKEYLOGFILE kept)",
            src="10.0",
            dst="10.0",
            multifd=2,
            **_TLS,
            lab_note="completes; the multifd channels end with a TLS close_notify (multifd-clean-tls-termination), "
            "main does not",
        ),
        Scenario(
            "multifd-tls-7.2-to-11.1",
            "cross-version multifd 2 over TLS, machine pc-i440fx-7.2",
            dst="11.1",
            multifd=2,
            **_TLS,
            lab_note="completes; TLS is not peekable, so 11.1 maps the channels by order: main's handshake ends "
            "before the 7.2 source opens multifd; only stderr line the 11.1 deprecation warning for pc-i440fx-7.2",
        ),
        Scenario(
            "multifd-tls12-7.2",
            "multifd with 2 channels over TLS 1.2 (priority NORMAL:-VERS-ALL:+VERS-TLS1.2, SSLKEYLOGFILE kept)",
            multifd=2,
            **_TLS12,
            lab_note="completes; TLS 1.2 (key log: CLIENT_RANDOM lines)",
        ),
        Scenario(
            "multifd-tls12-10.0",
            "multifd with 2 channels over TLS 1.2 (priority NORMAL:-VERS-ALL:+VERS-TLS1.2, SSLKEYLOGFILE kept)",
            src="10.0",
            dst="10.0",
            multifd=2,
            **_TLS12,
            lab_note="completes; TLS 1.2 (key log: CLIENT_RANDOM lines)",
        ),
        Scenario(
            "multifd-tls12-11.1",
            "multifd with 2 channels over TLS 1.2 (priority NORMAL:-VERS-ALL:+VERS-TLS1.2, SSLKEYLOGFILE kept)",
            src="11.1",
            dst="11.1",
            multifd=2,
            **_TLS12,
            lab_note="completes; TLS 1.2 (key log: CLIENT_RANDOM lines)",
        ),
        Scenario(
            "multifd-tls12-chacha-10.0",
            "multifd with 2 channels over TLS 1.2 with ChaCha20-Poly1305 only (SSLKEYLOGFILE kept)",
            src="10.0",
            dst="10.0",
            multifd=2,
            **dict(_TLS12, tls_priority=TLS12_PRIORITY + ":-CIPHER-ALL:+CHACHA20-POLY1305"),
            lab_note="completes; TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
        Scenario(
            "multifd-tls13-chacha-11.1",
            "multifd with 2 channels over TLS 1.3 with TLS_CHACHA20_POLY1305_SHA256 only (SSLKEYLOGFILE kept)",
            src="11.1",
            dst="11.1",
            multifd=2,
            **dict(_TLS, tls_priority=TLS13_CHACHA_PRIORITY),
            lab_note="(not in the table) expected to complete",
        ),
        Scenario(
            "preempt-tls-7.2",
            "postcopy with the preempt channel over TLS",
            **_PRE_TLS,
            lab_note="completes; preempt connects 5-11 ms after main, once main's TLS handshake is done, silent until "
            "postcopy; no close_notify on any channel; no stderr",
        ),
        Scenario(
            "preempt-tls-10.0",
            "postcopy with the preempt channel over TLS",
            src="10.0",
            dst="10.0",
            **_PRE_TLS,
            lab_note="completes; preempt connects at postcopy start; at the end the destination shuts its preempt "
            "channel (FIN just before its completed event) and prints: Cannot read from TLS channel: The TLS "
            "connection was non-properly terminated. (every run here); both sides still report completed",
        ),
        Scenario(
            "preempt-tls-11.1",
            "postcopy with the preempt channel over TLS",
            src="11.1",
            dst="11.1",
            **_PRE_TLS,
            lab_note="completes; preempt connects at postcopy start (~1.5 s after main); no stderr",
        ),
        Scenario(
            "holdback-tls-11.1",
            "multifd 2 over TLS, proxy holds back main by 1 s",
            src="11.1",
            dst="11.1",
            multifd=2,
            **_TLS,
            hold_back="main",
            lab_note="completes; the held-back main is still accepted first: the source opens multifd only once "
            "main's TLS handshake is done, which waits for the proxy's delayed upstream connect; a connect-delaying "
            "proxy cannot reorder TLS channels on any version",
        ),
        Scenario(
            "tlsfin-multifd-7.2",
            "multifd 2 over TLS, proxy holds back main's TLS Finished (and all after it) by 1 s",
            multifd=2,
            **_TLSFIN,
            lab_note="completes: the destination's TLS handshake blocks its main loop (accepted sockets are "
            "blocking), so it answers the multifd ClientHellos only once main's Finished has arrived; handshakes "
            "complete in accept order and main is still taken first; destination QMP frozen for the hold",
        ),
        Scenario(
            "tlsfin-multifd-10.0",
            "multifd 2 over TLS, proxy holds back main's TLS Finished (and all after it) by 1 s",
            src="10.0",
            dst="10.0",
            multifd=2,
            **_TLSFIN,
            lab_note="completes, as tlsfin-multifd-7.2",
        ),
        Scenario(
            "tlsfin-multifd-11.1",
            "multifd 2 over TLS, proxy holds back main's TLS Finished (and all after it) by 1 s",
            src="11.1",
            dst="11.1",
            multifd=2,
            **_TLSFIN,
            lab_note="completes, as tlsfin-multifd-7.2",
        ),
        Scenario(
            "tlsfin-preempt-7.2",
            "postcopy-preempt over TLS, proxy holds back main's TLS Finished (and all after it) by 1 s",
            **_TLSFIN_PRE,
            lab_note="completes: 7.2 opens the preempt channel during the hold (right after main's handshake "
            "ended at the source), but the destination answers its ClientHello only after main's Finished",
        ),
        Scenario(
            "tlsfin-preempt-11.1",
            "postcopy-preempt over TLS, proxy holds back main's TLS Finished (and all after it) by 3 s",
            src="11.1",
            dst="11.1",
            # the _PRE_TLS guest: the tiny one converges (precopy done at 1.25 s) before postcopy could start
            **dict(_PRE_TLS, hold_back="main", hold_at="tls-finished", hold_delay_s=3.0),
            lab_note="completes: migrate-start-postcopy at 1.5 s, but the source opens the preempt channel only "
            "after a PONG on main's return path (migration_wait_main_channel), i.e. after the hold",
        ),
        Scenario(
            "multifd-postcopy-7.2",
            "multifd 4 + postcopy on 7.2 (no preempt)",
            multifd=4,
            **_PC,
            expect="failed",
            timeout_s=30,
            lab_note="accepted; postcopy runs and the source completes (the destination even sends SHUT 0), then the "
            "destination aborts (SIGABRT, exit -6) in cleanup: "
            "yank_unregister_instance: Assertion QLIST_EMPTY(&entry->yankfns) failed",
        ),
        Scenario(
            "timer-footer-11.1",
            "precopy of a stopped source whose timer section holds a section-0 footer look-alike: "
            "cpu_ticks_offset ends in 0x7e, so its body holds 7e 00 00 00 00 followed by zeros (EOF bytes)",
            src="11.1",
            dst="11.1",
            timer_low_byte=0x7E,
            memory_mib=16,
            fill_mib=1,
            dirty_pages=64,
            dirty_rate=100,
            lab_note="completes (a stopped source migrates; the destination stays paused); the timer body is an "
            "ordinary device state that only a footer scan without confirmation misreads",
        ),
        Scenario(
            "smoke-multifd2-7.2",
            "short multifd run with 2 channels and a 32 MiB guest (live test)",
            multifd=2,
            memory_mib=32,
            fill_mib=8,
            dirty_pages=512,
            dirty_rate=500,
            timeout_s=60,
            lab_note="completes",
        ),
        Scenario(
            "netpath-multifd4-7.2",
            "multifd 4 over a namespace path, 5 +- 3 ms one way (relay jitter reorders frames)",
            multifd=4,
            **_NETPATH,
            timeout_s=45,
            lab_note="completes in most runs; in ~2 of 6 a multifd channel is accepted before main: the "
            "destination prints received packet magic 5145564d expected 11223344, then nothing exits or "
            "closes and the source stays active (a stall)",
        ),
        Scenario(
            "netpath-preempt-7.2",
            "postcopy-preempt over a namespace path, 5 +- 3 ms one way",
            **dict(_PRE, **dict(_NETPATH, fill_mib=8)),
            timeout_s=60,
            lab_note="completes: the silent preempt channel never overtook main in 56 runs",
        ),
        Scenario(
            "netpath-multifd4-10.0",
            "multifd 4 over a namespace path, 5 +- 3 ms one way (10.0: every channel up before main's QEVM)",
            src="10.0",
            dst="10.0",
            multifd=4,
            **_NETPATH,
            timeout_s=45,
            lab_note="completes: 10.0 peeks at each channel's first bytes, so a multifd channel accepted before "
            "main is still mapped right",
        ),
        Scenario(
            "netpath-multifd-tls-11.1",
            "multifd 2 over TLS 1.3 (TLS_AES_128_GCM_SHA256 only) over a namespace path, 5 +- 3 ms one way",
            src="11.1",
            dst="11.1",
            multifd=2,
            **dict(_NETPATH, tls=True, tls_priority=TLS13_AES128_PRIORITY, memory_mib=16, fill_mib=1,
                   dirty_pages=64, dirty_rate=100),
            timeout_s=60,
            lab_note="completes: TLS is not peekable, so the destination maps channels by accept order, but the "
            "source opens multifd only after main's TLS handshake",
        ),
        Scenario(
            "netpath-preempt-tls-11.1",
            "postcopy-preempt over TLS 1.3 over a namespace path, 5 +- 3 ms one way",
            src="11.1",
            dst="11.1",
            **dict(_PRE_TLS12, **dict(_NETPATH, memory_mib=16, fill_mib=1, dirty_pages=256, dirty_rate=500),
                   tls_priority=None),
            timeout_s=60,
            lab_note="completes: preempt connects at postcopy start",
        ),
        Scenario(
            "preempt-tls12-11.1",
            "postcopy with the preempt channel over TLS 1.2 (priority NORMAL:-VERS-ALL:+VERS-TLS1.2)",
            src="11.1",
            dst="11.1",
            **_PRE_TLS12,
            lab_note="completes; preempt connects at postcopy start",
        ),
        Scenario(
            "multifd4-11.1-to-10.0",
            "cross-version multifd downward, machine pc-i440fx-10.0",
            src="11.1",
            dst="10.0",
            multifd=4,
            lab_note="(not in the table) a newer source to an older destination with the older machine type",
        ),
        Scenario(
            "preempt-10.0-to-7.2",
            "postcopy-preempt downward, machine pc-i440fx-7.2 (x-preempt-pre-7-2 on the 10.0 source)",
            src="10.0",
            dst="7.2",
            **_PRE,
            lab_note="(not in the table) the pc-i440fx-7.2 machine sets x-preempt-pre-7-2 on the 10.0 source: "
            "it opens the preempt channel at set-up, as 7.2 does, and ends it with an EOS",
        ),
        Scenario(
            "multifd4-11.1-to-7.2",
            "cross-version multifd downward, machine pc-i440fx-7.2 (deprecated on 11.1)",
            src="11.1",
            dst="7.2",
            multifd=4,
            lab_note="(not in the table) the 11.1 source warns that pc-i440fx-7.2 is deprecated",
        ),
        Scenario(
            "multifd8-7.2-to-11.1",
            "cross-version multifd with 8 channels, machine pc-i440fx-7.2",
            src="7.2",
            dst="11.1",
            multifd=8,
            lab_note="(not in the table) expected to complete",
        ),
        Scenario(
            "holdback-tls-11.1-to-10.0",
            "multifd 2 over TLS 11.1 -> 10.0, proxy holds back main by 1 s",
            src="11.1",
            dst="10.0",
            multifd=2,
            **_TLS,
            hold_back="main",
            lab_note="(not in the table) as holdback-tls-11.1: a connect-delaying proxy cannot reorder TLS channels",
        ),
        Scenario(
            "netpath-multifd4-11.1",
            "multifd 4 over a namespace path, 5 +- 3 ms one way, on 11.1",
            src="11.1",
            dst="11.1",
            multifd=4,
            **_NETPATH,
            timeout_s=45,
            lab_note="completes: 10.1+ peeks at each channel's first bytes",
        ),
        Scenario(
            "netpath-preempt-recover-11.1",
            "postcopy-preempt over a namespace path, 5 +- 3 ms one way, migrate-pause, migrate-recover, resume",
            src="11.1",
            dst="11.1",
            **dict(_PRE, **dict(_NETPATH, fill_mib=8)),
            recover=True,
            timeout_s=60,
            lab_note="(not in the table) recovery over a delayed path, seen from both ends",
        ),
        Scenario(
            "netpath-cancel-tls-11.1",
            "multifd 2 over TLS 1.3 over a namespace path, 5 +- 3 ms one way, migrate_cancel on the source 0.4 s in",
            src="11.1",
            dst="11.1",
            multifd=2,
            **dict(_NETPATH, tls=True, tls_priority=TLS13_AES128_PRIORITY, memory_mib=16, fill_mib=1,
                   dirty_pages=64, dirty_rate=100),
            timeout_s=60,
            interrupt="cancel",
            interrupt_after_s=0.4,
            expect="failed",
            lab_note="(not in the table) at the destination the segments in flight after its closes are never "
            "resent: holes in the multifd channels' tails",
        ),
        Scenario(
            "netpath-kill-destination-10.0",
            "multifd 4 over a namespace path, 5 +- 3 ms one way, the destination QEMU SIGKILLed 0.3 s in",
            src="10.0",
            dst="10.0",
            multifd=4,
            **_NETPATH,
            timeout_s=45,
            interrupt="kill-destination",
            interrupt_after_s=0.3,
            expect="failed",
            lab_note="(not in the table) at the source the destination's resets arrive jittered, among the "
            "source's own answers to them",
        ),
        Scenario(
            "cancel-precopy-7.2",
            "plain precopy at 4 MiB/s, migrate_cancel on the source 1.5 s in",
            max_bandwidth=4 * MIB,
            interrupt="cancel",
            interrupt_after_s=1.5,
            expect="failed",
            lab_note="(not in the table) the source ends cancelled, the destination fails on the cut stream",
        ),
        Scenario(
            "cancel-postcopy-7.2",
            "postcopy-preempt, migrate_cancel on the source 0.7 s into postcopy (7.2 accepts it; 10.0+ refuse)",
            **_PRE,
            interrupt="cancel",
            interrupt_after_s=2.2,
            expect="failed",
            lab_note="(not in the table) the source ends cancelled (VM postmigrate), the destination postcopy-paused",
        ),
        Scenario(
            "cancel-multifd4-11.1",
            "multifd 4 at 4 MiB/s, migrate_cancel on the source 1 s in",
            src="11.1",
            dst="11.1",
            multifd=4,
            max_bandwidth=4 * MIB,
            interrupt="cancel",
            interrupt_after_s=1.0,
            expect="failed",
            lab_note="(not in the table) the source ends cancelled, the destination fails on the cut stream",
        ),
        Scenario(
            "cancel-tls-7.2",
            "plain precopy over TLS at 1 MiB/s, migrate_cancel on the source 1 s in",
            **dict(_TLS, max_bandwidth=1 * MIB),
            interrupt="cancel",
            interrupt_after_s=1.0,
            expect="failed",
            lab_note="(not in the table) over TLS a cancel shows only as the source closing first",
        ),
        Scenario(
            "cancel-multifd-tls-10.0",
            "multifd 2 over TLS (32 MiB guest, 8 MiB filled), migrate_cancel on the source 0.15 s in",
            src="10.0",
            dst="10.0",
            multifd=2,
            **dict(_TLS, fill_mib=8),
            interrupt="cancel",
            interrupt_after_s=0.15,
            expect="failed",
            lab_note="(not in the table) over TLS a cancel shows only as the source closing first",
        ),
        Scenario(
            "kill-destination-preempt-tls-11.1",
            "postcopy-preempt over TLS, the destination QEMU SIGKILLed 0.5 s into postcopy",
            src="11.1",
            dst="11.1",
            **_PRE_TLS,
            interrupt="kill-destination",
            interrupt_after_s=2.0,
            expect="failed",
            lab_note="(not in the table) over TLS the record layer shows a postcopy set-up, not whether it ran",
        ),
        Scenario(
            "kill-source-preempt-7.2",
            "postcopy-preempt, the source QEMU SIGKILLed 0.7 s into postcopy",
            **_PRE,
            interrupt="kill-source",
            interrupt_after_s=2.2,
            expect="failed",
            lab_note="(not in the table) the destination cannot fail in postcopy: it pauses (postcopy-paused)",
        ),
        Scenario(
            "preempt-recover-tls-11.1",
            "postcopy-preempt over TLS, migrate-pause, migrate-recover, migrate resume=true (256 KiB/s in postcopy)",
            src="11.1",
            dst="11.1",
            **dict(_PRE_TLS, max_postcopy_bandwidth=MIB // 4),
            recover=True,
            lab_note="(not in the table) recovery over TLS: the new main channel opens with a TLS handshake",
        ),
        Scenario(
            "kill-destination-multifd4-10.0",
            "multifd 4 at 4 MiB/s, the destination QEMU SIGKILLed 1 s in",
            src="10.0",
            dst="10.0",
            multifd=4,
            max_bandwidth=4 * MIB,
            interrupt="kill-destination",
            interrupt_after_s=1.0,
            expect="failed",
            lab_note="(not in the table) the destination's kernel resets the channels; the source fails",
        ),
        Scenario(
            "kill-destination-tls-10.0",
            "multifd 2 over TLS (32 MiB guest, 8 MiB filled), the destination QEMU SIGKILLed 0.1 s in",
            src="10.0",
            dst="10.0",
            multifd=2,
            **dict(_TLS, fill_mib=8),
            interrupt="kill-destination",
            interrupt_after_s=0.1,
            expect="failed",
            lab_note="(not in the table) over TLS only the closes show: the destination's, on every channel at once",
        ),
        Scenario(
            "kill-destination-preempt-11.1",
            "postcopy-preempt, the destination QEMU SIGKILLed 0.7 s into postcopy",
            src="11.1",
            dst="11.1",
            **_PRE,
            interrupt="kill-destination",
            interrupt_after_s=2.2,
            expect="failed",
            lab_note="(not in the table) a source in postcopy cannot fail: it pauses (postcopy-paused)",
        ),
        Scenario(
            "multifd4-10.0-to-7.2",
            "cross-version multifd downward, machine pc-i440fx-7.2",
            src="10.0",
            dst="7.2",
            multifd=4,
            lab_note="(not in the table) a newer source to an older destination with the older machine type",
        ),
    ]
}


def with_overrides(
    base: Scenario,
    *,
    src: str | None = None,
    dst: str | None = None,
    multifd: int | None = None,
    hold_back: str | None = None,
    tls: bool | None = None,
    timeout_s: float | None = None,
    timer_low_byte: int | None = None,
    hold_at: str | None = None,
    hold_delay_s: float | None = None,
    tls_priority: str | None = None,
    interrupt: str | None = None,
    interrupt_after_s: float | None = None,
) -> Scenario:
    """A scenario with command-line overrides applied; the name stays the base's."""
    changes: dict[str, object] = {}
    if src is not None:
        changes["src"] = src
    if dst is not None:
        changes["dst"] = dst
    if multifd is not None:
        changes["multifd"] = multifd
    if hold_back is not None:
        changes["hold_back"] = None if hold_back == "none" else hold_back
    if tls is not None:
        changes["tls"] = tls
    if timeout_s is not None:
        changes["timeout_s"] = timeout_s
    if timer_low_byte is not None:
        changes["timer_low_byte"] = timer_low_byte
    if hold_at is not None:
        changes["hold_at"] = hold_at
    if hold_delay_s is not None:
        changes["hold_delay_s"] = hold_delay_s
    if tls_priority is not None:
        changes["tls_priority"] = tls_priority or None
    if interrupt is not None:
        changes["interrupt"] = None if interrupt == "none" else interrupt
    if interrupt_after_s is not None:
        changes["interrupt_after_s"] = interrupt_after_s
    return replace(base, **changes) if changes else base
