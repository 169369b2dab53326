"""Accept-order candidates for a vantage that cannot fix the destination's order."""

from __future__ import annotations

from dissectors.analysis.judge import _inversions, candidate_orders


def test_certain_order_is_the_only_candidate():
    assert candidate_orders(4, [True] * 4) == [(0, 1, 2, 3)]


def test_uncertain_runs_are_permuted_fewest_swaps_first():
    orders = candidate_orders(4, [False, False, True, True])
    assert orders == [(0, 1, 2, 3), (1, 0, 2, 3)]
    orders = candidate_orders(5, [False, False, False, True, True])
    assert orders[0] == (0, 1, 2, 3, 4) and len(orders) == 6
    assert [_inversions(o) for o in orders] == sorted(_inversions(o) for o in orders)
    assert all(o[3:] == (3, 4) for o in orders)


def test_too_many_orders_fall_back_to_the_one_seen():
    assert candidate_orders(9, [False] * 9) == [tuple(range(9))]
