"""The perfect keeper at the reference venue (``keeper.sim.ideal``): known answers on a hand-built
book, and a float screen that never misses a tick the venue's exact check would catch."""

from __future__ import annotations

import math
import random
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeper.domain import events as ev
from keeper.domain.model import CROSS, Tier
from keeper.scenarios.book import DEFAULT_PRICES, MARKET_TABLE, generate_book
from keeper.sim.ideal import FirstLiquidatable, Ideal, ideal_run, liquidatable, perfect_decision
from keeper.sim.prices import Tick
from keeper.sim.venue import Venue
from tests.sim.helpers import CRASH_PATH, crash_book

D = Decimal


def test_each_bucket_is_liquidated_at_the_first_tick_the_venue_finds_it_liquidatable() -> None:
    r = ideal_run(crash_book(), CRASH_PATH)
    # alice: E = 1000 + 0.1 (P - 60000) < MM = 0.0004 P  <=>  P < 50200.80: not at 50300 (tick 2),
    #   at 50200 (tick 3). pnl -980, fee 50.20: balance -30.20, covered: bad debt 30.20; she had
    #   1000 - 980 = 20 left, all of it lost.
    # dave: E = 1000 + (P - 60000) < 0.004 P  <=>  P < 59236.95: tick 1 at 55000 (the jump).
    #   pnl -5000, fee 550: bad debt 4550; worth -4000 before: nothing of his lost to it.
    # carol: HF = P * 0.83 / 2000 < 1  <=>  P < 2409.64: not at 2410, at 2400 (tick 3), HF 0.996,
    #   both sides >= $2,000: 50% close factor, repay 1000, seize 1000 * 1.05 / 2400 = 0.4375 ETH
    #   (lost: the bonus, 0.4375 * 2400 - 1000 = 50); HF then 0.5625 * 2400 * 0.83 / 1000 = 1.12.
    #   At 2000 (tick 4) HF 0.934 again, debt $1,000 < $2,000: repay all 1000, seize 0.525 ETH;
    #   worth 1125 - 1000 = 125 before, 0.0375 * 2000 = 75 after: lost 50.
    # bob: short ETH as it falls: never.
    assert r.refused == []
    assert {k: v.tick for k, v in r.first.items()} == {
        ("alice", CROSS): 3, ("dave", "iso-BTC-USD"): 1, ("carol", "lend-ETH"): 3}
    assert r.first[("dave", "iso-BTC-USD")] == FirstLiquidatable(
        "dave", "iso-BTC-USD", 1, 2_000_000, {"BTC-USD": D(55000), "ETH-USD": D(2500)})
    assert r.bad_debt == D("30.2") + D(4550)
    assert r.collateral_lost == D(20) + D(50) + D(50)
    assert r.fees == D("50.2") + D(550)
    assert (r.liquidations, r.accounts, r.ticks) == (4, 3, 5)


def test_a_tick_pricing_one_market_keeps_the_others_marks() -> None:
    path = [CRASH_PATH[0], Tick(2_000_000, {"ETH-USD": D(2400)}), Tick(3_000_000, {"BTC-USD": D(50200)})]
    r = ideal_run(crash_book(), path)
    # carol at tick 1 (ETH 2400); alice and dave at tick 2 (BTC 50200, ETH still 2400)
    assert {k: v.tick for k, v in r.first.items()} == {
        ("alice", CROSS): 2, ("dave", "iso-BTC-USD"): 2, ("carol", "lend-ETH"): 1}
    assert r.first[("alice", CROSS)].prices == {"BTC-USD": D(50200), "ETH-USD": D(2400)}


def test_a_bucket_exactly_at_its_requirement_is_not_liquidatable_and_a_tenth_below_is() -> None:
    book = [e for e in crash_book() if getattr(e, "account", "alice") == "alice"]
    book.insert(4, ev.Deposit(event_id="x", ts_event=0, account="alice", bucket=CROSS, asset="USDC",
                              amount=D(20)))
    path = [Tick(1, {"BTC-USD": D(60000)}), Tick(2, {"BTC-USD": D(50000)}),
            Tick(3, {"BTC-USD": D("49999.9")})]
    # 1020 + 0.1 (50000 - 60000) = 20 = 0.1 * 50000 * 0.004: E = MM, healthy (the rule is E < MM);
    # at 49999.9: E = 19.99 < MM = 19.99996
    assert {k: v.tick for k, v in ideal_run(book, path).first.items()} == {("alice", CROSS): 2}


def test_nothing_liquidatable_books_nothing() -> None:
    r = ideal_run(crash_book(), CRASH_PATH[:1])
    assert r == Ideal(ticks=1)


# ---------------------------------------------------------------- the screen never misses


def _brute_force(book: list[ev.Event], path: list[Tick]) -> Ideal:
    """The same perfect keeper without the screen: the venue's exact check at every tick."""
    now = [0]
    venue = Venue(lambda: now[0])
    venue.set_marks(path[0].ts_us, path[0].prices)
    venue.load(book)
    out = Ideal(ticks=len(path))
    n = 0
    keys = sorted((a, b) for a in venue.accounts for b in venue.accounts[a].buckets)
    marks: dict[str, Decimal] = {}
    for t, tick in enumerate(path):
        now[0] = tick.ts_us
        marks.update(tick.prices)
        venue.set_marks(tick.ts_us, tick.prices)
        for a, b in keys:
            for _ in range(8):
                if not liquidatable(venue, a, b):
                    break
                n += 1
                d = perfect_decision(venue, a, b, f"brute-{n}")
                if d is None:
                    break
                before = venue.stats.bad_debt
                r = venue.liquidate(d)
                assert r.status == "accepted", r.reason
                if venue.stats.bad_debt != before:
                    by = out.bad_debt_by_bucket
                    by[(a, b)] = by.get((a, b), Decimal(0)) + venue.stats.bad_debt - before
                out.first.setdefault((a, b), FirstLiquidatable(a, b, t, tick.ts_us, dict(marks)))
    st_ = venue.stats
    out.bad_debt, out.collateral_lost, out.fees = st_.bad_debt, st_.collateral_lost, st_.fees
    out.liquidations, out.accounts = st_.accepted, len({a for a, _ in out.first})
    return out


def _random_path(rng: random.Random, ticks: int, sigma: float, drift: float) -> list[Tick]:
    prices = dict(DEFAULT_PRICES)
    out = [Tick(1_000_000, dict(prices))]
    for k in range(1, ticks):
        moved = {}
        for m, p in prices.items():
            if rng.random() < 0.2:
                continue  # this tick does not price the market: its mark stays
            jump = rng.gauss(drift, sigma) * (5 if rng.random() < 0.05 else 1)
            step = MARKET_TABLE[m.split("-")[0]][3]
            moved[m] = max(step, (p * D(repr(math.exp(jump)))).quantize(step, ROUND_HALF_EVEN))
        prices.update(moved)
        out.append(Tick(1_000_000 * (k + 1), moved))
    return out


def _vary_markets(book: list[ev.Event], how: str) -> list[ev.Event]:
    """The book with its markets' maintenance given another way (``max_leverage`` or tiers)."""
    if how == "mmf":
        return book
    out: list[ev.Event] = []
    for e in book:
        if isinstance(e, ev.MarketListed):
            mmf = e.params.mmf or D("0.01")
            params = (msgspec.structs.replace(e.params, mmf=None, max_leverage=1 / (2 * mmf))
                      if how == "max_leverage" else
                      msgspec.structs.replace(e.params, mmf=None, mmf_tiers=(
                          Tier(notional_floor=D(0), rate=mmf),
                          Tier(notional_floor=D(20000), rate=2 * mmf))))
            out.append(msgspec.structs.replace(e, params=params))
        else:
            out.append(e)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), accounts=st.integers(10, 40), ticks=st.integers(10, 80),
       sigma=st.sampled_from([0.001, 0.01, 0.04]), drift=st.sampled_from([-0.01, -0.003, 0.0, 0.003]),
       how=st.sampled_from(["mmf", "mmf", "max_leverage", "tiers"]))
def test_screened_run_equals_the_exact_check_at_every_tick(seed: int, accounts: int, ticks: int, sigma: float,
                                                           drift: float, how: str) -> None:
    rng = random.Random(seed)
    path = _random_path(rng, ticks, sigma, drift)
    book = _vary_markets(generate_book(accounts, seed, path[0].prices).events, how)
    got, want = ideal_run(book, path), _brute_force(book, path)
    assert got.refused == []
    assert {k: v.tick for k, v in got.first.items()} == {k: v.tick for k, v in want.first.items()}
    assert got == want
