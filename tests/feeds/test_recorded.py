"""Recorded prices: loaders checked against each other on real slices of ../shared/data, the
bar-to-quote paths, and the paced player through the live normaliser."""

from __future__ import annotations

import asyncio
import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from keeper.domain.events import FeedRecovered, FeedStale, PriceUpdated
from keeper.feeds.combine import MarketLimits
from keeper.feeds.ingest import Ingest
from keeper.feeds.pipeline import PricePipeline
from keeper.feeds.recorded import (
    TIDY,
    Bar,
    Player,
    Series,
    bar_quotes,
    data_dir,
    list_windows,
    load_binance_klines,
    load_feather,
    load_file,
    load_freqtrade_json,
    load_tidy,
    load_trades,
    merge_quotes,
    parse_speed,
)
from keeper.testing import MemoryEventLog

M = 60_000_000


def _by_ts(bars: list[Bar]) -> dict[int, Bar]:
    return {b.ts_us: b for b in bars}


def test_freqtrade_json_matches_the_raw_file_and_the_tidy_window(data_dir: Path) -> None:
    path = data_dir / "2021-05-19" / "BTC_USDT-1m.json.gz"
    s = load_freqtrade_json(path)
    raw = json.loads(gzip.decompress(path.read_bytes()))
    assert (s.source, s.symbol, s.resolution_us, len(s.bars)) == ("binance", "BTC/USDT", M, len(raw))
    assert s.bars[0] == Bar(raw[0][0] * 1000, *(Decimal(str(x)) for x in raw[0][1:5]))
    [tidy] = load_tidy(data_dir / TIDY, "2021-05-19", symbols=["BTC/USDT"])
    full = _by_ts(s.bars)
    assert len(tidy.bars) > 1000
    assert all(full[b.ts_us] == b for b in tidy.bars)
    # the README's worst move: BTC to 30,000 at 13:10 UTC on 2021-05-19
    low = min(tidy.bars, key=lambda b: b.low)
    assert low.low == Decimal(30000)


def test_feather_matches_the_tidy_window(data_dir: Path) -> None:
    s = load_feather(data_dir / "2024-08-05" / "BTC_USDT-1m.feather")
    assert (s.symbol, s.resolution_us) == ("BTC/USDT", M)
    tidy = [x for x in load_tidy(data_dir / TIDY, "2024-08-05", symbols=["BTC/USDT"]) if x.resolution_us == M]
    assert tidy, "the 2024-08-05 tidy window has BTC/USDT at 1m"
    full = _by_ts(s.bars)
    assert all(full[b.ts_us].close == b.close and full[b.ts_us].low == b.low for b in tidy[0].bars)


def test_binance_vision_klines_match_the_tidy_window(data_dir: Path) -> None:
    s = load_binance_klines(data_dir / "2025-10-10" / "BTCUSD_PERP-1m-2025-10-10.zip")
    assert (s.symbol, s.resolution_us, len(s.bars)) == ("BTCUSD_PERP", M, 1440)
    [tidy] = load_tidy(data_dir / TIDY, "2025-10-10", symbols=["BTCUSD_PERP"])
    full = _by_ts(s.bars)
    shared = [b for b in tidy.bars if b.ts_us in full]
    assert len(shared) > 100
    assert all(full[b.ts_us] == b for b in shared)


def test_trades_aggregate_to_the_tidy_one_minute_bars(data_dir: Path) -> None:
    s = load_trades(data_dir / "2025-10-10" / "gemini_trades_2025-10-10_BTCUSD.csv.gz")
    assert (s.source, s.symbol, s.resolution_us) == ("gemini", "BTCUSD", 0)
    assert [b.ts_us for b in s.bars] == sorted(b.ts_us for b in s.bars)
    minutes: dict[int, list[Decimal]] = {}
    for b in s.bars:
        minutes.setdefault(b.ts_us // M * M, []).append(b.close)
    [tidy] = load_tidy(data_dir / TIDY, "2025-10-10", symbols=["BTC/USD"], venue="gemini")
    assert len(tidy.bars) > 100
    for b in tidy.bars:
        px = minutes[b.ts_us]
        assert (px[0], max(px), min(px), px[-1]) == (b.open, b.high, b.low, b.close)


def test_coinapi_json_matches_the_tidy_window(data_dir: Path) -> None:
    s = load_file(data_dir / "2020-03-12_black_thursday" / "stablesims_ETH_10min_03-12-2020.json")
    assert (s.source, s.symbol, s.resolution_us, len(s.bars)) == ("coinapi", "ETH/USD", 10 * M, 144)
    [tidy] = load_tidy(data_dir / TIDY, "2020-03-12", symbols=["ETH/USD"])
    assert [(b.ts_us, b.close) for b in tidy.bars] == [(b.ts_us, b.close) for b in s.bars]


def test_load_file_dispatches_on_the_name(data_dir: Path) -> None:
    assert load_file(data_dir / "2022-06_and_2022-11" / "ETH_USDT-5m-futures.json.gz").resolution_us == 5 * M
    with pytest.raises(ValueError, match="unknown recording format"):
        load_file(data_dir / "README.md")


def test_list_windows_has_the_index_and_the_files(data_dir: Path) -> None:
    windows = list_windows(data_dir)
    tidy = [w for w in windows if w["kind"] == "tidy"]
    files = [w["path"] for w in windows if w["kind"] == "file"]
    assert {w["event"] for w in tidy} >= {"2020-03-12", "2021-05-19", "2024-08-05", "2025-10-10"}
    assert "2024-08-05/BTC_USDT-1m.feather" in files
    assert all((data_dir / f).is_file() for f in files)


def test_data_dir_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEEPER_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir("/x") == Path("/x")


# ---------------------------------------------------------------- bars -> quotes, player

FALLING = Bar(0, Decimal(100), Decimal(104), Decimal(80), Decimal(90))
RISING = Bar(M, Decimal(90), Decimal(120), Decimal(88), Decimal(110))


def test_close_path_publishes_at_bar_close() -> None:
    qs = list(bar_quotes(Series("v", "BTC", M, [FALLING, RISING])))
    assert [(q.price, q.publish_time) for q in qs] == [(Decimal(90), M), (Decimal(110), 2 * M)]


def test_ohlc_path_sees_the_wick_in_the_bars_direction() -> None:
    qs = list(bar_quotes(Series("v", "BTC", M, [FALLING, RISING]), path="ohlc"))
    assert [q.price for q in qs] == [Decimal(x) for x in (100, 80, 104, 90, 90, 120, 88, 110)]
    times = [q.publish_time for q in qs]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_merge_orders_by_time_and_maps_symbols() -> None:
    a = Series("v", "BTC/USDT", M, [FALLING, RISING])
    b = Series("v", "ETH/USDT", M, [Bar(M // 2, *(Decimal(5),) * 4)])
    qs = merge_quotes([a, b], symbol_map={"BTC/USDT": "BTC-USD"})
    assert [(q.symbol, q.publish_time) for q in qs] == [("BTC-USD", M), ("ETH/USDT", M + M // 2),
                                                        ("BTC-USD", 2 * M)]


@pytest.mark.parametrize(("text", "speed"), [("max", None), ("realtime", 1.0), ("x60", 60.0), ("2.5", 2.5)])
def test_parse_speed(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


def test_parse_speed_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        parse_speed("x0")


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


async def test_player_paces_at_speed_and_records_through_the_guards() -> None:
    bars = [Bar(i * M, *(Decimal(100 + i),) * 4) for i in range(5)]
    bars[2] = Bar(2 * M, *(Decimal(0),) * 4)  # a zero price in the recording: rejected, not recorded
    quotes = list(bar_quotes(Series("rec", "BTC", M, bars)))
    log = MemoryEventLog()
    ingest = Ingest(log, conflate=False)
    writer = asyncio.create_task(ingest.run())
    ft = FakeTime()
    stats = await Player(ingest, speed=60.0, monotonic=ft.monotonic, sleep=ft.sleep).play(quotes)
    await ingest.close()
    await writer
    assert stats["quotes"] == 5
    assert ft.slept == pytest.approx([1.0] * 4)  # one minute of data per second at x60
    prices = [e.event.price for e in await log.read() if isinstance(e.event, PriceUpdated)]
    assert prices == [Decimal(100), Decimal(101), Decimal(103), Decimal(104)]
    assert [d.reason for d in await log.dead_letters()] == ["zero"]


async def test_player_reports_a_gap_in_the_recording_as_stale_in_data_time() -> None:
    times = [0, 1, 2, 10, 11]  # minutes; nothing between 2 and 10
    quotes = list(bar_quotes(Series("rec", "ETH", M, [Bar(t * M, *(Decimal(7),) * 4) for t in times])))
    log = MemoryEventLog()
    ingest = Ingest(log, pipeline=PricePipeline(default=MarketLimits(stale_after_us=3 * M)), conflate=False)
    writer = asyncio.create_task(ingest.run())
    await Player(ingest, speed=None).play(quotes)
    await ingest.close()
    await writer
    kinds = [type(e.event).__name__ for e in await log.read()]
    assert kinds == ["PriceUpdated"] * 3 + ["FeedStale", "PriceUpdated", "FeedRecovered", "PriceUpdated"]
    events = [e.event for e in await log.read()]
    assert isinstance(events[3], FeedStale) and isinstance(events[5], FeedRecovered)
    assert events[3].ts_event == 11 * M  # seen when the data's clock reached the next bar
