"""Liquidation sizing: the least that restores health, close factors, slices, dust, bad debt,
and the deterministic choice of what to take first in a cross bucket."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import pytest

from keeper.domain.margin import LiquidationRequest, Pricing, evaluate, get_profile, plan_liquidation
from keeper.domain.model import AssetParams, Bucket, MarketParams, Position

D = Decimal
ETH = {"ETH": MarketParams(symbol="ETH", mmf=D("0.05"))}


def test_restore_closes_the_least_that_brings_health_back_to_one() -> None:
    p = get_profile("dydx-v4")
    bucket = Bucket("iso", {"USDC": D(10)}, {"ETH": Position("ETH", D(1), quote=D(-2995))})
    prices = {"ETH": D(3000), "USDC": D(1)}
    plan = plan_liquidation(Pricing(p, ETH, {}, prices), bucket)
    assert plan is not None
    assert plan.action == "close_position"
    assert plan.market == "ETH"
    assert plan.size == D("0.9")  # equity 15 against 150 * (1 - f): f = 0.9
    assert plan.health_after == 1
    assert plan.notional == D(2700)
    # one quantum less would not restore health
    from keeper.domain.margin.sizing import close_part

    less = close_part(bucket, "ETH", D("0.9") - p.size_quantum, D(3000), D(0))
    assert evaluate(Pricing(p, ETH, {}, prices), less).health_factor < 1


def test_liquidation_fee_makes_the_keeper_close_more() -> None:
    markets = {"ETH": MarketParams(symbol="ETH", mmf=D("0.05"), liquidation_fee=D("0.001"))}
    bucket = Bucket("iso", {"USDC": D(10)}, {"ETH": Position("ETH", D(1), quote=D(-2995))})
    pricing = Pricing(get_profile("generic-perp"), markets, {}, {"ETH": D(3000), "USDC": D(1)})
    plan = plan_liquidation(pricing, bucket)
    assert plan is not None
    assert plan.size is not None
    assert plan.size > D("0.9")
    assert plan.health_after is not None
    assert plan.health_after >= 1


def test_short_positions_are_closed_with_a_negative_size() -> None:
    bucket = Bucket("iso", {"USDC": D(1000)}, {"ETH": Position("ETH", D(-3), D(3000))})
    plan = plan_liquidation(Pricing(get_profile("dydx-v4"), ETH, {}, {"ETH": D(3200), "USDC": D(1)}), bucket)
    assert plan is not None
    assert plan.size is not None
    assert plan.size < 0
    assert plan.health_after is not None
    assert plan.health_after >= 1


def test_cross_bucket_takes_the_largest_maintenance_requirement_first_ties_by_symbol() -> None:
    markets = {
        "AAA": MarketParams(symbol="AAA", mmf=D("0.1")),
        "BBB": MarketParams(symbol="BBB", mmf=D("0.1")),
        "CCC": MarketParams(symbol="CCC", mmf=D("0.2")),
    }
    prices = {"AAA": D(100), "BBB": D(100), "CCC": D(100), "USDC": D(1)}
    bucket = Bucket(
        "cross",
        {"USDC": D(0)},
        {
            "BBB": Position("BBB", D(10), D(100)),
            "AAA": Position("AAA", D(10), D(100)),
            "CCC": Position("CCC", D(4), D(100)),
        },
    )
    plan = plan_liquidation(Pricing(get_profile("generic-perp"), markets, {}, prices), bucket)
    assert plan is not None
    assert plan.market == "AAA"  # AAA and BBB tie at MM 100 > CCC's 80: the smaller symbol
    bucket.positions["CCC"] = Position("CCC", D(6), D(100))
    plan = plan_liquidation(Pricing(get_profile("generic-perp"), markets, {}, prices), bucket)
    assert plan is not None
    assert plan.market == "CCC"  # MM 120 now leads
    assert "largest maintenance requirement" in plan.rule


def test_bankrupt_perp_bucket_takes_the_venue_bad_debt_path() -> None:
    bucket = Bucket("b", {"USDC": D(100)}, {"ABC": Position("ABC", D(-500), D(1))})
    markets = {"ABC": MarketParams(symbol="ABC", mmf=D("0.03"))}
    plan = plan_liquidation(Pricing(get_profile("dydx-v4"), markets, {}, {"ABC": D(2), "USDC": D(1)}), bucket)
    assert plan is not None
    assert plan.action == "bad_debt"
    assert plan.size == D(-500)
    assert "deleveraging" in plan.rule


def test_hyperliquid_slices_large_positions_and_closes_small_ones() -> None:
    p = get_profile("hyperliquid")
    markets = {"BTC": MarketParams(symbol="BTC", max_leverage=D(50))}  # mmf 1%
    prices = {"BTC": D(50000), "USDC": D(1)}
    big = Bucket("b", {"USDC": D(21100)}, {"BTC": Position("BTC", D(4), D(54900))})  # $200k notional
    h = evaluate(Pricing(p, markets, {}, prices), big)
    assert h.liquidatable
    plan = plan_liquidation(Pricing(p, markets, {}, prices), big)
    assert plan is not None
    assert plan.size == D("0.8")
    assert "20% slice" in plan.rule
    small = Bucket("b", {"USDC": D(2110)}, {"BTC": Position("BTC", D("0.4"), D(54900))})  # $20k
    plan = plan_liquidation(Pricing(p, markets, {}, prices), small)
    assert plan is not None
    assert plan.size == D("0.4")
    backstop = Bucket(
        "b", {"USDC": D(1000)}, {"BTC": Position("BTC", D("0.4"), D(52450))}
    )  # E 20 < 2/3 * 200
    plan = plan_liquidation(Pricing(p, markets, {}, prices), backstop)
    assert plan is not None
    assert "backstop" in plan.rule
    assert plan.size == D("0.4")


def test_gmx_liquidates_the_whole_position() -> None:
    bucket = Bucket("iso", {"WETH": D(10)}, {"ETH": Position("ETH", D(40), D(5000))})
    markets = {"ETH": MarketParams(symbol="ETH", mmf=D("0.01"))}
    pricing = Pricing(get_profile("gmx-v2"), markets, {}, {"ETH": D(4030), "WETH": D(4030)})
    plan = plan_liquidation(pricing, bucket)
    assert plan is not None
    assert plan.size == D(40)


# --- lending --------------------------------------------------------------------------------

AAVE_ASSETS = {
    "ETH": AssetParams(
        symbol="ETH", decimals=18, liquidation_threshold=D("0.86"), liquidation_bonus=D("0.05")
    ),
    "GHO": AssetParams(symbol="GHO", decimals=18),
    "USDC": AssetParams(symbol="USDC", decimals=6),
    "DAI": AssetParams(symbol="DAI", decimals=18),
}
AAVE_PRICES = {"ETH": D(2500), "GHO": D(1), "USDC": D(1), "DAI": D(1)}


def _three_debts() -> Bucket:
    return Bucket("cross", {"ETH": D(4), "GHO": D(-3000), "USDC": D(-3000), "DAI": D(-3000)})


def test_aave33_close_factor_is_half_of_the_total_debt_not_of_the_reserve() -> None:
    bucket = _three_debts()  # HF = 10,000 * 0.86 / 9,000 = 0.9556
    v33 = plan_liquidation(Pricing(get_profile("aave-v3.3"), {}, AAVE_ASSETS, AAVE_PRICES), bucket)
    v30 = plan_liquidation(Pricing(get_profile("aave-v3.0"), {}, AAVE_ASSETS, AAVE_PRICES), bucket)
    assert v33 is not None
    assert v30 is not None
    assert v33.repay_asset == v30.repay_asset == "DAI"  # equal debts: ties by symbol
    assert v33.seize_asset == "ETH"
    assert v33.repay_amount == D(3000)  # 50% of $9,000 covers the whole $3,000 reserve
    assert v30.repay_amount == D(1500)  # v3.0: 50% of the reserve
    assert v33.close_factor == D("0.5")
    assert v33.seize_amount == D(3000) * D("1.05") / D(2500)
    assert "50% of total debt" in v33.rule


def test_aave33_small_reserves_may_be_liquidated_in_full() -> None:
    bucket = Bucket("cross", {"ETH": D("0.5"), "USDC": D(-1100)})  # $1,250 collateral < $2,000
    plan = plan_liquidation(Pricing(get_profile("aave-v3.3"), {}, AAVE_ASSETS, AAVE_PRICES), bucket)
    assert plan is not None
    assert plan.close_factor == 1
    assert plan.repay_amount == D(1100)
    assert "< $2,000" in plan.rule


def test_aave33_dust_rule_leaves_at_least_1000_of_debt() -> None:
    # USDC debt 5,500 is more than half of the 9,500 total: the 4,750 cap would leave $750.
    bucket = Bucket("cross", {"ETH": D("4.4"), "USDC": D(-5500), "DAI": D(-4000)})
    h = evaluate(Pricing(get_profile("aave-v3.3"), {}, AAVE_ASSETS, AAVE_PRICES), bucket)
    assert D("0.95") < h.health_factor < 1
    plan = plan_liquidation(Pricing(get_profile("aave-v3.3"), {}, AAVE_ASSETS, AAVE_PRICES), bucket)
    assert plan is not None
    assert plan.repay_asset == "USDC"
    assert plan.repay_amount == D(4500)
    assert "dust rule" in plan.rule


def test_aave_request_is_capped_by_the_close_factor() -> None:
    assets = {
        "COLL": AssetParams(
            symbol="COLL", decimals=18, liquidation_threshold=D("0.5"), liquidation_bonus=D("0.01")
        ),
        "BRRW": AssetParams(symbol="BRRW", decimals=18),
    }
    bucket = Bucket("cross", {"COLL": D(1000), "BRRW": D("-501.853426710065837121")})
    prices = {"COLL": D(1), "BRRW": D(1)}
    p = get_profile("aave-v3.0")
    pricing = Pricing(p, {}, assets, prices)
    capped = plan_liquidation(pricing, bucket, LiquidationRequest("BRRW", "COLL", D(300)))
    asked = plan_liquidation(pricing, bucket, LiquidationRequest("BRRW", "COLL", D(200)))
    assert capped is not None
    assert asked is not None
    assert capped.repay_amount == D("250.926713355032918561")
    assert asked.repay_amount == D(200)
    assert asked.seize_amount == D(202)


def test_morpho_repays_the_least_that_restores_health_with_the_lltv_incentive() -> None:
    p = get_profile("morpho-blue")
    assets = {
        "WSTETH": AssetParams(symbol="WSTETH", decimals=18, liquidation_threshold=D("0.86")),
        "USDC": AssetParams(symbol="USDC", decimals=6),
    }
    bucket = Bucket("market-1", {"WSTETH": D(10), "USDC": D(-26000)})
    prices = {"WSTETH": D(3000), "USDC": D(1)}
    plan = plan_liquidation(Pricing(p, {}, assets, prices), bucket)
    assert plan is not None
    lif = 1 / (D("0.3") * D("0.86") + D("0.7"))
    assert plan.bonus is not None
    # the contract's incentive factor, rounded down to the wad (WAD.wDivDown(...))
    assert plan.bonus == (lif - 1).quantize(D("1e-18"), rounding=ROUND_DOWN)
    assert plan.health_after is not None
    assert 1 <= plan.health_after < D("1.000001")
    assert plan.close_factor is None


def test_compound_v2_closes_half_the_borrow_with_the_incentive() -> None:
    assets = {
        "ETH": AssetParams(symbol="ETH", decimals=18, liquidation_threshold=D("0.75")),
        "DAI": AssetParams(symbol="DAI", decimals=18),
    }
    bucket = Bucket("cross", {"ETH": D(10), "DAI": D(-16000)})
    pricing = Pricing(get_profile("compound-v2"), {}, assets, {"ETH": D(2000), "DAI": D(1)})
    plan = plan_liquidation(pricing, bucket)
    assert plan is not None
    assert plan.repay_amount == D(8000)
    assert plan.seize_amount == D(8000) * D("1.08") / D(2000)
    assert plan.protocol_fee == (plan.seize_amount * D("0.028")).quantize(D("1e-18"))


def test_comet_absorbs_all_collateral() -> None:
    assets = {
        "USDC": AssetParams(symbol="USDC", decimals=6),
        "COMP": AssetParams(symbol="COMP", liquidation_threshold=D("0.8")),
    }
    bucket = Bucket("cross", {"USDC": D(-100000), "COMP": D(100000)})
    pricing = Pricing(get_profile("compound-v3"), {}, assets, {"USDC": D(1), "COMP": D(1)})
    plan = plan_liquidation(pricing, bucket)
    assert plan is not None
    assert plan.seize_amount == D(100000)
    assert plan.repay_amount == D(100000)
    assert "absorb" in plan.rule


def test_plan_is_none_when_healthy_and_independent_of_dict_order() -> None:
    pricing = Pricing(get_profile("aave-v3.3"), {}, AAVE_ASSETS, AAVE_PRICES)
    assert plan_liquidation(pricing, Bucket("c", {"ETH": D(4), "GHO": D(-6000)})) is None
    a = _three_debts()
    b = Bucket("cross", dict(reversed(list(a.balances.items()))))
    assert plan_liquidation(pricing, a) == plan_liquidation(pricing, b)


@pytest.mark.parametrize("name", ["aave-v3.0", "morpho-blue"])
def test_bankrupt_lending_bucket_seizes_everything_and_books_bad_debt(name: str) -> None:
    assets = {
        "COLL": AssetParams(
            symbol="COLL", decimals=18, liquidation_threshold=D("0.8"), liquidation_bonus=D("0.05")
        ),
        "BRRW": AssetParams(symbol="BRRW", decimals=18),
    }
    bucket = Bucket("cross", {"COLL": D(100), "BRRW": D(-150)})
    plan = plan_liquidation(Pricing(get_profile(name), {}, assets, {"COLL": D(1), "BRRW": D(1)}), bucket)
    assert plan is not None
    assert plan.action == "bad_debt"
    assert plan.seize_amount == D(100)
    assert plan.repay_amount is not None
    assert plan.repay_amount < D(100)
    assert get_profile(name).bad_debt_path in plan.rule


def test_compound_v2_bankrupt_bucket_is_still_bounded_by_the_close_factor() -> None:
    assets = {
        "COLL": AssetParams(
            symbol="COLL", decimals=18, liquidation_threshold=D("0.8"), liquidation_bonus=D("0.05")
        ),
        "BRRW": AssetParams(symbol="BRRW", decimals=18),
    }
    bucket = Bucket("cross", {"COLL": D(100), "BRRW": D(-150)})
    pricing = Pricing(get_profile("compound-v2"), {}, assets, {"COLL": D(1), "BRRW": D(1)})
    plan = plan_liquidation(pricing, bucket)
    assert plan is not None
    assert plan.action == "bad_debt"
    assert plan.repay_amount == D(75)
    assert plan.seize_amount == D("78.75")
