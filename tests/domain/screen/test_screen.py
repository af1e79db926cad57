"""The health screen: a conservative filter that never misses an exactly liquidatable bucket."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeper.domain.model import Bucket, Position
from keeper.domain.screen import Screen, linearise
from tests.domain.screen.reference import (
    ASSETS,
    BASE,
    MARKETS,
    SYMS,
    D,
    books,
    exact_slack,
    liquidatable,
    long_btc,
    magnitude,
    moves,
)


def test_long_is_flagged_only_once_price_crosses_its_liquidation_price() -> None:
    sc = Screen()
    prices = {"BTC": D(60000), "USDC": D(1)}
    assert not sc.upsert("a/cross", long_btc("6000"), MARKETS, ASSETS, prices, False)
    # E = 6000 + (P - 60000); MM = 0.005 P  ->  P* = 54000 / 0.995
    p_star = D(54000) / D("0.995")
    assert sc.candidates("BTC", p_star * D("1.0001")) == []
    assert sc.candidates("BTC", p_star * D("0.9999")) == ["a/cross"]
    assert sc.check("a/cross")
    assert sc.candidates("BTC", D(70000)) == []
    assert not sc.check("a/cross")


def test_short_is_flagged_when_price_rises() -> None:
    sc = Screen()
    b = Bucket("cross", {"USDC": D(3000)}, {"ETH": Position("ETH", D(-10), D(3000))})
    sc.upsert("s/cross", b, MARKETS, ASSETS, {"ETH": D(3000), "USDC": D(1)}, False)
    # E = 3000 - 10 (P - 3000) ; MM = 0.1 P -> P* = 33000 / 10.1
    p_star = D(33000) / D("10.1")
    assert sc.candidates("ETH", p_star * D("0.9999")) == []
    assert sc.candidates("ETH", p_star * D("1.0001")) == ["s/cross"]


def test_lending_bucket_is_flagged_when_collateral_falls_below_threshold() -> None:
    sc = Screen()
    b = Bucket("cross", {"WETH": D(10), "USDC": D(-20000)})
    sc.upsert("l/cross", b, MARKETS, ASSETS, {"WETH": D(3000), "USDC": D(1)}, True)
    # HF = 10 * P * 0.8 / 20000 < 1  <=>  P < 2500
    assert sc.candidates("WETH", D("2500.01")) == []
    assert sc.candidates("WETH", D("2499.99")) == ["l/cross"]
    # a rising debt price also counts
    assert sc.candidates("WETH", D(2600)) == []
    assert sc.candidates("USDC", D("1.05")) == ["l/cross"]


def test_candidates_only_name_buckets_exposed_to_the_symbol_sorted_by_key() -> None:
    sc = Screen()
    prices = {"BTC": D(60000), "ETH": D(3000), "USDC": D(1)}
    for k in ["z/cross", "b/cross", "m/iso"]:
        sc.upsert(k, long_btc("1000"), MARKETS, ASSETS, prices, False)
    sc.upsert("e/cross", Bucket("cross", {"USDC": D(1000)}, {"ETH": Position("ETH", D(1), D(3000))}),
              MARKETS, ASSETS, prices, False)
    assert sc.exposed("BTC") == ["b/cross", "m/iso", "z/cross"]
    assert sc.candidates("BTC", D(58000)) == ["b/cross", "m/iso", "z/cross"]
    assert sc.candidates("ETH", D(3001)) == []
    assert sc.exposed("ETH") == ["e/cross"]


def test_upsert_replaces_exposure_and_remove_forgets_and_recycles_rows() -> None:
    sc = Screen()
    prices = {"BTC": D(60000), "ETH": D(3000), "USDC": D(1)}
    sc.upsert("a/cross", long_btc("100"), MARKETS, ASSETS, prices, False)
    assert sc.check("a/cross")
    moved = Bucket("cross", {"USDC": D(100)}, {"ETH": Position("ETH", D(1), D(3000))})
    sc.upsert("a/cross", moved, MARKETS, ASSETS, prices, False)
    assert sc.exposed("BTC") == []
    assert sc.exposed("ETH") == ["a/cross"]
    assert not sc.check("a/cross")
    sc.remove("a/cross")
    assert "a/cross" not in sc
    assert sc.exposed("ETH") == []
    sc.upsert("b/cross", long_btc("100000"), MARKETS, ASSETS, prices, False)
    assert sc.stats()["buckets"] == 1
    assert sc.candidates("ETH", D(1)) == []  # the recycled row is not exposed to ETH any more
    assert sc.candidates("BTC", D(50000)) == []
    sc.remove("never-there")


def test_unlinearisable_bucket_is_a_candidate_on_every_tick_of_its_symbols() -> None:
    sc = Screen()
    prices = {"BTC": D(60000), "USDC": D(1), "XYZ": D(5)}
    odd = Bucket("cross", {"USDC": D(10**9)}, {"XYZ": Position("XYZ", D(1), D(5))})  # unknown market
    assert sc.upsert("odd/cross", odd, MARKETS, ASSETS, prices, False)
    sc.upsert("mango/cross", long_btc("1000000"), MARKETS, ASSETS, prices, False, always_check=True)
    assert sc.candidates("XYZ", D(6)) == ["odd/cross"]
    assert sc.candidates("USDC", D(1)) == ["mango/cross", "odd/cross"]
    assert sc.candidates("BTC", D(90000)) == ["mango/cross"]
    assert sc.stats()["always_check"] == 2


def test_tiered_position_leaving_its_band_is_flagged_until_upserted_again() -> None:
    sc = Screen()
    b = Bucket("cross", {"USDC": D(10**9)}, {"TIER": Position("TIER", D(1), D(10_000))})
    prices = {"TIER": D(10_000), "USDC": D(1)}
    sc.upsert("t/cross", b, MARKETS, ASSETS, prices, False)
    assert sc.candidates("TIER", D(20_000)) == []      # notional 20k: band (0, 50k]
    assert sc.candidates("TIER", D(60_000)) == ["t/cross"]  # out of the band: re-check
    assert sc.check("t/cross")
    sc.upsert("t/cross", b, MARKETS, ASSETS, {**prices, "TIER": D(60_000)}, False)
    assert sc.candidates("TIER", D(61_000)) == []


def test_resync_recomputes_what_the_ticks_accumulated() -> None:
    rng = np.random.default_rng(7)
    sc = Screen()
    prices = {"BTC": D(60000), "ETH": D(3000), "USDC": D(1)}
    for i in range(200):
        b = Bucket("cross", {"USDC": D(int(rng.integers(100, 20000)))},
                   {"BTC": Position("BTC", D(int(rng.integers(-5, 6)) or 1) / 10, D(60000)),
                    "ETH": Position("ETH", D(int(rng.integers(-5, 6)) or 1), D(3000))})
        sc.upsert(f"{i:03d}/cross", b, MARKETS, ASSETS, prices, False)
    for _ in range(300):
        sym = "BTC" if rng.random() < 0.5 else "ETH"
        base = 60000 if sym == "BTC" else 3000
        sc.on_price(sym, base * float(rng.uniform(0.8, 1.2)))
    before = np.array([sc.headroom(f"{i:03d}/cross") for i in range(200)])
    sc.resync()
    after = np.array([sc.headroom(f"{i:03d}/cross") for i in range(200)])
    # incremental never above the fresh value (beyond float noise) and close to it
    assert (before <= after + 1e-9 * np.abs(after) + 1e-9).all()
    np.testing.assert_allclose(before, after, rtol=1e-6, atol=1e-3)
    assert sc.stats()["resyncs"] == 1


def test_on_price_rejects_bad_prices() -> None:
    sc = Screen()
    for bad in [0, -1, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="price"):
            sc.on_price("BTC", bad)


def test_automatic_resync_runs_after_the_configured_number_of_ticks() -> None:
    sc = Screen(resync_every=10)
    sc.upsert("a/cross", long_btc("6000"), MARKETS, ASSETS, {"BTC": D(60000), "USDC": D(1)}, False)
    for i in range(25):
        sc.on_price("BTC", 60000 + i)
    assert sc.stats()["resyncs"] == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), moves, st.sampled_from([0.0, 1e-6]), st.sampled_from([0, 7]))
def test_screen_never_misses_an_exactly_liquidatable_bucket(
    book: list[tuple[Bucket, bool]], path: list[tuple[str, int]], abs_tol: float, resync_every: int
) -> None:
    sc = Screen(abs_tol=abs_tol, resync_every=resync_every)
    prices = dict(BASE)
    for i, (b, lending) in enumerate(book):
        flagged = sc.upsert(f"{i:02d}/cross", b, MARKETS, ASSETS, prices, lending)
        assert flagged or not liquidatable(b, prices, lending)
    for sym, bp in path:
        prices[sym] = BASE[sym] * (1 + D(bp) / 10_000)
        got = set(sc.candidates(sym, prices[sym]))
        for i, (b, lending) in enumerate(book):
            key = f"{i:02d}/cross"
            if liquidatable(b, prices, lending):
                assert sc.check(key), (key, exact_slack(b, prices, lending))
                if sym in b.symbols():
                    assert key in got, (key, exact_slack(b, prices, lending))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), moves)
def test_vectorised_settles_never_miss_an_exactly_liquidatable_bucket(
    book: list[tuple[Bucket, bool]], path: list[tuple[str, int]]
) -> None:
    """The numpy settle of crossed rows (the fast path for many) keeps the row-by-row settle's
    promise: forced on every tick, it never misses a bucket the exact reference calls
    liquidatable."""
    sc = Screen()
    sc._one_by_one_below = 0
    prices = dict(BASE)
    for i, (b, lending) in enumerate(book):
        sc.upsert(f"{i:02d}/cross", b, MARKETS, ASSETS, prices, lending)
    for sym, bp in path:
        prices[sym] = BASE[sym] * (1 + D(bp) / 10_000)
        got = set(sc.candidates(sym, prices[sym]))
        for i, (b, lending) in enumerate(book):
            key = f"{i:02d}/cross"
            if liquidatable(b, prices, lending) and sym in b.symbols():
                assert key in got, (key, exact_slack(b, prices, lending))
                assert sc.check(key)


@settings(max_examples=40, deadline=None)
@given(books())
def test_bulk_load_flags_what_upserts_flag(book: list[tuple[Bucket, bool]]) -> None:
    up = Screen()
    bulk = Screen()
    prices = dict(BASE)
    keys, const, er, es, coef, pmax = [], [], [], [], [], []
    for i, (b, lending) in enumerate(book):
        key = f"{i:02d}/cross"
        up.upsert(key, b, MARKETS, ASSETS, prices, lending)
        lin = linearise(b, MARKETS, ASSETS, prices, lending)
        assert lin is not None
        keys.append(key)
        const.append(float(lin.const))
        for s in b.symbols():
            er.append(i)
            es.append(SYMS.index(s))
            coef.append(float(lin.coefs[s]))
            c = lin.ceilings.get(s)
            pmax.append(np.inf if c is None else float(np.nextafter(float(c), 0.0)))
    bulk.load_columns(keys, const, er, es, coef, symbols=SYMS, prices=prices, pmax=pmax)
    for s in SYMS:
        assert bulk.exposed(s) == up.exposed(s)
    for s, f in [("BTC", 0.97), ("TIER", 1.6), ("WETH", 0.9), ("ETH", 1.05), ("USDC", 1.01), ("BTC", 1.1)]:
        p = float(prices[s]) * f
        prices[s] = D(p)
        assert bulk.candidates(s, p) == up.candidates(s, p)
    assert [bulk.check(k) for k in keys] == [up.check(k) for k in keys]


def test_load_columns_rejects_bad_input() -> None:
    sc = Screen()
    with pytest.raises(ValueError, match="two entries"):
        sc.load_columns(["a", "b"], [0.0, 0.0], [0, 0], [0, 0], [1.0, 2.0], symbols=["BTC"],
                        prices={"BTC": 1.0})
    with pytest.raises(ValueError, match="no price"):
        Screen().load_columns(["a"], [0.0], [0], [0], [1.0], symbols=["BTC"], prices={})
    sc2 = Screen()
    sc2.upsert("x/cross", long_btc("1"), MARKETS, ASSETS, {"BTC": D(1), "USDC": D(1)}, False)
    with pytest.raises(ValueError, match="empty"):
        sc2.load_columns(["a"], [0.0], [0], [0], [1.0], symbols=["BTC"], prices={"BTC": 1.0})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), moves)
def test_screen_never_misses_what_the_margin_engine_calls_liquidatable(
    book: list[tuple[Bucket, bool]], path: list[tuple[str, int]]
) -> None:
    margin = pytest.importorskip("keeper.domain.margin")
    perp, lend = margin.get_profile("generic-perp"), margin.get_profile("aave-v3.3")
    sc = Screen()
    prices = dict(BASE)
    for i, (b, lending) in enumerate(book):
        sc.upsert(f"{i:02d}/cross", b, MARKETS, ASSETS, prices, lending)
    for sym, bp in path:
        prices[sym] = BASE[sym] * (1 + D(bp) / 10_000)
        got = set(sc.candidates(sym, prices[sym]))
        for i, (b, lending) in enumerate(book):
            key = f"{i:02d}/cross"
            health = margin.evaluate(margin.Pricing(lend if lending else perp, MARKETS, ASSETS, prices), b)
            if health.liquidatable:
                assert sc.check(key), (key, health)
                if sym in b.symbols():
                    assert key in got, (key, health)


# ---------------------------------------------------------------- shift: one term moved in place


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), st.lists(st.tuples(st.integers(0, 11), st.integers(-10**6, 10**6)), min_size=1, max_size=25),
       moves)
def test_shift_keeps_a_row_at_least_as_conservative_as_a_fresh_upsert(
    book: list[tuple[Bucket, bool]], deltas: list[tuple[int, int]], path: list[tuple[str, int]]
) -> None:
    from keeper.domain.screen import balance_weight

    sc, fresh = Screen(), Screen()
    prices = dict(BASE)
    for i, (b, lending) in enumerate(book):
        sc.upsert(f"{i:02d}/cross", b, MARKETS, ASSETS, prices, lending)
    shifted = 0
    for (i, cents), (sym, bp) in zip(deltas, path * len(deltas), strict=False):
        if i >= len(book):
            continue
        b, lending = book[i]
        key = f"{i:02d}/cross"
        old = b.balances.get("USDC", D(0))
        new = old + D(cents) / 100
        if not old or not new or (old > 0) != (new > 0):
            continue  # the caller re-linearises when a balance comes, goes or changes sign
        b.balances["USDC"] = new
        w = balance_weight(ASSETS["USDC"], new > 0, lending)
        flagged = sc.shift(key, "USDC", (new - old) * w)
        if flagged is None:
            flagged = sc.upsert(key, b, MARKETS, ASSETS, prices, lending)
        else:
            shifted += 1
        assert flagged or not liquidatable(b, prices, lending)
        fresh.upsert(key, b, MARKETS, ASSETS, prices, lending)
        if "TIER" not in b.positions:  # a tier band is chosen at the upsert's price: not comparable
            assert sc.headroom(key) <= fresh.headroom(key) + 1e-9 * float(magnitude(b, prices, lending))
        prices[sym] = BASE[sym] * (1 + D(bp) / 10_000)
        got = set(sc.candidates(sym, prices[sym]))
        fresh.candidates(sym, prices[sym])
        for j, (bj, lj) in enumerate(book):
            if liquidatable(bj, prices, lj):
                assert sc.check(f"{j:02d}/cross")
                if sym in bj.symbols():
                    assert f"{j:02d}/cross" in got


def test_shift_declines_what_it_cannot_move_in_place() -> None:
    sc = Screen()
    prices = {"BTC": D(60000), "USDC": D(1)}
    sc.upsert("a/cross", long_btc("6000"), MARKETS, ASSETS, prices, False)
    sc.upsert("n/cross", long_btc("6000"), MARKETS, ASSETS, prices, False, always_check=True)
    assert sc.shift("zz/cross", "USDC", D(1)) is None      # unknown bucket
    assert sc.shift("a/cross", "WETH", D(1)) is None       # no entry for the symbol
    assert sc.shift("n/cross", "USDC", D(1)) is None       # always checked
    h0 = sc.headroom("a/cross")
    assert sc.shift("a/cross", "USDC", D(-500)) is False   # slack 6000 - 300 - 500 > 0
    assert sc.headroom("a/cross") == pytest.approx(h0 - 500)
    assert sc.shift("a/cross", "USDC", D(-5300)) is True   # now 6000 - 300 - 5800 < 0
    assert sc.check("a/cross")
    # repeated shifts spend the row's band: past it, the caller must upsert again
    assert any(sc.shift("a/cross", "USDC", D(10**6) * (-1) ** k) is None for k in range(50))


# ---------------------------------------------------------------- defer: a row left to lag behind


def _refreshing(buckets: dict[str, Bucket], prices: dict[str, D]) -> tuple[Screen, list[str]]:
    """A screen whose ``refresh`` re-linearises from ``buckets`` (the state), noting each key."""
    sc = Screen()
    calls: list[str] = []

    def refresh(key: str) -> bool:
        calls.append(key)
        return sc.upsert(key, buckets[key], MARKETS, ASSETS, prices, False)

    sc.refresh = refresh
    return sc, calls


def test_a_deferred_row_lags_until_a_tick_crosses_it_then_answers_for_the_bucket_as_it_is() -> None:
    prices = {"BTC": D(60000), "USDC": D(1)}
    b = long_btc("6000")
    sc, calls = _refreshing({"a/cross": b}, prices)
    assert not sc.upsert("a/cross", b, MARKETS, ASSETS, prices, False)
    b.balances["USDC"] += D(10000)  # a deposit: the slack only grew
    assert sc.defer("a/cross")
    assert sc.stats()["stale_rows"] == 1 and calls == []
    # between the old liquidation price (54000/0.995) and the new one (44000/0.995): the stale row
    # is crossed, re-linearised from the bucket as it is, and found healthy
    prices["BTC"] = D(50000)
    assert sc.candidates("BTC", prices["BTC"]) == []
    assert calls == ["a/cross"] and sc.stats()["stale_rows"] == 0
    prices["BTC"] = D(44000) / D("0.995") * D("0.9999")
    assert sc.candidates("BTC", prices["BTC"]) == ["a/cross"]


def test_a_deferred_row_is_refreshed_before_check_and_headroom() -> None:
    prices = {"BTC": D(60000), "USDC": D(1)}
    b = long_btc("6000")
    sc, calls = _refreshing({"a/cross": b}, prices)
    sc.upsert("a/cross", b, MARKETS, ASSETS, prices, False)
    h0 = sc.headroom("a/cross")
    b.balances["USDC"] += D(500)
    assert sc.defer("a/cross")
    assert sc.headroom("a/cross") == pytest.approx(h0 + 500)
    assert calls == ["a/cross"]
    b.balances["USDC"] += D(500)
    assert sc.defer("a/cross")
    assert not sc.check("a/cross")
    assert calls == ["a/cross", "a/cross"]


def test_defer_declines_what_must_be_looked_at_now() -> None:
    prices = {"BTC": D(60000), "USDC": D(1)}
    books = {"a/cross": long_btc("6000"), "n/cross": long_btc("6000"), "f/cross": long_btc("200")}
    sc = Screen()
    sc.upsert("a/cross", books["a/cross"], MARKETS, ASSETS, prices, False)
    assert not sc.defer("a/cross")  # no refresh: nothing may lag
    sc, calls = _refreshing(books, prices)
    sc.upsert("a/cross", books["a/cross"], MARKETS, ASSETS, prices, False)
    sc.upsert("n/cross", books["n/cross"], MARKETS, ASSETS, prices, False, always_check=True)
    assert sc.upsert("f/cross", books["f/cross"], MARKETS, ASSETS, prices, False)  # 200 < MM 300
    assert not sc.defer("zz/cross")  # unknown
    assert not sc.defer("n/cross")   # always checked
    assert not sc.defer("f/cross")   # flagged: its band is empty, it is looked at on every tick
    assert sc.defer("a/cross")
    assert calls == []


def test_shift_of_a_deferred_row_that_would_flag_it_asks_for_an_upsert() -> None:
    prices = {"BTC": D(60000), "USDC": D(1)}
    b = long_btc("6000")
    sc, _ = _refreshing({"a/cross": b}, prices)
    sc.upsert("a/cross", b, MARKETS, ASSETS, prices, False)
    b.balances["USDC"] += D(10000)
    assert sc.defer("a/cross")
    b.balances["USDC"] -= D(100)
    assert sc.shift("a/cross", "USDC", D(-100)) is False  # still unflagged on its stale form
    b.balances["USDC"] -= D(5700)
    # stale form: 6000 - 100 - 5700 - 300 < 0; the bucket itself holds 10200 - 300 > 0
    assert sc.shift("a/cross", "USDC", D(-5700)) is None
    assert not sc.upsert("a/cross", b, MARKETS, ASSETS, prices, False)


def test_a_quiet_symbol_gets_no_band_edges_and_its_tick_settles_every_row_holding_it() -> None:
    sc = Screen()
    prices = {"BTC": D(60000), "USDC": D(1)}
    sc.candidates("BTC", D(60000))
    sc.candidates("BTC", D(60000))  # BTC has moved twice: it weighs 1, USDC (never moved) is quiet
    for i in range(5):
        sc.upsert(f"{i}/cross", long_btc(str(6000 + i)), MARKETS, ASSETS, prices, False)
    assert sc.stats()["edges"] == 5  # one BTC floor per row, none for USDC
    # USDC debt: the lending bucket's health moves with USDC, which has no edges
    sc.upsert("l/cross", Bucket("cross", {"WETH": D(10), "USDC": D(-20000)}), MARKETS, ASSETS,
              {"WETH": D(3000), "USDC": D(1)}, True)
    assert sc.candidates("USDC", D("1.01")) == []
    assert sc.candidates("USDC", D("1.25")) == ["l/cross"]  # debt 25,000 > 10 WETH * 3000 * 0.8
    # after its second move USDC weighs 1: the rows settled on that tick got USDC edges
    assert sc.stats()["edges"] > 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), moves, st.integers(0, 5))
def test_headrooms_and_the_burst_order_are_those_of_headroom_one_by_one(
    book: list[tuple[Bucket, bool]], path: list[tuple[str, int]], always: int
) -> None:
    """``headrooms`` (vectorised) returns exactly ``headroom`` of each key, and ``by_headroom``
    the order ``sorted(keys, key=(headroom, key))`` the keeper core decides a burst in, with
    always-checked rows, keys the screen does not hold and ties."""
    sc = Screen()
    prices = dict(BASE)
    for i, (b, lending) in enumerate(book):
        sc.upsert(f"{i:02d}/cross", b, MARKETS, ASSETS, prices, lending, always_check=i < always)
        sc.upsert(f"{i:02d}/twin", b, MARKETS, ASSETS, prices, lending)  # ties in headroom
    for sym, bp in path:
        prices[sym] = BASE[sym] * (1 + D(bp) / 10_000)
        sc.candidates(sym, prices[sym])
    keys = sorted([*sc._row, "zz/unknown", "00/unknown"])
    one_by_one = [sc.headroom(k) if k in sc else -np.inf for k in keys]
    assert sc.headrooms(keys) == one_by_one
    assert sc.by_headroom(keys) == sorted(keys, key=lambda k: (one_by_one[keys.index(k)], k))


def test_headrooms_bring_a_deferred_row_up_to_date_as_headroom_does() -> None:
    prices = {"BTC": D(60000), "USDC": D(1)}
    buckets = {"a/cross": long_btc("6000"), "b/cross": long_btc("7000")}
    sc, calls = _refreshing(buckets, prices)
    twin, _ = _refreshing(buckets, prices)
    for screen in (sc, twin):
        for key, b in buckets.items():
            screen.upsert(key, b, MARKETS, ASSETS, prices, False)
    buckets["a/cross"].balances["USDC"] += D(1000)
    assert sc.defer("a/cross") and twin.defer("a/cross")
    assert sc.headrooms(["a/cross", "b/cross"]) == [twin.headroom("a/cross"), twin.headroom("b/cross")]
    assert calls == ["a/cross"], "refreshed once, from the state"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), moves)
def test_a_tick_that_leaves_its_settling_for_later_answers_as_one_that_settles(
    book: list[tuple[Bucket, bool]], path: list[tuple[str, int]]
) -> None:
    """A tick of many crossed rows only judges them and leaves their bands to ``settle`` (forced
    here on every tick, ticks back to back): the same candidates as the vectorised settle at
    every tick, the exact reference's liquidatable buckets among them, and once settled the
    same edges and notes."""
    now, later = Screen(), Screen()
    now._one_by_one_below = later._one_by_one_below = 0
    later._settle_later_from = 0
    prices = dict(BASE)
    for i, (b, lending) in enumerate(book):
        for sc in (now, later):
            sc.upsert(f"{i:02d}/cross", b, MARKETS, ASSETS, prices, lending)
    for sym, bp in path:
        prices[sym] = BASE[sym] * (1 + D(bp) / 10_000)
        got = later.candidates(sym, prices[sym])
        assert got == now.candidates(sym, prices[sym])
        for i, (b, lending) in enumerate(book):
            if liquidatable(b, prices, lending) and sym in b.symbols():
                assert f"{i:02d}/cross" in got, (i, exact_slack(b, prices, lending))
    keys = [f"{i:02d}/cross" for i in range(len(book))]
    assert later.by_headroom(keys) == now.by_headroom(keys)  # judged rows need no settle to rank
    later.settle()
    assert later.stats() == now.stats()


def test_tidy_drops_stale_edges_and_changes_no_answer() -> None:
    prices = {"BTC": D(60000), "USDC": D(1)}
    sc, untidy = Screen(), Screen()
    for s in (sc, untidy):
        s.on_price("BTC", 60000)
        s.on_price("BTC", 60001)  # BTC moves: a weight of 1, edges of its own
        s.upsert("b/cross", long_btc("100"), MARKETS, ASSETS, prices, False)
        s.on_price("BTC", 50000)  # b is flagged: a note for BTC
        s.upsert("b/cross", long_btc("60000"), MARKETS, ASSETS, {**prices, "BTC": D(50000)}, False)
        for c in range(2000):  # every upsert leaves the row's edge before it stale
            s.upsert("a/cross", long_btc(str(16000 + c)), MARKETS, ASSETS, prices, False)
    before = sc.stats()
    assert before["edges"] > 1500 and before["flagged_notes"] == 1  # b's note: stale, b is healthy
    dropped = sc.tidy()
    after = sc.stats()
    assert after["edges"] <= 2 * 2 + 1024 < before["edges"]
    assert dropped == before["edges"] - after["edges"]
    assert after["dead_entries"] == 0
    for p in (49000, 30000, 61000, 10000, 4000):
        assert sc.candidates("BTC", p) == untidy.candidates("BTC", p)
        assert sc.stats()["flagged_notes"] == untidy.stats()["flagged_notes"] <= 1  # a tick takes them all
    assert sc.candidates("BTC", 100) == ["a/cross"]
