"""A market the venue reports halted is paused in the log with the rejection, its intents are
held, and the runner records the resume once the venue trades it again (real Redis, the
reference venue on loopback)."""

from __future__ import annotations

import asyncio

from keeper.backoff import no_delay
from keeper.domain import events as ev
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.execution.simvenue import SimVenueExecutor
from keeper.sim.server import SimServer
from keeper.store.redis_log import RedisEventLog
from tests.execution.helpers import SECRET, intent, intent_id, outcomes


async def _events(log: RedisEventLog) -> list[ev.Event]:
    return [e.event for e in await log.read("0-0", 10_000)]


async def _until(cond: object, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not reached in time")


async def test_a_halted_market_is_paused_held_and_resumed_when_the_venue_trades_again(
        log: RedisEventLog, sim: SimServer) -> None:
    sim.venue.halted.add("BTC-USD")
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=1.0)
    runner = Runner(log, Claims(log.client), ex, consumer="c1", halt_poll_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, block_ms=20))
    try:
        await log.append([intent(0)])

        async def paused() -> bool:
            return any(isinstance(e, ev.KeeperPaused) for e in await _events(log))

        await _until(paused)
        events = await _events(log)
        pause = next(e for e in events if isinstance(e, ev.KeeperPaused))
        (rejected,) = (await outcomes(log))[intent_id(0)]
        assert isinstance(rejected, ev.LiquidationRejected)
        assert rejected.reason.startswith("market halted")
        assert pause.scope == "BTC-USD" and pause.reason.startswith("venue:")
        assert events.index(pause) < events.index(rejected), "paused before the rejection"

        await log.append([intent(1)])  # decided while halted: held, not sent
        await asyncio.sleep(0.3)
        assert intent_id(1) not in sim.venue.stats.requests_by_intent
        assert intent_id(1) not in await outcomes(log)
        assert runner.counts.get("held_paused", 0) >= 1

        sim.venue.halted.discard("BTC-USD")  # the venue trades again

        async def resumed() -> bool:
            return intent_id(1) in await outcomes(log)

        await _until(resumed)
        events = await _events(log)
        resume = next(e for e in events if isinstance(e, ev.KeeperResumed))
        assert resume.scope == "BTC-USD" and resume.causation_id == pause.event_id
        (confirmed,) = (await outcomes(log))[intent_id(1)]
        assert isinstance(confirmed, ev.LiquidationConfirmed)
        assert sim.venue.stats.accepted_by_intent == {intent_id(1): 1}
        # one pause for the halt, however many rejections it caused
        assert sum(isinstance(e, ev.KeeperPaused) for e in events) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await ex.close()
