"""Ingest: conflation without loss of meaning, backpressure, blocking (not dropping) on log loss."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal

import pytest
import structlog.testing

from keeper.backoff import no_delay
from keeper.domain.codec import decode
from keeper.domain.events import Deposit, Event, PriceUpdated
from keeper.errors import LogUnavailable
from keeper.feeds.ingest import Ingest
from keeper.feeds.parsers import binance_mark_price
from keeper.testing import FakeClock, MemoryEventLog

T0 = 1_700_000_000_000_000


def price(symbol: str, p: int, t: int) -> PriceUpdated:
    return PriceUpdated(event_id=f"s:{symbol}:{t}", ts_event=t, symbol=symbol, price=Decimal(p),
                        publish_time=t)


def deposit(i: int) -> Deposit:
    return Deposit(event_id=f"venue-{i}", ts_event=T0 + i, account="A", bucket="cross", asset="USDC",
                   amount=Decimal(i + 1))


class GatedLog(MemoryEventLog):
    """A log whose appends wait for a gate (to hold the writer busy) or fail while down."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.down = 0
        self.calls = 0

    async def append(self, events: Sequence[Event]) -> list[str | None]:
        self.calls += 1
        await self.gate.wait()
        if self.down > 0:
            self.down -= 1
            raise LogUnavailable("redis unreachable: test")
        return await super().append(events)


async def _events(log: MemoryEventLog) -> list[Event]:
    return [e.event for e in await log.read(count=10_000)]


async def test_conflation_keeps_newest_price_and_never_crosses_an_account_event() -> None:
    log = GatedLog()
    ing = Ingest(log, conflate=True)
    writer = asyncio.create_task(ing.run())
    log.gate.clear()
    await ing.submit([price("BTC", 1, T0)])
    await asyncio.sleep(0)  # the writer takes the first batch and blocks on the gate
    await ing.submit([price("BTC", 2, T0 + 1), price("ETH", 10, T0 + 1), price("BTC", 3, T0 + 2)])
    await ing.submit([deposit(1)])
    await ing.submit([price("BTC", 4, T0 + 3), price("BTC", 5, T0 + 4), deposit(2), price("BTC", 6, T0 + 5)])
    log.gate.set()
    await asyncio.wait_for(ing.drain(), 5)
    await ing.close()
    await asyncio.wait_for(writer, 5)
    got = [(type(e).__name__, getattr(e, "symbol", ""), getattr(e, "price", getattr(e, "amount", None)))
           for e in await _events(log)]
    assert got == [
        ("PriceUpdated", "BTC", 1),
        ("PriceUpdated", "BTC", 3), ("PriceUpdated", "ETH", 10),
        ("Deposit", "", 2),
        ("PriceUpdated", "BTC", 5),
        ("Deposit", "", 3),
        ("PriceUpdated", "BTC", 6),
    ]
    assert ing.stats["conflated"] == 2


async def test_without_conflation_every_price_is_appended_in_order() -> None:
    log = MemoryEventLog()
    ing = Ingest(log, conflate=False)
    writer = asyncio.create_task(ing.run())
    await ing.submit([price("BTC", i + 1, T0 + i) for i in range(50)])
    await ing.close()
    await asyncio.wait_for(writer, 5)
    assert [e.price for e in await _events(log)] == [Decimal(i + 1) for i in range(50)]  # type: ignore[attr-defined]


async def test_log_unavailable_blocks_alarms_and_retries_without_dropping() -> None:
    log = GatedLog()
    log.down = 3
    ing = Ingest(log, conflate=False, retry=no_delay)
    writer = asyncio.create_task(ing.run())
    with structlog.testing.capture_logs() as logs:
        await ing.submit([deposit(i) for i in range(5)])
        await asyncio.wait_for(ing.drain(), 5)
    await ing.close()
    await asyncio.wait_for(writer, 5)
    assert [e.event_id for e in await _events(log)] == [f"venue-{i}" for i in range(5)]
    assert ing.stats["log_retries"] == 3 and log.calls == 4
    alarms = [x for x in logs if x["event"] == "ingest_log_unavailable"]
    assert len(alarms) == 3 and all(x["log_level"] == "error" for x in alarms)
    assert any(x["event"] == "ingest_log_recovered" for x in logs)


async def test_full_buffer_blocks_producers_instead_of_dropping() -> None:
    log = GatedLog()
    ing = Ingest(log, conflate=True, max_pending=4, batch_max=2)
    writer = asyncio.create_task(ing.run())
    log.gate.clear()
    producer = asyncio.create_task(ing.submit([deposit(i) for i in range(12)]))
    await asyncio.sleep(0.05)
    assert not producer.done()
    assert ing.pending <= 4
    log.gate.set()
    await asyncio.wait_for(producer, 5)
    await ing.close()
    await asyncio.wait_for(writer, 5)
    assert [e.event_id for e in await _events(log)] == [f"venue-{i}" for i in range(12)]
    assert ing.stats["backpressure_waits"] > 0


async def test_rejected_frames_are_dead_lettered_with_reason_and_payload() -> None:
    log = MemoryEventLog()
    clock = FakeClock(T0)
    ing = Ingest(log, clock=clock, conflate=False)
    writer = asyncio.create_task(ing.run())
    parse = binance_mark_price()
    good = (b'{"e":"markPriceUpdate","E":1700000000000,"s":"BTCUSDT","p":"100.5",'
            b'"i":"1","P":"1","r":"0","T":1}')
    await ing.submit_frame("binance", parse, good)
    await ing.submit_frame("binance", parse, good.replace(b"100.5", b"NaN"))
    await ing.submit_frame("binance", parse, b"{not json")
    await ing.submit_frame("binance", parse, good.replace(b"1700000000000", b"1699999999999"))
    await ing.submit_frame("binance", parse, good)  # a resend: same id, dropped by the log
    await ing.close()
    await asyncio.wait_for(writer, 5)
    events = await _events(log)
    assert [(e.symbol, e.price) for e in events] == [("BTCUSDT", Decimal("100.5"))]  # type: ignore[attr-defined]
    dead = await log.dead_letters()
    assert [(d.source, d.reason) for d in dead] == [("binance", "nan"), ("binance", "bad_json"),
                                                    ("binance", "out_of_order")]
    assert dead[1].payload == b"{not json"
    assert ing.stats["duplicates"] == 1
    assert decode(log.entries[0][1]).event_id == "binance:BTCUSDT:1700000000000000"


@pytest.mark.parametrize("conflate", [True, False])
async def test_close_flushes_everything_pending(conflate: bool) -> None:
    log = MemoryEventLog()
    ing = Ingest(log, conflate=conflate)
    await ing.submit([deposit(0), price("BTC", 1, T0)])
    writer = asyncio.create_task(ing.run())
    await ing.close()
    await asyncio.wait_for(writer, 5)
    assert len(await _events(log)) == 2


async def test_three_venues_one_market_median_and_a_90pct_outlier_through_real_formats() -> None:
    from keeper.feeds.combine import MarketLimits
    from keeper.feeds.parsers import bybit_tickers, coinbase_ticker
    from keeper.feeds.pipeline import PricePipeline

    log = MemoryEventLog()
    clock = FakeClock(T0)
    pipeline = PricePipeline(default=MarketLimits(max_deviation=Decimal("0.02")),
                             symbol_map={"binance:BTCUSDT": "BTC-USD", "bybit:BTCUSDT": "BTC-USD"})
    ing = Ingest(log, pipeline=pipeline, clock=clock, conflate=False)
    writer = asyncio.create_task(ing.run())
    bn, bb, cb = binance_mark_price(), bybit_tickers(), coinbase_ticker()

    def binance(ms: int, p: str) -> bytes:
        return (f'{{"e":"markPriceUpdate","E":{ms},"s":"BTCUSDT","p":"{p}","i":"1","P":"1","r":"0",'
                f'"T":1}}').encode()

    def bybit(ms: int, p: str) -> bytes:
        return (f'{{"topic":"tickers.BTCUSDT","type":"delta","data":{{"symbol":"BTCUSDT","markPrice":"{p}"}},'
                f'"cs":1,"ts":{ms}}}').encode()

    def coinbase(iso: str, p: str) -> bytes:
        return f'{{"type":"ticker","product_id":"BTC-USD","price":"{p}","time":"{iso}"}}'.encode()

    ms = 1_700_000_000_000
    await ing.submit_frame("binance", bn, binance(ms, "60000"))
    await ing.submit_frame("bybit", bb, bybit(ms + 1, "60030"))
    await ing.submit_frame("coinbase", cb, coinbase("2023-11-14T22:13:20.002Z", "59990"))
    await ing.submit_frame("bybit", bb, bybit(ms + 3, "114000"))  # +90%: an outlier
    await ing.submit_frame("binance", bn, binance(ms + 4, "60010"))
    await ing.close()
    await asyncio.wait_for(writer, 5)
    events = [e.event for e in await log.read()]
    prices = [e for e in events if isinstance(e, PriceUpdated)]
    assert [p.price for p in prices] == [Decimal(60000), Decimal(60015), Decimal(60000), Decimal(60000)]
    assert prices[2].source == "median(binance,bybit,coinbase)"
    assert prices[2].spread == Decimal("0.00066667")  # (60030 - 59990) / 60000, half-even at 8 places
    assert prices[3].source == "median(binance,coinbase)"  # bybit is out while it is an outlier
    stale = [e for e in events if not isinstance(e, PriceUpdated)]
    assert [(type(e).__name__, e.reason) for e in stale] == [("FeedStale", "deviation")]  # type: ignore[attr-defined]
