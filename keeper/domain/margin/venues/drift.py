"""Drift v2 liquidation arithmetic (``programs/drift/src/math/liquidation.rs``), in the
venue's integers: PRICE and QUOTE 1e6, BASE 1e9, margin ratios and spot weights 1e4,
liquidation fees and multipliers 1e6. Each division floors as on chain, except the implied
liability, which rounds up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "BASE_PRECISION",
    "LIQUIDATION_FEE_PRECISION",
    "MARGIN_TO_FEE",
    "PRICE_PRECISION",
    "QUOTE_PRECISION",
    "SPOT_WEIGHT_PRECISION",
    "U128_MAX",
    "SpotBalance",
    "asset_for_liability",
    "base_to_cover_margin_shortage",
    "liability_implied_by_asset",
    "liability_transfer_to_cover_margin_shortage",
    "liquidation_fee_at",
    "perp_if_fee",
    "spot_if_fee",
    "strict_maintenance",
]

PRICE_PRECISION = 10**6
QUOTE_PRECISION = 10**6
BASE_PRECISION = 10**9
SPOT_WEIGHT_PRECISION = 10**4
LIQUIDATION_FEE_PRECISION = 10**6
MARGIN_TO_FEE = LIQUIDATION_FEE_PRECISION // SPOT_WEIGHT_PRECISION  # 1e4 ratios -> 1e6
U128_MAX = 2**128 - 1


def base_to_cover_margin_shortage(
    *,
    margin_shortage: int,
    margin_ratio: int,
    liquidator_fee: int,
    if_fee: int,
    oracle_price: int,
    quote_oracle_price: int,
) -> int:
    """Perp base (1e9) to close so the freed margin, net of fees, covers ``margin_shortage``."""
    ratio = margin_ratio * MARGIN_TO_FEE
    if oracle_price == 0 or ratio <= liquidator_fee:
        return U128_MAX
    price = oracle_price * quote_oracle_price // PRICE_PRECISION
    freed = price * (ratio - liquidator_fee) // LIQUIDATION_FEE_PRECISION
    fee = oracle_price * if_fee // LIQUIDATION_FEE_PRECISION
    return margin_shortage * BASE_PRECISION // (freed - fee)


def liability_transfer_to_cover_margin_shortage(
    *,
    margin_shortage: int,
    asset_weight: int,
    asset_liquidation_multiplier: int,
    liability_weight: int,
    liability_liquidation_multiplier: int,
    liability_decimals: int,
    liability_price: int,
    if_liquidation_fee: int,
) -> int:
    """Spot liability (token base units) a liquidator takes over to cover the shortage."""
    if asset_weight >= liability_weight:
        return U128_MAX
    if liability_decimals > 6:
        num_scale, den_scale = 10 ** (liability_decimals - 6), 1
    else:
        num_scale, den_scale = 1, 10 ** (6 - liability_decimals)
    lw = liability_weight * 10  # an extra 10 for precision, as the program does
    aw = asset_weight * 10 * asset_liquidation_multiplier // liability_liquidation_multiplier
    if aw >= lw:
        return U128_MAX
    num = margin_shortage * num_scale * PRICE_PRECISION * SPOT_WEIGHT_PRECISION * 10
    den = liability_price * (lw - aw) - (
        liability_price * if_liquidation_fee // LIQUIDATION_FEE_PRECISION * liability_weight * 10
    )
    out: int = max(num // den // den_scale, 1)
    return out


def liability_implied_by_asset(
    *,
    asset_amount: int,
    asset_liquidation_multiplier: int,
    asset_decimals: int,
    asset_price: int,
    liability_liquidation_multiplier: int,
    liability_decimals: int,
    liability_price: int,
) -> int:
    """Liability transferred for ``asset_amount`` (rounded up)."""
    if liability_decimals > asset_decimals:
        num_scale, den_scale = 10 ** (liability_decimals - asset_decimals), 1
    else:
        num_scale, den_scale = 1, 10 ** (asset_decimals - liability_decimals)
    num = asset_amount * num_scale * asset_price * liability_liquidation_multiplier
    den = liability_price * asset_liquidation_multiplier * den_scale
    implied: int = -(-num // den)
    return implied


def asset_for_liability(
    *,
    asset_amount: int,
    asset_liquidation_multiplier: int,
    asset_decimals: int,
    asset_price: int,
    liability_transfer: int,
    liability_liquidation_multiplier: int,
    liability_decimals: int,
    liability_price: int,
) -> int:
    """Asset given for ``liability_transfer`` (floored, at least 1), snapped to the whole
    ``asset_amount`` when within $1 of it."""
    if asset_decimals > liability_decimals:
        num_scale, den_scale = 10 ** (asset_decimals - liability_decimals), 1
    else:
        num_scale, den_scale = 1, 10 ** (liability_decimals - asset_decimals)
    out = max(
        liability_transfer * num_scale * liability_price * asset_liquidation_multiplier
        // (asset_price * liability_liquidation_multiplier * den_scale),
        1,
    )
    if asset_decimals > 6:
        v_num, v_den = 10 ** (asset_decimals - 6), 1
    else:
        v_num, v_den = 1, 10 ** (6 - asset_decimals)
    delta_value = abs(out - asset_amount) * asset_price // PRICE_PRECISION * v_num // v_den
    snapped: int = asset_amount if delta_value < QUOTE_PRECISION else out
    return snapped


def perp_if_fee(
    *,
    margin_shortage: int,
    base_asset_amount: int,
    margin_ratio: int,
    liquidator_fee: int,
    oracle_price: int,
    quote_oracle_price: int,
    max_if_fee: int,
) -> int:
    """Insurance-fund fee (ppm) on a perp liquidation: 95% of what the margin leaves after the
    liquidator's fee and the shortage per unit of notional, capped at ``max_if_fee``."""
    ratio = margin_ratio * MARGIN_TO_FEE
    if oracle_price == 0 or quote_oracle_price <= 0 or base_asset_amount == 0 or ratio <= liquidator_fee:
        return 0
    price = oracle_price * quote_oracle_price // PRICE_PRECISION
    per_unit = margin_shortage * BASE_PRECISION // abs(base_asset_amount) * PRICE_PRECISION // price
    implied = max(0, ratio - liquidator_fee - per_unit) * 19 // 20
    return min(max_if_fee, implied)


def spot_if_fee(
    *,
    margin_shortage: int,
    token_amount: int,
    asset_weight: int,
    asset_liquidation_multiplier: int,
    liability_weight: int,
    liability_liquidation_multiplier: int,
    decimals: int,
    price: int,
    max_if_fee: int,
) -> int:
    """Insurance-fund fee (ppm) on a spot liquidation:
    ``(lw - aw * aMult / lMult - shortage / (token * price)) / lw``, capped at ``max_if_fee``."""
    if price == 0 or token_amount == 0:
        return 0
    lw = liability_weight * MARGIN_TO_FEE
    aw = asset_weight * MARGIN_TO_FEE * asset_liquidation_multiplier // liability_liquidation_multiplier
    shortage_part: int = margin_shortage * LIQUIDATION_FEE_PRECISION * 10**decimals // token_amount // price
    implied = max(0, lw - aw - shortage_part) * LIQUIDATION_FEE_PRECISION // lw
    return min(max_if_fee, implied)


def liquidation_fee_at(
    *,
    base_fee: int, max_fee: int, last_active_slot: int, slot: int, grace_slots: int = 1500, per_slot: int = 1
) -> int:
    """The liquidator fee (ppm) ramp: the base fee during the grace period after the
    liquidation began, then +``per_slot`` ppm per elapsed slot, capped at ``max_fee``."""
    elapsed = max(0, slot - last_active_slot)
    if elapsed < grace_slots:
        return base_fee
    return min(max_fee, base_fee + elapsed * per_slot)


class SpotBalance(NamedTuple):
    amount: int  # token base units, positive
    decimals: int
    oracle_price: int  # 1e6
    twap_price: int  # 1e6, 5-minute TWAP
    weight: int  # 1e4: asset weight for deposits, liability weight for borrows


def strict_maintenance(deposits: Sequence[SpotBalance], borrows: Sequence[SpotBalance]) -> tuple[int, int]:
    """``(total collateral, margin requirement)`` in quote (1e6), strict mode: deposits at
    min(oracle, TWAP), borrows at max(oracle, TWAP)."""
    tc = sum(
        d.amount * min(d.oracle_price, d.twap_price) // 10**d.decimals * d.weight // SPOT_WEIGHT_PRECISION
        for d in deposits
    )
    mr = sum(
        b.amount * max(b.oracle_price, b.twap_price) // 10**b.decimals * b.weight // SPOT_WEIGHT_PRECISION
        for b in borrows
    )
    return tc, mr
