"""The raw pipelined connection and the log's hot paths over it (append, non-blocking reads)."""

from __future__ import annotations

import asyncio
import socket
from decimal import Decimal

import pytest

from keeper.domain.codec import encode
from keeper.domain.events import Deposit
from keeper.errors import LogError, LogUnavailable
from keeper.store.fastpath import RawRedis, ReplyError
from keeper.store.redis_log import RedisEventLog


def dep(i: int) -> Deposit:
    return Deposit(event_id=f"d{i}", ts_event=i, account=f"a{i % 7}", bucket="cross", asset="USDC",
                   amount=Decimal(i + 1))


async def test_pipelined_replies_match_their_commands(redis_url: str) -> None:
    raw = RawRedis.from_url(redis_url)
    assert raw is not None
    try:
        await raw.call("DEL", "fp:k")
        # many commands in flight at once: each gets its own reply, in order
        res = await asyncio.gather(*(raw.call("INCRBY", "fp:k", i) for i in range(1, 201)))
        assert sorted(res) == res and res[-1] == sum(range(1, 201))
        assert await raw.call("GET", "fp:k") == str(sum(range(1, 201))).encode()
        with pytest.raises(ReplyError, match="WRONGTYPE"):
            await raw.call("LPUSH", "fp:k", "x")
        assert await raw.call("PING") == b"PONG"  # an error reply leaves the connection usable
        await raw.call("DEL", "fp:k")
    finally:
        await raw.close()


def test_from_url_declines_what_it_cannot_speak() -> None:
    assert RawRedis.from_url("rediss://127.0.0.1:1/0") is None
    assert RawRedis.from_url("redis://127.0.0.1:1/0?ssl_cert_reqs=none") is None
    r = RawRedis.from_url("redis://u:p%40ss@h:7/3")
    assert r is not None and (r.host, r.port, r.username, r.password, r.db) == ("h", 7, "u", "p@ss", 3)


async def test_append_dedups_across_chunks_and_within_a_batch(redis_url: str) -> None:
    log = await RedisEventLog.connect(redis_url, shard="fp-dedup")
    try:
        assert log._raw is not None  # connect() takes the fast path
        await log.client.delete(log.key, log.ids_key)
        first = [(f"d{i}", encode(dep(i))) for i in range(1500)]
        ids = await log.append_encoded(first)
        assert all(ids) and len(set(ids)) == 1500
        # 2,500 items: old ids, repeats inside one chunk of 1000 and across chunks, new ids
        batch = [*first[1000:1200], first[0]]
        fresh = [(f"n{i}", encode(dep(10_000 + i))) for i in range(1200)]
        batch += fresh[:600] + fresh[:5] + fresh[600:] + fresh[1190:] + first[:100]
        res = await log.append_encoded(batch)
        assert len(res) == len(batch)
        expect_new = {f"n{i}" for i in range(1200)}
        got_new = [batch[k][0] for k, r in enumerate(res) if r is not None]
        assert sorted(got_new) == sorted(expect_new)  # each new id exactly once
        # the first occurrence is the one kept
        firsts: dict[str, int] = {}
        for k, (eid, _) in enumerate(batch):
            firsts.setdefault(eid, k)
        assert all(res[k] is not None for k in (firsts[e] for e in expect_new))
        assert await log.length() == 1500 + 1200
        entries = await log.read_raw("0-0", count=5000)
        assert [p for _, p in entries] == [p for _, p in first] + [p for _, p in fresh]
        assert log.stats["duplicates"] == len(batch) - 1200
    finally:
        await log.close()


async def test_append_reloads_the_script_after_a_flush(redis_url: str) -> None:
    log = await RedisEventLog.connect(redis_url, shard="fp-noscript")
    try:
        await log.append([dep(1)])
        await log.client.script_flush()  # what a restarted server looks like
        res = await log.append([dep(2), dep(1)])
        assert res[0] is not None and res[1] is None
    finally:
        await log.close()


async def test_error_replies_become_log_errors(redis_url: str) -> None:
    log = await RedisEventLog.connect(redis_url, shard="fp-wrongtype")
    try:
        await log.client.delete(log.ids_key)
        await log.client.set(log.ids_key, "not a set")
        with pytest.raises(LogError) as info:
            await log.append([dep(1)])
        assert not isinstance(info.value, LogUnavailable)
        await log.client.delete(log.ids_key)
    finally:
        await log.close()


async def test_unreachable_server_is_log_unavailable_and_reconnects(redis_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    raw = RawRedis("127.0.0.1", dead_port, connect_timeout=2.0)
    log = await RedisEventLog.connect(redis_url, shard="fp-down")
    real = log._raw
    try:
        log._raw = raw
        with pytest.raises(LogUnavailable):
            await log.append([dep(1)])
        with pytest.raises(LogUnavailable):
            await log.read_raw()
        log._raw = real
        assert real is not None
        # a connection the server drops is noticed, and the next call reconnects
        await log.append([dep(1)])
        await log.client.client_kill_filter(_type="normal", skipme=True)
        for _ in range(50):  # bounded: the drop reaches the protocol within a few loop turns
            if not real.connected:
                break
            await asyncio.sleep(0.01)
        assert not real.connected
        assert (await log.append([dep(2), dep(1)]))[1] is None
    finally:
        log._raw = real
        await raw.close()
        await log.close()


async def test_timeout_drops_the_connection(redis_url: str) -> None:
    raw = RawRedis.from_url(redis_url, timeout=0.2)
    assert raw is not None
    try:
        with pytest.raises(TimeoutError):
            await raw.call("BLPOP", "fp:never", 1)  # held by the server past our timeout
        assert not raw.connected
        assert await raw.call("PING") == b"PONG"  # a fresh connection, not the late reply
    finally:
        await raw.close()


def test_raw_connection_works_under_uvloop(redis_url: str) -> None:
    import asyncio

    import uvloop

    from keeper.store.fastpath import RawRedis

    async def go() -> object:
        raw = RawRedis.from_url(redis_url)
        assert raw is not None
        try:
            return await raw.call("PING")
        finally:
            await raw.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(go()) in (b"PONG", "PONG")
