"""The daemon's wiring: roles, config errors, the price pipeline it builds, intent stamping."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from keeper.app.config import FeedSource, load_config
from keeper.app.daemon import Daemon, StampingLog, build_pipeline, read_all
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
