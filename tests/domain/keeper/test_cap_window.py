"""The cap window keeps what a naive re-filter of every liquidation would, at O(expired) a check."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as hs

from keeper.domain.caps import CapWindow

steps = hs.lists(hs.tuples(hs.booleans(), hs.integers(0, 5_000), hs.integers(1, 10_000)), max_size=3000)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_cap_window_matches_a_naive_refilter(ops: list[tuple[bool, int, int]]) -> None:
    window, naive = CapWindow(), []
    now = 0
    for is_add, dt, amount in ops:
        now += dt
        if is_add:
            ts = now - dt // 2  # out of order now and then, as sources' times can be
            window.add(ts, Decimal(amount) / 100)
            naive.append((ts, Decimal(amount) / 100))
        else:
            horizon = now - 20_000
            window.expire(horizon)
            naive = [w for w in naive if w[0] > horizon]
            assert len(window) == len(naive)
            assert window.notional == sum((n for _, n in naive), Decimal(0))
            assert sorted(window.items()) == sorted(naive)
    restored = CapWindow(window.items())
    assert len(restored) == len(window)
    assert restored.notional == window.notional
