"""Price paths: the seeded synthetic crash and the adapter for recorded sequences."""

from __future__ import annotations

import gzip
import itertools
from decimal import Decimal
from pathlib import Path

import pytest

from keeper.sim.prices import (
    CrashParams,
    load_file,
    normalise_symbol,
    price_path,
    stream_symbol,
    synthetic_crash,
)

D = Decimal


def test_synthetic_crash_is_seeded_and_lands_on_the_stated_drops() -> None:
    a, b, c = synthetic_crash(1), synthetic_crash(1), synthetic_crash(2)
    assert a == b and a != c
    assert len(a) == 1801
    assert all(y.ts_us - x.ts_us == 1_000_000 for x, y in itertools.pairwise(a))
    assert a[0].prices == {"BTC-USD": D(60000), "ETH-USD": D(3000), "SOL-USD": D(150)}
    assert a[-1].prices == {"BTC-USD": D(45000), "ETH-USD": D(1950), "SOL-USD": D("82.5")}


def test_synthetic_crash_wicks_about_ten_percent_below_the_curve() -> None:
    p = CrashParams()
    path = synthetic_crash(1, p)
    at = int(p.wick_at * p.duration_s)
    x = p.wick_at
    curve = x * x * (3 - 2 * x)
    expected = 60000 * (1 - 0.25 * curve) * 0.9
    assert abs(float(path[at].prices["BTC-USD"]) / expected - 1) < 0.01
    before = float(path[at - 40].prices["BTC-USD"])
    assert float(path[at].prices["BTC-USD"]) < before * 0.93


def test_symbols_from_recorded_data_map_to_market_names() -> None:
    for raw in ("BTCUSDT", "BTC/USDT", "BTCUSD_PERP", "BTC-USD", "btc", "BTC-USDT"):
        assert normalise_symbol(raw) == "BTC-USD", raw
    assert stream_symbol("ETH-USD") == "ETHUSDT"


def test_price_path_adapts_floats_and_merges_same_time_and_refuses_bad_input() -> None:
    path = price_path([(1, {"BTCUSDT": 60000.5}), (1, {"ETH/USDT": "3000"}), (2, {"BTC": D(1)})])
    assert [t.ts_us for t in path] == [1, 2]
    assert path[0].prices == {"BTC-USD": D("60000.5"), "ETH-USD": D(3000)}
    with pytest.raises(ValueError, match="back in time"):
        price_path([(2, {"BTC": 1}), (1, {"BTC": 1})])
    for bad in (0, -1, "NaN", float("inf")):
        with pytest.raises(ValueError, match="finite and > 0"):
            price_path([(1, {"BTC": bad})])


def test_load_file_reads_csv_and_gzipped_ndjson(tmp_path: Path) -> None:
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("ts_us,symbol,price\n2,BTCUSDT,61000\n1,BTCUSDT,60000\n1,ETHUSDT,3000\n")
    assert load_file(csv_file) == price_path([(1, {"BTC-USD": D(60000), "ETH-USD": D(3000)}),
                                             (2, {"BTC-USD": D(61000)})])
    nd = tmp_path / "p.ndjson.gz"
    with gzip.open(nd, "wt") as f:
        f.write('{"ts_us": 5, "prices": {"SOLUSDT": "150.5"}}\n\n')
        f.write('{"ts_us": 6, "prices": {"SOLUSDT": "149"}}\n')
    assert [t.prices["SOL-USD"] for t in load_file(nd)] == [D("150.5"), D(149)]
