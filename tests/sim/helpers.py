"""A small hand-built venue shared by the venue and server tests (numbers chosen to be checked by
hand in the tests' comments)."""

from __future__ import annotations

from decimal import Decimal

from keeper.domain import events as ev
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.sim.prices import Tick
from keeper.sim.venue import Venue

D = Decimal


class Ticker:
    """An injected clock: each reading is one microsecond later."""

    def __init__(self) -> None:
        self.t = 1_000_000

    def __call__(self) -> int:
        self.t += 1
        return self.t


def _e(n: list[int]) -> tuple[str, int]:
    n[0] += 1
    return f"x-{n[0]}", 0


def small_venue() -> Venue:
    """Markets BTC-USD (mmf 0.4%, fee 1%) and ETH-USD; assets USDC, ETH (LT 0.83, bonus 5%).

    - ``alice/cross``: 1000 USDC, long 0.1 BTC @ 60000
    - ``bob/iso-BTC-USD``: 1000 USDC, long 1 BTC @ 60000 (bankrupt below ~59000)
    - ``bob/cross``: 5000 USDC, short 1 ETH @ 3000
    - ``carol/lend-ETH``: 1 ETH collateral, 2000 USDC debt
    """
    n = [0]
    evs: list[ev.Event] = [
        ev.AssetListed(event_id="a1", ts_event=0, params=AssetParams(symbol="USDC", decimals=6)),
        ev.AssetListed(event_id="a2", ts_event=0, params=AssetParams(
            symbol="ETH", decimals=18, liquidation_threshold=D("0.83"), liquidation_bonus=D("0.05"))),
        ev.MarketListed(event_id="m1", ts_event=0, params=MarketParams(
            symbol="BTC-USD", mmf=D("0.004"), liquidation_fee=D("0.01"))),
        ev.MarketListed(event_id="m2", ts_event=0, params=MarketParams(symbol="ETH-USD", mmf=D("0.005"))),
    ]

    def dep(acct: str, bucket: str, asset: str, amount: str) -> ev.Deposit:
        eid, ts = _e(n)
        return ev.Deposit(event_id=eid, ts_event=ts, account=acct, bucket=bucket, asset=asset,
                          amount=D(amount))

    def pos(acct: str, bucket: str, market: str, size: str, entry: str) -> ev.PositionChanged:
        eid, ts = _e(n)
        return ev.PositionChanged(event_id=eid, ts_event=ts, account=acct, bucket=bucket, market=market,
                                  size=D(size), entry_price=D(entry))

    evs += [
        dep("alice", CROSS, "USDC", "1000"), pos("alice", CROSS, "BTC-USD", "0.1", "60000"),
        dep("bob", "iso-BTC-USD", "USDC", "1000"), pos("bob", "iso-BTC-USD", "BTC-USD", "1", "60000"),
        dep("bob", CROSS, "USDC", "5000"), pos("bob", CROSS, "ETH-USD", "-1", "3000"),
        dep("carol", "lend-ETH", "ETH", "1"),
        ev.Borrow(event_id="b1", ts_event=0, account="carol", bucket="lend-ETH", asset="USDC",
                  amount=D(2000)),
    ]
    v = Venue(Ticker())
    v.set_marks(0, {"BTC-USD": D(60000), "ETH-USD": D(3000)})
    v.load(evs)
    return v


def decision(intent: str, account: str, bucket: str, action: str = "close_position", **kw: object
             ) -> ev.Decision:
    return ev.Decision(intent_id=intent, account=account, bucket=bucket, trigger="1-0",
                       trigger_event_id="p-1", profile="sim-test", rule="test", action=action,
                       **kw)  # type: ignore[arg-type]


def crash_book() -> list[ev.Event]:
    """A book for the perfect keeper's and the measure's tests (``CRASH_PATH`` is its crash).

    BTC-USD (mmf 0.4%, fee 1%), ETH-USD (mmf 0.5%); USDC (6 decimals), ETH (LT 0.83, bonus 5%).

    - ``alice/cross``: 1000 USDC, long 0.1 BTC @ 60000
    - ``bob/cross``: 5000 USDC, short 1 ETH @ 3000 (gains as ETH falls: never liquidatable)
    - ``carol/lend-ETH``: 1 ETH, 2000 USDC debt
    - ``dave/iso-BTC-USD``: 1000 USDC, long 1 BTC @ 60000
    """
    def dep(acct: str, bucket: str, asset: str, amount: str) -> ev.Deposit:
        return ev.Deposit(event_id="x", ts_event=0, account=acct, bucket=bucket, asset=asset,
                          amount=D(amount))

    def pos(acct: str, bucket: str, market: str, size: str, entry: str) -> ev.PositionChanged:
        return ev.PositionChanged(event_id="x", ts_event=0, account=acct, bucket=bucket, market=market,
                                  size=D(size), entry_price=D(entry))

    return [
        ev.AssetListed(event_id="a1", ts_event=0, params=AssetParams(symbol="USDC", decimals=6)),
        ev.AssetListed(event_id="a2", ts_event=0, params=AssetParams(
            symbol="ETH", decimals=18, liquidation_threshold=D("0.83"), liquidation_bonus=D("0.05"))),
        ev.MarketListed(event_id="m1", ts_event=0, params=MarketParams(
            symbol="BTC-USD", mmf=D("0.004"), liquidation_fee=D("0.01"))),
        ev.MarketListed(event_id="m2", ts_event=0, params=MarketParams(symbol="ETH-USD", mmf=D("0.005"))),
        dep("alice", CROSS, "USDC", "1000"), pos("alice", CROSS, "BTC-USD", "0.1", "60000"),
        dep("bob", CROSS, "USDC", "5000"), pos("bob", CROSS, "ETH-USD", "-1", "3000"),
        dep("carol", "lend-ETH", "ETH", "1"),
        ev.Borrow(event_id="b1", ts_event=0, account="carol", bucket="lend-ETH", asset="USDC",
                  amount=D(2000)),
        dep("dave", "iso-BTC-USD", "USDC", "1000"), pos("dave", "iso-BTC-USD", "BTC-USD", "1", "60000"),
    ]


CRASH_PATH = [Tick(1_000_000 * (k + 1), {"BTC-USD": D(btc), "ETH-USD": D(eth)})
              for k, (btc, eth) in enumerate(
                  [(60000, 3000), (55000, 2500), (50300, 2410), (50200, 2400), (49000, 2000)])]
"""``crash_book``'s crash: tick k at (k + 1) s."""
