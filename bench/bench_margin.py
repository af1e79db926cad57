"""Exact margin engine costs per call: what a confirmation of a screened bucket pays.

Figures (microseconds per call, median of 5 rounds):
  margin_evaluate_perp_us      evaluate() on a 3-position Binance-style cross bucket (tiered BTC)
  margin_evaluate_aave_us      evaluate() on an Aave v3.3 bucket (integer wad math, 3 reserves)
  margin_liq_price_us          liquidation_price() of the tiered market (bracket re-solve)
  margin_plan_perp_us          plan_liquidation() on a liquidatable perp bucket
  margin_plan_aave_us          plan_liquidation() on a liquidatable Aave v3.3 bucket
Bounded: a few thousand calls per figure, well under a minute.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from decimal import Decimal

from keeper.domain.margin import Pricing, evaluate, get_profile, liquidation_price, plan_liquidation
from keeper.domain.model import AssetParams, Bucket, MarketParams, Position, Tier

D = Decimal
ROUNDS = 5
CALLS = 2000


def per_call_us(fn: Callable[[], object], calls: int = CALLS) -> float:
    samples = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    markets = {
        "BTC": MarketParams(
            symbol="BTC",
            mmf_tiers=(Tier(D(0), D("0.004"), D(0)), Tier(D(50000), D("0.005")), Tier(D(250000), D("0.01"))),
        ),
        "ETH": MarketParams(symbol="ETH", mmf=D("0.01")),
        "SOL": MarketParams(symbol="SOL", mmf=D("0.02")),
    }
    prices = {"BTC": D(60000), "ETH": D(3000), "SOL": D(150), "USDT": D(1)}
    perp = get_profile("binance-usdm")
    healthy = Bucket(
        "cross",
        {"USDT": D(20000)},
        {
            "BTC": Position("BTC", D(2), D(58000)),
            "ETH": Position("ETH", D(-10), D(3100)),
            "SOL": Position("SOL", D(100), D(140)),
        },
    )
    sick = Bucket("cross", {"USDT": D(0)}, dict(healthy.positions))
    sick.positions["BTC"] = Position("BTC", D(2), D(60700))
    assets = {
        "ETH": AssetParams(
            symbol="ETH", decimals=18, liquidation_threshold=D("0.83"), liquidation_bonus=D("0.05")
        ),
        "WBTC": AssetParams(
            symbol="WBTC", decimals=8, liquidation_threshold=D("0.78"), liquidation_bonus=D("0.05")
        ),
        "USDC": AssetParams(symbol="USDC", decimals=6),
    }
    lprices = {"ETH": D(3000), "WBTC": D(60000), "USDC": D(1)}
    aave = get_profile("aave-v3.3")
    lend = Bucket("cross", {"ETH": D(10), "WBTC": D("0.5"), "USDC": D(-45000)})
    lend_sick = Bucket("cross", {"ETH": D(10), "WBTC": D("0.5"), "USDC": D(-49000)})
    perp_pricing = Pricing(perp, markets, {}, prices)
    aave_pricing = Pricing(aave, {}, assets, lprices)
    assert plan_liquidation(perp_pricing, sick) is not None
    assert plan_liquidation(aave_pricing, lend_sick) is not None
    figures = {
        "margin_evaluate_perp_us": per_call_us(lambda: evaluate(perp_pricing, healthy)),
        "margin_evaluate_aave_us": per_call_us(lambda: evaluate(aave_pricing, lend)),
        "margin_liq_price_us": per_call_us(lambda: liquidation_price(perp_pricing, healthy, "BTC"), 500),
        "margin_plan_perp_us": per_call_us(lambda: plan_liquidation(perp_pricing, sick), 500),
        "margin_plan_aave_us": per_call_us(lambda: plan_liquidation(aave_pricing, lend_sick), 500),
    }
    for name, value in figures.items():
        print(f"bench {name} {value:.1f} us")


if __name__ == "__main__":
    main()
