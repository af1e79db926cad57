"""Hypothesis strategies for random but valid event histories."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import strategies as hs

from keeper.domain import events as ev
from keeper.domain.model import AssetParams, MarketParams

ACCOUNTS = ["a1", "a2", "a3"]
BUCKETS = ["cross", "iso-1", "iso-2"]
MARKETS = ["BTC-USD", "ETH-USD"]
ASSETS = ["USDC", "ETH"]

amounts = hs.decimals(min_value=Decimal("0.01"), max_value=Decimal(10_000), places=2, allow_nan=False,
                      allow_infinity=False)
prices = hs.decimals(min_value=Decimal("0.5"), max_value=Decimal(100_000), places=2, allow_nan=False,
                     allow_infinity=False)
sizes = hs.decimals(min_value=Decimal(-50), max_value=Decimal(50), places=3, allow_nan=False,
                    allow_infinity=False)


@hs.composite
def event_bodies(draw: hs.DrawFn) -> ev.Event:
    kind = draw(hs.sampled_from(["price", "deposit", "withdraw", "borrow", "repay", "position",
                                 "funding", "market", "asset", "stale", "recovered"]))
    base = {"event_id": "x", "ts_event": 0}
    acct = {"account": draw(hs.sampled_from(ACCOUNTS)), "bucket": draw(hs.sampled_from(BUCKETS))}
    if kind == "price":
        return ev.PriceUpdated(**base, symbol=draw(hs.sampled_from(MARKETS + ASSETS)), price=draw(prices))
    if kind in ("deposit", "withdraw", "borrow", "repay"):
        cls = {"deposit": ev.Deposit, "withdraw": ev.Withdraw, "borrow": ev.Borrow, "repay": ev.Repay}[kind]
        return cls(**base, **acct, asset=draw(hs.sampled_from(ASSETS)), amount=draw(amounts))
    if kind == "position":
        return ev.PositionChanged(**base, **acct, market=draw(hs.sampled_from(MARKETS)), size=draw(sizes),
                                  entry_price=draw(prices), realized_pnl=draw(sizes))
    if kind == "funding":
        return ev.FundingApplied(**base, **acct, market=draw(hs.sampled_from(MARKETS)), asset="USDC",
                                 amount=draw(sizes))
    if kind == "market":
        return ev.MarketListed(**base, params=MarketParams(symbol=draw(hs.sampled_from(MARKETS)),
                                                           mmf=Decimal("0.05")))
    if kind == "asset":
        return ev.AssetListed(**base, params=AssetParams(symbol=draw(hs.sampled_from(ASSETS)),
                                                         liquidation_threshold=Decimal("0.8")))
    if kind == "stale":
        return ev.FeedStale(**base, symbol=draw(hs.sampled_from(MARKETS)))
    return ev.FeedRecovered(**base, symbol=draw(hs.sampled_from(MARKETS)))


@hs.composite
def histories(draw: hs.DrawFn, min_size: int = 0, max_size: int = 60) -> list[tuple[str, ev.Event]]:
    """A list of (entry id, event) with increasing ids and unique event ids."""
    bodies = draw(hs.lists(event_bodies(), min_size=min_size, max_size=max_size))
    out = []
    for i, body in enumerate(bodies):
        ts = 1_700_000_000_000_000 + i * 1000
        out.append((f"{1_700_000_000_000 + i}-0", type(body)(**{
            **{f: getattr(body, f) for f in body.__struct_fields__},
            "event_id": f"e{i}", "ts_event": ts})))
    return out
