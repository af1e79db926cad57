"""Redis faults are ridden out with the daemon up: a Redis killed and restarted, a Redis that
refuses writes at ``maxmemory``, a Redis down at start; ``/healthz`` stays live, ``/readyz``
says why it is not ready, ``/metrics`` shows Redis, and SIGTERM ends the process in time.
(Issue: any Redis fault ended the process; once it hung, ignoring SIGTERM.)"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis

from keeper.aio import wait_event
from keeper.app.config import load_config
from keeper.app.daemon import Daemon, read_all
from keeper.app.supervise import ride_through
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.errors import LogError, LogRefused, LogUnavailable
from keeper.store import health
from keeper.store.embedded import EmbeddedRedis
from keeper.store.redis_log import RedisEventLog
from tests.replay.scenario import account_events, crash_ticks, setup_events

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test alone (it is killed and restarted); every write fsynced."""
    server = EmbeddedRedis(tmp_path / "redis", appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _cfg(url: str, tmp_path: Path) -> Any:
    base = load_config(None, env={}, register_secrets=False)
    r = msgspec.structs.replace
    # prices are judged by the wall clock (stale after staleness_ms): the book's are stamped at
    # its writing (_book) and stay fresh for the whole test
    return r(base, redis=r(base.redis, url=url, data_dir=str(tmp_path / "unused"), block_ms=50),
             admin=r(base.admin, port=0), feeds=r(base.feeds, staleness_ms=600_000))


@contextlib.asynccontextmanager
async def running(server: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon (keeper in paper mode, admin) on ``server``, started, stopped at the end (it
    must not have ended on its own)."""
    d = Daemon(_cfg(server.url, tmp_path), roles=["keeper", "admin"], block_ms=50)
    d.sample_interval_s = 0.1
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        yield d
        assert not task.done(), "the daemon ended on its own"
    finally:
        stop.set()
        await asyncio.wait_for(task, 40)


async def _get(d: Daemon, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
            http.get(f"http://127.0.0.1:{d.admin_port}{path}") as resp:
        body = await resp.json() if path != "/metrics" else await resp.text()
        return resp.status, body


async def _until(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {name}")


async def _ready(d: Daemon) -> bool:
    status, _ = await _get(d, "/readyz")
    return status == 200


async def _book(log: RedisEventLog) -> None:
    now = wall_clock_us()
    book = [msgspec.structs.replace(e, ts_event=now) if isinstance(e, ev.PriceUpdated) else e
            for e in setup_events()]
    await log.append([*book, *account_events()])


async def test_redis_killed_and_restarted_is_ridden_out(own_redis: EmbeddedRedis,
                                                        tmp_path: Path) -> None:
    log = await RedisEventLog.connect(own_redis.url)
    try:
        async with running(own_redis, tmp_path) as daemon:
            await _book(log)
            await _until(lambda: _ready(daemon), 10, "ready before the fault")
            own_redis.kill()

            async def down() -> Any:
                status, body = await _get(daemon, "/readyz")
                return body if status == 503 and any("redis" in r for r in body["reasons"]) else None

            body = await _until(down, 10, "/readyz says redis is down")
            assert (await _get(daemon, "/healthz"))[0] == 200
            await asyncio.sleep(1.5)  # a few failed reads and backoffs of every role
            metrics = (await _get(daemon, "/metrics"))[1]
            assert _metric(metrics, "keeper_redis_up") == 0
            assert _metric(metrics, "keeper_redis_errors_total") > 0
            assert (await _get(daemon, "/healthz"))[0] == 200, "the process stays live"

            own_redis.start()  # same port and data folder: the AOF brings the log back
            now = wall_clock_us()
            ticks = [msgspec.structs.replace(t, ts_ingest=now, ts_event=now + k)  # fresh prices
                     for k, t in enumerate(crash_ticks())]
            await log.append(ticks)  # the crash arrives after the outage: decided on
            await _until(lambda: _ready(daemon), 20, "ready again after the restart")
            entries = await read_all(log)
            intents = [e.event for e in entries if isinstance(e.event, ev.LiquidationIntended)]
            assert intents, "the keeper decided on the crash after the outage"
            assert len({i.event_id for i in intents}) == len(intents)
            metrics = (await _get(daemon, "/metrics"))[1]
            assert _metric(metrics, "keeper_redis_up") == 1
            assert _metric(metrics, "keeper_redis_used_memory_bytes") > 0
            assert 0 <= _metric(metrics, "keeper_log_last_append_age_seconds") < 60
            assert body["reasons"][0].startswith("redis unreachable")
    finally:
        await log.close()


async def test_writes_refused_at_maxmemory_hold_the_decision_until_redis_takes_it(
        own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    log = await RedisEventLog.connect(own_redis.url)
    client = aioredis.from_url(own_redis.url)
    refused_before = health.REDIS.refused_writes
    try:
        async with running(own_redis, tmp_path) as daemon:
            await _book(log)
            await _until(lambda: _ready(daemon), 10, "ready before the fault")
            now = wall_clock_us()
            ticks = [msgspec.structs.replace(t, ts_ingest=now, ts_event=now + k)  # fresh prices
                     for k, t in enumerate(crash_ticks())]
            # the crash and the memory limit in one transaction: the keeper reads the crash, decides,
            # and finds its intents refused
            async with client.pipeline(transaction=True) as pipe:
                for t in ticks:
                    pipe.xadd(log.key, {"e": msgspec.json.encode(t)})
                pipe.config_set("maxmemory", 1)
                pipe.config_set("maxmemory-policy", "noeviction")
                await pipe.execute()
            with pytest.raises(LogRefused):
                await log.append([ev.FeedStale(event_id="probe", ts_event=1, symbol="X")])

            async def refused() -> Any:
                status, body = await _get(daemon, "/readyz")
                return body if status == 503 and any("waits for redis" in r for r in body["reasons"]) \
                    else None

            body = await _until(refused, 10, "/readyz names the role waiting on refused writes")
            assert any("refused" in r for r in body["reasons"]), body
            metrics = (await _get(daemon, "/metrics"))[1]
            assert _metric(metrics, "keeper_redis_refused_writes_total") > 0
            assert health.REDIS.refused_writes > refused_before

            async def sampled() -> bool:  # the sampler reads INFO every 0.1 s
                text = (await _get(daemon, "/metrics"))[1]
                return _metric(text, "keeper_redis_maxmemory_bytes") == 1

            await _until(sampled, 5, "maxmemory in /metrics")
            assert daemon.projectors[0].holding > 0, "the decision is held, not lost"
            entries = await read_all(log)
            assert not [e for e in entries if isinstance(e.event, ev.LiquidationIntended)]

            await client.config_set("maxmemory", 0)
            await _until(lambda: _ready(daemon), 20, "ready again once Redis takes writes")
            entries = await read_all(log)
            intents = [e.event for e in entries if isinstance(e.event, ev.LiquidationIntended)]
            assert intents and len({i.event_id for i in intents}) == len(intents)
            assert daemon.projectors[0].holding == 0
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()
        await log.close()


async def test_a_daemon_started_while_redis_is_down_waits_and_starts(own_redis: EmbeddedRedis,
                                                                     tmp_path: Path) -> None:
    own_redis.kill()
    d = Daemon(_cfg(own_redis.url, tmp_path), roles=["keeper", "admin"], block_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await _until(lambda: asyncio.sleep(0, d.admin_port), 10, "admin answers at once")
        status, body = await _get(d, "/readyz")
        assert status == 503 and any("redis" in r for r in body["reasons"])
        assert (await _get(d, "/healthz"))[0] == 200
        await asyncio.sleep(1.0)
        assert not task.done() and not d.started.is_set()
        own_redis.start()
        await asyncio.wait_for(d.started.wait(), 20)
        await _until(lambda: _ready(d), 20, "ready once Redis is up")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_ride_through_waits_out_log_errors_and_stops_when_told() -> None:
    calls: list[int] = []

    async def role() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise LogUnavailable("down")

    stop = asyncio.Event()
    await ride_through("r", role, stop, backoff=lambda _a: 0.0)
    assert len(calls) == 3 and "r" not in health.REDIS.waiting

    async def broken() -> None:
        raise LogError("always")

    stop.set()
    await asyncio.wait_for(ride_through("b", broken, stop, backoff=lambda _a: 0.0), 2)
    health.REDIS.recovered("b")

    async def bug() -> None:
        raise RuntimeError("a bug is not waited out")

    with pytest.raises(RuntimeError):
        await ride_through("c", bug, asyncio.Event())


async def test_wait_event_never_swallows_a_cancellation() -> None:
    never = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait_event(never, 0.001)

    for _ in range(50):
        task = asyncio.create_task(loop())
        await asyncio.sleep(0.003)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)


_STUCK = """
import asyncio, sys, time
from keeper.app.cmd_run import serve
from keeper.app.config import load_config

class Stuck:
    config = load_config(None, env={}, register_secrets=False)
    async def run(self, stop):
        await stop.wait()
        print("stopping", flush=True)
        time.sleep(600)  # a shutdown stuck where the loop cannot help

print("ready", flush=True)
asyncio.run(serve(Stuck(), grace_s=float(sys.argv[1])))
"""


def test_sigterm_ends_a_stuck_shutdown_within_the_grace_period() -> None:
    with subprocess.Popen([sys.executable, "-c", _STUCK, "1.0"], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        _stop_stuck(proc)


def _stop_stuck(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.terminate()
        code = proc.wait(timeout=10)
        took = time.monotonic() - t0
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1, out
    assert 0.9 <= took < 5, took
    assert "shutdown_deadline" in out


@pytest.mark.timeout(60)
def test_keeper_run_exits_0_on_sigterm_while_redis_is_down(own_redis: EmbeddedRedis,
                                                          tmp_path: Path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[redis]\nurl = "{own_redis.url}"\nblock_ms = 50\n[admin]\nport = 0\n'
                   '[log]\nformat = "json"\n')
    with subprocess.Popen([sys.executable, "-m", "keeper.app.cli", "run", "--config", str(cfg),
                           "--role", "keeper", "--role", "admin"], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        _stop_during_outage(proc, own_redis)


def _stop_during_outage(proc: subprocess.Popen[str], own_redis: EmbeddedRedis) -> None:
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "daemon_started" in line:
                break
        own_redis.kill()
        time.sleep(2.0)
        assert proc.poll() is None, "a lost Redis does not end the process"
        t0 = time.monotonic()
        proc.terminate()
        code = proc.wait(timeout=30)
        took = time.monotonic() - t0
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, out[-2000:]
    assert took < 20, took
    assert "daemon_stopped" in out
