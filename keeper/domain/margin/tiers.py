"""Maintenance schedules: one rate, a tiered bracket table, or Hyperliquid's max leverage.

A tier is ``MM = notional * rate - deduction`` for ``notional >= notional_floor``. Where a
deduction is left out it is derived from the tiers below so the schedule is continuous
(Binance's ``cum_n = floor_n * (MMR_n - MMR_{n-1}) + cum_{n-1}``; Hyperliquid's deduction rule is
the same). A market with ``max_leverage`` only has Hyperliquid's ``mmf = 1 / (2 * max_leverage)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from keeper.domain.margin.types import ZERO as _ZERO
from keeper.domain.margin.types import MissingParameter
from keeper.domain.model import MarketParams, Tier

__all__ = [
    "ZERO",
    "Bracket",
    "bracket_for",
    "brackets",
    "derive_deductions",
    "hyperliquid_mmf",
    "maintenance",
    "tiers_from_table",
]

ZERO: Final = _ZERO  # a C static in the compiled module (an imported name is a dict lookup)


class Bracket:
    """A resolved tier: floor, rate and (derived) deduction; ``ceiling`` is the next floor."""

    __slots__ = ("ceiling", "deduction", "floor", "rate")

    def __init__(self, floor: Decimal, rate: Decimal, deduction: Decimal, ceiling: Decimal | None) -> None:
        self.floor = floor
        self.rate = rate
        self.deduction = deduction
        self.ceiling = ceiling

    def contains(self, notional: Decimal) -> bool:
        return notional >= self.floor and (self.ceiling is None or notional < self.ceiling)

    def __repr__(self) -> str:
        return f"Bracket({self.floor}, {self.rate}, {self.deduction}, {self.ceiling})"


def derive_deductions(tiers: Sequence[Tier]) -> list[Bracket]:
    """The tiers sorted by floor with every deduction filled in (given ones are kept)."""
    ordered = sorted(tiers, key=lambda t: t.notional_floor)
    out: list[Bracket] = []
    prev_rate = ZERO
    prev_ded = ZERO
    for i, t in enumerate(ordered):
        if t.deduction is not None:
            ded = t.deduction
        elif i == 0:
            ded = t.notional_floor * t.rate
        else:
            ded = prev_ded + t.notional_floor * (t.rate - prev_rate)
        ceiling = ordered[i + 1].notional_floor if i + 1 < len(ordered) else None
        out.append(Bracket(t.notional_floor, t.rate, ded, ceiling))
        prev_rate, prev_ded = t.rate, ded
    return out


def hyperliquid_mmf(max_leverage: Decimal) -> Decimal:
    """Hyperliquid's maintenance margin fraction: half the initial margin at max leverage."""
    return 1 / (2 * max_leverage)


def brackets(market: MarketParams) -> list[Bracket]:
    """The market's maintenance schedule as brackets (a single rate is one open bracket)."""
    if market.mmf_tiers:
        return derive_deductions(market.mmf_tiers)
    if market.mmf is not None:
        return [Bracket(ZERO, market.mmf, ZERO, None)]
    if market.max_leverage is not None:
        return [Bracket(ZERO, hyperliquid_mmf(market.max_leverage), ZERO, None)]
    raise MissingParameter(f"market {market.symbol!r}: no mmf, mmf_tiers or max_leverage")


def bracket_for(schedule: Sequence[Bracket], notional: Decimal) -> Bracket:
    """The bracket whose range holds ``notional`` (below the first floor: the first)."""
    for b in schedule:
        if b.contains(notional):
            return b
    return schedule[0]


def maintenance(schedule: Sequence[Bracket], notional: Decimal) -> Decimal:
    """``notional * rate - deduction`` of the bracket holding ``notional`` (never below zero)."""
    if notional == 0:
        return ZERO
    b = bracket_for(schedule, notional)
    return max(ZERO, notional * b.rate - b.deduction)


def tiers_from_table(rows: Sequence[Mapping[str, Any]]) -> tuple[Tier, ...]:
    """Tiers from a config table (``[[...tiers]]`` rows of decimal strings), for ``MarketParams``.

    Each row has ``notional_floor`` and ``rate`` and may have ``deduction``; values must be
    strings so that no float ever enters a schedule.
    """
    out: list[Tier] = []
    for i, row in enumerate(rows):
        vals: dict[str, Decimal | None] = {}
        for key in ("notional_floor", "rate", "deduction"):
            v = row.get(key)
            if v is None:
                vals[key] = None
                continue
            if not isinstance(v, str):
                raise MissingParameter(f"tiers[{i}].{key}: expected a decimal string, got {v!r}")
            vals[key] = Decimal(v)
        unknown = set(row) - {"notional_floor", "rate", "deduction"}
        if unknown:
            raise MissingParameter(f"tiers[{i}]: unknown key {sorted(unknown)[0]!r}")
        floor, rate = vals["notional_floor"], vals["rate"]
        if floor is None or rate is None:
            raise MissingParameter(f"tiers[{i}]: notional_floor and rate are required")
        out.append(Tier(floor, rate, vals["deduction"]))
    return tuple(out)
