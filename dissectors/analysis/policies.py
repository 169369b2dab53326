"""How a QEMU destination gives each accepted connection its role, per QEMU generation.

Pure functions: they take the connections in accept order (each with its true role, as read from its
bytes) and the migration's set-up, and return the role the destination would have given each, plus the
reason. Sources: docs/wire-format.md section "How the destination classifies channels".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dissectors.channels.identify import MULTIFD_MAGIC_BYTES, QEVM_MAGIC

# Role vocabulary shared with the report (docs/report-schema.md).
MAIN = "main"
MULTIFD = "multifd"
PREEMPT = "preempt"
RECOVERY = "main-recovery"
TLS = "tls"
UNKNOWN = "unknown"
# Assigned-only outcomes: the destination never got to give this connection a role.
BLOCKED = "blocked"      # the destination waits (peek on a silent socket) before deciding
REJECTED = "rejected"    # the destination refuses the connection with an error


@dataclass(frozen=True)
class ChannelView:
    """What a policy may know of one connection: its true role and whether it can be peeked."""

    role: str
    magic: bytes | None = None      # first 4 bytes client->server, None if it never sent 4 bytes
    tls: bool = False


@dataclass(frozen=True)
class Setup:
    """The migration's set-up as far as the destination knows it (capabilities, channel count)."""

    multifd_channels: int = 0       # 0 = multifd off
    postcopy: bool = False
    preempt: bool = False
    recovery: bool = False          # these connections re-establish a paused postcopy migration


@dataclass
class Assignment:
    roles: list[str]
    errors: list[str | None]
    policy: str
    notes: list[str] = field(default_factory=list)


QEVM = QEVM_MAGIC
MULTIFD_BYTES = MULTIFD_MAGIC_BYTES


def _positional(index_main: bool, setup: Setup) -> str:
    if index_main:
        return MAIN
    if setup.multifd_channels:
        return MULTIFD
    return PREEMPT


def accept_order_72(order: Sequence[ChannelView], setup: Setup) -> Assignment:
    """QEMU <= 7.2: the first connection is main; later ones are multifd if multifd is on, else preempt."""
    roles: list[str] = []
    errors: list[str | None] = []
    have_main = False
    for _ in order:
        roles.append(_positional(not have_main, setup))
        errors.append(None)
        have_main = True
    return Assignment(roles, errors, "qemu-7.2", ["accept order only; nothing is peeked"])


def peek_80(order: Sequence[ChannelView], setup: Setup) -> Assignment:
    """QEMU 8.0-10.0: peek the magic only for precopy multifd on a plain socket; otherwise order."""
    peek = setup.multifd_channels > 0 and not setup.postcopy
    roles: list[str] = []
    errors: list[str | None] = []
    have_main = False
    notes = []
    if peek:
        notes.append("multifd without postcopy: MSG_PEEK on the first 4 bytes where the socket allows it")
    else:
        notes.append("no peek (postcopy on or no multifd): accept order")
    blocked = False
    for c in order:
        if blocked:            # accepted behind a peek that never returns: never given a role
            roles.append(BLOCKED)
            errors.append("queued behind the blocked peek: the destination never takes it in")
            continue
        if peek and not c.tls:
            if c.magic is None:
                roles.append(BLOCKED)
                errors.append("the peek loop waits for 4 bytes that never come (main loop stalls)")
                blocked = True
                continue
            is_main = c.magic == QEVM
        else:
            is_main = not have_main
        role = _positional(is_main, setup)
        roles.append(role)
        errors.append(None)
        have_main = have_main or is_main
    return Assignment(roles, errors, "qemu-8.0-10.0", notes)


def peek_101(order: Sequence[ChannelView], setup: Setup) -> Assignment:
    """QEMU 10.1+: peek until main and every multifd channel exist; any later connection is preempt."""
    roles: list[str] = []
    errors: list[str | None] = []
    have_main = False
    multifd = 0
    blocked = False
    for c in order:
        if blocked:            # the peek runs in the main thread: later accepts wait behind it
            roles.append(BLOCKED)
            errors.append("queued behind the blocked peek: the destination never takes it in")
            continue
        if have_main and multifd >= setup.multifd_channels:
            roles.append(PREEMPT)
            errors.append(None)
            continue
        if not c.tls:
            if c.magic is None:
                roles.append(BLOCKED)
                errors.append("the peek waits in the main thread for 4 bytes that come only once postcopy "
                              "sends on it (QMP hangs; at teardown: Failed to peek at channel)")
                blocked = True
                continue
            if c.magic == QEVM:
                role = MAIN
            elif c.magic == MULTIFD_BYTES:
                role = MULTIFD
            elif not have_main and setup.recovery:
                role = MAIN
            else:
                roles.append(REJECTED)
                errors.append(f"unknown channel magic: {int.from_bytes(c.magic, 'big')}")
                continue
        elif have_main and setup.multifd_channels:
            role = MULTIFD
        elif not have_main:
            role = MAIN
        else:
            roles.append(REJECTED)
            errors.append("non-peekable channel used without multifd")
            continue
        roles.append(role)
        errors.append(None)
        if role == MAIN:
            have_main = True
        elif role == MULTIFD:
            multifd += 1
    return Assignment(roles, errors, "qemu-10.1+", ["peek until main and all multifd exist, then preempt"])


def two_way_handshake(order: Sequence[ChannelView], setup: Setup) -> Assignment:
    """The never-merged per-channel header (Oct 2022 proposal 3): every channel names itself."""
    roles = [c.role for c in order]
    return Assignment(roles, [None] * len(roles), "two-way-handshake",
                      ["hypothetical: each channel announces its type, so order does not matter"])


POLICIES = {
    "qemu-7.2": accept_order_72,
    "qemu-8.0-10.0": peek_80,
    "qemu-10.1+": peek_101,
    "two-way-handshake": two_way_handshake,
}


#: The policies of released QEMU generations, oldest first, with the versions each covers
#: (first, last; None = to this day). The two-way handshake was never merged.
GENERATIONS: dict[str, tuple[tuple[int, int], tuple[int, int] | None]] = {
    "qemu-7.2": ((0, 0), (7, 2)),
    "qemu-8.0-10.0": ((8, 0), (10, 0)),
    "qemu-10.1+": ((10, 1), None),
}
REAL_POLICIES = tuple(GENERATIONS)


def policy_for_generation(version: tuple[int, int]) -> str:
    """The policy a QEMU of this (major, minor) runs."""
    return next(name for name, (first, _) in reversed(GENERATIONS.items()) if version >= first)


def policy_for_version(version: str) -> str:
    """Map a QEMU version string ("7.2", "8.1.3", "10.0", "10.1") to the policy that version runs."""
    parts = version.strip().lstrip("v").split(".")
    try:
        major = int(parts[0])
        minor = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    except ValueError as exc:
        raise ValueError(f"not a QEMU version: {version!r}") from exc
    return policy_for_generation((major, minor))


def generation_span(policies: Sequence[str]) -> str:
    """The QEMU versions a set of policies covers, for people (">= 8.0", "<= 7.2", ">= 8.0, <= 10.0")."""
    if not policies:
        return "unknown (the capture fits no generation's rules)"
    if len(policies) == len(GENERATIONS):
        return "unknown (the capture fits every generation's rules)"
    lo = min(GENERATIONS[n][0] for n in policies)
    his = [GENERATIONS[n][1] for n in policies]
    hi = None if None in his else max(h for h in his if h is not None)
    text = [f">= {lo[0]}.{lo[1]}"] if lo != (0, 0) else []
    if hi is not None:
        text.append(f"<= {hi[0]}.{hi[1]}")
    return ", ".join(text)


def misread(true_role: str, assigned: str) -> bool:
    """The destination gives a connection another role than its bytes say (unknowable for TLS/unknown)."""
    if true_role in (TLS, UNKNOWN):
        return False
    return true_role != assigned


def destination_roles(role: str) -> str:
    """The role vocabulary a destination can give: a recovered main is simply main to it."""
    return MAIN if role == RECOVERY else role
