"""Reconnect policy and log outages, with real sockets and a real Redis."""

from __future__ import annotations

import asyncio
import json
import socket
from decimal import Decimal

import pytest
import structlog.testing
from websockets.asyncio.server import ServerConnection, serve

from keeper.domain.events import Deposit
from keeper.feeds.ingest import Ingest
from keeper.feeds.ws import WsConfig, WsFeed
from keeper.store.embedded import EmbeddedRedis
from keeper.store.redis_log import RedisEventLog


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connect_failures_follow_the_injected_backoff_then_connect() -> None:
    port = _free_port()
    asked: list[float] = []

    def policy(attempt: int) -> float:
        asked.append(0.01)
        return 0.01

    frames: list[str] = []
    got = asyncio.Event()

    async def on_frame(raw: bytes | str) -> None:
        frames.append(str(raw))
        got.set()

    feed = WsFeed(WsConfig(f"ws://127.0.0.1:{port}", subscribe=["sub"], open_timeout=1), on_frame,
                  backoff=policy)
    task = asyncio.create_task(feed.run())
    try:
        for _ in range(200):  # bounded: wait for a few refused connects
            await asyncio.sleep(0.01)
            if len(asked) >= 3:
                break
        assert len(asked) >= 3 and feed.stats["connects"] == 0

        async def handler(ws: ServerConnection) -> None:
            assert await ws.recv() == "sub"
            await ws.send("hello")
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", port):
            await asyncio.wait_for(got.wait(), 5)
            assert frames == ["hello"] and feed.stats["connects"] == 1
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_silent_connection_is_dropped_after_idle_timeout_and_reopened() -> None:
    connects = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connects
        connects += 1
        await ws.send(json.dumps({"n": connects}))
        await ws.wait_closed()  # then silence, with the connection alive (pings answered)

    frames: list[str] = []

    async def on_frame(raw: bytes | str) -> None:
        frames.append(str(raw))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]  # type: ignore[index]
        feed = WsFeed(WsConfig(f"ws://127.0.0.1:{port}", idle_timeout=0.1, ping_interval=0.05), on_frame,
                      backoff=lambda _n: 0.0)
        await asyncio.wait_for(feed.run(max_connects=3), 5)
    assert frames == ['{"n": 1}', '{"n": 2}', '{"n": 3}']
    assert feed.stats["idle_drops"] == 3


@pytest.mark.timeout(60)
async def test_redis_down_blocks_ingest_and_alarms_then_everything_lands_in_order(
        redis_url: str, redis_server: EmbeddedRedis) -> None:
    log = await RedisEventLog.connect(redis_url)
    ingest = Ingest(log, retry=lambda _n: 0.05)
    writer = asyncio.create_task(ingest.run())
    events = [Deposit(event_id=f"venue-{i}", ts_event=i, account="A", bucket="cross", asset="USDC",
                      amount=Decimal(i + 1)) for i in range(20)]
    try:
        await ingest.submit(events[:5])
        await asyncio.wait_for(ingest.drain(), 10)
        redis_server.stop()
        with structlog.testing.capture_logs() as logs:
            await ingest.submit(events[5:])
            for _ in range(200):
                await asyncio.sleep(0.02)
                if ingest.stats["log_retries"] >= 3:
                    break
            assert ingest.stats["log_retries"] >= 3 and ingest.unavailable
            redis_server.start()
            await asyncio.wait_for(ingest.drain(), 20)
        assert any(x["event"] == "ingest_log_unavailable" and x["log_level"] == "error" for x in logs)
        assert [e.event.event_id for e in await log.read()] == [e.event_id for e in events]
    finally:
        if not redis_server.running():
            redis_server.start()
        await ingest.close()
        await asyncio.wait_for(writer, 10)
        await log.close()
