"""Event builders for the keeper's decide tests: markets, accounts and price paths as log entries.

Entry ids are ``<n>-0`` in order, as a log would give them; event ids are unique per builder.
"""

from __future__ import annotations

import random
from decimal import Decimal

from keeper.domain import events as ev
from keeper.domain.model import AssetParams, MarketParams

D = Decimal


class Log:
    """A recorded log under construction: ``entries`` is ``[(entry_id, event)]``."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, ev.Event]] = []
        self.ts = 1_700_000_000_000_000

    def add(self, cls: type[ev.Event], **fields: object) -> str:
        n = len(self.entries) + 1
        self.ts += 1000
        event = cls(event_id=f"e{n}", ts_event=self.ts, **fields)  # type: ignore[call-arg]
        entry_id = f"{n}-0"
        self.entries.append((entry_id, event))
        return entry_id

    def price(self, symbol: str, price: str | Decimal) -> str:
        return self.add(ev.PriceUpdated, symbol=symbol, price=D(price))


def perp_market(log: Log, symbol: str, mmf: str = "0.05") -> None:
    log.add(ev.MarketListed, params=MarketParams(symbol=symbol, mmf=D(mmf)))


def perp_account(log: Log, account: str, bucket: str, market: str, size: str, entry: str,
                 collateral: str) -> None:
    log.add(ev.Deposit, account=account, bucket=bucket, asset="USDC", amount=D(collateral))
    log.add(ev.PositionChanged, account=account, bucket=bucket, market=market, size=D(size),
            entry_price=D(entry))


def lending_assets(log: Log) -> None:
    log.add(ev.AssetListed, params=AssetParams(symbol="USDC", decimals=6, liquidation_threshold=D("0.78"),
                                               liquidation_bonus=D("0.045")))
    log.add(ev.AssetListed, params=AssetParams(symbol="WETH", decimals=18, liquidation_threshold=D("0.825"),
                                               liquidation_bonus=D("0.05"),
                                               liquidation_protocol_fee=D("0.1")))


def lending_account(log: Log, account: str, bucket: str, weth: str, usdc_debt: str) -> None:
    log.add(ev.Deposit, account=account, bucket=bucket, asset="WETH", amount=D(weth))
    log.add(ev.Borrow, account=account, bucket=bucket, asset="USDC", amount=D(usdc_debt))


def random_perp_log(seed: int, accounts: int = 60, ticks: int = 200) -> Log:
    """Many perp accounts (cross and isolated buckets) and a seeded random walk with a crash,
    with outcomes (confirmed, rejected, expired) and guard events mixed in."""
    rng = random.Random(seed)
    log = Log()
    for sym in ("BTC", "ETH"):
        perp_market(log, sym)
    log.price("USDC", "1")
    prices = {"BTC": D(20000), "ETH": D(2000)}
    for sym, p in prices.items():
        log.price(sym, p)
    for i in range(accounts):
        sym = rng.choice(["BTC", "ETH"])
        bucket = "cross" if i % 3 else f"iso-{sym}"
        lev = D(rng.randint(3, 15))
        size = D(rng.choice([1, -1])) * D(rng.randint(1, 40)) / 10
        notional = abs(size) * prices[sym]
        perp_account(log, f"a{i:03d}", bucket, sym, str(size), str(prices[sym]), str(notional / lev))
    for t in range(ticks):
        sym = rng.choice(["BTC", "ETH"])
        move = D(rng.randint(-300, 250)) / 10000
        prices[sym] = (prices[sym] * (1 + move)).quantize(D("0.01"))
        log.price(sym, prices[sym])
        if t == ticks // 3:
            log.add(ev.FeedStale, symbol="ETH", reason="jump")
        if t == ticks // 3 + 10:
            log.add(ev.FeedRecovered, symbol="ETH", reason="jump")
    return log


def record_live(source: list[tuple[str, ev.Event]], core: object, seed: int
                ) -> list[tuple[str, ev.Event]]:
    """Drive ``core`` as the projector would and return the log it leaves: the source entries
    with the core's intents appended after their trigger, and (seeded) outcomes for some of
    them a few entries later. Entry ids are renumbered in the new order."""
    rng = random.Random(seed)
    out: list[tuple[str, ev.Event]] = []
    queue: list[ev.Event] = []
    waiting: list[ev.LiquidationIntended] = []
    n = 0

    def emit(event: ev.Event) -> None:
        nonlocal n
        n += 1
        entry_id = f"{n}-0"
        out.append((entry_id, event))
        for e in core.handle(entry_id, event):  # type: ignore[attr-defined]
            queue.append(e)

    def flush() -> None:
        while queue:
            e = queue.pop(0)
            emit(e)
            if isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live":
                waiting.append(e)

    for _, event in source:
        emit(event)
        flush()
        if waiting and rng.random() < 0.3:
            i = waiting.pop(0)
            kind = rng.choice([ev.LiquidationConfirmed, ev.LiquidationRejected, ev.LiquidationExpired])
            d = i.decision
            emit(kind(event_id=f"out:{d.intent_id}", ts_event=event.ts_event, intent_id=d.intent_id,
                      account=d.account, bucket=d.bucket))
            flush()
    return out
