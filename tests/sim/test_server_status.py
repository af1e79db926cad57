"""The venue's answers for a client that lost a reply: ``GET /liquidations/{id}``, ``GET /markets``,
the injected rate limit with ``Retry-After``, shares of lost replies and request deadlines."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import pytest

from keeper.domain.model import CROSS
from keeper.sim.server import SimServer
from keeper.sim.wire import sign, status_message
from tests.sim.client import SECRET, crashed, faults, get, post_liq
from tests.sim.helpers import decision, small_venue

D = Decimal


async def status(http: aiohttp.ClientSession, sim: SimServer, intent_id: str,
                 secret: bytes | None = SECRET) -> tuple[int, dict[str, Any], str | None]:
    headers = {} if secret is None else {"X-Keeper-Signature": sign(secret, status_message(intent_id))}
    async with http.get(f"{sim.url}/liquidations/{quote(intent_id, safe='')}", headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def test_status_of_an_accepted_key_is_its_duplicate_answer(sim: SimServer,
                                                                 http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    assert (await post_liq(http, sim.url, d))[0] == 200
    _, duplicate = await post_liq(http, sim.url, d)
    code, body, _ = await status(http, sim, d.intent_id)
    assert code == 200
    assert body == {**duplicate, "status": "accepted"}
    assert len(body["events"]) == 1 and body["ref"] == "sim-liq-1"
    assert (await get(http, f"{sim.url}/stats"))["status_queries"] == 1


async def test_status_of_a_never_accepted_or_rejected_key_is_unknown(sim: SimServer,
                                                                    http: aiohttp.ClientSession) -> None:
    assert (await status(http, sim, "liq:nobody/cross@1-1"))[:2] == (404, {"status": "unknown"})
    healthy = decision("liq:alice/cross@2-0", "alice", CROSS, market="BTC-USD")
    assert (await post_liq(http, sim.url, healthy))[0] == 422
    assert (await status(http, sim, healthy.intent_id))[:2] == (404, {"status": "unknown"})


async def test_status_needs_the_signature_of_its_own_key(sim: SimServer, http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    assert (await post_liq(http, sim.url, d))[0] == 200
    assert (await status(http, sim, d.intent_id, secret=None))[0] == 401
    assert (await status(http, sim, d.intent_id, secret=b"wrong"))[0] == 401
    # a valid signature of another key does not open this one
    headers = {"X-Keeper-Signature": sign(SECRET, status_message("other"))}
    async with http.get(f"{sim.url}/liquidations/{quote(d.intent_id, safe='')}", headers=headers) as r:
        assert r.status == 401
    assert sim.venue.stats.status_queries == 0


async def test_markets_report_marks_and_halts(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await faults(http, sim, halt=["ETH-USD"])
    view = await get(http, f"{sim.url}/markets")
    assert view == {"markets": {"BTC-USD": {"mark": "60000", "halted": False},
                                "ETH-USD": {"mark": "3000", "halted": True}},
                    "halted": ["ETH-USD"]}
    await faults(http, sim, resume=["ETH-USD"])
    assert (await get(http, f"{sim.url}/markets"))["markets"]["ETH-USD"]["halted"] is False


async def test_rate_limit_next_answers_429_with_retry_after_and_applies_nothing(
        sim: SimServer, http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    await faults(http, sim, rate_limit_next=2, retry_after=3)
    seq = sim.venue.seq
    body = msgspec.json.encode(d)
    headers = {"Idempotency-Key": d.intent_id, "X-Keeper-Signature": sign(SECRET, body)}
    async with http.post(f"{sim.url}/liquidations", data=body, headers=headers) as r:
        assert (r.status, r.headers["Retry-After"]) == (429, "3")
    assert sim.venue.seq == seq
    code, _, after = await status(http, sim, d.intent_id)
    assert (code, after) == (429, "3")
    assert (await post_liq(http, sim.url, d))[0] == 200
    assert (await get(http, f"{sim.url}/stats"))["faults"]["injected_429"] == 2


async def test_rate_limit_per_second_refuses_the_excess_then_recovers(
        sim: SimServer, http: aiohttp.ClientSession) -> None:
    await faults(http, sim, rate_limit=3)
    codes = [(await status(http, sim, f"k{i}"))[0] for i in range(5)]
    assert codes == [404, 404, 404, 429, 429]
    await asyncio.sleep(1.05)
    assert (await status(http, sim, "k9"))[0] == 404
    await faults(http, sim, clear=True)
    assert sim.faults.rate_limit == 0


async def test_injected_5xx_may_carry_retry_after(sim: SimServer, http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    await faults(http, sim, http_5xx=1, retry_after=2, retry_after_5xx=True)
    body = msgspec.json.encode(d)
    headers = {"Idempotency-Key": d.intent_id, "X-Keeper-Signature": sign(SECRET, body)}
    async with http.post(f"{sim.url}/liquidations", data=body, headers=headers) as r:
        assert (r.status, r.headers["Retry-After"]) == (503, "2")


async def test_a_request_past_its_deadline_is_not_applied(sim: SimServer,
                                                          http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    await faults(http, sim, delay_ms=300)
    body = msgspec.json.encode(d)
    headers = {"Idempotency-Key": d.intent_id, "X-Keeper-Signature": sign(SECRET, body),
               "X-Keeper-Deadline": str(time.time_ns() // 1_000_000 + 100)}
    seq = sim.venue.seq
    async with http.post(f"{sim.url}/liquidations", data=body, headers=headers) as r:
        assert r.status == 408 and (await r.json())["status"] == "late"
    assert sim.venue.seq == seq and sim.venue.stats.accepted == 0
    assert (await status(http, sim, d.intent_id))[0] == 404
    headers["X-Keeper-Deadline"] = str(time.time_ns() // 1_000_000 + 5_000)
    async with http.post(f"{sim.url}/liquidations", data=body, headers=headers) as r:
        assert r.status == 200
    headers["X-Keeper-Deadline"] = "soon"
    async with http.post(f"{sim.url}/liquidations", data=body, headers=headers) as r:
        assert r.status == 400


async def test_a_share_of_lost_replies_is_applied_and_reproducible(http: aiohttp.ClientSession) -> None:
    lost: list[list[int]] = []
    for _ in range(2):
        server = SimServer(SECRET, venue=small_venue())
        await server.start(play=False)
        try:
            await faults(http, server, drop_share=0.5, seed=3)
            server.set_prices(2, {"BTC-USD": D(50100)})
            got = []
            for i in range(12):
                d = decision(f"rep-{i}", "alice", CROSS, market="BTC-USD")
                try:
                    got.append((await post_liq(http, server.url, d))[0])
                except aiohttp.ClientConnectionError:
                    got.append(0)
            lost.append(got)
            assert server.faults.injected_drops == got.count(0)
            # the first request closed alice's position whether or not its reply arrived
            assert server.venue.stats.accepted == 1
        finally:
            await server.stop()
    assert lost[0] == lost[1]
    assert 0 < lost[0].count(0) < 12


@pytest.mark.parametrize("spec", [{"drop_share": 1.5}, {"hang_share": -0.1}, {"rate_limit": 1.5},
                                  {"retry_after_5xx": 1}, {"seed": True}])
async def test_bad_fault_values_are_refused_naming_the_key(sim: SimServer, http: aiohttp.ClientSession,
                                                           spec: dict[str, Any]) -> None:
    async with http.post(f"{sim.url}/faults", json=spec) as r:
        assert r.status == 400
        assert next(iter(spec)) in (await r.json())["reason"]
