"""A seeded book of accounts: the reference venue's initial events, and the keeper's test book.

``generate_book(n, seed, prices)`` lists the assets and markets, then for each account its
deposits, positions and borrows, as keeper events (``AssetListed``, ``MarketListed``,
``Deposit``, ``PositionChanged``, ``Borrow``). The venue re-stamps ids and times when it loads
them. Deterministic: the same ``n``, ``seed`` and ``prices`` give the same events, byte for byte
once encoded.

Neutral ground: this module depends only on the event wire format (``keeper.domain.events``).
Markets are described by its own plain records (``MarketSpec`` from ``market_params``, the
tables below) and listed as events built from their wire form, so neither the keeper's model
nor the venue's is imported here, and both sides may use the same book.

The mix, chosen to look like a real venue's book:

- ~1% **healthy by construction**: one long position at 1.0-1.5x leverage (survives any fall
  below 60% in its market, and carries no other exposure). ``Book.healthy`` lists them; the
  venue must never accept their liquidation on any realistic path.
- ~12% **lending**: ETH (65%) or BTC collateral with USDC debt; 20% of them near their
  threshold (health factor uniform in [1.02, 1.25): a 20% fall in their collateral liquidates
  most), the rest uniform in [1.25, 3.0); 60% in the account's cross bucket, the rest in an
  isolated market bucket (``lend-ETH``/``lend-BTC``, Morpho-Blue style).
- the rest **perps**, 70% long: 72% of them trade from their cross bucket (1-3 markets sharing
  USDC collateral), the rest from 1-2 isolated buckets (``iso-<market>``, one position each).
  Bucket leverage (notional / collateral): 15% in [1, 2), 55% in [2, 10), 20% in [10, 20),
  10% in [20, 50), never above 80% of the market's maximum (``1 / imf``). Notional is
  log-normal (median $5,000). Entries sit within ±0.3% of the current price, so nothing is
  liquidatable at the start.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

import msgspec

from keeper.domain import events as ev

__all__ = [
    "ASSET_TABLE",
    "CROSS",
    "DEFAULT_MARKET",
    "DEFAULT_PRICES",
    "LIQUIDATION_FEE",
    "MARKET_TABLE",
    "Book",
    "MarketSpec",
    "generate_book",
    "market_params",
]

D = Decimal

CROSS = "cross"
"""The wire name of an account's cross-margin bucket."""

# (mmf, imf, size step, price tick) per base asset; Binance USD-M first-bracket-like figures.
MARKET_TABLE: dict[str, tuple[Decimal, Decimal, Decimal, Decimal]] = {
    "BTC": (D("0.004"), D("0.008"), D("0.001"), D("0.1")),
    "ETH": (D("0.005"), D("0.01"), D("0.001"), D("0.01")),
    "SOL": (D("0.01"), D("0.02"), D("0.01"), D("0.001")),
    "XRP": (D("0.01"), D("0.02"), D("0.1"), D("0.0001")),
    "DOGE": (D("0.01"), D("0.02"), D("1"), D("0.00001")),
}
DEFAULT_MARKET = (D("0.0125"), D("0.025"), D("0.01"), D("0.0001"))
LIQUIDATION_FEE = D("0.01")

# Aave v3-like lending parameters: (decimals, liquidation threshold, bonus, protocol fee).
ASSET_TABLE: dict[str, tuple[int, Decimal | None, Decimal | None, Decimal | None]] = {
    "USDC": (6, D("0.78"), D("0.045"), D("0.1")),
    "ETH": (18, D("0.83"), D("0.05"), D("0.1")),
    "BTC": (8, D("0.78"), D("0.05"), D("0.1")),
}
LENDING_COLLATERAL = (("ETH", 0.65), ("BTC", 0.35))
NEAR_SHARE = 0.2
NEAR_HF = (1.02, 1.25)
FAR_HF = (1.25, 3.0)
LEVERAGE_BANDS = ((0.15, 1.0, 2.0), (0.55, 2.0, 10.0), (0.20, 10.0, 20.0), (0.10, 20.0, 50.0))
CENT = D("0.01")
DEFAULT_PRICES = {"BTC-USD": D(60000), "ETH-USD": D(3000), "SOL-USD": D(150)}


@dataclass
class Book:
    """A generated book: the venue's initial events and what the tests need to know of it."""

    events: list[ev.Event] = field(default_factory=list)
    healthy: list[tuple[str, str]] = field(default_factory=list)
    """(account, bucket) pairs healthy by construction."""
    kinds: dict[str, str] = field(default_factory=dict)
    """account -> ``perp-cross``, ``perp-isolated``, ``lending-cross``, ``lending-isolated``, ``healthy``."""


class MarketSpec(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The book's parameters of one perp market: maintenance and initial margin fractions, and
    the liquidation fee (a fraction of the closed notional)."""

    symbol: str
    mmf: Decimal
    imf: Decimal
    liquidation_fee: Decimal


def market_params(market: str) -> MarketSpec:
    """The book's parameters of a market (``BTC-USD``): ``MARKET_TABLE``'s row of its base asset,
    ``DEFAULT_MARKET`` for any other."""
    mmf, imf, _, _ = MARKET_TABLE.get(market.split("-", maxsplit=1)[0], DEFAULT_MARKET)
    return MarketSpec(symbol=market, mmf=mmf, imf=imf, liquidation_fee=LIQUIDATION_FEE)


def _listing(kind: type[ev.AssetListed | ev.MarketListed], event_id: str, params: dict[str, Any]
             ) -> ev.Event:
    """A listing event from its wire form (the event's own checks run as on decoding)."""
    return msgspec.convert({"event_id": event_id, "ts_event": 0, "params": params}, kind)


class _Gen:
    def __init__(self, seed: int, prices: Mapping[str, Decimal]) -> None:
        self.rng = random.Random(seed)
        self.prices = dict(sorted(prices.items()))
        self.markets = list(self.prices)
        self.book = Book()
        self.n = 0

    def emit(self, e: ev.Event) -> None:
        self.book.events.append(e)

    def _id(self) -> tuple[str, int]:
        self.n += 1
        return f"book-{self.n}", 0

    def deposit(self, acct: str, bucket: str, asset: str, amount: Decimal) -> None:
        eid, ts = self._id()
        self.emit(ev.Deposit(event_id=eid, ts_event=ts, account=acct, bucket=bucket, asset=asset,
                             amount=amount))

    def position(self, acct: str, bucket: str, market: str, notional: float, long: bool) -> Decimal:
        """Open a position of about ``notional`` USD; returns its exact notional at the mark."""
        _, _, step, tick = MARKET_TABLE.get(market.split("-", maxsplit=1)[0], DEFAULT_MARKET)
        price = self.prices[market]
        size = (D(repr(notional)) / price).quantize(step, rounding=ROUND_DOWN)
        size = max(size, step)
        entry = (price * D(repr(1 + self.rng.uniform(-0.003, 0.003)))).quantize(tick, ROUND_HALF_EVEN)
        eid, ts = self._id()
        self.emit(ev.PositionChanged(event_id=eid, ts_event=ts, account=acct, bucket=bucket,
                                     market=market, size=size if long else -size, entry_price=entry))
        return size * price

    def leverage(self, market_caps: list[str]) -> float:
        cap = min(0.8 / float(MARKET_TABLE.get(m.split("-")[0], DEFAULT_MARKET)[1]) for m in market_caps)
        r = self.rng.random()
        for weight, lo, hi in LEVERAGE_BANDS:
            if r < weight:
                return min(self.rng.uniform(lo, hi), cap)
            r -= weight
        return min(LEVERAGE_BANDS[-1][2], cap)

    def notional(self) -> float:
        return min(5000.0 * math.exp(self.rng.gauss(0.0, 1.2)), 2_000_000.0)

    def perp_bucket(self, acct: str, bucket: str, markets: list[str], long_bias: float) -> None:
        lev = self.leverage(markets)
        total = D(0)
        weights = [self.rng.uniform(0.5, 1.5) for _ in markets]
        target = self.notional()
        for m, w in zip(markets, weights, strict=True):
            long = self.rng.random() < long_bias
            total += self.position(acct, bucket, m, target * w / sum(weights), long)
        collateral = max((total / D(repr(lev))).quantize(CENT, rounding=ROUND_HALF_EVEN), CENT)
        # Deposits come first on a real venue; insert before this bucket's positions.
        eid, ts = self._id()
        deposit = ev.Deposit(event_id=eid, ts_event=ts, account=acct, bucket=bucket, asset="USDC",
                             amount=collateral)
        self.book.events.insert(len(self.book.events) - len(markets), deposit)

    def lending(self, acct: str, bucket_kind: str) -> None:
        r = self.rng.random()
        asset = LENDING_COLLATERAL[0][0] if r < LENDING_COLLATERAL[0][1] else LENDING_COLLATERAL[1][0]
        bucket = CROSS if bucket_kind == "cross" else f"lend-{asset}"
        decimals, lt, _, _ = ASSET_TABLE[asset]
        assert lt is not None
        price = self.prices[f"{asset}-USD"]
        unit = D(1).scaleb(-min(decimals, 6))
        amount = max((D(repr(self.notional())) / price).quantize(unit, rounding=ROUND_DOWN), unit)
        lo, hi = NEAR_HF if self.rng.random() < NEAR_SHARE else FAR_HF
        hf = D(repr(self.rng.uniform(lo, hi)))
        debt = (amount * price * lt / hf).quantize(CENT, rounding=ROUND_DOWN)
        self.deposit(acct, bucket, asset, amount)
        if debt > 0:
            eid, ts = self._id()
            self.emit(ev.Borrow(event_id=eid, ts_event=ts, account=acct, bucket=bucket, asset="USDC",
                                amount=debt))


def generate_book(n_accounts: int = 10_000, seed: int = 1,
                  prices: Mapping[str, Decimal] | None = None) -> Book:
    """Generate ``n_accounts`` accounts against ``prices`` (market name -> price; the path's first
    tick). Lending needs ``ETH-USD`` and ``BTC-USD``; without them every account trades perps."""
    g = _Gen(seed, prices or DEFAULT_PRICES)
    assets = sorted({"USDC", *(m.split("-")[0] for m in g.markets)})
    for a in assets:
        decimals, lt, bonus, fee = ASSET_TABLE.get(a, (8, None, None, None))
        eid, _ = g._id()
        g.emit(_listing(ev.AssetListed, eid, {
            "symbol": a, "decimals": decimals, "liquidation_threshold": lt, "liquidation_bonus": bonus,
            "liquidation_protocol_fee": fee}))
    for m in g.markets:
        eid, _ = g._id()
        spec = market_params(m)
        g.emit(_listing(ev.MarketListed, eid, {"symbol": spec.symbol, "mmf": spec.mmf, "imf": spec.imf,
                                               "liquidation_fee": spec.liquidation_fee}))
    can_lend = all(f"{a}-USD" in g.prices for a, _ in LENDING_COLLATERAL)
    n_healthy = max(1, n_accounts // 100) if n_accounts else 0
    healthy_idx = set(g.rng.sample(range(n_accounts), n_healthy))
    for i in range(n_accounts):
        acct = f"acct-{i + 1:06d}"
        r = g.rng.random()
        if i in healthy_idx:
            m = g.rng.choice(g.markets)
            bucket = CROSS if g.rng.random() < 0.5 else f"iso-{m}"
            notional = g.position(acct, bucket, m, g.notional(), long=True)
            lev = D(repr(g.rng.uniform(1.0, 1.5)))
            g.book.events.insert(len(g.book.events) - 1, _healthy_deposit(g, acct, bucket, notional, lev))
            g.book.healthy.append((acct, bucket))
            g.book.kinds[acct] = "healthy"
        elif can_lend and r < 0.12:
            kind = "cross" if g.rng.random() < 0.6 else "isolated"
            g.lending(acct, kind)
            g.book.kinds[acct] = f"lending-{kind}"
        elif g.rng.random() < 0.72:
            k = min(len(g.markets), 1 + int(g.rng.random() ** 2 * 3))
            g.perp_bucket(acct, CROSS, g.rng.sample(g.markets, k), long_bias=0.7)
            g.book.kinds[acct] = "perp-cross"
        else:
            k = min(len(g.markets), 1 + (g.rng.random() < 0.3))
            for m in sorted(g.rng.sample(g.markets, k)):
                g.perp_bucket(acct, f"iso-{m}", [m], long_bias=0.7)
            g.book.kinds[acct] = "perp-isolated"
    return g.book


def _healthy_deposit(g: _Gen, acct: str, bucket: str, notional: Decimal, lev: Decimal) -> ev.Deposit:
    eid, ts = g._id()
    amount = (notional / lev).quantize(CENT, rounding=ROUND_HALF_EVEN) + CENT
    return ev.Deposit(event_id=eid, ts_event=ts, account=acct, bucket=bucket, asset="USDC", amount=amount)
