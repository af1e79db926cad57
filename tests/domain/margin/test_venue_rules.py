"""MarginFi v2, Vertex and Aevo: each rule against the wrong variants it is easy to write
(../shared/vectors/REFERENCE.md section 10: strictness, where the margin is measured, how the
bonus is split, rounding, bad debt), the liquidation bound each venue enforces, and the screen
and ``keeper compare`` taking the three profiles."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from keeper.app.scenario import Scenario, load_scenario
from keeper.domain.margin import (
    BucketHealth,
    LiquidationPlan,
    LiquidationRequest,
    Pricing,
    Profile,
    evaluate,
    get_profile,
    liquidation_price,
    plan_liquidation,
    weighted_health,
)
from keeper.domain.model import AssetParams, Bucket, MarketParams, Position
from keeper.domain.screen import screen_mode
from keeper.replay.compare import compare, load_window

D = Decimal
SCENARIOS = Path(__file__).with_name("scenarios")
MRGN = get_profile("marginfi-v2")
VERTEX = get_profile("vertex")
AEVO = get_profile("aevo")


def _sc(name: str, **changes: Any) -> Scenario:
    doc = json.loads((SCENARIOS / f"{name}.json").read_text(encoding="utf-8"))
    doc.update(changes)
    return load_scenario(json.dumps(doc))


def _pricing(sc: Scenario, profile: Profile | None) -> Pricing:
    """The scenario's pricing context, under ``profile`` where given."""
    return Pricing(profile or sc.profile, sc.markets, sc.assets, sc.prices, sc.extras)


def _health(sc: Scenario, profile: Profile | None = None) -> BucketHealth:
    assert sc.cross is not None
    return evaluate(_pricing(sc, profile), sc.cross)


def _venue(sc: Scenario, profile: Profile | None = None) -> dict[str, Decimal]:
    assert sc.cross is not None
    out = weighted_health(_pricing(sc, profile), sc.cross)
    assert out is not None
    return out


def _plan(sc: Scenario, profile: Profile | None = None) -> LiquidationPlan:
    assert sc.cross is not None
    plan = plan_liquidation(_pricing(sc, profile), sc.cross, sc.request)
    assert plan is not None
    return plan


# --- MarginFi v2 ---------------------------------------------------------------------------------


def _mrgn_bucket(a: str, b: str) -> tuple[Bucket, dict[str, AssetParams], dict[str, Decimal]]:
    assets = {"A": AssetParams(symbol="A", decimals=6, asset_weight=D("0.9"), liability_weight=D("1.1")),
              "B": AssetParams(symbol="B", decimals=6, asset_weight=D("1"), liability_weight=D("1"))}
    return Bucket("cross", {"A": D(a), "B": D(b)}), assets, {"A": D(1), "B": D(1)}


def test_marginfi_is_liquidatable_at_zero_health_but_no_seizure_is_accepted_there() -> None:
    bucket, assets, prices = _mrgn_bucket("100", "-90")  # 100 * 0.9 - 90 * 1 = 0
    h = evaluate(Pricing(MRGN, {}, assets, prices), bucket)
    assert h.equity == h.requirement
    assert h.liquidatable  # healthy only while health > 0 (marginfi_account.rs l.724)
    wrong = msgspec.structs.replace(MRGN, strictness="lt")
    assert not evaluate(Pricing(wrong, {}, assets, prices), bucket).liquidatable
    # any seizure raises health above 0, which the program refuses (TooSevereLiquidation)
    plan = plan_liquidation(Pricing(MRGN, {}, assets, prices), bucket)
    assert plan is not None
    assert plan.seize_amount == 0


def test_marginfi_widens_the_confidence_by_2_12_and_biases_against_the_account() -> None:
    sc = _sc("marginfi-test-liquidate-conf")
    assert _venue(sc)["maintenance"] == D("-3.19946")  # the test's published number
    a, usdc = D(10), D(1)

    def health(c_a: Decimal, c_u: Decimal) -> Decimal:  # assets at P - c, liabilities at P + c
        return 2 * (a - c_a) * D("0.1") - D("5.05") * (usdc + c_u)

    variants = {
        "raw conf": health(D("0.1"), D("0.01")),
        "Switchboard's 1.96": health(D("0.196"), D("0.0196")),
        "no bias": health(D(0), D(0)),
        "bias reversed": health(D("-0.212"), D("-0.0212")),
    }
    for name, value in variants.items():
        assert abs(value - D("-3.19946")) > D("0.01"), name
    raw = msgspec.structs.replace(MRGN, conf_multiple=D(1))
    assert _venue(sc, raw)["maintenance"] == variants["raw conf"]  # the multiple is the profile's


def test_marginfi_caps_the_confidence_at_five_percent_of_the_price() -> None:
    sc = _sc("marginfi-derived-conf-cap")
    assert _health(sc).equity == 10 * 95 * D("0.8")  # 6.36 capped to 5
    uncapped = msgspec.structs.replace(MRGN, conf_cap=D(1))
    assert _health(sc, uncapped).equity == 10 * (100 - D("6.36")) * D("0.8")


def test_marginfi_liquidation_splits_the_discount_between_liquidator_and_insurance() -> None:
    sc = _sc("marginfi-guide-susie-liquidation")
    plan = _plan(sc)
    assert abs(plan.maintenance_health_after - D("-0.3635")) < D("0.00005")  # type: ignore[operator]
    # wrong: the liquidatee receives all the liquidator pays (no insurance fee)
    wrong = msgspec.structs.replace(MRGN, insurance_fee=D(0))
    off = _plan(sc, wrong).maintenance_health_after
    assert off is not None
    assert abs(off - D("-0.3635")) > D("0.02")


def test_marginfi_never_seizes_what_lowers_health() -> None:
    # B weighs 1 as collateral and A 1.1 as a liability: seizing B repays only 0.95 of its value
    assets = {"A": AssetParams(symbol="A", decimals=6, asset_weight=D("1"), liability_weight=D("1")),
              "B": AssetParams(symbol="B", decimals=6, asset_weight=D("1"), liability_weight=D("1"))}
    bucket = Bucket("cross", {"B": D(100), "A": D(-101)})
    plan = plan_liquidation(Pricing(MRGN, {}, assets, {"A": D(1), "B": D(1)}), bucket)
    assert plan is not None
    assert plan.seize_amount is None
    assert "no collateral whose seizure raises health" in plan.rule
    asked = LiquidationRequest("A", "B", D(10), by="seize")
    plan = plan_liquidation(Pricing(MRGN, {}, assets, {"A": D(1), "B": D(1)}), bucket, asked)
    assert plan is not None
    assert plan.seize_amount is None
    assert "WorseHealthPostLiquidation" in plan.rule


# --- Vertex --------------------------------------------------------------------------------------


def test_vertex_is_liquidatable_below_zero_maintenance_health_only() -> None:
    markets = {"BTC-PERP": MarketParams(symbol="BTC-PERP", mmf=D("0.05"), imf=D("0.1"))}
    bucket = Bucket("cross", {"USDC": D(11000)}, {"BTC-PERP": Position("BTC-PERP", D(1), quote=D(-30000))})
    prices = {"BTC-PERP": D(20000), "USDC": D(1)}  # 11000 + 20000 * 0.95 - 30000 = 0
    h = evaluate(Pricing(VERTEX, markets, {}, prices), bucket)
    assert h.equity - h.requirement == 0
    assert not h.liquidatable  # isUnderMaintenance: health < 0
    wrong = msgspec.structs.replace(VERTEX, strictness="le")
    assert evaluate(Pricing(wrong, markets, {}, prices), bucket).liquidatable


def test_vertex_counts_the_spread_rebate() -> None:
    sc = _sc("vertex-derived-long-spread")
    assert _venue(sc)["maintenance"] == -60
    unpaired = Scenario(**{**sc.__dict__, "extras": msgspec.structs.replace(sc.extras, spreads={})})
    assert _venue(unpaired)["maintenance"] == -2100  # the spread ignored: 2040 too little


def test_vertex_liquidates_at_a_fifth_of_the_maintenance_discount_not_the_docs_half() -> None:
    sc = _sc("vertex-derived-perp-long")
    plan = _plan(sc)
    p, w = D(27800), D("0.97")
    assert plan.price == p * (1 + (w - 1) / 5)  # getLiqPriceX18 (v3.4.0)
    docs_v1 = msgspec.structs.replace(VERTEX, liq_price_share=D("0.5"), insurance_share=D("0.25"))
    old = _plan(sc, docs_v1)
    assert old.price == p * (w + 1) / 2  # the docs page's (v1) rule: a different fill
    assert old.price != plan.price
    assert plan.size is not None
    assert plan.fee == (p - plan.price) * D("0.5") * plan.size


def test_vertex_exact_liquidation_price_comes_before_the_web_estimate_for_a_short() -> None:
    sc = _sc("vertex-derived-short-liquidation-price")
    assert sc.cross is not None
    lp = liquidation_price(Pricing(VERTEX, sc.markets, sc.assets, sc.prices, sc.extras), sc.cross, "BTC-PERP")
    assert lp is not None
    # vertex-web-monorepo-snapshot liquidationPriceCalcs.ts: oracle + health / |amount| * short weight
    estimate = D(30000) + D(100) / 1 * D("1.03")
    assert estimate == 30103
    assert lp < estimate
    at_estimate = evaluate(Pricing(VERTEX, sc.markets, sc.assets, {**sc.prices, "BTC-PERP": estimate}),
                           sc.cross)
    assert at_estimate.liquidatable  # the estimate would miss the liquidation until 30103


def test_vertex_takes_perps_before_spot_assets_whatever_their_penalty() -> None:
    plan = _plan(_sc("vertex-derived-order-perp-before-spot"))
    assert plan.market == "BTC-PERP"  # the spot ETH carries the larger penalty (2000 > 870)


def test_vertex_liabilities_go_last() -> None:
    sc = _sc("vertex-derived-spot-borrow")
    assert sc.cross is not None
    sc.cross.positions["BTC-PERP"] = Position("BTC-PERP", D("0.1"), quote=D(-3000))
    sc.markets["BTC-PERP"] = MarketParams(symbol="BTC-PERP", mmf=D("0.03"), imf=D("0.05"))
    sc.prices["BTC-PERP"] = D(29000)
    plan = _plan(sc)
    assert plan.market == "BTC-PERP"  # the borrow waits until no asset is left


# --- Aevo ----------------------------------------------------------------------------------------


def test_aevo_is_liquidatable_at_equality() -> None:
    sc = _sc("aevo-derived-strictness-equality")
    assert _health(sc).liquidatable  # healthy only while AB - OO - MM > 0
    assert not _health(sc, msgspec.structs.replace(AEVO, strictness="lt")).liquidatable


def test_aevo_values_collateral_at_its_collateral_ratio() -> None:
    sc = _sc("aevo-derived-collateral-ratio")
    assert _health(sc).liquidatable
    full = {k: msgspec.structs.replace(v, asset_weight=None) for k, v in sc.assets.items()}
    assert not _health(Scenario(**{**sc.__dict__, "assets": full})).liquidatable  # at 100%: 80 > 60.6


def test_aevo_charges_an_option_liquidation_on_the_underlying_not_the_mark() -> None:
    plan = _plan(_sc("aevo-docs-option-liquidation-fee"))
    assert plan.fee == D("0.005") * 2000  # the docs' $10; on the mark it would be 2.6
    assert plan.fee != D("0.005") * 520


@pytest.mark.parametrize(
    ("name", "mm", "wrong"),
    [
        ("aevo-docs-option-liquidation-fee", D(720), D("0.1") * 520 + 520),  # short call: 0.1 * spot + mark
        # short put: max(0.1 spot, 0.1 mark) + mark
        ("aevo-derived-short-put", D(1650), D("0.1") * 1000 + 1500),
    ],
)
def test_aevo_standard_margin_of_short_options(name: str, mm: Decimal, wrong: Decimal) -> None:
    h = _health(_sc(name))
    assert h.requirement == mm
    assert h.requirement != wrong


def test_aevo_restores_ab_above_mm_with_the_least_step() -> None:
    sc = _sc("aevo-derived-eth-perp")
    plan = _plan(sc)
    assert plan.size == D("0.15")
    assert sc.cross is not None
    for size, healthy in ((D("0.15"), True), (D("0.14"), False)):
        pos = sc.cross.positions["ETH-PERP"]
        fee = D("0.01") * size * 1850
        after = Bucket("cross", dict(sc.cross.balances), {"ETH-PERP": Position(
            "ETH-PERP", pos.size - size, quote=pos.quote_value() + size * 1850 - fee)})
        assert evaluate(Pricing(AEVO, sc.markets, sc.assets, sc.prices), after).liquidatable is not healthy


# --- the screen and keeper compare --------------------------------------------------------------


@pytest.mark.parametrize("name", ["marginfi-v2", "vertex", "aevo"])
def test_the_screen_always_checks_the_new_models(name: str) -> None:
    p = get_profile(name)
    assert screen_mode(p.kind, p.model, p.mm_at)[2] is True


@pytest.mark.parametrize("name", ["marginfi-v2", "vertex", "aevo"])
def test_keeper_compare_runs_a_recorded_crash_under_the_profile(data_dir: Path, name: str) -> None:
    res = compare(load_window(data_dir, "2022-06"), 60, profile=name, seed=3)
    assert res.profile == name
    assert f"profile {name}" in res.table()
    iso, cross = res.isolated.totals(), res.cross.totals()
    assert iso["liquidations"] > 0 and cross["liquidations"] > 0
    assert cross["collateral_to_survive"] <= iso["collateral_to_survive"]
