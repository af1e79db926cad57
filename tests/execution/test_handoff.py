"""The in-process hand-off (``Runner.offer``): intents the keeper role of the same process has just
recorded go to the runner at once, beside the consumer group, never instead of it: each is still
in the log and in the group, is sent once, gets one outcome, and its group entry is acked."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from keeper.app.stamping import StampingLog
from keeper.backoff import no_delay
from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import FIRST_CHUNK, KeeperCore, KeeperParams, decide_log
from keeper.execution.claim import Claims
from keeper.execution.pauses import Pauses
from keeper.execution.runner import Runner
from keeper.execution.simvenue import SimVenueExecutor
from keeper.ports import LogEntry
from keeper.projector import Projector
from keeper.sim.server import SimServer
from keeper.store.redis_log import RedisEventLog
from keeper.testing import MemorySnapshotStore
from tests.execution.helpers import (
    SECRET,
    D,
    decision,
    intent,
    intent_id,
    now_us,
    outcomes,
    underwater_book,
    underwater_venue,
)

N = 120


async def _drain(log: RedisEventLog, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(await outcomes(log)) < n:
        assert time.monotonic() < deadline, "the intents were not all handled"
        await asyncio.sleep(0.02)


async def _pending(log: RedisEventLog, group: str) -> int:
    info = await log.client.xpending(log.key, group)
    return int(info["pending"])


@pytest.mark.parametrize("batches", [True, False])
async def test_handed_off_intents_are_sent_once_and_their_group_entries_acked(
        log: RedisEventLog, batches: bool) -> None:
    sim = SimServer(SECRET, venue=underwater_venue(N))
    await sim.start(play=False)
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=2.0)
    if not batches:
        ex.batch_url = None
    runner = Runner(log, Claims(log.client), ex, consumer="c0", batch=50, group_size=50,
                    concurrency=N)  # room for all: one by one, each intent is a task
    keeper_log = StampingLog(log)
    keeper_log.handoff = runner.offer
    stop = asyncio.Event()
    try:
        await runner.start()  # following its group, but not reading yet: the hand-off goes first
        for k in range(0, N, 30):  # a burst's chunks, each recorded then handed off
            await keeper_log.append([intent(i) for i in range(k, k + 30)])
            await runner.wait_idle()  # idle again: the next chunk is handed off too
        assert runner.counts["handed_off"] == N
        await _drain(log, N)
        assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in range(N)}
        # now the group delivers the same entries: each found done, acked, never sent again
        task = asyncio.create_task(runner.run(stop, block_ms=20))
        deadline = time.monotonic() + 10
        while await _pending(log, "executor") or runner.counts.get("already_done", 0) < N:
            assert time.monotonic() < deadline, "group entries left unacked"
            await asyncio.sleep(0.02)
        stop.set()
        await task
    finally:
        stop.set()
        await ex.close()
        await sim.stop()
    got = await outcomes(log)
    assert all(len(v) == 1 and isinstance(v[0], ev.LiquidationConfirmed) for v in got.values())
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in range(N)}
    assert set(sim.venue.stats.requests_by_intent.values()) == {1}, "each sent once"
    assert runner.counts["confirmed"] == N


async def test_the_hand_off_and_the_group_racing_send_each_intent_once(log: RedisEventLog) -> None:
    sim = SimServer(SECRET, venue=underwater_venue(N))
    await sim.start(play=False)
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=2.0)
    runner = Runner(log, Claims(log.client), ex, consumer="c0", batch=50, group_size=50)
    keeper_log = StampingLog(log)
    keeper_log.handoff = runner.offer
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, block_ms=20))
    try:
        while not runner._following:
            await asyncio.sleep(0.005)
        for k in range(0, N, 30):
            await keeper_log.append([intent(i) for i in range(k, k + 30)])
        await _drain(log, N)
        deadline = time.monotonic() + 10
        while await _pending(log, "executor") or runner.busy():
            assert time.monotonic() < deadline, "group entries left unacked"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        await ex.close()
        await sim.stop()
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in range(N)}
    assert set(sim.venue.stats.requests_by_intent.values()) == {1}, "each sent once"
    assert all(len(v) == 1 for v in (await outcomes(log)).values())


async def test_a_second_runner_on_the_group_never_sends_a_handed_off_intent_again(
        log: RedisEventLog) -> None:
    sim = SimServer(SECRET, venue=underwater_venue(N))
    await sim.start(play=False)
    executors = [SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=2.0)
                 for _ in range(2)]
    runners = [Runner(log, Claims(log.client), ex, consumer=f"c{k}", batch=20, group_size=20,
                      stale_ms=200, reclaim_every=2) for k, ex in enumerate(executors)]
    keeper_log = StampingLog(log)
    keeper_log.handoff = runners[0].offer
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop, block_ms=20)) for r in runners]
    try:
        while not all(r._following for r in runners):
            await asyncio.sleep(0.005)
        for k in range(0, N, 20):
            await keeper_log.append([intent(i) for i in range(k, k + 20)])
        await _drain(log, N)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for ex in executors:
            await ex.close()
        await sim.stop()
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in range(N)}
    assert set(sim.venue.stats.requests_by_intent.values()) == {1}, "each sent once"
    assert all(len(v) == 1 for v in (await outcomes(log)).values())


async def test_a_burst_s_later_chunks_are_left_to_the_group_while_the_first_is_in_flight(
        log: RedisEventLog) -> None:
    sim = SimServer(SECRET, venue=underwater_venue(N))
    await sim.start(play=False)
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=2.0)
    runner = Runner(log, Claims(log.client), ex, consumer="c0", batch=50, group_size=50)
    keeper_log = StampingLog(log)
    keeper_log.handoff = runner.offer
    stop = asyncio.Event()
    try:
        await runner.start()
        await keeper_log.append([intent(i) for i in range(16)])  # the first chunk: taken
        assert runner.busy()
        await keeper_log.append([intent(i) for i in range(16, N)])  # in flight: the group's
        await keeper_log.append([intent(N - 1)])  # a few (a duplicate here) are always offered
        assert runner.counts["handed_off"] == 16
        task = asyncio.create_task(runner.run(stop, block_ms=20))
        await _drain(log, N)
        stop.set()
        await task
    finally:
        stop.set()
        await ex.close()
        await sim.stop()
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in range(N)}
    assert set(sim.venue.stats.requests_by_intent.values()) == {1}, "each sent once"


async def test_offer_takes_no_more_than_there_is_room_for(log: RedisEventLog) -> None:
    sim = SimServer(SECRET, venue=underwater_venue(10))
    await sim.start(play=False)
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=2.0)
    ex.batch_url = None
    runner = Runner(log, Claims(log.client), ex, consumer="c0", concurrency=4)
    try:
        await runner.start()
        ids = await log.append([intent(i) for i in range(10)])
        took = await runner.offer([LogEntry(str(i), intent(k)) for k, i in enumerate(ids)])
        assert took == 4, "never waits for room: the rest is the group's"
        await runner.wait_idle()
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, block_ms=20))
        await _drain(log, 10)
        stop.set()
        await task
    finally:
        await ex.close()
        await sim.stop()
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in range(10)}


async def test_offer_leaves_to_the_group_what_it_should_not_take(log: RedisEventLog) -> None:
    sim = SimServer(SECRET, venue=underwater_venue(3))
    await sim.start(play=False)
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=2.0)
    runner = Runner(log, Claims(log.client), ex, consumer="c0")
    try:
        ids = await log.append([intent(0)])
        entry = LogEntry(str(ids[0]), intent(0))
        assert await runner.offer([entry]) == 0, "not following its group yet"
        runner._following = True
        paper = ev.LiquidationIntended(event_id="liq:paper", ts_event=now_us(),
                                       decision=msgspec.structs.replace(decision(1), mode="paper"))
        assert await runner.offer([LogEntry("9-9", paper)]) == 0, "paper: never submitted"
        runner.pauses.follow(ev.KeeperPaused(event_id="p", ts_event=now_us(), scope="BTC-USD",
                                             reason="operator"))
        assert await runner.offer([entry]) == 0, "a pause this runner knows of covers it"
        assert sim.venue.stats.accepted_by_intent == {}
    finally:
        await ex.close()
        await sim.stop()


def test_a_venue_halt_this_runner_recorded_covers_intents_until_it_is_read_back() -> None:
    pauses = Pauses("c0")
    d = decision(0)
    halt = pauses.venue_halt(d, "market halted: BTC-USD", now_us())
    assert halt and pauses.covers(intent(1)), "recorded, not read back yet: the hand-off declines"
    assert not pauses.holds(intent(1)), "the group path judges it in log order"
    pauses.follow(halt[0])
    assert pauses.covers(intent(1)) and pauses.holds(intent(1))
    pauses.follow(ev.KeeperResumed(event_id="r", ts_event=now_us(), scope="BTC-USD"))
    assert not pauses.covers(intent(1))


async def test_claims_prepared_at_start_need_no_script_load_at_the_first_claim(
        log: RedisEventLog) -> None:
    claims = Claims(log.client)
    await log.client.script_flush()
    await claims.prepare()
    shas = [claims._take.sha, claims._mark.sha, claims._take_many.sha]
    assert await log.client.script_exists(*shas) == [True, True, True]


async def test_live_decisions_with_the_hand_off_are_those_replay_derives(log: RedisEventLog) -> None:
    """The hand-off changes when intents are sent, never what is decided: a streamed burst through
    the keeper's log with the hand-off records exactly the decisions a replay derives."""
    n = 100
    sim = SimServer(SECRET, venue=underwater_venue(n))
    await sim.start(play=False)
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=2.0)
    runner = Runner(log, Claims(log.client), ex, consumer="c0")
    keeper_log = StampingLog(log)
    keeper_log.handoff = runner.offer
    params = KeeperParams(profile="generic-perp", mode="live")
    projector = Projector(keeper_log, MemorySnapshotStore(), lambda _d: KeeperCore(params),
                          fmt=KeeperCore.FORMAT, stream=True)
    t = now_us()
    await log.append([*underwater_book(n),
                      ev.PriceUpdated(event_id="usdc", ts_event=t, symbol="USDC", price=D(1)),
                      ev.PriceUpdated(event_id="btc-0", ts_event=t, symbol="BTC-USD", price=D(60000))])
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await projector.start()
        await projector.catch_up()
        await runner.start()  # not reading its group yet: the first chunk is handed off
        await log.append([ev.PriceUpdated(event_id="btc-1", ts_event=t + 1, symbol="BTC-USD",
                                          price=D(58000))])  # every account breaches at once
        await projector.catch_up()
        assert runner.counts["handed_off"] == FIRST_CHUNK, "the first chunk, in hand at once"
        tasks.append(asyncio.create_task(runner.run(stop, block_ms=20)))  # the group: the rest
        await _drain(log, n)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await ex.close()
        await sim.stop()
    entries = [(e.id, e.event) for e in await log.read("0-0", 1_000_000)]
    recorded = {e.event_id: encode(e.decision) for _, e in entries if isinstance(e, ev.LiquidationIntended)}
    derived = {e.event_id: encode(e.decision) for e in decide_log(entries, params)}
    assert len(recorded) == n
    assert recorded == derived
    assert sim.venue.stats.accepted_by_intent == {i: 1 for i in recorded}
