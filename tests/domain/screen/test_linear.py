"""The linearisation: which profiles are linear, the tier bound, the margin at entry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keeper.domain.screen import linearise, screen_mode, tier_bound
from tests.domain.screen.reference import (
    ASSETS,
    MARKETS,
    D,
    exact_mm,
    long_btc,
)


def test_screen_mode_follows_the_profile_fields() -> None:
    assert screen_mode("lending", "aave", "liq") == (True, False, False)
    assert screen_mode("perp", "perp", "entry") == (False, True, False)
    assert screen_mode("perp", "mango", "liq") == (False, False, True)


def test_mm_at_entry_puts_the_margin_in_the_constant() -> None:
    lin = linearise(long_btc("6000"), MARKETS, ASSETS, {"BTC": D(60000)}, False, mm_at_entry=True)
    assert lin is not None
    assert lin.coefs["BTC"] == D(1)
    assert lin.const == D(-60000) - D(60000) * D("0.005")


@given(st.integers(1, 10**8), st.integers(1, 10**8))
def test_tier_bound_covers_the_schedule_up_to_its_ceiling(n0: int, n: int) -> None:
    m = MARKETS["TIER"]
    bound = tier_bound(m, D(n0))
    assert bound is not None
    rate, ceiling = bound
    if ceiling is None or D(n) <= ceiling:
        assert D(n) * rate >= exact_mm(m, D(n))
    assert ceiling is None or ceiling > 2 * D(n0)
