"""End to end on loopback: a misbehaving websocket server -> WsFeed -> Ingest -> RedisEventLog.

The server drops the connection mid-stream, sends malformed frames, goes silent, and replays old
messages. The feed must reconnect, resubscribe, mark the market stale while silent, and the log
must hold each distinct price once, in order, with nothing invented.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest_asyncio
from websockets.asyncio.server import ServerConnection, serve

from keeper.backoff import no_delay
from keeper.domain.codec import encode
from keeper.domain.events import Deposit, FeedRecovered, FeedStale, PositionChanged, PriceUpdated
from keeper.feeds.combine import MarketLimits
from keeper.feeds.ingest import Ingest
from keeper.feeds.parsers import binance_mark_price
from keeper.feeds.pipeline import PricePipeline
from keeper.feeds.ws import WsConfig
from keeper.ingest import AccountStream
from keeper.store.redis_log import RedisEventLog

T0_MS = 1_700_000_000_000


def mark(i: int, price: str | None = None) -> str:
    return json.dumps({"e": "markPriceUpdate", "E": T0_MS + i, "s": "BTCUSDT", "p": price or f"{100 + i}.5",
                       "i": "1", "P": "1", "r": "0.0001", "T": T0_MS + 3_600_000})


@pytest_asyncio.fixture(loop_scope="function")
async def log(redis_url: str) -> AsyncIterator[RedisEventLog]:
    lg = await RedisEventLog.connect(redis_url)
    try:
        yield lg
    finally:
        await lg.close()


async def test_feed_survives_drop_malformed_silence_and_replay(log: RedisEventLog) -> None:
    subscriptions: list[str] = []
    silent = asyncio.Event()
    resume = asyncio.Event()
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        subscriptions.append(str(await ws.recv()))
        if connections == 1:
            for i in range(1, 6):
                await ws.send(mark(i))
            await ws.send("{this is not json")
            await ws.send(mark(6, "NaN"))
            await ws.send(mark(7, "-3"))
            ws.transport.abort()  # drop mid-stream, no close frame
            return
        if connections == 2:
            for i in range(3, 6):  # replays: 3, 4 older than the last accepted, 5 equal (a duplicate)
                await ws.send(mark(i))
            for i in range(8, 11):
                await ws.send(mark(i))
            silent.set()
            await resume.wait()
            await ws.send(mark(11))
            await ws.close()
            return
        await ws.wait_closed()  # later connections: stay open, send nothing

    limits = MarketLimits(stale_after_us=300_000)
    ingest = Ingest(log, pipeline=PricePipeline(default=limits, symbol_map={"BTCUSDT": "BTC-USD"}),
                    conflate=False)
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]  # type: ignore[index]
        sub = json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s"], "id": 1})
        feed = ingest.price_feed(WsConfig(f"ws://127.0.0.1:{port}", subscribe=[sub], ping_interval=1.0),
                                 "binance", binance_mark_price(), backoff=no_delay)
        writer = asyncio.create_task(ingest.run())
        watchdog = asyncio.create_task(ingest.watch_stale(0.05))
        reader = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(silent.wait(), 10)
            for _ in range(100):  # wait (bounded) for the watchdog to see the silence
                await asyncio.sleep(0.05)
                if "BTC-USD" in ingest.pipeline.watchdog.stale:
                    break
            resume.set()
            for _ in range(100):
                await asyncio.sleep(0.05)
                last = ingest.pipeline.order.last("binance", "BTC-USD")
                if connections >= 3 and last == (T0_MS + 11) * 1000:
                    break
        finally:
            reader.cancel()
            watchdog.cancel()
            await asyncio.gather(reader, watchdog, return_exceptions=True)
            await ingest.close()
            await asyncio.wait_for(writer, 10)

    assert subscriptions == [sub] * connections and connections >= 3
    assert feed.stats["drops"] >= 2

    events = [e.event for e in await log.read(count=1000)]
    prices = [e for e in events if isinstance(e, PriceUpdated)]
    assert [(p.price, p.publish_time) for p in prices] == [
        (Decimal(f"{100 + i}.5"), (T0_MS + i) * 1000) for i in [1, 2, 3, 4, 5, 8, 9, 10, 11]]
    assert {p.symbol for p in prices} == {"BTC-USD"}
    assert len({p.event_id for p in prices}) == len(prices)
    kinds = [(type(e).__name__, getattr(e, "reason", None)) for e in events]
    stale_at = kinds.index(("FeedStale", "stale"))
    recovered_at = kinds.index(("FeedRecovered", "stale"))
    last_price_at = max(i for i, e in enumerate(events) if isinstance(e, PriceUpdated))
    assert events.index(prices[-2]) < stale_at < events.index(prices[-1]) < recovered_at
    assert recovered_at == last_price_at + 1
    assert sum(isinstance(e, FeedStale) for e in events) == 1
    assert sum(isinstance(e, FeedRecovered) for e in events) == 1

    dead = sorted(d.reason for d in await log.dead_letters())
    assert dead == ["bad_json", "nan", "negative", "out_of_order", "out_of_order"]
    assert ingest.stats["duplicates"] == 1


async def test_account_stream_resync_appends_nothing_twice(log: RedisEventLog) -> None:
    state = [
        Deposit(event_id="v-1", ts_event=1, account="A", bucket="cross", asset="USDC", amount=Decimal(1000)),
        PositionChanged(event_id="v-2", ts_event=2, account="A", bucket="cross", market="BTC-USD",
                        size=Decimal("0.5"), entry_price=Decimal(60000)),
    ]
    live = [
        Deposit(event_id="v-3", ts_event=3, account="B", bucket="cross", asset="USDC", amount=Decimal(5)),
        Deposit(event_id="v-4", ts_event=4, account="A", bucket="BTC-USD", asset="USDC", amount=Decimal(7)),
    ]
    connections = 0
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        for e in state:  # resync: current state with stable ids, on every connect
            await ws.send(encode(e).decode())
        if connections == 1:
            await ws.send(encode(live[0]).decode())
            await ws.send('{"type":"deposit","event_id":"v-x","ts_event":5}')  # missing fields
            ws.transport.abort()
            return
        await ws.send(encode(live[0]).decode())  # the venue resends the one in flight
        await ws.send(encode(live[1]).decode())
        done.set()
        await ws.wait_closed()

    ingest = Ingest(log)
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]  # type: ignore[index]
        stream = AccountStream(f"ws://127.0.0.1:{port}/accounts", ingest, backoff=no_delay)
        writer = asyncio.create_task(ingest.run())
        reader = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(done.wait(), 10)
            for _ in range(100):
                await asyncio.sleep(0.02)
                if await log.length() >= 4:
                    break
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await ingest.close()
            await asyncio.wait_for(writer, 10)

    assert [e.event.event_id for e in await log.read()] == ["v-1", "v-2", "v-3", "v-4"]
    assert [d.reason for d in await log.dead_letters()] == ["missing_field"]
    assert connections == 2
