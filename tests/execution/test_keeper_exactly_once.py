"""Exactly once across crashes: the keeper runs as a subprocess on the private Redis and submits
to a real loopback venue; it is killed between recording an intent and submitting it, between
submitting and recording the outcome, and at a random moment; after a restart the venue has
accepted each liquidation exactly once. Two keeper processes on one log submit each of 1,000
intents once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import IO

import pytest
import pytest_asyncio

from keeper.domain import events as ev
from keeper.domain.model import MarketParams
from keeper.store.redis_log import RedisEventLog
from tests.execution.keeper_stub_venue import StubVenue, close_whole_position

SECRET = b"exactly-once-secret"
ROOT = Path(__file__).resolve().parents[2]
PROC = Path(__file__).with_name("keeper_proc.py")
D = Decimal


@pytest_asyncio.fixture(loop_scope="function")
async def venue() -> AsyncIterator[StubVenue]:
    v = StubVenue(SECRET, effects=close_whole_position)
    await v.start()
    yield v
    await v.close()


async def seed(log: RedisEventLog, n: int) -> None:
    """n cross buckets long 1 BTC @20000 with 2000 USDC (liquidatable below 18947.37), then a
    crash to 18000 that breaches all of them."""
    ts = time.time_ns() // 1000
    events: list[ev.Event] = [
        ev.MarketListed(event_id="m-btc", ts_event=ts, params=MarketParams(symbol="BTC", mmf=D("0.05"))),
        ev.PriceUpdated(event_id="p-usdc", ts_event=ts, symbol="USDC", price=D(1)),
        ev.PriceUpdated(event_id="p-btc-0", ts_event=ts, symbol="BTC", price=D(20000)),
    ]
    for i in range(n):
        a = f"a{i:04d}"
        events.append(ev.Deposit(event_id=f"d-{a}", ts_event=ts, account=a, bucket="cross", asset="USDC",
                                 amount=D(2000)))
        events.append(ev.PositionChanged(event_id=f"pos-{a}", ts_event=ts, account=a, bucket="cross",
                                         market="BTC", size=D(1), entry_price=D(20000)))
    events.append(ev.PriceUpdated(event_id="p-btc-1", ts_event=ts + 1, symbol="BTC", price=D(18000)))
    for k in range(0, len(events), 500):
        await log.append(events[k:k + 500])


async def spawn(redis_url: str, venue: StubVenue, out: IO[bytes], *, consumer: str = "k1",
                group: str = "executor", crash: str | None = None) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "KEEPER_TEST_CRASH_AT"}
    env.update(KEEPER_VENUE_SECRET=SECRET.decode(), PYTHONPATH=str(ROOT))
    if crash:
        env["KEEPER_TEST_CRASH_AT"] = crash
    return await asyncio.create_subprocess_exec(
        sys.executable, str(PROC), "--redis-url", redis_url, "--venue-url", venue.url,
        "--consumer", consumer, "--group", group, env=env, stdout=out, stderr=out)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def settled(log: RedisEventLog, n: int, timeout_s: float = 90) -> tuple[set[str], Counter[str]]:
    """Wait until n buckets have a live intent and every live intent has an outcome."""
    deadline = time.monotonic() + timeout_s
    while True:
        intents: set[str] = set()
        outcomes: Counter[str] = Counter()
        for e in await log.read("0-0", 1_000_000):
            x = e.event
            if isinstance(x, ev.LiquidationIntended) and x.decision.mode == "live":
                intents.add(x.event_id)
            elif isinstance(x, ev.LiquidationConfirmed | ev.LiquidationRejected | ev.LiquidationExpired):
                outcomes[x.intent_id] += 1
        if len(intents) >= n and intents <= set(outcomes):
            return intents, outcomes
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled: {len(intents)} intents, {len(outcomes)} outcomes")
        await asyncio.sleep(0.2)


def assert_exactly_once(intents: set[str], outcomes: Counter[str], venue: StubVenue, n: int) -> None:
    assert len({i.removeprefix("liq:").rpartition("@")[0] for i in intents}) == n
    assert len(intents) == n  # a closed position is healthy: one liquidation per bucket
    assert set(outcomes) == intents and set(outcomes.values()) == {1}
    assert set(venue.accepted) == intents
    assert set(venue.accepted.values()) == {1}


@pytest.mark.parametrize("crash", ["after_intent", "before_post", "after_submit"])
async def test_killed_between_steps_and_restarted_the_venue_accepts_each_liquidation_once(
        redis_url: str, log: RedisEventLog, venue: StubVenue, crash: str, tmp_path: Path) -> None:
    n = 20
    await seed(log, n)
    with (tmp_path / "keeper.log").open("wb") as out:
        first = await spawn(redis_url, venue, out, crash=crash)
        try:
            assert await asyncio.wait_for(first.wait(), 60) == 137
        finally:
            await stop(first)
        posted_before = sum(venue.posts.values())
        if crash == "after_submit":
            assert sum(venue.accepted.values()) >= 1  # accepted, outcome never recorded
        else:
            assert posted_before == 0
        second = await spawn(redis_url, venue, out)
        try:
            intents, outcomes = await settled(log, n)
        finally:
            await stop(second)
    assert_exactly_once(intents, outcomes, venue, n)
    if crash == "after_submit":
        confirmed = [e.event for e in await log.read("0-0", 100_000)
                     if isinstance(e.event, ev.LiquidationConfirmed)]
        assert any(c.duplicate for c in confirmed)  # the lost one came back as a 409


async def test_sigkill_at_a_random_moment_and_restart_keeps_exactly_once(
        redis_url: str, log: RedisEventLog, venue: StubVenue, tmp_path: Path) -> None:
    n = 200
    await seed(log, n)
    venue.delay_s = 0.01  # the burst outlasts the first 40 posts: the kill lands in the middle
    with (tmp_path / "keeper.log").open("wb") as out:
        first = await spawn(redis_url, venue, out)
        try:
            deadline = time.monotonic() + 60
            while sum(venue.posts.values()) < 40:
                assert time.monotonic() < deadline, "the keeper never started submitting"
                await asyncio.sleep(0.005)
            first.kill()
            await first.wait()
        finally:
            await stop(first)
        assert sum(venue.accepted.values()) < n
        second = await spawn(redis_url, venue, out)
        try:
            intents, outcomes = await settled(log, n)
        finally:
            await stop(second)
    assert_exactly_once(intents, outcomes, venue, n)


@pytest.mark.parametrize("shared_group", [True, False])
async def test_two_keeper_processes_on_one_log_submit_each_of_1000_intents_once(
        redis_url: str, log: RedisEventLog, venue: StubVenue, tmp_path: Path, shared_group: bool) -> None:
    n = 1000
    await seed(log, n)
    procs: list[asyncio.subprocess.Process] = []
    with (tmp_path / "keeper.log").open("wb") as out:
        try:
            # one shared consumer group (the deployment), or separate groups: then each process
            # sees every intent and only the claim keeps the second one from submitting it
            for k in (1, 2):
                group = "executor" if shared_group else f"g{k}"
                procs.append(await spawn(redis_url, venue, out, consumer=f"k{k}", group=group))
            intents, outcomes = await settled(log, n, timeout_s=150)
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    await stop(p)
    assert_exactly_once(intents, outcomes, venue, n)
    assert set(venue.posts.values()) == {1}
    assert all(p.returncode == 0 for p in procs)
