"""A reference venue with ``n`` accounts, each liquidatable, and the intents that liquidate them:
shared by the executor and runner tests."""

from __future__ import annotations

import time
from decimal import Decimal

from keeper.domain import events as ev
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.sim.venue import Venue
from keeper.store.redis_log import RedisEventLog

D = Decimal
SECRET = b"execution-secret"


def now_us() -> int:
    return time.time_ns() // 1000


def underwater_venue(n: int) -> Venue:
    """``acct-i/cross``: 1000 USDC and long 1 BTC @ 60000 at a mark of 58000: equity -1000 < MM
    232, so a full close of BTC-USD is accepted for every account."""
    v = Venue(now_us)
    v.set_marks(now_us(), {"BTC-USD": D(58000)})
    v.load(underwater_book(n))
    return v


def underwater_book(n: int) -> list[ev.Event]:
    """The events of ``underwater_venue``'s book (for a keeper's log)."""
    evs: list[ev.Event] = [
        ev.AssetListed(event_id="a1", ts_event=0, params=AssetParams(symbol="USDC", decimals=6)),
        ev.MarketListed(event_id="m1", ts_event=0, params=MarketParams(
            symbol="BTC-USD", mmf=D("0.004"), liquidation_fee=D("0.01"))),
    ]
    for i in range(n):
        evs += [ev.Deposit(event_id=f"d{i}", ts_event=0, account=f"acct-{i}", bucket=CROSS, asset="USDC",
                           amount=D(1000)),
                ev.PositionChanged(event_id=f"p{i}", ts_event=0, account=f"acct-{i}", bucket=CROSS,
                                   market="BTC-USD", size=D(1), entry_price=D(60000))]
    return evs


def intent_id(i: int) -> str:
    return f"liq:acct-{i}/cross@7-{i}"


def decision(i: int) -> ev.Decision:
    return ev.Decision(intent_id=intent_id(i), account=f"acct-{i}", bucket=CROSS, trigger=f"7-{i}",
                       trigger_event_id=f"px{i}", profile="generic-perp", rule="test",
                       action="close_position", market="BTC-USD", mode="live")


def intent(i: int, ts: int | None = None) -> ev.LiquidationIntended:
    return ev.LiquidationIntended(event_id=intent_id(i), ts_event=now_us() if ts is None else ts,
                                  decision=decision(i))


async def outcomes(log: RedisEventLog) -> dict[str, list[ev.Event]]:
    """Every outcome in the log by intent id, in log order."""
    out: dict[str, list[ev.Event]] = {}
    for e in await log.read("0-0", 1_000_000):
        if isinstance(e.event, ev.LiquidationConfirmed | ev.LiquidationRejected | ev.LiquidationExpired):
            out.setdefault(e.event.intent_id, []).append(e.event)
    return out
