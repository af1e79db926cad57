"""The book generator: deterministic, a realistic mix, nothing liquidatable at the start, and the
healthy-by-construction accounts survive the synthetic crash at the venue."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.domain.model import CROSS
from keeper.scenarios.book import DEFAULT_PRICES, generate_book
from keeper.sim.prices import synthetic_crash
from keeper.sim.venue import Venue

D = Decimal


def _encoded(seed: int, n: int = 500) -> list[bytes]:
    return [codec.encode(e) for e in generate_book(n, seed).events]


def _loaded(n: int, seed: int = 1) -> Venue:
    v = Venue(lambda: 0)
    v.set_marks(0, DEFAULT_PRICES)
    v.load(generate_book(n, seed).events)
    return v


def test_same_seed_same_book_and_another_seed_another() -> None:
    assert _encoded(7) == _encoded(7)
    assert _encoded(7) != _encoded(8)


def test_every_account_deposits_before_it_trades_or_borrows() -> None:
    funded: set[tuple[str, str]] = set()
    for e in generate_book(2000, 3).events:
        if isinstance(e, ev.Deposit):
            funded.add((e.account, e.bucket))
        elif isinstance(e, ev.PositionChanged | ev.Borrow):
            assert (e.account, e.bucket) in funded, e


def test_leverage_spread_and_bucket_mix_look_like_a_real_venue() -> None:
    book = generate_book(10_000, 1)
    v = _loaded(10_000)
    healthy = set(book.healthy)
    lev: list[Decimal] = []
    isolated = perp_buckets = 0
    hfs: list[Decimal] = []
    for a in v.accounts.values():
        for name, b in a.buckets.items():
            if b.positions and (a.id, name) not in healthy:
                notional = sum(abs(p.size) * v.marks[m] for m, p in b.positions.items())
                lev.append(notional / b.balances["USDC"])
                perp_buckets += 1
                isolated += name != CROSS
            elif not b.positions:
                hf = v.health_factor(a.id, name)
                assert hf is not None
                hfs.append(hf)
    n = len(lev)
    share = Counter("<2" if x < 2 else "2-10" if x < 10 else "10-20" if x < 20 else "20+" for x in lev)
    assert share["2-10"] / n > 0.45, share
    assert 0.05 < share["20+"] / n < 0.15, share
    assert max(lev) <= 50 * D("1.01") and min(lev) >= D("0.9")
    assert 0.2 <= isolated / perp_buckets <= 0.35, (isolated, perp_buckets)
    assert 0.08 < len(hfs) / len(v.accounts) < 0.16
    assert min(hfs) >= D("1.01") and max(hfs) <= D("3.01")
    near = sum(1 for h in hfs if h < D("1.25"))
    assert 0.12 < near / len(hfs) < 0.28, (near, len(hfs))  # 20% drawn in [1.02, 1.25)
    kinds = Counter(book.kinds.values())
    assert kinds["healthy"] == 100 and kinds["lending-isolated"] > 0 and kinds["lending-cross"] > 0


def _liquidatable(v: Venue) -> set[tuple[str, str]]:
    out = set()
    for a in v.accounts.values():
        for name, b in a.buckets.items():
            if b.positions:
                e, mm = v.perp_health(a.id, name)
                if e < mm:
                    out.add((a.id, name))
            else:
                hf = v.health_factor(a.id, name)
                if hf is not None and hf < 1:
                    out.add((a.id, name))
    return out


def test_nothing_is_liquidatable_at_the_start_and_much_is_at_the_crash_low() -> None:
    book = generate_book(3000, 2)
    v = _loaded(3000, 2)
    assert _liquidatable(v) == set()
    path = synthetic_crash(1)
    low = {m: min(t.prices[m] for t in path) for m in DEFAULT_PRICES}
    v.set_marks(1, low)
    hit = _liquidatable(v)
    assert len(hit) > 300
    assert hit.isdisjoint(book.healthy)


def test_a_twenty_percent_fall_liquidates_some_lending_buckets_not_most() -> None:
    v = _loaded(10_000)
    lending = [(a.id, n) for a in v.accounts.values() for n, b in a.buckets.items() if not b.positions]
    # about the 2025-10-10 window's lows: ETH -19%, BTC -14%
    v.set_marks(1, {"ETH-USD": DEFAULT_PRICES["ETH-USD"] * D("0.81"),
                    "BTC-USD": DEFAULT_PRICES["BTC-USD"] * D("0.86")})
    hit = _liquidatable(v).intersection(lending)
    assert 0.05 < len(hit) / len(lending) < 0.25, (len(hit), len(lending))


def test_healthy_accounts_hold_one_low_leverage_long() -> None:
    book = generate_book(5000, 4)
    v = _loaded(5000, 4)
    assert len(book.healthy) == 50
    for acct, bucket in book.healthy:
        b = v.accounts[acct].buckets[bucket]
        ((m, p),) = b.positions.items()
        assert p.size > 0
        assert abs(p.size) * v.marks[m] / b.balances["USDC"] <= D("1.51")
        assert len(v.accounts[acct].buckets) == 1


def test_market_params_are_what_the_book_lists_and_cross_is_the_keepers_bucket_name() -> None:
    from keeper.domain.model import CROSS as KEEPER_CROSS
    from keeper.scenarios.book import CROSS as BOOK_CROSS
    from keeper.scenarios.book import market_params

    listed = [e.params for e in generate_book(50, 1).events if isinstance(e, ev.MarketListed)]
    assert sorted(p.symbol for p in listed) == sorted(DEFAULT_PRICES)
    for p in listed:
        spec = market_params(p.symbol)
        assert (spec.symbol, spec.mmf, spec.imf, spec.liquidation_fee) == (
            p.symbol, p.mmf, p.imf, p.liquidation_fee)
    assert BOOK_CROSS == KEEPER_CROSS
