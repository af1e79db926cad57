"""The research cases the scenario format cannot express, as unit tests of the profiles'
functions with the published numbers (``raw_cases.json``, loaded by id)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from keeper.domain.margin import (
    LiquidationRequest,
    Pricing,
    aave,
    bankruptcy_price,
    evaluate,
    get_profile,
    liquidation_price,
    plan_liquidation,
)
from keeper.domain.margin.health import position_mm
from keeper.domain.margin.tiers import brackets, derive_deductions, hyperliquid_mmf, maintenance
from keeper.domain.margin.venues import comet, compound_v2, drift, dydx, mango
from keeper.domain.model import AssetParams, Bucket, MarketParams, Position, Tier

D = Decimal
Cases = dict[str, dict[str, Any]]


def _close(got: Decimal | float | int, expected: Any, tol: Any) -> bool:
    return abs(D(str(got)) - D(str(expected))) <= D(str(tol))


# --- Aave v3.0 (SparkLend) ------------------------------------------------------------------

SPARK = [f"aave30-spark-liquidation-{i:02d}" for i in range(1, 11)] + ["aave30-spark-liquidation-11-emode"]


def _spark_setup(inp: dict[str, Any]) -> tuple[Bucket, dict[str, AssetParams], dict[str, Decimal]]:
    emode = "eMode" in inp["emode"] and "no eMode" not in inp["emode"]
    price = D(2) if emode else D(inp["collateral_price_usd8"]) / D(10**8)
    lt = D(inp["liquidation_threshold_bps"]) / 10000
    if emode:
        lt = D("0.6")  # the eMode category's LT replaces the reserve's (documented in the case)
    assets = {
        "COLL": AssetParams(
            symbol="COLL",
            decimals=inp["decimals"],
            liquidation_threshold=lt,
            liquidation_bonus=D(inp["liquidation_bonus_bps"] - 10000) / 10000,
            liquidation_protocol_fee=D(inp["liquidation_protocol_fee_bps"]) / 10000,
        ),
        "BRRW": AssetParams(symbol="BRRW", decimals=inp["decimals"]),
    }
    bucket = Bucket("cross", {"COLL": D(inp["starting_collateral"]), "BRRW": -D(inp["borrower_total_debt"])})
    return bucket, assets, {"COLL": price, "BRRW": price}


@pytest.mark.parametrize("case_id", SPARK)
def test_sparklend_liquidation_reproduces_wei_exact(raw_cases: Cases, case_id: str) -> None:
    case = raw_cases[case_id]
    inp, exp, tol = case["inputs"], case["expected"], case["tolerance"]
    bucket, assets, prices = _spark_setup(inp)
    request = LiquidationRequest("BRRW", "COLL", D(inp["debt_to_cover"]))
    plan = plan_liquidation(Pricing(get_profile("aave-v3.0"), {}, assets, prices), bucket, request)
    assert plan is not None
    dec = inp["decimals"]
    assert plan.repay_amount is not None
    assert plan.seize_amount is not None
    assert plan.protocol_fee is not None
    assert aave.to_units(plan.repay_amount, dec) == int(exp["debt_liquidated"])
    assert aave.to_units(plan.seize_amount, dec) == int(exp["collateral_liquidated_total"])
    assert aave.to_units(plan.protocol_fee, dec) == int(exp["protocol_fee"])
    remaining = aave.to_units(D(inp["borrower_total_debt"]) - plan.repay_amount, dec)
    assert abs(remaining - int(exp["remaining_debt_wei"])) <= tol["remaining_debt_wei"]
    if "health_factor_after_wad" in exp:
        assert plan.health_after is not None
        got = 0 if plan.health_after.is_infinite() else int(plan.health_after.scaleb(18))
        assert got == int(exp["health_factor_after_wad"])


def test_sparklend_health_factor_wad(raw_cases: Cases) -> None:
    inp = raw_cases["aave30-spark-hf-1y"]["inputs"]
    reserves = [
        aave.Reserve("COLL", int(c["amount_wei"]), c["price_usd8"], c["decimals"], c["lt_bps"])
        for c in inp["collateral"]
    ] + [aave.Reserve("BRRW", -int(d["amount_wei"]), d["price_usd8"], d["decimals"], 0) for d in inp["debt"]]
    data = aave.account_data(reserves)
    assert data.health_factor_wad == int(raw_cases["aave30-spark-hf-1y"]["expected"]["health_factor_wad"])


@pytest.mark.parametrize(
    "case_id",
    ["aave33-cf-doc-example", "aave33-cf-hf094-large", "aave33-cf-hf097-small-coll", "aave33-cf-hf097-large"],
)
def test_aave33_close_factor_decision(raw_cases: Cases, case_id: str) -> None:
    case = raw_cases[case_id]
    inp = case["inputs"]
    hf_wad = int(D(str(inp["health_factor"])) * 10**18)
    coll_base = aave.to_price8(D(str(inp["reserve_collateral_usd"])))
    debt_base = aave.to_price8(D(str(inp["reserve_debt_usd"])))
    threshold = aave.to_price8(D(str(inp["MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD_usd"])))
    _, cf_bps = aave.max_debt_v33(
        health_factor_wad=hf_wad,
        total_debt_base=debt_base,
        reserve_debt_units=int(D(str(inp["reserve_debt_usd"])) * 10**18),
        reserve_debt_base=debt_base,
        reserve_collateral_base=coll_base,
        debt_price8=10**8,
        debt_decimals=18,
        min_base_threshold=threshold,
    )
    assert D(cf_bps) / 10000 == D(str(case["expected"]["close_factor"]))


def test_aave33_close_factor_through_the_profile_matches_the_decision_table(raw_cases: Cases) -> None:
    # HF 0.97 with $200k of ETH collateral and $150k... of debt: 50% of the total debt.
    profile = get_profile("aave-v3.3")
    assets = {
        "WETH": AssetParams(
            symbol="WETH", decimals=18, liquidation_threshold=D("0.8"), liquidation_bonus=D("0.05")
        ),
        "USDC": AssetParams(symbol="USDC", decimals=6),
    }
    debt = D(200000) * D("0.8") / D("0.97")
    bucket = Bucket("cross", {"WETH": D(100), "USDC": -debt.quantize(D("0.000001"))})
    plan = plan_liquidation(Pricing(profile, {}, assets, {"WETH": D(2000), "USDC": D(1)}), bucket)
    assert plan is not None
    assert plan.close_factor == D(raw_cases["aave33-cf-hf097-large"]["expected"]["close_factor"]).normalize()
    assert plan.repay_amount is not None
    assert abs(plan.repay_amount - debt / 2) < D("0.000001")
    assert "HF > 0.95" in plan.rule


# --- Compound -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case_id",
    [
        "comet-quote-collateral-sf50-lf60",
        "comet-quote-collateral-sf0",
        "comet-quote-collateral-no-truncation",
    ],
)
def test_comet_quote_collateral(raw_cases: Cases, case_id: str) -> None:
    inp = raw_cases[case_id]["inputs"]
    out = comet.quote_collateral(
        asset_price=int(D(str(inp["collateral_price_usd"])) * 10**8),
        asset_scale=10**18,
        liquidation_factor=int(D(inp["liquidation_factor"]) * 10**18),
        store_front_price_factor=int(D(inp["store_front_price_factor"]) * 10**18),
        base_price=10**8,
        base_scale=10**6,
        base_amount=int(D(str(inp["base_amount_usdc"])) * 10**6),
    )
    assert out == int(raw_cases[case_id]["expected"]["collateral_out_wei"])


def test_comet_absorb_excess_collateral(raw_cases: Cases) -> None:
    case = raw_cases["comet-absorb-excess-collateral"]
    coll = [
        comet.Collateral(
            int(D(c["amount"]) * 10 ** c.get("decimals", 18)),
            int(D(str(c["price"])) * 10**8),
            10 ** c.get("decimals", 18),
            10**18,  # liquidationFactor 1 (the test harness default)
        )
        for c in case["inputs"]["collateral"].values()
    ]
    new, paid = comet.absorb(coll, int(case["inputs"]["starting_base_balance_usdc6"]), 10**8, 10**6)
    assert new == int(case["expected"]["new_base_balance_usdc6"])
    assert paid == int(case["expected"]["base_paid_out_usdc6"])


@pytest.mark.parametrize("case_id", [f"compound-v2-seize-{i}" for i in range(4)])
def test_compound_v2_seize_tokens(raw_cases: Cases, case_id: str) -> None:
    case = raw_cases[case_id]
    inp = case["inputs"]
    got = compound_v2.seize_tokens(
        repay_amount=compound_v2.mantissa(D(inp["repay_amount"])),
        incentive=compound_v2.mantissa(D(inp["liquidation_incentive"])),
        price_borrowed=compound_v2.mantissa(D(inp["price_borrowed"])),
        price_collateral=compound_v2.mantissa(D(inp["price_collateral"])),
        exchange_rate=compound_v2.mantissa(D(inp["exchange_rate"])),
    )
    assert abs(got - int(case["expected"]["seize_ctokens_wei"])) <= case["tolerance"]["seize_ctokens_wei"]


# --- Mango ----------------------------------------------------------------------------------

MANGO = [
    "mango-v4-health1-2-weighted-positive-perp-pnl",
    "mango-v4-health1-3-negative-perp-pnl-unweighted",
    "mango-v4-health1-4-perp-health",
    "mango-v4-health1-5-perp-health",
    "mango-v4-health1-12-perp-offsets-borrow",
    "mango-v4-health1-13-perp-offsets-deposit",
    "mango-v4-health1-10-deposit-weight-scaling",
    "mango-v4-health1-11-borrow-weight-scaling",
]


@pytest.mark.parametrize("case_id", MANGO)
def test_mango_weighted_health(raw_cases: Cases, case_id: str) -> None:
    case = raw_cases[case_id]
    inp = case["inputs"]
    limits = inp["bank_limits"] or [{}, {}, {}]
    tokens: dict[str, mango.Token] = {}
    for (sym, t), lim in zip(inp["tokens"].items(), limits, strict=True):
        tokens[sym] = mango.Token(
            D(str(t["bal"])),
            D(str(t["price"])),
            D(t["aw"]),
            D(t["lw"]),
            deposits=D(str(lim["dep"])) if "dep" in lim else None,
            deposit_weight_scale_start=D(str(lim["dep_start"])) if "dep_start" in lim else None,
            borrows=D(str(lim["bor"])) if "bor" in lim else None,
            borrow_weight_scale_start=D(str(lim["bor_start"])) if "bor_start" in lim else None,
        )
    perps = []
    if inp["perp"] is not None:
        p = inp["perp"]
        perps.append(
            mango.Perp(
                D(p["base_lots"]) * D(p["lot"]),
                D(str(p["quote_native"])),
                D(str(p["price"])),
                D(p["base_aw"]),
                D(p["base_lw"]),
                D(p["overall_aw"]),
            )
        )
    got = mango.health(tokens, perps)
    assert _close(got, case["expected"]["init_health"], case["tolerance"]["init_health"])


# --- Drift ----------------------------------------------------------------------------------

DRIFT_SHORTAGE = [
    "drift-base-to-cover-shortage-zero-fee",
    "drift-base-to-cover-shortage-usdc-0.99",
    "drift-base-to-cover-shortage-usdc-1.01",
    "drift-base-to-cover-shortage-1pct-liq-fee",
    "drift-base-to-cover-shortage-1pct-liq-fee-1pct-if-fee",
]


@pytest.mark.parametrize("case_id", DRIFT_SHORTAGE)
def test_drift_base_to_cover_margin_shortage(raw_cases: Cases, case_id: str) -> None:
    inp = raw_cases[case_id]["inputs"]
    got = drift.base_to_cover_margin_shortage(
        margin_shortage=inp["margin_shortage_quote6"],
        margin_ratio=inp["margin_ratio_bps4"],
        liquidator_fee=inp["liquidator_fee_ppm"],
        if_fee=inp["if_fee_ppm"],
        oracle_price=inp["oracle_price6"],
        quote_oracle_price=inp["quote_oracle_price6"],
    )
    assert got == raw_cases[case_id]["expected"]["base_asset_amount_1e9"]


@pytest.mark.parametrize(
    "case_id",
    [
        "drift-liability-transfer-zero-fee",
        "drift-liability-transfer-10pct-multipliers",
        "drift-liability-transfer-1pct-if-fee",
        "drift-liability-transfer-10pct-multipliers-1pct-if",
    ],
)
def test_drift_liability_transfer(raw_cases: Cases, case_id: str) -> None:
    inp = raw_cases[case_id]["inputs"]
    got = drift.liability_transfer_to_cover_margin_shortage(
        margin_shortage=inp["margin_shortage_quote6"],
        asset_weight=inp["asset_weight_bps4"],
        asset_liquidation_multiplier=inp["asset_liq_multiplier_ppm"],
        liability_weight=inp["liability_weight_bps4"],
        liability_liquidation_multiplier=inp["liability_liq_multiplier_ppm"],
        liability_decimals=inp["liability_decimals"],
        liability_price=inp["liability_price6"],
        if_liquidation_fee=inp["if_fee_ppm"],
    )
    assert got == raw_cases[case_id]["expected"]["liability_transfer"]


def _named_args(inp: dict[str, Any]) -> dict[str, int]:
    names = [n.strip() for n in inp["arg_names"].split(",")]
    rename = {
        "liability_amount": "liability_transfer",
        "asset_liq_multiplier": "asset_liquidation_multiplier",
        "liability_liq_multiplier": "liability_liquidation_multiplier",
        "asset_price6": "asset_price",
        "liability_price6": "liability_price",
    }
    return {rename.get(n, n): v for n, v in zip(names, inp["args"], strict=True)}


@pytest.mark.parametrize("case_id", ["drift-implied-zero-fee", "drift-implied-1pct"])
def test_drift_liability_implied_by_asset_rounds_up(raw_cases: Cases, case_id: str) -> None:
    got = drift.liability_implied_by_asset(**_named_args(raw_cases[case_id]["inputs"]))
    assert got == raw_cases[case_id]["expected"]["result"]


@pytest.mark.parametrize("case_id", ["drift-asset-for-liab-zero-fee", "drift-asset-for-liab-1pct"])
def test_drift_asset_for_liability(raw_cases: Cases, case_id: str) -> None:
    got = drift.asset_for_liability(**_named_args(raw_cases[case_id]["inputs"]))
    assert got == raw_cases[case_id]["expected"]["result"]


def test_drift_asset_for_liability_snaps_to_the_whole_balance_within_one_dollar() -> None:
    # 1 SOL of liability at $100 buys ~$100 of USDC; with $100.50 deposited the rest is dust.
    got = drift.asset_for_liability(
        asset_amount=100_500_000,
        asset_liquidation_multiplier=10**6,
        asset_decimals=6,
        asset_price=10**6,
        liability_transfer=10**9,
        liability_liquidation_multiplier=10**6,
        liability_decimals=9,
        liability_price=100 * 10**6,
    )
    assert got == 100_500_000


def test_drift_perp_if_fee(raw_cases: Cases) -> None:
    case = raw_cases["drift-perp-if-fee"]
    inp, exp = case["inputs"], case["expected"]

    def fee(shortage: int) -> int:
        return drift.perp_if_fee(
            margin_shortage=shortage,
            base_asset_amount=inp["base_asset_amount"],
            margin_ratio=inp["margin_ratio_bps4"],
            liquidator_fee=inp["liquidator_fee_ppm"],
            oracle_price=inp["oracle_price6"],
            quote_oracle_price=inp["quote_price6"],
            max_if_fee=inp["max_if_fee_ppm"],
        )

    assert fee(inp["margin_shortage_quote6"]) == exp["if_fee_ppm"]
    assert fee(inp["tiny_shortage_quote6"]) == exp["if_fee_ppm_tiny_shortage"]
    assert fee(inp["huge_shortage_quote6"]) == exp["if_fee_ppm_huge_shortage"]


def test_drift_spot_if_fee(raw_cases: Cases) -> None:
    case = raw_cases["drift-spot-if-fee"]
    inp, exp = case["inputs"], case["expected"]

    def fee(shortage: int) -> int:
        return drift.spot_if_fee(
            margin_shortage=shortage,
            token_amount=inp["token_amount"],
            asset_weight=inp["asset_weight_bps4"],
            asset_liquidation_multiplier=inp["asset_mult_ppm"],
            liability_weight=inp["liability_weight_bps4"],
            liability_liquidation_multiplier=inp["liability_mult_ppm"],
            decimals=inp["decimals"],
            price=inp["price6"],
            max_if_fee=inp["max_if_fee_ppm"],
        )

    assert fee(inp["margin_shortage_quote6"]) == exp["if_fee_ppm"]
    # The case publishes the two limits without their shortages: any shortage past the weight
    # gap gives 0, a nil shortage gives the cap.
    assert fee(10**9) == exp["if_fee_ppm_large_shortage"]
    assert fee(0) == exp["if_fee_ppm_tiny_shortage"]


def test_drift_liquidation_fee_ramp(raw_cases: Cases) -> None:
    case = raw_cases["drift-liquidation-fee-ramp"]
    inp, exp = case["inputs"], case["expected"]
    for slot in inp["slots"]:
        got = drift.liquidation_fee_at(
            base_fee=inp["base_liq_fee_ppm"],
            max_fee=inp["max_liq_fee_ppm"],
            last_active_slot=inp["last_active_slot"],
            slot=slot,
            grace_slots=inp["grace_slots"],
            per_slot=inp["increase_per_slot_ppm"],
        )
        assert got == exp[f"fee_at_{slot}"]


def test_drift_strict_maintenance(raw_cases: Cases) -> None:
    case = raw_cases["drift-margin-strict-maintenance"]
    inp, exp = case["inputs"], case["expected"]
    usdc = drift.SpotBalance(
        inp["usdc_deposit"] * 10**6,
        6,
        int(D(str(inp["usdc_oracle"])) * 10**6),
        int(D(str(inp["usdc_twap5min"])) * 10**6),
        int(D(str(inp["usdc_asset_weight"])) * 10**4),
    )
    sol = drift.SpotBalance(
        inp["sol_borrow"] * 10**9,
        9,
        inp["sol_oracle"] * 10**6,
        inp["sol_twap5min"] * 10**6,
        int(D(str(inp["sol_maint_liability_weight"])) * 10**4),
    )
    assert drift.strict_maintenance([usdc], [sol]) == (
        exp["total_collateral_quote6"],
        exp["margin_requirement_quote6"],
    )


def test_drift_profile_maintenance_counts_spot_liabilities(raw_cases: Cases) -> None:
    inp = raw_cases["drift-margin-custom-ratio-maintenance"]["inputs"]
    profile = get_profile("drift-v2")
    markets = {"SOL-PERP": MarketParams(symbol="SOL-PERP", mmf=D(str(inp["perp_maint_margin_ratio"])))}
    assets = {
        "USDC": AssetParams(symbol="USDC", asset_weight=D(1)),
        "SOL": AssetParams(
            symbol="SOL", asset_weight=D("0.9"), liability_weight=D(str(inp["sol_maint_liab_weight"]))
        ),
    }
    bucket = Bucket(
        "cross",
        {"USDC": D(inp["sol_spot_deposit"]), "SOL": -D(inp["sol_spot_borrow"])},
        {"SOL-PERP": Position("SOL-PERP", D(inp["perp_base"]), quote=D(0))},
    )
    prices = {"SOL-PERP": D(inp["perp_price"]), "SOL": D(inp["sol_price"]), "USDC": D(1)}
    h = evaluate(Pricing(profile, markets, assets, prices), bucket)
    expected = D(
        raw_cases["drift-margin-custom-ratio-maintenance"]["expected"][
            "maintenance_margin_requirement_quote6"
        ]
    )
    assert h.requirement * 10**6 == expected


# --- dYdX -----------------------------------------------------------------------------------


def _dydx_positions(inp: dict[str, Any]) -> list[dydx.PerpPosition]:
    return [
        dydx.PerpPosition(Fraction(p["size"]), Fraction(p["oracle_price"]), Fraction(p["mmf"]))
        for p in inp["positions"]
    ]


DYDX_BANKRUPTCY = [
    "dydx-bankruptcy-long-slightly-below-mm",
    "dydx-bankruptcy-multi-long-close-eth",
    "dydx-bankruptcy-long-short-close-eth-short",
    "dydx-bankruptcy-rounding-partial-1btc-long",
    "dydx-bankruptcy-rounding-partial-1btc-short",
]


@pytest.mark.parametrize("case_id", DYDX_BANKRUPTCY)
def test_dydx_bankruptcy_quote_quantums_round_toward_plus_infinity(raw_cases: Cases, case_id: str) -> None:
    inp = raw_cases[case_id]["inputs"]
    got = dydx.bankruptcy_quote_quantums(
        _dydx_positions(inp),
        Fraction(inp["quote_balance_usd"]),
        inp["position_index"],
        Fraction(inp["delta_size"]),
    )
    assert got == raw_cases[case_id]["expected"]["bankruptcy_quote_quantums"]


DYDX_FILLABLE = [
    "dydx-fillable-price-long-slightly-below-mm",
    "dydx-fillable-price-long-ba2",
    "dydx-fillable-price-long-smmr0.2",
    "dydx-fillable-price-short-slightly-below-mm",
    "dydx-fillable-price-long-at-bankruptcy",
    "dydx-fillable-price-long-below-bankruptcy",
    "dydx-fillable-price-short-at-bankruptcy",
    "dydx-fillable-price-multi-long-eth",
    "dydx-fillable-price-smmr-1.0",
]


@pytest.mark.parametrize("case_id", DYDX_FILLABLE)
def test_dydx_fillable_price(raw_cases: Cases, case_id: str) -> None:
    case = raw_cases[case_id]
    inp = case["inputs"]
    got = dydx.fillable_price(
        _dydx_positions(inp),
        Fraction(inp["quote_balance_usd"]),
        inp["position_index"],
        Fraction(inp["bankruptcy_adjustment"]),
        Fraction(inp["spread_to_maintenance_margin_ratio"]),
    )
    exp = Fraction(D(str(case["expected"]["fillable_price_usd"])))
    assert abs(got - exp) <= Fraction(D(str(case["tolerance"]["fillable_price_usd"])))


@pytest.mark.parametrize(
    "case_id",
    [
        "dydx-insurance-fund-delta-long-max-fee-0.5pct",
        "dydx-insurance-fund-delta-long-max-fee-2.5pct",
        "dydx-insurance-fund-delta-long-fee-capped-by-leftover",
        "dydx-insurance-fund-delta-short-max-fee-0.5pct",
    ],
)
def test_dydx_insurance_fund_delta(raw_cases: Cases, case_id: str) -> None:
    inp = raw_cases[case_id]["inputs"]
    got = dydx.insurance_fund_delta(
        _dydx_positions(inp),
        Fraction(inp["quote_balance_usd"]),
        0,
        Fraction(D(str(inp["fill_size"]))),
        Fraction(D(str(inp["fill_price"]))),
        is_buy=inp["is_buy"],
        max_liquidation_fee_ppm=inp["max_liquidation_fee_ppm"],
    )
    assert got == raw_cases[case_id]["expected"]["insurance_fund_delta_quote_quantums"]


def test_dydx_docs_insurance_fund_pays_fifteen_dollars(raw_cases: Cases) -> None:
    inp, exp = (
        raw_cases["dydx-docs-insurance-fund-long"]["inputs"],
        raw_cases["dydx-docs-insurance-fund-long"]["expected"],
    )
    pos = [
        dydx.PerpPosition(Fraction(inp["size"]), Fraction(D(str(inp["mark"]))), Fraction(D(str(inp["mmf"]))))
    ]
    quote = Fraction(inp["deposit"]) - Fraction(inp["size"]) * Fraction(D(str(inp["entry"])))
    delta = dydx.insurance_fund_delta(
        pos,
        quote,
        0,
        Fraction(inp["size"]),
        Fraction(D(str(inp["liquidation_fill"]))),
        is_buy=False,
        max_liquidation_fee_ppm=5000,
    )
    assert -delta == exp["insurance_fund_contribution"] * 10**6
    # The bankruptcy price the engine reports agrees with the fund's reference price.
    bucket = Bucket(
        "a", {"USDC": D(inp["deposit"])}, {"ABC": Position("ABC", D(inp["size"]), D(str(inp["entry"])))}
    )
    pricing = Pricing(
        get_profile("dydx-v4"),
        {"ABC": MarketParams(symbol="ABC", mmf=D("0.03"))},
        {},
        {"ABC": D(str(inp["mark"])), "USDC": D(1)},
    )
    bp = bankruptcy_price(pricing, bucket, "ABC")
    assert bp == D("0.8")


def test_dydx_cross_other_mmr_and_liquidation_price(raw_cases: Cases) -> None:
    inp, exp = (
        raw_cases["dydx-docs-cross-liq-price"]["inputs"],
        raw_cases["dydx-docs-cross-liq-price"]["expected"],
    )
    markets = {
        "ETH": MarketParams(symbol="ETH", mmf=D(str(inp["eth_mmf"]))),
        "STRK": MarketParams(symbol="STRK", mmf=D(str(inp["strk_mmf"]))),
    }
    strk = Position("STRK", D(inp["strk_size"]), D(str(inp["strk_price"])))
    other = position_mm(get_profile("dydx-v4"), strk, brackets(markets["STRK"]), D(str(inp["strk_price"])))[0]
    assert other == exp["other_mmr"]
    bucket = Bucket(
        "cross",
        {"USDC": D(inp["equity"])},
        {"ETH": Position("ETH", D(str(inp["eth_size"])), D(inp["eth_entry"])), "STRK": strk},
    )
    prices = {"ETH": D(inp["eth_entry"]), "STRK": D(str(inp["strk_price"])), "USDC": D(1)}
    lp = liquidation_price(Pricing(get_profile("dydx-v4"), markets, {}, prices), bucket, "ETH")
    assert lp is not None
    assert _close(
        lp, exp["liquidation_price"], raw_cases["dydx-docs-cross-liq-price"]["tolerance"]["liquidation_price"]
    )


# --- Binance, KuCoin, Bybit, Hyperliquid ------------------------------------------------------


def test_binance_maintenance_amount_of_tier3(raw_cases: Cases) -> None:
    case = raw_cases["binance-usdm-maintenance-amount-tier3"]
    tiers = [
        Tier(D(b["floor"]), D(str(b["mmr"])), D(b["cum"]) if "cum" in b else None)
        for b in case["inputs"]["brackets"]
    ]
    schedule = derive_deductions(tiers)
    assert schedule[2].deduction == case["expected"]["maintenance_amount_tier3"]
    assert maintenance(schedule, D(500000)) == case["expected"]["mm_at_500k"]


def test_binance_coinm_maintenance(raw_cases: Cases) -> None:
    case = raw_cases["binance-coinm-maintenance-margin"]
    inp, exp = case["inputs"], case["expected"]
    notional = D(inp["contracts"]) * D(inp["contract_size_usd"]) / D(inp["mark_price"])
    assert notional == D(str(exp["notional_btc"]))
    assert maintenance(derive_deductions([Tier(D(0), D(str(inp["mmr"])), D(0))]), notional) == D(
        str(exp["maintenance_margin_btc"])
    )
    # Tier 4's floor is not published; any floor below tier 5's gives the same derived amount.
    tiers = [
        Tier(D(10), D(str(inp["tier4_mmr"])), D(str(inp["tier4_cum_btc"]))),
        Tier(D(inp["tier5_floor_btc"]), D(str(inp["tier5_mmr"]))),
    ]
    assert derive_deductions(tiers)[1].deduction == D(str(exp["maintenance_amount_tier5_btc"]))


def _iso(size: str, entry: str, margin: str, market: str = "BTC") -> Bucket:
    return Bucket("iso", {"USDT": D(margin)}, {market: Position(market, D(size), D(entry))})


def test_binance_third_party_approximation_is_not_the_venue_convention(raw_cases: Cases) -> None:
    case = raw_cases["binance-thirdparty-approx-isolated"]
    inp, exp, tol = case["inputs"], case["expected"], case["tolerance"]
    markets = {"BTC": MarketParams(symbol="BTC", mmf=D(str(inp["mmr"])))}
    prices = {"BTC": D(inp["entry"]), "USDT": D(1)}
    pricing = Pricing(get_profile("binance-usdm"), markets, {}, prices)
    size, entry, margin = str(inp["size"]), str(inp["entry"]), str(inp["margin"])
    long_lp = liquidation_price(pricing, _iso(size, entry, margin), "BTC")
    short_lp = liquidation_price(pricing, _iso(f"-{size}", entry, margin), "BTC")
    assert long_lp is not None
    assert short_lp is not None
    assert _close(long_lp, exp["binance_exact_long_lp_derived"], tol["binance_exact_long_lp_derived"])
    assert _close(short_lp, exp["binance_exact_short_lp_derived"], tol["binance_exact_short_lp_derived"])
    assert not _close(long_lp, exp["long_lp"], 1)
    assert not _close(short_lp, exp["short_lp"], 1)


def test_kucoin_maintenance_margin_on_position_value(raw_cases: Cases) -> None:
    inp, exp = (
        raw_cases["kucoin-maintenance-margin"]["inputs"],
        raw_cases["kucoin-maintenance-margin"]["expected"],
    )
    size = D(inp["contracts"]) * D(str(inp["multiplier"]))
    pos = Position("XBT", size, D(inp["mark"]))
    mm, _ = position_mm(
        get_profile("kucoin"),
        pos,
        brackets(MarketParams(symbol="XBT", mmf=D(str(inp["mmr"])))),
        D(inp["mark"]),
    )
    assert size * D(inp["mark"]) == exp["position_value"]
    assert mm == exp["maintenance_margin"]


def test_bybit_add_margin_moves_the_liquidation_price(raw_cases: Cases) -> None:
    exp = raw_cases["bybit-usdt-isolated-add-margin"]["expected"]
    p = get_profile("bybit-usdt")
    markets = {"BTC": MarketParams(symbol="BTC", mmf=D("0.005"))}
    prices = {"BTC": D(10000), "USDT": D(1)}
    # (IM - MM) / size = 500 gives the published initial LP of 9,500: margin 550, MM 50.
    assert liquidation_price(Pricing(p, markets, {}, prices), _iso("1", "10000", "550"), "BTC") == D(9500)
    assert (
        liquidation_price(Pricing(p, markets, {}, prices), _iso("1", "10000", "1550"), "BTC")
        == exp["lp_after_add_margin"]
    )
    two = liquidation_price(Pricing(p, markets, {}, prices), _iso("2", "10000", "2100"), "BTC")
    assert two == exp["lp_after_adding_1btc"]


def test_hyperliquid_mmr_from_max_leverage(raw_cases: Cases) -> None:
    case = raw_cases["hyperliquid-mmr-from-max-leverage"]
    for lev in case["inputs"]["max_leverages"]:
        key = f"mmr_{lev}x"
        assert _close(hyperliquid_mmf(D(lev)), case["expected"][key], case["tolerance"][key])


def test_hyperliquid_measures_mm_at_the_liquidation_price_not_entry(raw_cases: Cases) -> None:
    approx = raw_cases["hyperliquid-third-party-approx"]["expected"]["liquidation_price"]
    derived = raw_cases["hyperliquid-isolated-liq-price-formula"]
    inp = derived["inputs"]
    markets = {"BTC": MarketParams(symbol="BTC", max_leverage=D(inp["max_leverage"]))}
    bucket = Bucket(
        "iso", {"USDC": D(inp["isolated_margin"])}, {"BTC": Position("BTC", D(inp["size"]), D(inp["entry"]))}
    )
    pricing = Pricing(get_profile("hyperliquid"), markets, {}, {"BTC": D(inp["entry"]), "USDC": D(1)})
    lp = liquidation_price(pricing, bucket, "BTC")
    assert lp is not None
    assert _close(lp, derived["expected"]["liquidation_price"], derived["tolerance"]["liquidation_price"])
    assert not _close(lp, approx, 1)


def test_gmx_threshold_price_and_remaining_collateral(raw_cases: Cases) -> None:
    exp = raw_cases["gmx-v2-long-eth-collateral"]["expected"]
    p = get_profile("gmx-v2")
    markets = {"ETH": MarketParams(symbol="ETH", mmf=D("0.01"))}
    bucket = Bucket("iso", {"WETH": D(10)}, {"ETH": Position("ETH", D(40), D(5000))})
    h = evaluate(Pricing(p, markets, {}, {"ETH": D(4200), "WETH": D(4200)}), bucket)
    assert h.equity == exp["remaining_collateral_at_4200"]
    assert h.liquidatable is exp["liquidatable_at_4200"]
    assert (
        evaluate(Pricing(p, markets, {}, {"ETH": D(4000), "WETH": D(4000)}), bucket).liquidatable
        is exp["liquidatable_at_4000"]
    )
    # The collateral is the index token: moving both prices, liquidation starts at 4,040.
    at = exp["threshold_price_derived"]
    assert not evaluate(Pricing(p, markets, {}, {"ETH": D(at), "WETH": D(at)}), bucket).liquidatable
    below = D(at) - D("0.01")
    assert evaluate(Pricing(p, markets, {}, {"ETH": below, "WETH": below}), bucket).liquidatable


@pytest.mark.parametrize(
    "case_id", ["binance-usdm-cross-lp-after-averaging-down", "bybit-inverse-cross-long"]
)
def test_unreproducible_doc_numbers_are_skipped(raw_cases: Cases, case_id: str) -> None:
    case = raw_cases[case_id]
    assert case["reproduced"] is False
    pytest.skip(f"{case_id}: reproduced:false in raw_cases.json: {case['not_reproduced_reason']}")
