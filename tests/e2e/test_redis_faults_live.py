"""The issue's fault test: during a live crash against the reference venue, Redis is killed for
``OUTAGE_S`` and restarted, then held at ``maxmemory`` for ``OUTAGE_S``. The daemon process never
exits, ``/readyz`` goes false and back true each time, every liquidation the venue accepted is
recorded once with its outcome, every live intent has exactly one outcome, and a replay of the
log re-derives every decision (0 divergences)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from keeper.app import cli
from keeper.domain import events as ev
from keeper.sim.prices import synthetic_crash
from keeper.sim.server import SimServer, start_sim
from keeper.store.embedded import EmbeddedRedis
from keeper.store.redis_log import RedisEventLog
from tests.e2e.test_sigterm_resume import SECRET, _toml

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_S = float(os.environ.get("KEEPER_FAULT_OUTAGE_S", "30"))
"""How long each fault lasts (the issue: 30 s; shorter for a quick local run)."""


class Watch:
    """Polls ``/readyz`` of the daemon every 0.2 s and keeps what it saw."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.seen: list[tuple[float, bool, list[str]]] = []

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while not stop.is_set():
                if self.port is not None:
                    try:
                        async with http.get(f"http://127.0.0.1:{self.port}/readyz") as r:
                            body = await r.json()
                            self.seen.append((time.monotonic(), r.status == 200,
                                              list(body.get("reasons", []))))
                    except (aiohttp.ClientError, TimeoutError, ValueError):
                        self.seen.append((time.monotonic(), False, ["no answer"]))
                await asyncio.sleep(0.2)

    def ready_since(self, t: float) -> bool:
        return any(ok for at, ok, _ in self.seen if at >= t)

    def not_ready_between(self, t0: float, t1: float, word: str) -> bool:
        return any(not ok and any(word in r for r in reasons)
                   for at, ok, reasons in self.seen if t0 <= at <= t1)


async def _lines(proc: asyncio.subprocess.Process, out: list[dict[str, Any]], watch: Watch) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        out.append(line)
        if line.get("event") == "admin_started":
            watch.port = int(line["port"])


async def _until(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(240 + 4 * OUTAGE_S)
async def test_redis_killed_then_full_during_a_live_crash(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendfsync="always")
    url = server.start()
    # the crash outlasts both faults: 361 ticks, 5 s apart, played at 20x
    path = synthetic_crash(1)[::5]
    speed = max(20.0, len(path) * 5 / (2 * OUTAGE_S + 40))
    sim: SimServer = await start_sim(SECRET.encode(), accounts=400, seed=7, path=path, speed=speed,
                                     play=False)
    client = aioredis.from_url(url)
    cfg = tmp_path / "keeper.toml"
    cfg.write_text(_toml(sim.url, url))
    env = {**os.environ, "KEEPER_HMAC_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keeper.app.cli", "run", "--config", str(cfg), "--consumer", "e2e",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[dict[str, Any]] = []
    watch = Watch()
    stop_watch = asyncio.Event()
    reader = asyncio.create_task(_lines(proc, lines, watch))
    watcher = asyncio.create_task(watch.run(stop_watch))
    try:
        await _until(lambda: len(sim._sockets) >= 2 and watch.port is not None, 30, "daemon up")
        await _until(lambda: watch.ready_since(time.monotonic() - 0.5), 30, "ready")
        sim.play()
        await _until(lambda: sim.venue.stats.accepted >= 3, 60, "liquidating")

        # 1. Redis killed, down for OUTAGE_S, restarted on its AOF
        t_kill = time.monotonic()
        server.kill()
        await asyncio.sleep(OUTAGE_S)
        assert proc.returncode is None, "the daemon exited while Redis was down"
        server.start()
        t_back = time.monotonic()
        await _until(lambda: watch.ready_since(t_back), 60, "ready after the restart")
        assert watch.not_ready_between(t_kill, t_back, "redis")
        accepted_before_full = sim.venue.stats.accepted

        # 2. Redis full: every write refused for OUTAGE_S
        t_full = time.monotonic()
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", 1)
        await asyncio.sleep(OUTAGE_S)
        assert proc.returncode is None, "the daemon exited while Redis refused writes"
        await client.config_set("maxmemory", 0)
        t_free = time.monotonic()
        await _until(lambda: watch.ready_since(t_free), 60, "ready after memory was freed")
        assert watch.not_ready_between(t_full, t_free, "redis")

        await _until(sim.played.is_set, 300, "the crash played out")
        await asyncio.sleep(5.0)  # the last decisions go out and come back
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 0, [ln for ln in lines if ln.get("level") in ("error", "critical")][-5:]
    finally:
        stop_watch.set()
        await asyncio.gather(watcher, return_exceptions=True)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.gather(reader, return_exceptions=True)
        await sim.stop()

    try:
        log = await RedisEventLog.connect(url)
        entries = [e.event for e in await log.read("0-0", 10_000_000)]
        await log.close()
        stats = sim.venue.stats_view()
        accepted: dict[str, int] = stats["accepted_by_intent"]
        assert sim.venue.stats.accepted > accepted_before_full, "it liquidated after both faults"
        assert accepted and all(n == 1 for n in accepted.values()), "nothing accepted twice"
        outcomes: dict[str, list[ev.Event]] = {}
        for e in entries:
            if isinstance(e, ev.LiquidationConfirmed | ev.LiquidationRejected | ev.LiquidationExpired):
                outcomes.setdefault(e.intent_id, []).append(e)
        live = [e.decision.intent_id for e in entries
                if isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live"]
        assert live
        assert not [i for i in live if len(outcomes.get(i, [])) != 1], "one outcome per intent"
        for intent_id in accepted:  # accepted by the venue -> recorded as confirmed, once
            (outcome,) = outcomes[intent_id]
            assert isinstance(outcome, ev.LiquidationConfirmed), (intent_id, outcome)
        confirmed = {i for i, o in outcomes.items() if isinstance(o[0], ev.LiquidationConfirmed)}
        assert confirmed == set(accepted), "no confirmation without an acceptance"

        # 3. the log replays: every decision re-derived, 0 divergences
        rc = await asyncio.to_thread(cli.main, ["replay", "--redis-url", url, "--verify"])
        assert rc == 0
    finally:
        await client.aclose()
        server.stop()
