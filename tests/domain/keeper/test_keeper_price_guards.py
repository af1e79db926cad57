"""Bad prices through the real log: NaN and zero prices are dead-lettered, never decided on; a
single-source 90% print is held by the feed guard until confirmed, and the recovery re-enables
the market."""

from __future__ import annotations

import time
from decimal import Decimal

from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import MarketParams
from keeper.feeds.combine import MarketCombiner, MarketLimits
from keeper.feeds.parsers import Quote
from keeper.projector import Projector
from keeper.store.redis_log import RedisEventLog
from keeper.testing import MemorySnapshotStore

D = Decimal
LIVE = KeeperParams(profile="generic-perp", mode="live")


def book(ts: int) -> list[ev.Event]:
    """b1: long 1 BTC @20000 with 2000 USDC, liquidatable below 18947.37."""
    return [
        ev.MarketListed(event_id="m", ts_event=ts, params=MarketParams(symbol="BTC", mmf=D("0.05"))),
        ev.PriceUpdated(event_id="usdc", ts_event=ts, symbol="USDC", price=D(1)),
        ev.PriceUpdated(event_id="btc0", ts_event=ts, symbol="BTC", price=D(20000)),
        ev.Deposit(event_id="d", ts_event=ts, account="b1", bucket="cross", asset="USDC", amount=D(2000)),
        ev.PositionChanged(event_id="p", ts_event=ts, account="b1", bucket="cross", market="BTC",
                           size=D(1), entry_price=D(20000)),
    ]


async def intents_in(log: RedisEventLog) -> list[ev.LiquidationIntended]:
    return [e.event for e in await log.read("0-0", 100_000) if isinstance(e.event, ev.LiquidationIntended)]


async def test_nan_and_zero_prices_are_dead_lettered_and_never_liquidate(redis_url: str) -> None:
    log = await RedisEventLog.connect(redis_url)
    try:
        ts = time.time_ns() // 1000
        await log.append(book(ts))
        good = encode(ev.PriceUpdated(event_id="x", ts_event=ts, symbol="BTC", price=D(1)))
        for bad in (b'"NaN"', b'"0"', b'"-1"', b'"Infinity"'):
            payload = good.replace(b'"1"', bad).replace(b'"x"', b'"bad-' + bad.strip(b'"') + b'"')
            await log.append_raw([payload])
        core = KeeperCore(LIVE)
        projector = Projector(log, MemorySnapshotStore(), lambda _d: core, fmt=KeeperCore.FORMAT)
        await projector.catch_up()
        assert await intents_in(log) == []
        assert core.state.prices["BTC"] == D(20000)
        reasons = [d.reason for d in await log.dead_letters()]
        assert reasons.count("invalid_price") == 4
    finally:
        await log.close()


async def test_single_source_crash_print_is_held_until_confirmed_then_recovery_liquidates(
        redis_url: str) -> None:
    log = await RedisEventLog.connect(redis_url)
    try:
        ts = time.time_ns() // 1000
        await log.append(book(ts))
        core = KeeperCore(LIVE)
        projector = Projector(log, MemorySnapshotStore(), lambda _d: core, fmt=KeeperCore.FORMAT)
        comb = MarketCombiner("BTC", MarketLimits(max_jump=D("0.2"), jump_confirmations=3))
        comb.last_price = D(20000)
        recorded: list[ev.Event] = []
        for k in range(2):  # a 90% print, twice: held (FeedStale jump), nothing recorded
            events, why = comb.offer(Quote("feed", "BTC", D(2000), ts + 1000 * (k + 1)))
            assert why == "jump"
            recorded += events
            await log.append(events)
            await projector.catch_up()
        assert [type(e) for e in recorded] == [ev.FeedStale]
        assert core.state.unsafe == {"BTC": "jump"}
        assert await intents_in(log) == []
        events, why = comb.offer(Quote("feed", "BTC", D(2000), ts + 4000))  # third: confirmed
        assert why is None
        assert [type(e) for e in events] == [ev.PriceUpdated, ev.FeedRecovered]
        await log.append(events)
        await projector.catch_up()
        (intent,) = await intents_in(log)
        assert intent.decision.prices["BTC"] == D(2000)
        assert intent.decision.bankrupt  # a 90% fall wipes the 10x long out
        # decided after the recovery entry: the price entry came while the market was unsafe
        assert intent.causation_id == events[1].event_id
    finally:
        await log.close()
