"""Profiles: every venue is listed, the built-in values agree with config/profiles/*.toml,
unknown names fail with the name, and the venues' schedules from the config behave."""

from __future__ import annotations

import itertools
import tomllib
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pytest

from keeper.domain.margin import (
    PROFILE_NAMES,
    Pricing,
    UnknownProfile,
    evaluate,
    get_profile,
    liquidation_price,
)
from keeper.domain.margin.tiers import derive_deductions, maintenance, tiers_from_table
from keeper.domain.model import AssetParams, Bucket, MarketParams, Position
from keeper.errors import KeeperError

D = Decimal
CONFIG = Path(__file__).resolve().parents[3] / "config" / "profiles"
EXPECTED = [
    "generic-perp",
    "binance-usdm",
    "bybit-usdt",
    "kucoin",
    "hyperliquid",
    "dydx-v4",
    "drift-v2",
    "gmx-v2",
    "mango-v4",
    "aave-v3.0",
    "aave-v3.3",
    "compound-v3",
    "compound-v2",
    "morpho-blue",
    "marginfi-v2",
    "vertex",
    "aevo",
]


def _load(name: str) -> dict[str, Any]:
    return tomllib.loads((CONFIG / f"{name}.toml").read_text(encoding="utf-8"))


def test_every_venue_has_a_profile() -> None:
    assert list(PROFILE_NAMES) == EXPECTED
    for name in EXPECTED:
        p = get_profile(name)
        assert p.name == name
        lending = name.startswith(("aave", "compound", "morpho", "marginfi"))
        assert p.kind == ("lending" if lending else "perp")


def test_unknown_profile_names_the_profile() -> None:
    with pytest.raises(UnknownProfile, match="'ftx'") as info:
        get_profile("ftx")
    assert isinstance(info.value, KeeperError)


def _no_floats(node: Any, path: str) -> None:
    if isinstance(node, float):
        raise AssertionError(f"{path}: a float in a profile file")
    if isinstance(node, dict):
        for k, v in node.items():
            _no_floats(v, f"{path}.{k}")
    if isinstance(node, list):
        for i, v in enumerate(node):
            _no_floats(v, f"{path}[{i}]")


@pytest.mark.parametrize("name", EXPECTED)
def test_config_file_agrees_with_the_built_in_profile(name: str) -> None:
    doc = _load(name)
    _no_floats(doc, name)
    table = doc["profile"]
    profile = get_profile(name)
    fields = {f.name for f in msgspec.structs.fields(profile)}
    assert set(table) <= fields, set(table) - fields
    for key, value in table.items():
        got = getattr(profile, key)
        if isinstance(got, Decimal):
            want = Fraction(value) if "/" in value else Fraction(D(value))
            assert Fraction(got) == want or abs(Fraction(got) - want) < Fraction(1, 10**50), key
        else:
            assert got == value, key
    # and every non-default field of the profile is written down
    for f in msgspec.structs.fields(profile):
        v = getattr(profile, f.name)
        if v is not None and v != f.default:
            assert f.name in table, f"{name}: {f.name} missing from the config file"


def test_binance_btcusdt_brackets_from_config() -> None:
    tiers = tiers_from_table(_load("binance-usdm")["markets"]["BTCUSDT"]["tiers"])
    schedule = derive_deductions(tiers)
    assert schedule[1].deduction == 50
    assert schedule[2].deduction == 1300  # the FAQ's Level 3
    assert maintenance(schedule, D(500000)) == D(3700)
    # continuous at every floor
    for lo, hi in itertools.pairwise(schedule):
        assert hi.floor * lo.rate - lo.deduction == hi.floor * hi.rate - hi.deduction


def test_liquidation_price_is_re_solved_in_the_bracket_it_lands_in() -> None:
    tiers = tiers_from_table(_load("binance-usdm")["markets"]["BTCUSDT"]["tiers"])
    markets = {"BTCUSDT": MarketParams(symbol="BTCUSDT", mmf_tiers=tiers)}
    # 3 BTC long at 30,000: $90k notional (the 0.5% bracket); at the liquidation price the
    # notional is under $50k, so the 0.4% bracket applies.
    bucket = Bucket("cross", {"USDT": D(45000)}, {"BTCUSDT": Position("BTCUSDT", D(3), D(30000))})
    prices = {"BTCUSDT": D(30000), "USDT": D(1)}
    p = get_profile("binance-usdm")
    lp = liquidation_price(Pricing(p, markets, {}, prices), bucket, "BTCUSDT")
    assert lp is not None
    assert 3 * lp < 50000
    assert abs(lp - (D(45000) - 3 * D(30000)) / (3 * D("0.004") - 3)) < D("1e-20")
    naive = (D(45000) - 3 * D(30000) - 50) / (3 * D("0.005") - 3)
    assert lp != naive
    h = evaluate(Pricing(p, markets, {}, {**prices, "BTCUSDT": lp}), bucket)
    assert abs(h.equity - h.requirement) < D("1e-50")  # equal to the 60th digit
    below = evaluate(Pricing(p, markets, {}, {**prices, "BTCUSDT": lp - D("1e-9")}), bucket)
    assert below.liquidatable


def test_hyperliquid_tiers_from_config_are_half_the_initial_margin_at_max_leverage() -> None:
    doc = _load("hyperliquid")["markets"]
    btc = derive_deductions(tiers_from_table(doc["BTC"]["tiers"]))
    eth = derive_deductions(tiers_from_table(doc["ETH"]["tiers"]))
    assert btc[0].rate == 1 / D(80)
    assert btc[1].rate == 1 / D(40)
    assert btc[1].deduction == D(150000000) * (D("0.025") - D("0.0125"))
    assert abs(eth[1].rate - 1 / D(30)) < D("1e-28")  # 15x: 1/30, written to 31 places


def test_tier_rows_must_be_decimal_strings() -> None:
    with pytest.raises(KeeperError, match=r"tiers\[0\].rate"):
        tiers_from_table([{"notional_floor": "0", "rate": 0.004}])
    with pytest.raises(KeeperError, match="unknown key"):
        tiers_from_table([{"notional_floor": "0", "rate": "0.004", "mmr": "1"}])


@pytest.mark.parametrize(
    ("name", "equity_eq_requirement_liquidatable"),
    [
        ("binance-usdm", True),
        ("bybit-usdt", True),
        ("kucoin", True),
        ("hyperliquid", False),
        ("dydx-v4", False),
    ],
)
def test_strictness_at_equality_follows_the_venue(
    name: str, equity_eq_requirement_liquidatable: bool
) -> None:
    markets = {"X": MarketParams(symbol="X", mmf=D("0.1"))}
    # equity 10 (collateral, no PnL); requirement 1 * 100 * 0.1 = 10, at the mark and at entry
    bucket = Bucket("b", {"USDC": D(10)}, {"X": Position("X", D(1), D(100))})
    h = evaluate(Pricing(get_profile(name), markets, {}, {"X": D(100), "USDC": D(1)}), bucket)
    assert h.equity == h.requirement == 10
    assert h.liquidatable is equity_eq_requirement_liquidatable


def test_lending_strictness_hf_exactly_one_is_not_liquidatable() -> None:
    assets = {
        "ETH": AssetParams(symbol="ETH", decimals=18, liquidation_threshold=D("0.8")),
        "USDC": AssetParams(symbol="USDC", decimals=6),
    }
    bucket = Bucket("c", {"ETH": D(1), "USDC": D(-1600)})
    for name in ("aave-v3.0", "aave-v3.3", "compound-v3", "compound-v2", "morpho-blue"):
        h = evaluate(Pricing(get_profile(name), {}, assets, {"ETH": D(2000), "USDC": D(1)}), bucket)
        assert h.health_factor == 1, name
        assert not h.liquidatable, name


def test_re_solve_handles_brackets_with_equal_rates_and_a_jump_in_deduction() -> None:
    # Explicit deductions need not be continuous: the line of the upper bracket has the same
    # slope as the lower one, and its root (494.95) is not a root of the lower bracket's line.
    from keeper.domain.model import Tier

    markets = {
        "X": MarketParams(symbol="X", mmf_tiers=(Tier(D(0), D("0.01"), D(0)), Tier(D(1000), D("0.01"), D(5))))
    }
    bucket = Bucket("b", {"USDC": D(1505)}, {"X": Position("X", D(1), D(2000))})
    prices = {"X": D(2000), "USDC": D(1)}
    lp = liquidation_price(Pricing(get_profile("generic-perp"), markets, {}, prices), bucket, "X")
    assert lp is not None
    assert abs(lp - 500) < D("1e-40")
