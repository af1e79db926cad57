"""A burst goes out in batches: the reference venue's ``POST /liquidations/batch`` (per-item
idempotency), ``execute_many`` (and its fallback to one request each), and runners sharing one
consumer group over a batched burst (each liquidation accepted once, one outcome each)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
import pytest
from aiohttp import web

from keeper.backoff import no_delay
from keeper.domain import events as ev
from keeper.errors import PermanentError, TransientError
from keeper.execution import HttpExecutor, Submission
from keeper.execution.claim import Claims
from keeper.execution.http import sign
from keeper.execution.runner import Runner
from keeper.execution.simvenue import SimVenueExecutor
from keeper.sim.server import SimServer
from keeper.store.redis_log import RedisEventLog
from tests.execution.helpers import SECRET, decision, intent, intent_id, outcomes, underwater_venue


async def _post(sim: SimServer, body: bytes, secret: bytes = SECRET) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{sim.url}/liquidations/batch", data=body,
            headers={"X-Keeper-Signature": sign(secret, body)}) as r:
        return r.status, await r.json()


async def test_the_batch_endpoint_is_idempotent_per_item(sim: SimServer) -> None:
    sim.venue.liquidate(decision(1))  # accepted before: a duplicate in the batch
    bad = msgspec.structs.replace(decision(2), account="nobody")
    body = msgspec.json.encode([decision(0), decision(1), bad, decision(3)])
    status, got = await _post(sim, body)
    assert status == 200
    results = got["results"]
    assert isinstance(results, list)
    assert [r["intent_id"] for r in results] == [intent_id(i) for i in range(4)]
    kinds = [r["result"]["status"] for r in results]
    assert kinds == ["accepted", "duplicate", "rejected", "accepted"]
    assert results[2]["result"]["reason"] == "unknown account"
    assert results[0]["result"]["events"], "an accepted item carries its account events"
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in (0, 1, 3)}
    status, again = await _post(sim, body)  # the whole batch again: nothing applied twice
    assert [r["result"]["status"] for r in again["results"]] == ["duplicate", "duplicate", "rejected",
                                                                 "duplicate"]
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in (0, 1, 3)}


async def test_the_batch_endpoint_refuses_what_it_cannot_trust(sim: SimServer) -> None:
    body = msgspec.json.encode([decision(0)])
    assert (await _post(sim, body, secret=b"wrong"))[0] == 401
    assert (await _post(sim, msgspec.json.encode([decision(0), decision(0)])))[0] == 400
    assert (await _post(sim, b"[]"))[0] == 400
    sim.faults.http_5xx = 1
    assert (await _post(sim, body))[0] == 503
    assert sim.venue.stats.accepted_by_intent == {}, "a 5xx applies nothing"


async def test_execute_many_maps_every_item_and_a_lost_reply_is_resent_safely(sim: SimServer) -> None:
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=1.0, batch_size=3)
    try:
        sim.faults.drop_next = 1  # the first request is applied, its reply lost: resent whole
        bad = msgspec.structs.replace(decision(4), account="nobody")
        got = await ex.execute_many([decision(0), decision(1), decision(2), decision(3), bad])
    finally:
        await ex.close()
    assert [type(g).__name__ for g in got] == ["Submission"] * 4 + ["PermanentError"]
    subs = [g for g in got if isinstance(g, Submission)]
    assert sum(s.duplicate for s in subs) >= 1, "the lost batch's items come back as duplicates"
    assert all(s.events for s in subs)
    assert isinstance(got[4], PermanentError) and got[4].reason == "unknown account"
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in range(4)}
    assert ex.attempts == 3  # two batches of 3 and 2, one resent


async def test_a_venue_without_a_batch_endpoint_gets_one_request_each() -> None:
    posts: list[str] = []

    async def one(request: web.Request) -> web.Response:
        d = msgspec.json.decode(await request.read())
        posts.append(d["intent_id"])
        if d["account"] == "acct-2":
            return web.json_response({"status": "rejected", "reason": "no"}, status=422)
        return web.json_response({"status": "accepted", "ref": d["intent_id"]})

    app = web.Application()
    app.router.add_post("/liquidations", one)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ex = HttpExecutor(f"http://127.0.0.1:{port}/liquidations", secret=SECRET, backoff=no_delay,
                      batch_url=f"http://127.0.0.1:{port}/liquidations/batch")
    try:
        got = await ex.execute_many([decision(i) for i in range(3)])
        assert ex.batch_url is None, "a 404 on the batch endpoint: one by one from then on"
        assert [type(g).__name__ for g in got] == ["Submission", "Submission", "PermanentError"]
        assert sorted(posts) == sorted(intent_id(i) for i in range(3))
        down = HttpExecutor("http://127.0.0.1:1/liquidations", secret=SECRET, backoff=no_delay,
                            max_attempts=2, batch_url="http://127.0.0.1:1/liquidations/batch")
        try:
            lost = await down.execute_many([decision(0), decision(1)])
        finally:
            await down.close()
        assert all(isinstance(g, TransientError) for g in lost)
    finally:
        await ex.close()
        await runner.cleanup()


N = 600


@pytest.mark.parametrize("consumers", [1, 3])
async def test_runners_sharing_one_group_liquidate_a_batched_burst_once(
        log: RedisEventLog, consumers: int) -> None:
    sim = SimServer(SECRET, venue=underwater_venue(N))
    await sim.start(play=False)
    executors = [SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=2.0)
                 for _ in range(consumers)]
    runners = [Runner(log, Claims(log.client), ex, consumer=f"c{k}", batch=50, group_size=50)
               for k, ex in enumerate(executors)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop, block_ms=20)) for r in runners]
    try:
        await log.append([intent(i) for i in range(N)])
        deadline = time.monotonic() + 30
        while len(await outcomes(log)) < N:
            assert time.monotonic() < deadline, "the burst was not drained"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for ex in executors:
            await ex.close()
        await sim.stop()
    got = await outcomes(log)
    assert all(len(v) == 1 and isinstance(v[0], ev.LiquidationConfirmed) for v in got.values())
    assert sim.venue.stats.accepted_by_intent == {intent_id(i): 1 for i in range(N)}
    assert set(sim.venue.stats.requests_by_intent.values()) == {1}, "each sent once"
    batches = sum(ex.attempts for ex in executors)
    assert batches <= N // 50 + consumers * 4, f"{batches} requests for {N} intents"
    if consumers > 1:
        assert sum(1 for r in runners if r.counts.get("confirmed")) > 1, "the group shared the work"
