"""The runner (executor role) on a real Redis log against a real loopback venue."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import msgspec
import pytest_asyncio

from keeper.backoff import no_delay
from keeper.domain import events as ev
from keeper.errors import LogUnavailable
from keeper.execution import HttpExecutor, PaperExecutor
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.store.embedded import EmbeddedRedis
from keeper.store.redis_log import RedisEventLog
from tests.execution.keeper_stub_venue import StubVenue

SECRET = b"runner-secret"


def now_us() -> int:
    return time.time_ns() // 1000


def intent(i: int, *, mode: str = "live", ts: int | None = None) -> ev.LiquidationIntended:
    iid = f"liq:a{i}/cross@9-{i}"
    d = ev.Decision(intent_id=iid, account=f"a{i}", bucket="cross", trigger=f"9-{i}",
                    trigger_event_id=f"p{i}", profile="aave-v3", rule="test", action="repay_seize",
                    notional=Decimal(i), mode=mode)
    return ev.LiquidationIntended(event_id=iid, ts_event=now_us() if ts is None else ts, decision=d)


@pytest_asyncio.fixture(loop_scope="function")
async def venue() -> AsyncIterator[StubVenue]:
    v = StubVenue(SECRET, hold_s=0.3)
    await v.start()
    yield v
    await v.close()


async def outcomes(log: RedisEventLog) -> dict[str, list[ev.Event]]:
    out: dict[str, list[ev.Event]] = {}
    for e in await log.read("0-0", 100_000):
        if isinstance(e.event, ev.LiquidationConfirmed | ev.LiquidationRejected | ev.LiquidationExpired):
            out.setdefault(e.event.intent_id, []).append(e.event)
    return out


async def drain(runner: Runner, rounds: int = 50) -> None:
    for _ in range(rounds):
        n = await runner.step()
        await runner.wait_idle()
        if n == 0:
            return
    raise AssertionError("runner did not drain")


async def test_faults_give_one_acceptance_and_one_recorded_outcome_per_intent(
        log: RedisEventLog, venue: StubVenue) -> None:
    kinds = ["ok", "500", "timeout", "lost", "reject"]
    venue.plan = lambda key, n: kinds[int(key.rsplit("-", 1)[1]) % 5] if n == 1 else "ok"
    await log.append([intent(i) for i in range(20)] + [intent(99, mode="paper")])
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay, timeout_s=0.15)
    runner = Runner(log, Claims(log.client), ex, consumer="c1")
    try:
        await runner.start()
        await drain(runner)
    finally:
        await ex.close()
    got = await outcomes(log)
    assert sorted(got) == sorted(f"liq:a{i}/cross@9-{i}" for i in range(20))
    for i in range(20):
        key = f"liq:a{i}/cross@9-{i}"
        (outcome,) = got[key]
        if i % 5 == 4:
            assert isinstance(outcome, ev.LiquidationRejected)
            assert outcome.reason == f"healthy: {key}"
            assert venue.accepted[key] == 0
        else:
            assert isinstance(outcome, ev.LiquidationConfirmed)
            assert outcome.duplicate == (i % 5 == 3)
            assert venue.accepted[key] == 1
        assert (outcome.account, outcome.bucket, outcome.causation_id) == (f"a{i}", "cross", key)
    assert venue.posts["liq:a99/cross@9-99"] == 0
    entries = await log.read("0-0", 10_000)
    submitted = [e.event for e in entries if isinstance(e.event, ev.LiquidationSubmitted)]
    assert len(submitted) == 20


async def test_two_runners_in_separate_groups_submit_each_intent_once(
        log: RedisEventLog, venue: StubVenue) -> None:
    n = 1000
    for start in range(0, n, 250):
        await log.append([intent(i) for i in range(start, start + 250)])
    exs = [HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay) for _ in range(2)]
    runners = [Runner(log, Claims(log.client), exs[k], consumer=f"proc{k}", group=f"g{k}", batch=50)
               for k in range(2)]
    try:
        await asyncio.gather(*(r.start() for r in runners))
        for _ in range(200):
            counts = await asyncio.gather(*(r.step() for r in runners))
            await asyncio.gather(*(r.wait_idle() for r in runners))
            if not any(counts):
                break
        # intents one runner saw while the other held them are retried once their claim is done
        for r in runners:
            await r.reconcile()
    finally:
        for ex in exs:
            await ex.close()
    assert len(venue.posts) == n
    assert max(venue.posts.values()) == 1
    assert sum(venue.accepted.values()) == n
    got = await outcomes(log)
    assert len(got) == n and all(len(v) == 1 for v in got.values())
    done = Counter(k for r in runners for k, v in r.counts.items() for _ in range(v))
    assert done["confirmed"] == n


async def test_an_intent_older_than_its_ttl_is_expired_not_submitted(
        log: RedisEventLog, venue: StubVenue) -> None:
    old = now_us() - 120_000_000
    await log.append([intent(1, ts=old), intent(2)])
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay)
    runner = Runner(log, Claims(log.client), ex, consumer="c1", intent_ttl_us=60_000_000)
    try:
        await runner.start()
        await drain(runner)
    finally:
        await ex.close()
    got = await outcomes(log)
    (expired,) = got["liq:a1/cross@9-1"]
    assert isinstance(expired, ev.LiquidationExpired)
    assert expired.reason.startswith("ttl")
    assert venue.posts["liq:a1/cross@9-1"] == 0
    assert isinstance(got["liq:a2/cross@9-2"][0], ev.LiquidationConfirmed)


async def test_restart_resubmits_own_pending_intent_under_the_same_key(
        log: RedisEventLog, venue: StubVenue) -> None:
    await log.append([intent(1, ts=now_us() - 120_000_000)])
    claims = Claims(log.client)
    await log.ensure_group("executor", "0")
    # a first life: delivered, claimed, marked submitted, accepted by the venue, then died
    (_entry,) = await log.read_group("executor", "c1", 10)
    claim = await claims.take("liq:a1/cross@9-1", "c1")
    assert await claims.mark_submitted("liq:a1/cross@9-1", "c1", claim.token)
    venue.accepted["liq:a1/cross@9-1"] = 1
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay)
    runner = Runner(log, claims, ex, consumer="c1", intent_ttl_us=60_000_000)
    try:
        assert await runner.start() == 1
    finally:
        await ex.close()
    (outcome,) = (await outcomes(log))["liq:a1/cross@9-1"]
    # submitted before: never expired, resubmitted, and the venue's 409 confirms it
    assert isinstance(outcome, ev.LiquidationConfirmed) and outcome.duplicate
    assert venue.accepted["liq:a1/cross@9-1"] == 1


async def test_claim_is_exclusive_fenced_and_reclaimable_after_expiry(log: RedisEventLog) -> None:
    claims = Claims(log.client, ttl_ms=100)
    a = await claims.take("i1", "A")
    assert a.ok and a.previous == ""
    b = await claims.take("i1", "B")
    assert not b.ok and not b.done
    again = await claims.take("i1", "A")  # a restarted A takes its own claim back
    assert again.ok and again.token > a.token
    assert not await claims.mark_submitted("i1", "A", a.token)  # the old token is fenced out
    await asyncio.sleep(0.25)
    b = await claims.take("i1", "B")
    assert b.ok and b.token > again.token
    assert not await claims.mark_submitted("i1", "A", again.token)
    assert await claims.mark_submitted("i1", "B", b.token)
    await claims.finish("i1", "confirmed", b.token)
    assert (await claims.take("i1", "A")).done


async def test_paper_executor_runs_the_outbox_path_without_io(log: RedisEventLog) -> None:
    await log.append([intent(i) for i in range(3)])
    paper = PaperExecutor()
    runner = Runner(log, Claims(log.client), paper, consumer="c1")
    await runner.start()
    await drain(runner)
    assert sorted(d.intent_id for d in paper.submitted) == [f"liq:a{i}/cross@9-{i}" for i in range(3)]
    got = await outcomes(log)
    assert all(isinstance(v[0], ev.LiquidationConfirmed) and v[0].venue_ref.startswith("paper:")
               for v in got.values())


async def test_a_slow_submission_does_not_hold_up_the_next_intents(
        log: RedisEventLog, venue: StubVenue) -> None:
    venue.plan = lambda key, n: "timeout" if key.endswith("@9-0") and n <= 2 else "ok"
    await log.append([intent(i) for i in range(5)])
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay, timeout_s=0.2)
    runner = Runner(log, Claims(log.client), ex, consumer="c1")
    try:
        await runner.start()
        await drain(runner)
    finally:
        await ex.close()
    order = [e.event.intent_id for e in await log.read("0-0", 10_000)
             if isinstance(e.event, ev.LiquidationConfirmed)]
    assert len(order) == 5
    assert order[-1] == "liq:a0/cross@9-0"  # the slow one finished last, the others did not wait
    assert venue.posts["liq:a0/cross@9-0"] == 3


async def test_expiry_counts_from_the_intents_ingest_time_when_stamped(
        log: RedisEventLog, venue: StubVenue) -> None:
    old_trigger = now_us() - 3_600_000_000  # a replayed recording: source time an hour ago
    fresh = intent(1, ts=old_trigger)
    await log.append([msgspec.structs.replace(fresh, ts_ingest=now_us()), intent(2, ts=old_trigger)])
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay)
    runner = Runner(log, Claims(log.client), ex, consumer="c1", intent_ttl_us=60_000_000)
    try:
        await runner.start()
        await drain(runner)
    finally:
        await ex.close()
    got = await outcomes(log)
    assert isinstance(got["liq:a1/cross@9-1"][0], ev.LiquidationConfirmed)
    assert isinstance(got["liq:a2/cross@9-2"][0], ev.LiquidationExpired)


async def test_the_runner_rides_out_a_redis_restart(
        redis_server: EmbeddedRedis, log: RedisEventLog, venue: StubVenue) -> None:
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay)
    runner = Runner(log, Claims(log.client), ex, consumer="c1", outage_backoff=lambda _n: 0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, block_ms=50))

    async def confirmed(n: int) -> None:
        for _ in range(400):
            try:
                if len(await outcomes(log)) >= n:
                    return
            except LogUnavailable:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"fewer than {n} outcomes")

    try:
        await log.append([intent(i) for i in range(5)])
        await confirmed(5)
        await asyncio.sleep(1.2)  # AOF everysec: let the first outcomes reach the disk
        redis_server.kill()
        await asyncio.sleep(0.3)
        redis_server.start()
        for _ in range(100):
            try:
                await log.append([intent(i) for i in range(5, 10)])
                break
            except LogUnavailable:
                await asyncio.sleep(0.05)
        await confirmed(10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await ex.close()
    assert runner.counts.get("redis_unavailable", 0) >= 1
    assert set(venue.accepted.values()) == {1} and len(venue.accepted) == 10


def intent_in(i: int, market: str) -> ev.LiquidationIntended:
    x = intent(i)
    d = msgspec.structs.replace(x.decision, market=market, prices={market: Decimal(100)})
    return msgspec.structs.replace(x, decision=d)


async def test_kill_switch_and_market_pause_hold_submissions_until_resumed(
        log: RedisEventLog, venue: StubVenue) -> None:
    t = now_us()
    await log.append([intent_in(0, "BTC"), intent_in(1, "ETH"),
                      ev.KeeperPaused(event_id="pause-btc", ts_event=t, scope="BTC"),
                      intent_in(2, "BTC"), intent_in(3, "ETH"),
                      ev.KeeperPaused(event_id="kill", ts_event=t, scope="*"),
                      intent_in(4, "ETH")])
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay)
    runner = Runner(log, Claims(log.client), ex, consumer="c1")
    try:
        await runner.start()
        await drain(runner)
        assert sorted(venue.posts) == ["liq:a0/cross@9-0", "liq:a1/cross@9-1", "liq:a3/cross@9-3"]
        await log.append([ev.KeeperResumed(event_id="resume-all", ts_event=t, scope="*")])
        await drain(runner)
        assert "liq:a4/cross@9-4" in venue.posts and "liq:a2/cross@9-2" not in venue.posts
        await log.append([ev.KeeperResumed(event_id="resume-btc", ts_event=t, scope="BTC")])
        await drain(runner)
    finally:
        await ex.close()
    assert len(venue.accepted) == 5 and set(venue.accepted.values()) == {1}
    assert len(await outcomes(log)) == 5
