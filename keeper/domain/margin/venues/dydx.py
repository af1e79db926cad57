"""dYdX v4 liquidation arithmetic (``x/clob/keeper/liquidations.go``), in exact rationals.

Quote quantums are 1e-6 USDC. ``TNC`` is the subaccount's net collateral (quote balance plus
Σ size·price), ``TMMR`` its total maintenance requirement (Σ |size·price|·mmf).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

__all__ = [
    "QUOTE_QUANTUMS_PER_USDC",
    "PerpPosition",
    "bankruptcy_quote_quantums",
    "fillable_price",
    "insurance_fund_delta",
    "maintenance",
    "net_collateral",
]

QUOTE_QUANTUMS_PER_USDC = 10**6


class PerpPosition(NamedTuple):
    size: Fraction
    oracle_price: Fraction
    mmf: Fraction


def net_collateral(positions: Sequence[PerpPosition], quote_balance: Fraction) -> Fraction:
    return quote_balance + sum((p.size * p.oracle_price for p in positions), Fraction(0))


def maintenance(positions: Sequence[PerpPosition]) -> Fraction:
    return sum((abs(p.size * p.oracle_price) * p.mmf for p in positions), Fraction(0))


def bankruptcy_quote_quantums(
    positions: Sequence[PerpPosition], quote_balance: Fraction, index: int, delta_size: Fraction
) -> int:
    """Quote quantums the subaccount must receive (negative: may pay) for changing position
    ``index`` by ``delta_size`` without its equity falling below zero in proportion:
    ``-DNNV - floor(TNC * |DMMR| / TMMR)``, so the result rounds toward +inf."""
    p = positions[index]
    q = QUOTE_QUANTUMS_PER_USDC
    dnnv = delta_size * p.oracle_price * q
    dmmr = (abs(p.size + delta_size) - abs(p.size)) * p.oracle_price * p.mmf * q
    tnc = net_collateral(positions, quote_balance) * q
    tmmr = maintenance(positions) * q
    result = -dnnv - math.floor(tnc * abs(dmmr) / tmmr)
    if result.denominator != 1:
        # The chain works in whole quantums: the notional of a slice is rounded toward +inf too.
        return math.ceil(result)
    return int(result)


def fillable_price(
    positions: Sequence[PerpPosition],
    quote_balance: Fraction,
    index: int,
    bankruptcy_adjustment: Fraction,
    spread_to_maintenance_ratio: Fraction,
) -> Fraction:
    """The worst price a liquidation order of position ``index`` may fill at, per coin:
    ``(PNNV - ABR * SMMR * PMMR) / PS`` with ``ABR = clamp(BA * (1 - TNC / TMMR), 0, 1)``."""
    p = positions[index]
    pnnv = p.size * p.oracle_price
    pmmr = abs(pnnv) * p.mmf
    tnc, tmmr = net_collateral(positions, quote_balance), maintenance(positions)
    abr = min(Fraction(1), max(Fraction(0), bankruptcy_adjustment * (1 - tnc / tmmr)))
    return (pnnv - abr * spread_to_maintenance_ratio * pmmr) / p.size


def insurance_fund_delta(
    positions: Sequence[PerpPosition],
    quote_balance: Fraction,
    index: int,
    fill_size: Fraction,
    fill_price: Fraction,
    *,
    is_buy: bool,
    max_liquidation_fee_ppm: int,
) -> int:
    """Quote quantums the insurance fund receives (positive: the liquidation fee) or pays
    (negative) for a liquidation fill: ``delta = proceeds - bankruptcy``; a positive delta is
    capped at ``|proceeds| * max fee``."""
    q = QUOTE_QUANTUMS_PER_USDC
    delta_size = fill_size if is_buy else -fill_size
    bankruptcy = bankruptcy_quote_quantums(positions, quote_balance, index, delta_size)
    proceeds = -delta_size * fill_price * q
    delta = proceeds - bankruptcy
    if delta <= 0:
        return math.floor(delta)
    fee_cap = abs(proceeds) * max_liquidation_fee_ppm / 10**6
    return math.floor(min(fee_cap, delta))
