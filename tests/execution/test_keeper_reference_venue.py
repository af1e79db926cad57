"""The keeper against the reference venue (``keeper.sim``) on loopback: the venue's own,
independent margin check agrees with the keeper's, each liquidation is accepted once, and the
venue's account events are recorded before each outcome."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from decimal import Decimal

import aiohttp
import pytest

from keeper.backoff import no_delay
from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.execution import SimVenueExecutor
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.projector import Projector
from keeper.scenarios.book import generate_book
from keeper.sim.server import SimServer
from keeper.store.redis_log import RedisEventLog
from keeper.testing import MemorySnapshotStore

SECRET = b"sim-secret"
D = Decimal


def price_events(tag: str, ts: int, marks: dict[str, Decimal], assets: list[str]) -> list[ev.Event]:
    out: list[ev.Event] = []
    for market, p in sorted(marks.items()):
        out.append(ev.PriceUpdated(event_id=f"{tag}-{market}", ts_event=ts, symbol=market, price=p))
    for a in assets:
        p = D(1) if a == "USDC" else marks[f"{a}-USD"]
        out.append(ev.PriceUpdated(event_id=f"{tag}-{a}", ts_event=ts, symbol=a, price=p))
    return out


FAULTS = {"http_5xx": 3, "timeout_next": 2, "hang_ms": 1500, "drop_next": 2}


@pytest.mark.parametrize("faults", [None, FAULTS])
async def test_keeper_liquidates_each_breach_at_the_reference_venue_exactly_once(
        redis_url: str, faults: dict[str, int] | None) -> None:
    ts = time.time_ns() // 1000
    marks = {"SOL-USD": D(150)}
    book = generate_book(150, 5, marks)
    assets = sorted(e.params.symbol for e in book.events if isinstance(e, ev.AssetListed))
    sim = SimServer(SECRET)
    sim.venue.set_marks(ts, marks)
    sim.venue.load(book.events)
    await sim.start(play=False)
    log = await RedisEventLog.connect(redis_url)
    run_log = await RedisEventLog.connect(redis_url)
    executor = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=0.5)
    try:
        if faults:
            async with aiohttp.ClientSession() as http, http.post(f"{sim.url}/faults", json=faults) as r:
                assert r.status == 200, await r.text()
        await log.append(list(book.events) + price_events("p0", ts, marks, assets))
        crash = {"SOL-USD": D(120)}
        sim.venue.set_marks(ts + 1, crash)
        await log.append(price_events("p1", ts + 1, crash, assets))
        core = KeeperCore(KeeperParams(profile="generic-perp", mode="live"))
        projector = Projector(log, MemorySnapshotStore(), lambda _d: core, fmt=KeeperCore.FORMAT)
        # an intent whose every attempt hit a fault is left pending and reclaimed when stale
        runner = Runner(run_log, Claims(run_log.client), executor, consumer="c1", stale_ms=100,
                        reclaim_every=2)
        await runner.start()
        for _ in range(300):
            applied = await projector.catch_up()
            handled = await runner.step()
            await runner.wait_idle()
            if not applied and not handled:
                if not core.state.open_intents:
                    break
                await asyncio.sleep(0.05)
        assert not core.state.open_intents
        stats = await executor.stats()
    finally:
        await executor.close()
        await log.close()
        await run_log.close()
        await sim.stop()
    lg = await RedisEventLog.connect(redis_url)
    try:
        entries = await lg.read("0-0", 1_000_000)
    finally:
        await lg.close()
    intents = [e.event for e in entries if isinstance(e.event, ev.LiquidationIntended)]
    live = {i.event_id for i in intents if i.decision.mode == "live"}
    outcomes = Counter(e.event.intent_id for e in entries
                       if isinstance(e.event, ev.LiquidationConfirmed | ev.LiquidationRejected))
    confirmed = {e.event.intent_id for e in entries if isinstance(e.event, ev.LiquidationConfirmed)}
    print(f"live intents {len(live)}, confirmed {len(confirmed)}, venue {stats['rejected_by_reason']}")
    assert len(live) >= 10, "the crash must breach some buckets"
    assert set(outcomes) == live and set(outcomes.values()) == {1}
    accepted = stats["accepted_by_intent"]
    assert set(accepted) == confirmed and set(accepted.values()) == {1}
    if faults:
        assert stats["faults"]["injected_5xx"] == 3
        assert stats["faults"]["injected_timeouts"] + stats["faults"]["injected_drops"] == 4
        duplicates = [e.event for e in entries
                      if isinstance(e.event, ev.LiquidationConfirmed) and e.event.duplicate]
        # lost replies are confirmed by the venue's 409 (the runner sends groups through the
        # venue's batch endpoint: one lost reply loses every item's answer, and each is
        # confirmed as a duplicate on the resend)
        assert duplicates and {d.intent_id for d in duplicates} <= set(accepted)
    # the venue's own check agrees with the keeper's on (almost) every decision
    assert len(confirmed) >= 0.9 * len(live), stats.get("rejected_by_reason")
    # each confirmation follows the venue's account events it caused
    for k, e in enumerate(entries):
        if isinstance(e.event, ev.LiquidationConfirmed):
            caused = [j for j, x in enumerate(entries) if x.event.causation_id == e.event.intent_id
                      and isinstance(x.event, ev.ACCOUNT_EVENTS)]
            assert caused and max(caused) < k
