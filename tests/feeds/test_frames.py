"""A source frame of several prices stays one instant on its way into the log: the pipeline marks
all its prices but the last ``frame_more``, and the ingest buffer conflates a frame only as a
whole (never a price of one frame into the slot of another's)."""

from __future__ import annotations

import asyncio

from keeper.domain.events import Event, PriceUpdated
from keeper.feeds.ingest import Ingest
from keeper.feeds.parsers import binance_mark_price
from keeper.feeds.pipeline import PricePipeline
from keeper.testing import MemoryEventLog

T0 = 1_700_000_000_000


def arr(prices: dict[str, int], t_ms: int) -> str:
    return "[" + ",".join(f'{{"e":"markPriceUpdate","E":{t_ms},"s":"{s}","p":"{p}"}}'
                          for s, p in prices.items()) + "]"


def test_the_pipeline_marks_every_price_of_a_frame_but_the_last() -> None:
    pipe = PricePipeline()
    out = pipe.process_frame("b", binance_mark_price("b"),
                             arr({"BTCUSDT": 60000, "ETHUSDT": 3000, "SOLUSDT": 150}, T0), T0 * 1000)
    ticks = [e for e in out.events if isinstance(e, PriceUpdated)]
    assert [(t.symbol, t.frame_more) for t in ticks] == [
        ("BTCUSDT", True), ("ETHUSDT", True), ("SOLUSDT", False)]
    single = pipe.process_frame("b", binance_mark_price("b"), arr({"BTCUSDT": 60001}, T0 + 1),
                                T0 * 1000 + 1000)
    assert [e.frame_more for e in single.events if isinstance(e, PriceUpdated)] == [False]


async def test_frames_conflate_only_as_a_whole() -> None:
    log = MemoryEventLog()
    ingest = Ingest(log, pipeline=PricePipeline())
    parser = binance_mark_price("b")
    # the writer is not running: everything waits in the buffer
    await ingest.submit_frame("b", parser, arr({"BTCUSDT": 1, "ETHUSDT": 1}, T0))
    await ingest.submit_frame("b", parser, arr({"BTCUSDT": 2, "ETHUSDT": 2}, T0 + 1))
    await ingest.submit_frame("b", parser, arr({"ETHUSDT": 3, "SOLUSDT": 3}, T0 + 2))
    await ingest.submit_frame("b", parser, arr({"BTCUSDT": 4}, T0 + 3))  # a single price
    await ingest.submit_frame("b", parser, arr({"BTCUSDT": 5}, T0 + 4))
    buf: list[Event] = list(ingest._buf)
    got = [(e.symbol, int(e.price), e.frame_more) for e in buf if isinstance(e, PriceUpdated)]
    assert got == [("BTCUSDT", 2, True), ("ETHUSDT", 2, False),  # frame 1 replaced by frame 2
                   ("ETHUSDT", 3, True), ("SOLUSDT", 3, False),  # another frame: appended
                   ("BTCUSDT", 5, False)]  # single prices conflate as before
    writer = asyncio.create_task(ingest.run())
    await ingest.drain()
    await ingest.close()
    await writer
    recorded = [e.event for e in await log.read("0-0", 100)]
    assert [(e.symbol, e.frame_more) for e in recorded if isinstance(e, PriceUpdated)] == [
        (s, m) for s, _, m in got]
    assert ingest.stats["conflated"] == 3
