"""The daemon's wiring: roles, config errors, the price pipeline it builds, intent stamping."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from keeper.app.config import FeedSource, load_config
from keeper.app.daemon import Daemon, read_all
from keeper.app.feeds_role import build_pipeline
from keeper.app.stamping import StampingLog
from keeper.domain import events as ev
from keeper.errors import ConfigError
from keeper.feeds.parsers import binance_mark_price
from keeper.store.redis_log import RedisEventLog

ROOT = Path(__file__).resolve().parents[2]


def _cfg() -> object:
    base = load_config(None, env={}, register_secrets=False)
    src = (FeedSource(kind="binance", name="venue", url="ws://127.0.0.1:1/prices",
                      symbols={"ETH-USD": "ETHUSDT"}),
           FeedSource(kind="binance", name="assets", url="ws://127.0.0.1:1/prices",
                      symbols={"ETH": "ETHUSDT"}))
    return msgspec.structs.replace(base, feeds=msgspec.structs.replace(base.feeds, sources=src))


def test_unknown_role_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'brain'"):
        Daemon(load_config(None, env={}, register_secrets=False), roles=["keeper", "brain"])


def test_one_frame_prices_the_market_and_its_asset_through_two_sources() -> None:
    pipeline = build_pipeline(_cfg())  # type: ignore[arg-type]
    frame = '{"e":"markPriceUpdate","E":1760054400000,"s":"ETHUSDT","p":"3000.5","T":1760054400000}'
    out_m = pipeline.process_frame("venue", binance_mark_price("venue"), frame, 1)
    out_a = pipeline.process_frame("assets", binance_mark_price("assets"), frame, 1)
    prices = [(e.symbol, e.price) for e in out_m.events + out_a.events if isinstance(e, ev.PriceUpdated)]
    assert prices == [("ETH-USD", Decimal("3000.5")), ("ETH", Decimal("3000.5"))]


async def test_stamping_log_stamps_intents_only(redis_url: str) -> None:
    log = await RedisEventLog.connect(redis_url)
    try:
        d = ev.Decision(intent_id="liq:a/cross@1-0", account="a", bucket="cross", trigger="1-0",
                        trigger_event_id="p1", profile="generic-perp", rule="r", action="close_position")
        price = ev.PriceUpdated(event_id="p1", ts_event=5, ts_ingest=7, symbol="BTC-USD", price=Decimal(1))
        intent = ev.LiquidationIntended(event_id=d.intent_id, ts_event=5, decision=d)
        await StampingLog(log).append([price, intent])
        entries = await read_all(log)
        assert entries[0].event.ts_ingest == 7  # untouched
        assert entries[1].event.ts_ingest > 1_700_000_000_000_000  # the wall clock, in us
    finally:
        await log.close()


def test_keeper_run_names_the_bad_key_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[execution]\ntimeout_s = "soon"\n')
    proc = subprocess.run([sys.executable, "-m", "keeper.app.cli", "run", "--config", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert "execution.timeout_s" in proc.stderr


def _admin_cfg(redis_url: str, tmp_path: Path) -> object:
    base = load_config(None, env={}, register_secrets=False)
    r = msgspec.structs.replace
    return r(base, redis=r(base.redis, url=redis_url, data_dir=str(tmp_path / "redis")),
             admin=r(base.admin, port=0),
             feeds=r(base.feeds, fixed_prices={"USDC": Decimal(1)}))


def _metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of ``/metrics`` (fails when absent)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {key} in /metrics")


async def test_admin_serves_real_metrics_from_the_running_daemon(redis_url: str, tmp_path: Path) -> None:
    """A daemon (feeds with a fixed price, keeper in paper mode, admin) over a crash written to
    its log; /metrics, /readyz, /at-risk and /accounts/{id} are scraped and checked against the
    log itself."""
    import asyncio
    import gc
    from collections import Counter

    import aiohttp

    from keeper.clock import wall_clock_us
    from tests.replay.scenario import account_events, crash_ticks, setup_events

    log = await RedisEventLog.connect(redis_url)
    daemon = Daemon(_admin_cfg(redis_url, tmp_path),  # type: ignore[arg-type]
                    roles=["feeds", "keeper", "admin"], block_ms=20)
    stop = asyncio.Event()
    gc.unfreeze()  # what an earlier test froze: the daemon's own freeze is counted below
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.started.wait(), 15)
        for _ in range(250):  # its projector caught up: the book out of the collector's way
            if gc.get_freeze_count():
                break
            await asyncio.sleep(0.02)
        assert gc.get_freeze_count() > 0, "the daemon froze the heap once its projector caught up"
        now = wall_clock_us()
        ticks = [msgspec.structs.replace(t, ts_ingest=now) for t in crash_ticks()]
        await log.append([*setup_events(), *account_events()])
        await log.append_raw([b"not an event"])  # dead-lettered when the keeper reads it
        await log.append(ticks)
        deadline = asyncio.get_running_loop().time() + 20
        assert daemon.sampler is not None
        seen: list[str] = []
        while True:  # until the keeper has applied the whole log (its own intents included) and
            # the log stays put across a few of its read cycles (no intent still being appended)
            await daemon.sampler.sample()
            last = await log.last_id()
            caught_up = daemon.metrics.log_lag.value() == 0 and daemon.projectors[0].position == last
            seen = [*seen, last] if caught_up else []
            if len(seen) >= 4 and len(set(seen[-4:])) == 1:
                break
            assert asyncio.get_running_loop().time() < deadline, "the keeper did not catch up"
            await asyncio.sleep(0.05)
        entries = await read_all(log)
        types = Counter(ev.event_type(e.event) for e in entries)
        paper = [e.event for e in entries if isinstance(e.event, ev.LiquidationIntended)]
        assert paper and all(e.decision.mode == "paper" for e in paper)

        base = f"http://127.0.0.1:{daemon.admin_port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            async with http.get(f"{base}/readyz") as resp:
                ready = (resp.status, await resp.json())
            async with http.get(f"{base}/at-risk?limit=5") as resp:
                assert resp.status == 200
                at_risk = await resp.json()
            async with http.get(f"{base}/accounts/alice") as resp:
                assert resp.status == 200
                alice = await resp.json()
            async with http.get(f"{base}/accounts/nobody") as resp:
                assert resp.status == 404
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await log.close()
        gc.unfreeze()  # the test process's objects back in the collector's sight

    # applied per event type, exactly what is in the log (not one `all` label)
    assert 'type="all"' not in text
    for name, n in types.items():
        assert _metric(text, "keeper_events_applied_total", f'type="{name}"') == n
    assert _metric(text, "keeper_events_ingested_total", 'type="price_updated"') == 1  # the fixed USDC
    assert _metric(text, "keeper_log_lag_entries") == 0
    assert _metric(text, "keeper_intents_total", 'outcome="paper"') == len(paper)
    assert _metric(text, "keeper_tick_to_intent_seconds_count") == len(paper)
    assert 0 < _metric(text, "keeper_tick_to_intent_seconds_sum") < 60 * len(paper)
    assert _metric(text, "keeper_dead_letters_total", 'reason="bad_json"') == 1
    # the crash left paper-mode buckets liquidatable: at risk, lowest health first
    assert _metric(text, "keeper_buckets_at_risk") >= len({(e.decision.account, e.decision.bucket)
                                                            for e in paper})
    last_btc = next(t.price for t in reversed(ticks) if t.symbol == "BTC-USD")
    assert last_btc > 0
    # the feed is as old as the recorded ticks' log time (wall now - ts_event)
    assert _metric(text, "keeper_feed_staleness_seconds", 'symbol="BTC-USD"') > 1e6
    # caught up, but the crash's prices are a year old by the wall clock: not ready, and why
    assert ready[0] == 503, ready[1]
    assert [r for r in ready[1]["reasons"] if not r.startswith("stale prices: ")] == [], ready[1]
    assert "BTC-USD" in ready[1]["stale_prices"] and "USDC" not in ready[1]["stale_prices"]
    assert ready[1]["behind"] == [] and ready[1]["log_last"] == last
    healths = [Decimal(r["health"]) for r in at_risk]
    assert healths == sorted(healths) and healths[0] < 1 and len(at_risk) == 5
    assert all(r["liquidatable"] == (Decimal(r["health"]) < 1) for r in at_risk)
    assert alice["account"] == "alice"
    [cross] = alice["buckets"]
    assert Decimal(cross["health"]) < 1 and cross["liquidatable"]
    assert Decimal(cross["liquidation_prices"]["BTC-USD"]) > last_btc
