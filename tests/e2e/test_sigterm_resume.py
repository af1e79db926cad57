"""``keeper run`` as a subprocess against the private Redis and the reference venue: SIGTERM in the
middle of a busy crash exits 0 with a snapshot written; the next start resumes from that
snapshot (not from zero) and nothing is accepted twice by the venue."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from keeper.domain.decide import KeeperCore
from keeper.sim.prices import synthetic_crash
from keeper.sim.server import SimServer, start_sim
from keeper.store.snapshots import RedisSnapshotStore

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-secret-not-real"


def _toml(venue: str, redis_url: str) -> str:
    ws = venue.replace("http://", "ws://")
    return f"""
[keeper]
profile = "generic-perp"
mode = "live"
[redis]
url = "{redis_url}"
block_ms = 100
[snapshots]
interval_s = 0.5
[feeds]
staleness_ms = 10000
max_jump = "0.5"
accounts_url = "{ws}/accounts"
fixed_prices = {{ USDC = "1" }}
[[feeds.sources]]
kind = "binance"
name = "venue"
url = "{ws}/prices"
symbols = {{ "BTC-USD" = "BTCUSDT", "ETH-USD" = "ETHUSDT", "SOL-USD" = "SOLUSDT" }}
[execution]
executor = "sim"
url = "{venue}"
intent_ttl_s = 30.0
[guards]
max_liquidations = 1000000
max_notional = "1000000000000"
[admin]
port = 0
[log]
format = "json"
level = "info"
"""


async def _start(config: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "KEEPER_HMAC_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keeper.app.cli", "run", "--config", str(config), "--consumer", "e2e",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, list[dict[str, object]]]:
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    lines = []
    for raw in out.decode().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    assert proc.returncode is not None
    return proc.returncode, lines


async def _until(cond: object, timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.mark.timeout(120)
async def test_sigterm_mid_crash_snapshots_and_resume_submits_nothing_twice(
        redis_url: str, tmp_path: Path) -> None:
    path = synthetic_crash(1)[::5]  # 361 ticks, 5 s apart
    sim: SimServer = await start_sim(SECRET.encode(), accounts=400, seed=3, path=path, speed=50.0,
                                     play=False)  # ~36 s of crash
    client = aioredis.from_url(redis_url)
    proc: asyncio.subprocess.Process | None = None
    try:
        cfg = tmp_path / "keeper.toml"
        cfg.write_text(_toml(sim.url, redis_url))
        proc = await _start(cfg)
        await _until(lambda: len(sim._sockets) >= 2, 20)
        await asyncio.sleep(1.0)  # the book is projected
        sim.play()
        await _until(lambda: sim.venue.stats.accepted >= 5, 40)  # busy: liquidating
        code, lines = await _stop(proc)
        proc = None
        assert code == 0, lines[-5:]
        events = [ln.get("event") for ln in lines]
        assert "daemon_stopped" in events
        snaps = RedisSnapshotStore(client, format=KeeperCore.FORMAT)
        saved = await snaps.load("keeper-generic-perp")
        assert saved is not None, "a snapshot is written on SIGTERM"
        offset = saved[0]
        accepted_first = sim.venue.stats.accepted

        proc = await _start(cfg)
        await _until(sim.played.is_set, 60)
        await asyncio.sleep(3.0)  # the last decisions go out and come back
        code, lines = await _stop(proc)
        proc = None
        assert code == 0
        started = [ln for ln in lines if ln.get("event") == "projector_started"]
        assert started and started[0]["restored_from"] == offset, "resumes from the snapshot"
        assert started[0]["restored_from"] not in (None, "0-0")
        stats = sim.venue.stats_view()
        assert stats["accepted"] > accepted_first, "the second run liquidates too"
        assert stats["accepted_by_intent"], "the venue accepted some"
        assert all(n == 1 for n in stats["accepted_by_intent"].values()), "nothing accepted twice"
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await client.aclose()
        await sim.stop()
