"""A connection's true role, read from its own bytes, and the QEMU generation its features point to."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dissectors.analysis.facts import ConnectionFacts
from dissectors.analysis.policies import MAIN, MULTIFD, PREEMPT, RECOVERY, TLS, UNKNOWN

KIND_TO_ROLE = {
    "main": MAIN,
    "main-recovery": RECOVERY,
    "multifd": MULTIFD,
    "tls": TLS,
    "preempt-candidate": PREEMPT,
}


def true_role(facts: ConnectionFacts, postcopy: bool) -> tuple[str, str]:
    """(role, evidence) for one connection. A silent connection is preempt only in a postcopy migration."""
    kind = facts.kind
    if kind in KIND_TO_ROLE:
        role = KIND_TO_ROLE[kind]
        return role, _evidence(facts, role)
    if facts.conn.refused:          # never established: silent because it never connected
        refused = ("refused: the destination's kernel answered its SYN with a reset (nothing listened any more), "
                   "so it never carried a byte")
        return (PREEMPT, f"{refused}; in a postcopy migration such a silent connect is taken as the preempt "
                         "channel") if postcopy else (UNKNOWN, refused)
    if not facts.wrote(0):          # nothing, or under decrypted TLS nothing past the handshake
        if postcopy:
            if facts.decrypted:
                return PREEMPT, ("silent: the source sent nothing on it past the TLS handshake (a preempt "
                                 "channel carries only the pages the destination requests in postcopy)")
            return PREEMPT, "silent: the source sent nothing on it (a preempt channel before postcopy starts)"
        return UNKNOWN, "silent: the source sent nothing on it"
    if kind == "uncaptured":
        return UNKNOWN, "its payload is not in the capture (snaplen or loss): nothing to read"
    head = facts.dirs[0].first[:8].hex()
    return UNKNOWN, f"first bytes {head} match no migration channel"


def _evidence(facts: ConnectionFacts, role: str) -> str:
    head = bytes(facts.dirs[0].first[:8]).hex(" ")
    if role == MULTIFD and facts.hello:
        h = facts.hello
        return f"multifd hello: id {h.get('id')}, version {h.get('version')}, uuid {h.get('uuid')}"
    if role == MAIN:
        return f"starts with QEVM ({head})"
    if role == RECOVERY:
        return f"starts with a RECV_BITMAP command, no QEVM header ({head})"
    if role == PREEMPT:
        return f"RAM records with no header ({head})"
    if role == TLS:
        return f"TLS record layer ({head}): contents hidden"
    return head


@dataclass
class Generation:
    """What the streams say about the source's QEMU version."""

    at_least: tuple[int, int] = (0, 0)
    at_most: tuple[int, int] | None = None
    evidence: list[str] = field(default_factory=list)

    def floor(self, version: tuple[int, int], why: str) -> None:
        self.evidence.append(why)
        if version > self.at_least:
            self.at_least = version

    def ceiling(self, version: tuple[int, int], why: str) -> None:
        self.evidence.append(why)
        if self.at_most is None or version < self.at_most:
            self.at_most = version

    def text(self) -> str:
        lo = f"{self.at_least[0]}.{self.at_least[1]}" if self.at_least != (0, 0) else None
        hi = f"{self.at_most[0]}.{self.at_most[1]}" if self.at_most else None
        if lo and hi:
            return lo if lo == hi else f">= {lo}, <= {hi}"
        if lo:
            return f">= {lo}"
        if hi:
            return f"<= {hi}"
        return "unknown"


MACHINE_VERSION = re.compile(r"-(\d+)\.(\d+)$")


def infer_generation(main: ConnectionFacts | None, multifd: list[ConnectionFacts],
                     preempt_early: bool | None, repeated_pages: int = 0,
                     preempt_how: str = "") -> Generation:
    """``preempt_how``: how the preempt channel's timing was read, when not from the main channel's commands."""
    gen = Generation()
    if main is not None:
        cfg = main.first_event("main.config")
        machine = cfg.fields.get("machine") if cfg else None
        if machine:
            m = MACHINE_VERSION.search(str(machine))
            if m:
                gen.floor((int(m.group(1)), int(m.group(2))),
                          f"machine type {machine}: QEMU is at least that version")
        if "switchover_start" in main.features:
            gen.floor((10, 0), "SWITCHOVER_START command (10.0+)")
        if "multifd_flush" in main.features:
            gen.floor((8, 1), "RAM_SAVE_FLAG_MULTIFD_FLUSH (8.1+)")
    if any("zero_pages" in f.features for f in multifd):
        gen.floor((9, 0), "multifd packets carry zero_pages (9.0+)")
    if any("stale_next_packet_size" in f.features for f in multifd):
        gen.ceiling((8, 2), "an empty multifd packet repeats the previous next_packet_size: a sync shared "
                            "the page job's counter (<= 8.2; separated in 9.0 by f5f48a7891cf)")
    if repeated_pages:
        gen.ceiling((7, 2), f"{repeated_pages} page(s) sent twice, a full multifd packet's last page opening the "
                            "next packet: the 7.2 race fixed in 8.0 by ddbe628c97c3")
    if preempt_early is True:
        gen.evidence.append("preempt channel opened at set-up (7.2, or a newer QEMU with a <= 7.2 machine type)"
                            + preempt_how)
    elif preempt_early is False:
        gen.floor((8, 0), "preempt channel opened only at postcopy start (8.0+)" + preempt_how)
    return gen


INFERRED = "inferred from TLS record sizes, the contents are hidden (--keylog reads them)"


def tls_roles(order: list[ConnectionFacts], truth: list[tuple[str, str]],
              recovery: bool = False) -> list[tuple[str, str]]:
    """A leg's TLS channels given the roles their record layer points to (``TlsShape``): a first write of a
    multifd hello's size is multifd; the first other channel that wrote is main (the recovered main on a
    recovery leg); any later one is preempt. Channels with readable contents keep their roles, and a TLS
    channel whose handshake end cannot be found stays ``tls``."""
    out = list(truth)
    main_seen = any(r in (MAIN, RECOVERY) for r, _ in truth)
    for i, (f, (role, _)) in enumerate(zip(order, truth, strict=True)):
        shape = f.tls_shape
        if role != TLS or f.decrypted or not shape.handshake_done:
            continue
        what = shape.first_write_text()
        if shape.looks_multifd():
            out[i] = (MULTIFD, f"likely multifd: {what}; {INFERRED}")
        elif not main_seen and shape.sides[0].first_len is not None:
            name = RECOVERY if recovery else MAIN
            if recovery and shape.looks_recovery():
                what = shape.recovery_text()
            out[i] = (name, f"likely {name}: the first channel whose first write is not a multifd hello ({what}); "
                            f"{INFERRED}")
            main_seen = True
        elif main_seen:
            out[i] = (PREEMPT, f"likely preempt: a further channel whose first write is not a multifd hello "
                               f"({what}); {INFERRED}")
    return out
