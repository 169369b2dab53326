"""The destination's role assignment per QEMU generation, on hand-made accept orders."""

import pytest

from dissectors.analysis import policies as P

MAIN = P.ChannelView(P.MAIN, b"QEVM")
MFD = P.ChannelView(P.MULTIFD, bytes.fromhex("11223344"))
SILENT_PRE = P.ChannelView(P.PREEMPT, None)
REC = P.ChannelView(P.MAIN, bytes.fromhex("08000a00"))
TLSC = P.ChannelView(P.MAIN, bytes.fromhex("16030100"), tls=True)

MULTIFD2 = P.Setup(multifd_channels=2)
PREEMPT = P.Setup(postcopy=True, preempt=True)


def test_72_multifd_first_takes_multifd_as_main():
    a = P.accept_order_72([MFD, MAIN, MFD], MULTIFD2)
    assert a.roles == [P.MAIN, P.MULTIFD, P.MULTIFD]


def test_72_preempt_first_takes_silent_channel_as_main():
    a = P.accept_order_72([SILENT_PRE, MAIN], PREEMPT)
    assert a.roles == [P.MAIN, P.PREEMPT]


def test_80_peeks_for_precopy_multifd():
    a = P.peek_80([MFD, MAIN, MFD], MULTIFD2)
    assert a.roles == [P.MULTIFD, P.MAIN, P.MULTIFD]
    assert a.errors == [None, None, None]


def test_80_no_peek_with_postcopy():
    a = P.peek_80([SILENT_PRE, MAIN], PREEMPT)
    assert a.roles == [P.MAIN, P.PREEMPT]


def test_80_garbage_becomes_multifd_and_silent_blocks():
    junk = P.ChannelView(P.UNKNOWN, b"GET ")
    a = P.peek_80([junk, P.ChannelView(P.UNKNOWN, None), MAIN], MULTIFD2)
    # 8.0's peek sleeps 1 ms at a time in the main loop (g_usleep): later accepts wait behind it
    assert a.roles == [P.MULTIFD, P.BLOCKED, P.BLOCKED]


def test_101_connections_queued_behind_a_blocked_peek_are_blocked():
    a = P.peek_101([SILENT_PRE, MAIN, MFD], MULTIFD2)
    assert a.roles == [P.BLOCKED, P.BLOCKED, P.BLOCKED]
    assert "queued behind" in (a.errors[1] or "")


def test_80_tls_falls_back_to_order():
    a = P.peek_80([TLSC, TLSC, TLSC], MULTIFD2)
    assert a.roles == [P.MAIN, P.MULTIFD, P.MULTIFD]


def test_101_positional_preempt_after_main_and_all_multifd():
    a = P.peek_101([MFD, MAIN, MFD, SILENT_PRE], MULTIFD2)
    assert a.roles == [P.MULTIFD, P.MAIN, P.MULTIFD, P.PREEMPT]


def test_101_silent_preempt_before_main_blocks_the_peek():
    a = P.peek_101([SILENT_PRE, MAIN], PREEMPT)
    assert a.roles[0] == P.BLOCKED


def test_101_unknown_magic_is_rejected_in_decimal():
    a = P.peek_101([P.ChannelView(P.UNKNOWN, b"GET "), MAIN], P.Setup())
    assert a.roles[0] == P.REJECTED
    assert a.errors[0] == "unknown channel magic: 1195725856"


def test_101_recovery_main_accepted_without_qevm():
    a = P.peek_101([REC, SILENT_PRE], P.Setup(postcopy=True, preempt=True, recovery=True))
    assert a.roles == [P.MAIN, P.PREEMPT]


def test_101_tls_second_channel_without_multifd_is_preempt_by_position():
    a = P.peek_101([TLSC, TLSC], P.Setup(postcopy=True, preempt=True))
    # main + all (zero) multifd exist after the first, so the second is preempt by position; the
    # "non-peekable channel used without multifd" branch is only reached before that.
    assert a.roles == [P.MAIN, P.PREEMPT]


def test_two_way_handshake_is_always_right():
    order = [SILENT_PRE, MFD, MAIN]
    assert P.two_way_handshake(order, PREEMPT).roles == [P.PREEMPT, P.MULTIFD, P.MAIN]


@pytest.mark.parametrize("version,policy", [
    ("7.2", "qemu-7.2"), ("7.2.22", "qemu-7.2"), ("8.0", "qemu-8.0-10.0"), ("9.2.1", "qemu-8.0-10.0"),
    ("10.0.2", "qemu-8.0-10.0"), ("10.1", "qemu-10.1+"), ("v11.0", "qemu-10.1+"),
])
def test_policy_for_version(version, policy):
    assert P.policy_for_version(version) == policy


def test_policy_for_bad_version():
    with pytest.raises(ValueError):
        P.policy_for_version("banana")
