"""The venue on loopback: a real aiohttp server on 127.0.0.1 port 0 and a real client."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import aiohttp
import msgspec
import pytest

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.domain.model import CROSS
from keeper.sim.prices import Tick
from keeper.sim.server import SimServer
from tests.sim.client import SECRET, crashed, faults, get, post_liq
from tests.sim.helpers import decision, small_venue

D = Decimal


async def test_missing_or_bad_signature_is_401_and_changes_nothing(sim: SimServer, http: aiohttp.ClientSession
                                                                   ) -> None:
    d = crashed(sim)
    seq = sim.venue.seq
    assert (await post_liq(http, sim.url, d, secret=None))[0] == 401
    assert (await post_liq(http, sim.url, d, secret=b"wrong"))[0] == 401
    assert sim.venue.seq == seq and sim.venue.stats.accepted == 0


async def test_accept_then_duplicate_409_with_the_same_events(sim: SimServer, http: aiohttp.ClientSession
                                                              ) -> None:
    d = crashed(sim)
    status, body = await post_liq(http, sim.url, d)
    assert status == 200 and body["status"] == "accepted" and body["ref"] == "sim-liq-1"
    (pc,) = [codec.decode(msgspec.json.encode(e)) for e in body["events"]]
    assert isinstance(pc, ev.PositionChanged) and pc.causation_id == "intent-a"
    assert pc.realized_pnl == D("-520.05")
    status2, body2 = await post_liq(http, sim.url, d)
    assert (status2, body2) == (409, {**body, "status": "duplicate"})
    stats = await get(http, f"{sim.url}/stats")
    assert (stats["accepted"], stats["duplicates"]) == (1, 1)
    assert stats["requests_by_intent"] == {"intent-a": 2} and stats["accepted_by_intent"] == {"intent-a": 1}


async def test_rejections_are_422_with_the_reason(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.set_prices(2, {"BTC-USD": D(55000)})
    status, body = await post_liq(http, sim.url, decision("h", "alice", CROSS, market="BTC-USD",
                                                          size=D("0.1")))
    assert (status, body) == (422, {"status": "rejected",
                                    "reason": "healthy at venue price 55000 (equity 500 >= MM 22)"})
    status, body = await post_liq(http, sim.url, decision("u", "zed", CROSS, market="BTC-USD", size=D(1)))
    assert (status, body["reason"]) == (422, "unknown account")
    assert (await get(http, f"{sim.url}/stats"))["rejected"] == 2


async def test_injected_5xx_answers_without_applying_then_recovers(sim: SimServer,
                                                                  http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    await faults(http, sim, http_5xx=2)
    seq = sim.venue.seq
    assert (await post_liq(http, sim.url, d))[0] == 503
    assert (await post_liq(http, sim.url, d))[0] == 503
    assert sim.venue.seq == seq
    assert (await post_liq(http, sim.url, d))[0] == 200
    assert sim.venue.stats.requests_by_intent == {"intent-a": 3}
    assert sim.venue.stats.accepted_by_intent == {"intent-a": 1}


async def test_injected_delay_holds_each_liquidation(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await faults(http, sim, delay_ms=300)
    t0 = time.monotonic()
    assert (await post_liq(http, sim.url, crashed(sim)))[0] == 200
    assert time.monotonic() - t0 >= 0.29


async def test_timeout_fault_applies_but_loses_the_reply_and_the_retry_gets_409(
        sim: SimServer, http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    await faults(http, sim, timeout_next=1, hang_ms=3000)
    with pytest.raises(TimeoutError):
        await post_liq(http, sim.url, d, client_timeout=0.5)
    status, body = await post_liq(http, sim.url, d)
    assert status == 409 and body["ref"] == "sim-liq-1" and len(body["events"]) == 1
    assert sim.venue.stats.accepted_by_intent == {"intent-a": 1}


async def test_dropped_connection_fault_applies_and_the_retry_gets_409(
        sim: SimServer, http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    await faults(http, sim, drop_next=1)
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_liq(http, sim.url, d)
    assert (await post_liq(http, sim.url, d))[0] == 409


async def test_halted_market_and_unknown_fault_keys(sim: SimServer, http: aiohttp.ClientSession) -> None:
    d = crashed(sim)
    await faults(http, sim, halt=["BTC-USD"])
    status, body = await post_liq(http, sim.url, d)
    assert (status, body["reason"]) == (422, "market halted: BTC-USD")
    await faults(http, sim, resume=["BTC-USD"])
    assert (await post_liq(http, sim.url, d))[0] == 200
    async with http.post(f"{sim.url}/faults", json={"http_500": 1}) as r:
        assert r.status == 400 and "http_500" in (await r.json())["reason"]


async def read_ids(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        ids.append(codec.decode(msg.data).event_id)
    return ids


async def test_accounts_stream_replays_history_resyncs_after_reconnect_and_streams_live(
        sim: SimServer, http: aiohttp.ClientSession) -> None:
    total = sim.venue.seq
    async with http.ws_connect(f"{sim.url}/accounts?after=0") as ws:
        first = await read_ids(ws, 5)
    assert first == [f"sim-{i}" for i in range(1, 6)]
    async with http.ws_connect(f"{sim.url}/accounts?after=5") as ws:
        rest = await read_ids(ws, total - 5)
        assert first + rest == [f"sim-{i}" for i in range(1, total + 1)]
        status, _ = await post_liq(http, sim.url, crashed(sim))
        assert status == 200
        (live,) = await read_ids(ws, 1)
        assert live == f"sim-{total + 1}"


async def test_drop_ws_closes_every_socket_and_a_reconnect_resumes_without_gaps(
        sim: SimServer, http: aiohttp.ClientSession) -> None:
    seen: list[str] = []
    async with http.ws_connect(f"{sim.url}/accounts?after=0") as acc, \
            http.ws_connect(f"{sim.url}/prices") as px:
        seen += await read_ids(acc, 3)
        await faults(http, sim, drop_ws=True)
        for ws in (acc, px):
            while True:
                msg = await asyncio.wait_for(ws.receive(), 5)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                if ws is acc:
                    seen.append(codec.decode(msg.data).event_id)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert (await get(http, f"{sim.url}/stats"))["faults"]["ws_drops"] == 2
    after = int(seen[-1].removeprefix("sim-"))
    async with http.ws_connect(f"{sim.url}/accounts?after={after}") as acc:
        seen += await read_ids(acc, sim.venue.seq - after)
    assert seen == [f"sim-{i}" for i in range(1, sim.venue.seq + 1)]


async def test_prices_stream_sends_current_marks_then_binance_mark_price_frames(
        http: aiohttp.ClientSession) -> None:
    path = [Tick(1_000_000 * i, {"BTC-USD": D(60000 - i), "ETH-USD": D(3000 - i)}) for i in range(1, 21)]
    server = SimServer(SECRET, venue=small_venue(), path=path, speed=200.0, timestamps="path")
    await server.start(play=False)
    try:
        async with http.ws_connect(f"{server.url}/prices") as ws:
            first = msgspec.json.decode((await asyncio.wait_for(ws.receive(), 5)).data)
            assert {f["s"]: f["p"] for f in first} == {"BTCUSDT": "60000", "ETHUSDT": "3000"}
            async with http.post(f"{server.url}/play") as r:
                assert r.status == 200
            # one array frame per tick: the tick's markets together (one instant)
            arrays = [msgspec.json.decode((await asyncio.wait_for(ws.receive(), 5)).data)
                      for _ in range(20)]
            assert all(len(a) == 2 for a in arrays)
            frames = [f for a in arrays for f in a]
        await asyncio.wait_for(server.played.wait(), 5)
    finally:
        await server.stop()
    btc = [f for f in frames if f["s"] == "BTCUSDT"]
    assert [f["p"] for f in btc] == [str(60000 - i) for i in range(1, 21)]
    assert [f["E"] for f in btc] == [1000 * i for i in range(1, 21)]
    f = btc[0]
    assert f["e"] == "markPriceUpdate" and f["i"] == f["P"] == f["p"] and f["r"] == "0"
    assert f["T"] == 8 * 3600 * 1000
    assert server.venue.marks["BTC-USD"] == D(59980) and server.venue.marks["BTC"] == D(59980)


async def test_account_view_and_healthz(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.set_prices(2, {"BTC-USD": D(50100)})
    view = await get(http, f"{sim.url}/accounts/alice")
    assert view["buckets"]["cross"]["equity"] == "10.0" and view["buckets"]["cross"]["liquidatable"] is True
    async with http.get(f"{sim.url}/accounts/nobody") as r:
        assert r.status == 404
    assert (await get(http, f"{sim.url}/healthz"))["seq"] == sim.venue.seq
