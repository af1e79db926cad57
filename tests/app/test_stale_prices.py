"""Prices old by the wall clock are stale, however they reached the log (an old log imported
into a running daemon showed feeds 193 s old as "ok" and answered /readyz ready): /feeds says
stale, /readyz is not ready and names them; a price arriving already older than the limit makes
its market stale in the log before it is recorded; and a live decision on such prices is
recorded withheld (never submitted) with the market made stale, the bucket freed, and replay
--verify counting it as the same decision."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import msgspec

from keeper.app.config import load_config
from keeper.app.freshness import WITHHELD, FreshnessGuard
from keeper.app.metrics import Metrics
from keeper.app.status import Status
from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.feeds.combine import MarketLimits
from keeper.feeds.parsers import Quote
from keeper.feeds.pipeline import PricePipeline
from keeper.replay.verify import Verifier

D = Decimal
NOW = 1_796_000_000_000_000  # the wall clock
OLD = NOW - 193_000_000  # 193 s before it


def _core(price_at: int) -> KeeperCore:
    core = KeeperCore(KeeperParams(profile="generic-perp", mode="live"))
    events: list[ev.Event] = [
        ev.AssetListed(event_id="usdc", ts_event=price_at, params=AssetParams(symbol="USDC", decimals=6)),
        ev.MarketListed(event_id="btc", ts_event=price_at,
                        params=MarketParams(symbol="BTC-USD", mmf=D("0.01"))),
        ev.PriceUpdated(event_id="p-usdc", ts_event=price_at, symbol="USDC", price=D(1), source="fixed"),
        ev.PriceUpdated(event_id="p-btc", ts_event=price_at, symbol="BTC-USD", price=D(100)),
        ev.Deposit(event_id="d", ts_event=price_at, account="a", bucket=CROSS, asset="USDC", amount=D(20)),
        ev.PositionChanged(event_id="p", ts_event=price_at, account="a", bucket=CROSS, market="BTC-USD",
                           size=D(10), entry_price=D(100)),
    ]
    for n, e in enumerate(events, start=1):
        core.handle(f"{n}-0", e)
    return core


class _Log:
    async def last_id(self) -> str:
        return "6-0"


def _status(core: KeeperCore) -> Status:
    cfg = load_config(None, env={"KEEPER_FEEDS__FIXED_PRICES": '{USDC = "1"}'})
    daemon: Any = SimpleNamespace(cores=lambda: [core], metrics=Metrics(), config=cfg,
                                  roles_running=lambda: True,
                                  projectors=[SimpleNamespace(name="keeper", position="6-0")],
                                  pipeline=None, chain_ingest=None, profiles=("generic-perp",),
                                  roles=("keeper", "admin"))
    return Status(daemon, _Log())  # type: ignore[arg-type]


async def test_prices_old_by_the_wall_clock_are_stale_and_not_ready(monkeypatch: Any) -> None:
    import keeper.app.status as status_mod

    monkeypatch.setattr(status_mod, "wall_clock_us", lambda: NOW)
    st = _status(_core(OLD))
    ok, details = await st.ready()
    assert not ok
    assert details["stale_prices"] == {"BTC-USD": 193.0}  # USDC: a fixed price, never stale
    assert any(r.startswith("stale prices: BTC-USD 193 s old (limit 5 s") for r in details["reasons"])
    feeds = {f["symbol"]: f["state"] for f in await st.feeds()}
    assert feeds == {"BTC-USD": "stale", "USDC": "fixed"}
    summary = await st.summary()
    assert summary["mode"] == "paper" and summary["ready"] is False and summary["feeds"] == 0

    fresh = _status(_core(NOW - 1_000_000))
    ok, details = await fresh.ready()
    assert ok, details["reasons"]
    assert {f["state"] for f in await fresh.feeds()} == {"ok", "fixed"}


def test_a_price_already_old_when_it_arrives_makes_its_market_stale_before_it_is_recorded() -> None:
    pipe = PricePipeline(default=MarketLimits(stale_after_us=5_000_000), check_age=True)
    out = pipe.process_quotes([Quote("binance", "BTC-USD", D(100), OLD)], NOW)
    assert [type(e).__name__ for e in out.events] == ["FeedStale", "PriceUpdated"]
    stale = out.events[0]
    assert isinstance(stale, ev.FeedStale) and stale.reason == "stale" and "193000 ms" in stale.detail
    out = pipe.process_quotes([Quote("binance", "BTC-USD", D(101), NOW - 1000)], NOW)  # fresh: back
    assert [type(e).__name__ for e in out.events] == ["PriceUpdated", "FeedRecovered"]
    # without check_age (a recording played at its own pace) the publish time is not judged
    out = PricePipeline().process_quotes([Quote("binance", "BTC-USD", D(100), OLD)], NOW)
    assert [type(e).__name__ for e in out.events] == ["PriceUpdated"]


def _crash(core: KeeperCore, at: int) -> list[ev.Event]:
    return core.handle("7-0", ev.PriceUpdated(event_id="crash", ts_event=at, symbol="BTC-USD", price=D(98.5)))


def test_a_live_decision_on_old_prices_is_recorded_withheld_and_the_market_stale() -> None:
    core = _core(OLD)
    intents = _crash(core, OLD + 1)
    [intent] = intents
    assert isinstance(intent, ev.LiquidationIntended) and intent.decision.mode == "live"
    guard = FreshnessGuard(5_000_000, lambda: core.state, fixed={"USDC"}, now_us=lambda: NOW)
    out = guard.screen(intents)
    assert [type(e).__name__ for e in out] == ["LiquidationIntended", "FeedStale", "LiquidationExpired"]
    held = out[0]
    assert isinstance(held, ev.LiquidationIntended) and held.decision.mode == WITHHELD
    assert msgspec.structs.replace(held.decision, mode="live") == intent.decision
    assert isinstance(out[2], ev.LiquidationExpired) and "BTC-USD 193.0 s old" in out[2].reason
    # read back: the bucket is free, the market unsafe: no decision again on the same old prices
    for n, e in enumerate(out, start=8):
        assert core.handle(f"{n}-0", e) == []
    assert core.state.busy == {} and core.state.unsafe == {"BTC-USD": "stale"}
    # a fresh price brings the market back
    entry = SimpleNamespace(id="20-0", event=ev.PriceUpdated(event_id="fresh", ts_event=NOW - 1000,
                                                             symbol="BTC-USD", price=D(98)))
    [back] = guard.recover([entry])
    assert isinstance(back, ev.FeedRecovered) and back.symbol == "BTC-USD"
    # a decision on fresh prices passes untouched
    fresh = _core(NOW - 2_000_000)
    decided = _crash(fresh, NOW - 1_000_000)
    assert FreshnessGuard(5_000_000, lambda: fresh.state, now_us=lambda: NOW).screen(decided) == decided


def test_verify_counts_a_withheld_decision_as_the_same_decision() -> None:
    core = _core(OLD)
    [intent] = _crash(core, OLD + 1)
    assert isinstance(intent, ev.LiquidationIntended)
    guard = FreshnessGuard(5_000_000, lambda: core.state, now_us=lambda: NOW)
    held = guard.screen([intent])[0]
    assert isinstance(held, ev.LiquidationIntended)
    v = Verifier()
    v.after("7-0", ev.PriceUpdated(event_id="crash", ts_event=OLD + 1, symbol="BTC-USD", price=D(98.5)),
            [intent])
    v.after("8-0", held, [])
    report = v.finish()
    assert report.ok and report.withheld == 1 and report.agreed == 1
    other = msgspec.structs.replace(held, decision=msgspec.structs.replace(held.decision, size=D(1)))
    v2 = Verifier()
    v2.after("7-0", ev.PriceUpdated(event_id="crash", ts_event=OLD + 1, symbol="BTC-USD", price=D(98.5)),
             [intent])
    v2.after("8-0", other, [])
    assert not v2.finish().ok  # withheld and different: still a divergence


async def test_an_old_log_imported_into_a_running_live_daemon_records_no_live_intent(
        redis_url: str, tmp_path: Any, capsys: Any) -> None:
    """The issue's case: a live daemon on an empty log, an old log imported under it. The keeper
    decides what the old log's crash calls for, but records each decision withheld (never
    submitted), the market stale, /readyz not ready; and the log replays with 0 divergences."""
    import asyncio

    from keeper.app import cli
    from keeper.app.daemon import Daemon, read_all
    from keeper.replay import manifest as mf
    from keeper.store.ndjson import export_log
    from keeper.store.redis_log import RedisEventLog
    from tests.replay.scenario import account_events, crash_ticks, setup_events

    base = load_config(None, env={"KEEPER_HMAC_SECRET": "s3cret-for-tests"}, register_secrets=False)
    r = msgspec.structs.replace
    cfg = r(base, redis=r(base.redis, url=redis_url, data_dir=str(tmp_path / "redis")),
            admin=r(base.admin, port=0), keeper=r(base.keeper, mode="live"),
            execution=r(base.execution, executor="http", url="http://127.0.0.1:1/liquidations"))
    daemon = Daemon(cfg, roles=["keeper", "admin"], block_ms=20)  # no runner: nothing could go out
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    log = await RedisEventLog.connect(redis_url)
    try:
        await asyncio.wait_for(daemon.started.wait(), 15)
        await log.append([*setup_events(), *account_events(), *crash_ticks()])  # a year-old crash
        status = Status(daemon, log)
        for _ in range(200):
            entries = await read_all(log)
            if daemon.projectors[0].position == await log.last_id() and any(
                    isinstance(e.event, ev.LiquidationIntended) for e in entries):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        entries = await read_all(log)
        ok, details = await status.ready()
        live_manifest = await mf.read_redis(log.client)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    intents = [e.event for e in entries if isinstance(e.event, ev.LiquidationIntended)]
    assert intents and {i.decision.mode for i in intents} == {WITHHELD}  # none live
    expired = {e.event.intent_id for e in entries if isinstance(e.event, ev.LiquidationExpired)}
    assert {i.decision.intent_id for i in intents} <= expired
    assert any(isinstance(e.event, ev.FeedStale) and e.event.event_id.startswith("stale-wall:")
               for e in entries)
    assert not ok and any(x.startswith("stale prices:") for x in details["reasons"])

    path = tmp_path / "log.ndjson"
    await export_log(log, path)
    await log.close()
    assert live_manifest is not None
    mf.write_file(mf.manifest_path(path), live_manifest)
    rc = await asyncio.to_thread(cli.main, ["replay", "--ndjson", str(path), "--verify"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.strip().splitlines()[-1].endswith(", 0 divergences")
    assert f"verify: {len(intents)} live decisions were recorded withheld" in out
