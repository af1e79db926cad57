"""The expiry rule of the runner: a too-old intent that may have reached the venue is never
expired unasked; the venue's status answer decides (real Redis, the reference venue on loopback).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from keeper.backoff import no_delay
from keeper.domain import events as ev
from keeper.execution import Submission
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.execution.simvenue import SimVenueExecutor
from keeper.sim.server import SimServer
from keeper.store.redis_log import RedisEventLog
from tests.execution.helpers import SECRET, decision, intent, intent_id, now_us, outcomes

OLD = 120_000_000  # two minutes: past the 60 s TTL below
TTL_US = 60_000_000


async def drain(runner: Runner, rounds: int = 50) -> None:
    await runner.start()
    for _ in range(rounds):
        n = await runner.step()
        await runner.wait_idle()
        if n == 0:
            return
    raise AssertionError("runner did not drain")


async def sent_before_and_lapsed(claims: Claims, i: int) -> None:
    """A first life marked the intent submitted (and perhaps sent it), then died; its claim lapsed."""
    assert (await claims.take(intent_id(i), "first-life", "submit")).ok
    await asyncio.sleep(claims.ttl_ms / 1000 + 0.05)
    assert await claims.state(intent_id(i)) is None and await claims.sent(intent_id(i))


def executor(sim: SimServer, **kw: Any) -> SimVenueExecutor:
    return SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=0.5, **kw)


async def test_a_lapsed_sent_intent_the_venue_never_had_is_expired_and_not_sent(
        log: RedisEventLog, sim: SimServer) -> None:
    claims = Claims(log.client, ttl_ms=100)
    await log.append([intent(0, ts=now_us() - OLD)])
    await sent_before_and_lapsed(claims, 0)
    ex = executor(sim)
    try:
        await drain(Runner(log, claims, ex, consumer="c1", intent_ttl_us=TTL_US))
    finally:
        await ex.close()
    (outcome,) = (await outcomes(log))[intent_id(0)]
    assert isinstance(outcome, ev.LiquidationExpired)
    assert outcome.reason.startswith("ttl") and "venue has no liquidation" in outcome.reason
    assert sim.venue.stats.status_queries == 1
    assert sim.venue.stats.requests_by_intent == {}  # too old: never sent late
    assert not await claims.sent(intent_id(0))


async def test_a_lapsed_sent_intent_the_venue_has_is_confirmed_with_its_events_first(
        log: RedisEventLog, sim: SimServer) -> None:
    claims = Claims(log.client, ttl_ms=100)
    await log.append([intent(0, ts=now_us() - OLD)])
    await sent_before_and_lapsed(claims, 0)
    accepted = sim.venue.liquidate(decision(0))  # the first life's request arrived; its reply did not
    assert accepted.status == "accepted"
    ex = executor(sim)
    try:
        runner = Runner(log, claims, ex, consumer="c1", intent_ttl_us=TTL_US)
        await drain(runner)
    finally:
        await ex.close()
    (outcome,) = (await outcomes(log))[intent_id(0)]
    assert isinstance(outcome, ev.LiquidationConfirmed)
    assert (outcome.venue_ref, outcome.duplicate) == (accepted.ref, True)
    assert runner.counts["confirmed_by_status"] == 1
    assert sim.venue.stats.requests_by_intent == {}  # asked, not resubmitted
    entries = [e.event for e in await log.read("0-0", 10_000)]
    caused = [e for e in entries if isinstance(e, ev.PositionChanged | ev.Deposit)
              and e.causation_id == intent_id(0)]
    assert [type(e) for e in caused] == [ev.PositionChanged, ev.Deposit]  # the close, the fund's cover
    assert [e.event_id for e in caused] == [f"sim-{sim.venue.seq - 1}", f"sim-{sim.venue.seq}"]
    assert entries.index(caused[-1]) < entries.index(outcome)


async def test_a_lapsed_sent_intent_is_left_pending_while_the_venue_cannot_answer(
        log: RedisEventLog, sim: SimServer) -> None:
    claims = Claims(log.client, ttl_ms=100)
    await log.append([intent(0, ts=now_us() - OLD)])
    await sent_before_and_lapsed(claims, 0)
    sim.venue.liquidate(decision(0))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = SimVenueExecutor(f"http://127.0.0.1:{closed}", secret=SECRET, backoff=no_delay, max_attempts=2)
    try:
        runner = Runner(log, claims, down, consumer="c1", intent_ttl_us=TTL_US)
        await drain(runner)
    finally:
        await down.close()
    assert await outcomes(log) == {}
    assert runner.counts["status_unavailable"] == 1 and "expired" not in runner.counts
    pending = await log.client.xpending(log.key, "executor")
    assert pending["pending"] == 1
    assert await claims.sent(intent_id(0))
    # it comes back: another process reclaims it once stale and the venue answers
    await asyncio.sleep(0.15)
    up = executor(sim)
    try:
        other = Runner(log, claims, up, consumer="c2", intent_ttl_us=TTL_US, stale_ms=50)
        await drain(other)
    finally:
        await up.close()
    (outcome,) = (await outcomes(log))[intent_id(0)]
    assert isinstance(outcome, ev.LiquidationConfirmed) and outcome.duplicate


async def test_a_transient_give_up_is_not_followed_by_an_expiry_without_asking(
        log: RedisEventLog, sim: SimServer) -> None:
    clock = [now_us()]
    claims = Claims(log.client, ttl_ms=100)
    await log.append([intent(0, ts=clock[0])])
    sim.faults.drop_next = 2  # both attempts applied (the first accepted), both replies lost
    ex = executor(sim, max_attempts=2)
    try:
        runner = Runner(log, claims, ex, consumer="c1", intent_ttl_us=TTL_US, stale_ms=50,
                        now_us=lambda: clock[0])
        await drain(runner)
        assert runner.counts["transient_gave_up"] == 1 and await outcomes(log) == {}
        clock[0] += 2 * TTL_US  # it comes back too old, its claim lapsed
        await asyncio.sleep(0.15)
        await runner.reconcile()
    finally:
        await ex.close()
    (outcome,) = (await outcomes(log))[intent_id(0)]
    assert isinstance(outcome, ev.LiquidationConfirmed)
    assert sim.venue.stats.accepted_by_intent == {intent_id(0): 1}
    assert sim.venue.stats.requests_by_intent == {intent_id(0): 2}  # asked, not sent a third time


async def test_a_too_old_intent_never_marked_submitted_is_expired_without_asking(
        log: RedisEventLog, sim: SimServer) -> None:
    claims = Claims(log.client, ttl_ms=100)
    await log.append([intent(0, ts=now_us() - OLD), intent(1)])
    assert (await claims.take(intent_id(1), "first-life")).ok  # held, never marked submitted
    await asyncio.sleep(0.15)
    await log.append([intent(2, ts=now_us() - OLD)])
    ex = executor(sim)
    try:
        await drain(Runner(log, claims, ex, consumer="c1", intent_ttl_us=TTL_US))
    finally:
        await ex.close()
    got = await outcomes(log)
    (never,) = got[intent_id(0)]
    assert isinstance(never, ev.LiquidationExpired) and never.reason.startswith("ttl: not submitted")
    assert isinstance(got[intent_id(1)][0], ev.LiquidationConfirmed)  # within its TTL: sent
    assert isinstance(got[intent_id(2)][0], ev.LiquidationExpired)
    assert sim.venue.stats.status_queries == 0
    assert set(sim.venue.stats.requests_by_intent) == {intent_id(1)}


class NoStatus:
    """An executor that cannot be asked (as the chain executor): only ``execute``."""

    name = "nostatus"

    def __init__(self, inner: SimVenueExecutor) -> None:
        self.inner = inner

    async def execute(self, d: ev.Decision) -> Submission:
        return await self.inner.execute(d)

    async def submit(self, d: ev.Decision) -> tuple[str | None, bool]:
        return await self.inner.submit(d)

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.parametrize("kind", ["no_status_method", "no_status_endpoint"])
async def test_without_a_status_answer_a_too_old_sent_intent_is_resubmitted_under_its_key(
        log: RedisEventLog, sim: SimServer, kind: str) -> None:
    claims = Claims(log.client, ttl_ms=100)
    await log.append([intent(0, ts=now_us() - OLD)])
    await sent_before_and_lapsed(claims, 0)
    sim.venue.liquidate(decision(0))
    # a venue without the endpoint: the path answers a plain 404
    ex: NoStatus | SimVenueExecutor = (NoStatus(executor(sim)) if kind == "no_status_method"
                                       else executor(sim, status_url=f"{sim.url}/no-such-endpoint"))
    try:
        runner = Runner(log, claims, ex, consumer="c1", intent_ttl_us=TTL_US)
        await drain(runner)
    finally:
        await ex.close()
    (outcome,) = (await outcomes(log))[intent_id(0)]
    assert isinstance(outcome, ev.LiquidationConfirmed) and outcome.duplicate
    assert sim.venue.stats.requests_by_intent == {intent_id(0): 1}  # the venue's 409 answered
    assert runner.counts.get("status_unsupported", 0) == (kind == "no_status_endpoint")
