"""The keeper's sizing policy (``KeeperParams.sizing``) against the reference venue's own rules.

``largest``: the largest liquidation the venue accepts, computed with the venue's arithmetic: the
venue accepts each such decision exactly as planned, a single position's size is the venue's bound
``|size| <= |position|`` (one step more is refused), and a bucket of several positions is the
venue's whole-bucket request, the same one the perfect keeper (``keeper.sim.ideal``) sends.
``least`` keeps the per-position plan; on a hedged bucket the venue then covers a loss that the
other position's profit would have paid.
"""

from __future__ import annotations

import copy
from decimal import Decimal

import msgspec
import pytest

from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.margin import get_profile, with_policy
from keeper.scenarios.book import generate_book
from keeper.sim.ideal import perfect_decision
from keeper.sim.venue import Venue

D = Decimal
START = {"BTC-USD": D(60000), "ETH-USD": D(3000), "SOL-USD": D(150)}


def _prices(tag: str, marks: dict[str, Decimal]) -> list[ev.Event]:
    """One frame: every market and its asset at once (decided on only as a whole)."""
    quotes = [("USDC", D(1)), *((s, p) for m, p in sorted(marks.items()) for s in (m, m[:-4]))]
    last = len(quotes) - 1
    return [ev.PriceUpdated(event_id=f"{tag}-{s}", ts_event=1, symbol=s, price=p, frame_more=k < last)
            for k, (s, p) in enumerate(quotes)]


def _decide(book: list[ev.Event], crash: dict[str, Decimal], sizing: str) -> list[ev.Decision]:
    core = KeeperCore(KeeperParams(profile="generic-perp", mode="live", sizing=sizing))  # type: ignore[arg-type]
    entries = [(f"1-{n}", e) for n, e in enumerate([*book, *_prices("p0", START), *_prices("p1", crash)])]
    out = core.handle_batch(entries)
    return [e.decision for e in out if isinstance(e, ev.LiquidationIntended)]


def _venue(book: list[ev.Event], crash: dict[str, Decimal]) -> Venue:
    venue = Venue(lambda: 1)
    venue.set_marks(0, START)
    venue.load(book)
    venue.set_marks(1, crash)
    return venue


@pytest.mark.parametrize(("seed", "fall"), [(1, D("0.93")), (2, D("0.88")), (3, D("0.80"))])
def test_largest_is_what_the_venue_accepts_exactly(seed: int, fall: Decimal) -> None:
    book = generate_book(400, seed, START).events
    crash = {"BTC-USD": START["BTC-USD"] * fall, "ETH-USD": START["ETH-USD"] * fall,
             "SOL-USD": START["SOL-USD"] * fall * fall}
    venue = _venue(book, crash)
    decisions = [d for d in _decide(book, crash, "largest") if d.action != "repay_seize"]
    assert len(decisions) > 10
    several = 0
    for d in decisions:
        held = venue.accounts[d.account].buckets[d.bucket].positions
        if len(held) > 1:
            several += 1
            # the whole bucket in one request: the perfect keeper's request, field for field
            want = perfect_decision(venue, d.account, d.bucket, d.intent_id)
            assert want is not None
            assert (d.action, d.market, d.size) == (want.action, want.market, want.size)
            assert (d.action, d.market, d.size) == ("bad_debt", None, None)
        else:
            (pos,) = held.values()
            assert d.market == pos.market and d.size == pos.size  # the venue's bound, exactly
            step = D("1e-8").copy_sign(pos.size)
            over = msgspec.structs.replace(d, intent_id=d.intent_id + "+", size=pos.size + step)
            refused = venue.liquidate(over)
            assert refused.status == "rejected" and refused.reason.startswith("size exceeds position")
        result = venue.liquidate(d)
        assert result.status == "accepted", (d.intent_id, result.reason)
        assert venue.accounts[d.account].buckets[d.bucket].positions == {}
    assert several > 0


def test_largest_only_changes_what_the_venue_leaves_to_the_liquidator() -> None:
    assert with_policy(get_profile("generic-perp"), "largest").sizing == "whole_bucket"
    assert with_policy(get_profile("generic-perp"), "least") == get_profile("generic-perp")
    for name in ("aave-v3.3", "hyperliquid", "gmx-v2", "marginfi-v2", "vertex", "aevo", "drift-v2"):
        assert with_policy(get_profile(name), "largest") == get_profile(name)


def _hedged() -> list[ev.Event]:
    """One cross bucket short ETH and long SOL (the demo's acct-000136 in small)."""
    def listing(sym: str) -> ev.Event:
        return msgspec.convert({"event_id": f"l-{sym}", "ts_event": 0, "params": {
            "symbol": sym, "mmf": "0.005" if sym == "ETH-USD" else "0.01", "imf": "0.02",
            "liquidation_fee": "0.01"}}, ev.MarketListed)

    usdc = msgspec.convert({"event_id": "l-USDC", "ts_event": 0, "params": {"symbol": "USDC", "decimals": 6}},
                           ev.AssetListed)
    common = {"ts_event": 0, "account": "a", "bucket": "cross"}
    return [usdc, listing("ETH-USD"), listing("SOL-USD"),
            ev.Deposit(event_id="d", asset="USDC", amount=D(2800), **common),  # type: ignore[arg-type]
            ev.PositionChanged(event_id="e", market="ETH-USD", size=D("-3.7"), entry_price=D(3000),
                               **common),  # type: ignore[arg-type]
            ev.PositionChanged(event_id="s", market="SOL-USD", size=D(92), entry_price=D(150),
                               **common)]  # type: ignore[arg-type]


def test_a_hedged_bucket_closed_whole_leaves_only_the_fee_it_cannot_pay_as_bad_debt() -> None:
    book = _hedged()
    # SOL -36%: a loss of $4,968, more than the $2,800 collateral; ETH -20%: the short's profit
    # of $2,220. Equity $52 < MM $132.72. Closed whole, the bucket pays its loss with the profit
    # and lacks only the fees ($88.80 + $88.32) over its equity: $125.12. Closed one position at a
    # time (SOL first, the larger MM), the venue covers SOL's loss beyond the collateral
    # (-2,800 + 4,968 + 88.32 = $2,256.32) and the owner keeps the ETH short and its profit.
    crash = {"ETH-USD": D(2400), "SOL-USD": D(96), "BTC-USD": D(60000)}
    bad: dict[str, Decimal] = {}
    for sizing in ("least", "largest"):
        venue = _venue(book, crash)
        (d, *rest) = _decide(book, crash, sizing)
        assert rest == []
        assert venue.liquidate(copy.copy(d)).status == "accepted"
        bad[sizing] = venue.stats.bad_debt
    assert bad == {"largest": D("125.12"), "least": D("2256.32")}
