"""Pages a QEMU 7.2 multifd source sent twice (``analysis.repeats``); the real captures' counts are held
to query-migrate in test_captures_regression."""

from __future__ import annotations

from dissectors.analysis import repeats as R
from dissectors.analysis.judge import Options
from dissectors.channels import MultifdParser
from dissectors.cli.pipeline import analyze_file
from dissectors.layers import synth as L
from dissectors.outputs.text import render_migration
from tests import synth as S

KEY = ("127.0.0.1:4444", "uuid-a")
FULL = 128
T0 = 1_700_000_000.0


def _pages(first: int, n: int = FULL) -> list[int]:
    return [first + i * 0x1000 for i in range(n)]


def _feed(r: R.RepeatedPages, packets: list[tuple[int, list[int]] | tuple[int, list[int], bool]],
          key: tuple[str, str] = KEY, block: str = "pc.ram") -> None:
    for i, (num, offs, *sync) in enumerate(packets):
        r.packet(key, num, block, FULL, len(offs), offs[0], offs[-1], T0 + i, bool(sync and sync[0]))


def test_parser_gives_first_and_last_offset() -> None:
    p = MultifdParser()
    recs = p.feed(bytes(L.multifd_stream(packets=0)) + L.multifd_packet(7, 3, offsets=[0x5000, 0x9000, 0x2000])
                  + L.multifd_packet(8, 1, zero=2, offsets=[0x3000, 0x4000, 0x6000]), 1.0)
    f7, f8 = (r.fields for r in recs[1:])
    assert (f7["first_offset"], f7["last_offset"]) == (0x5000, 0x2000)
    assert (f8["first_offset"], f8["last_offset"]) == (0x3000, 0x3000)   # normal pages only


def test_adjacent_repeat_in_either_arrival_order() -> None:
    for order in ([0, 1], [1, 0]):
        r = R.RepeatedPages()
        packets = [(10, _pages(0x10000)), (11, _pages(0x10000 + 127 * 0x1000))]   # 11 opens with 10's last
        _feed(r, [packets[i] for i in order])
        got = r.summary({KEY})
        assert got is not None and got["count"] == 1
        assert got["examples"][0]["packets"] == [10, 11] and got["examples"][0]["offset"] == 0x10000 + 127 * 0x1000


def test_no_repeat_when_not_full_other_block_or_other_page() -> None:
    r = R.RepeatedPages()
    _feed(r, [(1, _pages(0x0, 50)), (2, _pages(0x0 + 49 * 0x1000))])          # 1 not full
    _feed(r, [(5, _pages(0x100000)), (6, _pages(0x200000))])                    # other page
    r.packet(KEY, 8, "pc.ram", FULL, FULL, 0x0, 0x7F000, T0, False)
    r.packet(KEY, 9, "pc.rom", FULL, FULL, 0x7F000, 0xFF000, T0, False)         # other block
    assert r.summary({KEY}) is None


def test_renumbered_successor_counts_only_if_the_next_number_never_went_out() -> None:
    last = 0x40000 + 127 * 0x1000
    r = R.RepeatedPages()
    _feed(r, [(43, _pages(0x40000)), (49, _pages(last, 77), True)])            # 44..48 taken by SYNCs
    got = r.summary({KEY})
    assert got is not None and got["count"] == 1 and got["examples"][0]["packets"] == [43, 49]

    r = R.RepeatedPages()
    _feed(r, [(49, _pages(last, 77), True), (43, _pages(0x40000))])            # the other arrival order
    assert r.summary({KEY})["count"] == 1

    r = R.RepeatedPages()
    _feed(r, [(43, _pages(0x40000)), (49, _pages(last, 77), True), (44, _pages(0x900000))])
    assert r.summary({KEY}) is None                                             # 44 did go out

    r = R.RepeatedPages()
    _feed(r, [(43, _pages(0x40000)), (43 + R.RENUMBERED + 1, _pages(last, 77), True)])
    assert r.summary({KEY}) is None                                             # too far: a later pass

    r = R.RepeatedPages()
    _feed(r, [(43, _pages(0x40000)), (49, _pages(last, 77))])
    assert r.summary({KEY}) is None                                             # not a SYNC packet


def test_relay_legs_and_migrations_stay_apart() -> None:
    r = R.RepeatedPages()
    pair = [(3, _pages(0x0)), (4, _pages(127 * 0x1000))]
    _feed(r, pair, key=("10.0.0.2:4444", "u"))
    _feed(r, pair, key=("10.0.0.9:4444", "u"))       # the same packets on the relay's other leg
    _feed(r, [(3, _pages(0x0))], key=("10.0.0.2:4444", "v"))
    assert r.summary({("10.0.0.2:4444", "u")})["count"] == 1
    assert r.summary({("10.0.0.9:4444", "u")})["count"] == 1
    assert r.summary({("10.0.0.2:4444", "v")}) is None


def test_memory_is_bounded_by_the_window() -> None:
    r = R.RepeatedPages()
    for n in range(50_000):
        r.packet(KEY, n, "pc.ram", FULL, FULL, n << 20, (n << 20) + 0x7F000, T0 + n, False)
    m = r._by_key[KEY]
    assert len(m.recent) <= 2 * R.WINDOW + 1 and r.summary({KEY}) is None


def test_end_to_end_on_a_synthetic_capture(tmp_path) -> None:
    """Two channels, packet 2 repeating packet 1's last page: counted, named, and the source is <= 7.2."""
    main = S.Conn(40000, T0)
    m0, m1 = S.Conn(40001, T0 + 0.002), S.Conn(40002, T0 + 0.003)
    main.send(T0 + 0.001, S.header() + S.ram_start() + S.ram_part([], flush=False))
    m0.send(T0 + 0.004, S.multifd_hello(0))
    m1.send(T0 + 0.004, S.multifd_hello(1))
    m0.send(T0 + 0.05, S.multifd_packet(1, FULL, offsets=_pages(0x100000)) + S.multifd_packet(3, 0, sync=True))
    m1.send(T0 + 0.06, S.multifd_packet(2, 3, offsets=[0x17F000, 0x300000, 0x301000])
            + S.multifd_packet(4, 0, sync=True))
    main.send(T0 + 0.07, S.ram_part([], end=True) + S.eof())
    for c in (main, m0, m1):
        c.close(T0 + 0.08)
    path = str(tmp_path / "repeat.pcap")
    S.write_capture(path, [main, m0, m1])
    (m,) = analyze_file(path, Options()).report["migrations"]
    assert m["multifd_repeated_pages"]["count"] == 1
    assert m["multifd_repeated_pages"]["examples"][0]["packets"] == [1, 2]
    assert m["policy"]["source_generation"] == "7.2"
    text = "\n".join(render_migration(m, width=1000))
    assert "1 page(s) sent twice by the QEMU 7.2 queueing race, e.g. pc.ram 0x17f000 in packets 1 and 2" in text
