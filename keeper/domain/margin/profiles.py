"""Profiles: one venue's conventions as data, read by one shared engine.

A profile says which health model a venue uses (``model``), how strict its liquidation test is,
where it measures the maintenance margin, how it rounds, how a liquidation is sized (close
factor, target health, slices, dust) and which path bad debt takes. It holds no code: the
engine's modules branch on these fields. The built-in values are the venues' own constants;
``config/profiles/<name>.toml`` documents them with sources and carries the per-market data
(brackets, tiers) that a deployment loads into ``MarketParams``.

``get_profile`` is pure (no file I/O).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from keeper.domain.margin.types import CONTEXT, UnknownProfile

__all__ = [
    "PROFILE_NAMES",
    "D",
    "Kind",
    "MmAt",
    "Model",
    "Profile",
    "Sizing",
    "SizingPolicy",
    "Strictness",
    "get_profile",
    "with_policy",
]

Kind = Literal["perp", "lending"]
Model = Literal[
    "perp", "drift", "mango", "gmx", "aave", "comet", "compound-v2", "morpho", "marginfi", "vertex", "aevo"
]
Strictness = Literal["lt", "le"]
MmAt = Literal["liq", "entry"]
Sizing = Literal["restore", "close_factor_max", "full", "absorb", "max_allowed", "whole_bucket"]
SizingPolicy = Literal["least", "largest"]
"""The keeper's choice where a venue leaves the size to the liquidator (``with_policy``)."""

D = Decimal


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """One venue's conventions (see the module docstring and docs/margin.md)."""

    name: str
    kind: Kind
    model: Model
    strictness: Strictness = "lt"
    """``lt``: liquidatable iff equity < requirement; ``le``: iff equity <= requirement."""
    mm_at: MmAt = "liq"
    """Where a position's maintenance notional is measured: at the price (``liq``) or at entry."""
    rounding: str = "exact Decimal; sizes rounded up to size_quantum"
    """How the venue rounds, in words (the code paths are selected by ``model``)."""
    sizing: Sizing = "restore"
    """How much one liquidation takes (docs/margin.md, *How much*); ``whole_bucket`` (only through
    ``with_policy``): every position of the bucket in one request."""
    target_health: Decimal = D(1)
    """Health factor a ``restore`` liquidation brings the bucket back to."""
    size_quantum: Decimal = D("1e-8")
    """Liquidation sizes are rounded up (toward a full close) to this step."""
    close_factor: Decimal | None = None
    """Share of the debt one call may repay when the full-close conditions do not hold."""
    close_factor_full_hf: Decimal | None = None
    """At or below this health factor the whole debt may be repaid (Aave: 0.95)."""
    close_factor_min_base: Decimal | None = None
    """Aave v3.3: below this reserve collateral or debt value (USD) the whole debt may be repaid."""
    close_factor_scope: Literal["reserve", "total"] = "reserve"
    """Aave v3.0: the close factor applies to the reserve's debt; v3.3: to the total debt."""
    min_leftover_base: Decimal | None = None
    """Aave v3.3: a partial liquidation must leave at least this much debt and collateral (USD)."""
    slice_fraction: Decimal | None = None
    slice_above_notional: Decimal | None = None
    """Hyperliquid: positions above this notional are liquidated ``slice_fraction`` at a time."""
    backstop_fraction: Decimal | None = None
    """Hyperliquid: below ``backstop_fraction * MM`` the liquidator vault takes the position."""
    min_collateral_usd: Decimal | None = None
    """GMX: remaining collateral under this is liquidatable whatever the size."""
    liquidation_bonus: Decimal | None = None
    """Default bonus where the asset carries none (Compound v2's liquidation incentive - 1)."""
    protocol_seize_share: Decimal | None = None
    """Compound v2: share of all seized tokens kept by the protocol."""
    lif_max: Decimal | None = None
    lif_cursor: Decimal | None = None
    """Morpho Blue: LIF = min(lif_max, 1 / (cursor * LLTV + 1 - cursor))."""
    settle_asset: str = "USDC"
    """Mango: the token a perp's value is added to before token weights."""
    overall_asset_weight: Decimal = D(1)
    """Mango: weight applied to a positive perp value (maint)."""
    conf_multiple: Decimal | None = None
    """MarginFi: the oracle's confidence is widened by this (Pyth ``CONF_INTERVAL_MULTIPLE``)."""
    conf_cap: Decimal | None = None
    """MarginFi: the widened confidence is capped at this share of the price (``MAX_CONF_INTERVAL``)."""
    conf_max: Decimal | None = None
    """MarginFi: a widened confidence above this share of the price is refused (the default
    ``oracle_max_confidence``, 10%)."""
    liquidator_fee: Decimal | None = None
    insurance_fee: Decimal | None = None
    """MarginFi: the liquidator's discount and the insurance fund's cut on the seized value."""
    liq_price_share: Decimal | None = None
    """Vertex: the liquidation price gives away this share of the maintenance weight's discount,
    ``P * (1 + (w - 1) * share)``."""
    spread_liq_share: Decimal | None = None
    """Vertex: the same for a spread, on the spot price, of the perp's (long) or spot's (short) one."""
    insurance_share: Decimal | None = None
    """Vertex: the share of the liquidator's discount paid into the insurance fund."""
    option_mm_rate: Decimal | None = None
    """Aevo standard margin: a short option's maintenance margin is this share of spot plus its mark."""
    price_decimals: int = 8
    default_decimals: int = 18
    bad_debt_path: str = "bad debt"


_PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="generic-perp", kind="perp", model="perp",
            bad_debt_path="insurance fund, then auto-deleveraging",
        ),
        Profile(
            name="binance-usdm", kind="perp", model="perp", strictness="le",
            rounding="exact Decimal; MMR and maintenance amount from the bracket of the notional "
            "at the liquidation price, re-solved when the answer lands in another bracket",
            bad_debt_path="insurance fund, then auto-deleveraging (ADL)",
        ),
        Profile(
            name="bybit-usdt", kind="perp", model="perp", strictness="le", mm_at="entry",
            rounding="exact Decimal; MM on the entry notional (Bybit's displayed liquidation price)",
            bad_debt_path="insurance fund, then auto-deleveraging (ADL)",
        ),
        Profile(
            name="kucoin", kind="perp", model="perp", strictness="le", mm_at="entry",
            rounding="exact Decimal; MM on the entry notional",
            bad_debt_path="insurance fund, then auto-deleveraging (ADL)",
        ),
        Profile(
            name="hyperliquid", kind="perp", model="perp", sizing="full",
            rounding="exact Decimal; mmf = 1/(2*max_leverage) or tiers with derived deductions",
            slice_fraction=D("0.2"), slice_above_notional=D(100000),
            backstop_fraction=CONTEXT.divide(D(2), D(3)),
            bad_debt_path="backstop liquidator vault, then auto-deleveraging",
        ),
        Profile(
            name="dydx-v4", kind="perp", model="perp", size_quantum=D("1e-9"),
            rounding="exact rationals; bankruptcy quote quantums (1e-6 USDC) rounded toward +inf",
            bad_debt_path="insurance fund pays fills worse than bankruptcy; deleveraging "
            "at the bankruptcy price when equity < 0",
        ),
        Profile(
            name="drift-v2", kind="perp", model="drift", size_quantum=D("1e-9"),
            rounding="integer floors at each step (PRICE/QUOTE 1e6, BASE 1e9, ratios 1e4); "
            "ceil for the implied liability",
            bad_debt_path="resolve_perp_bankruptcy: insurance fund, then socialised loss",
        ),
        Profile(
            name="gmx-v2", kind="perp", model="gmx", mm_at="entry", sizing="full",
            min_collateral_usd=D(1),
            rounding="exact Decimal; minCollateralFactorForLiquidation applies to sizeInUsd",
            bad_debt_path="position liquidated; the shortfall is borne by the pool",
        ),
        Profile(
            name="mango-v4", kind="perp", model="mango",
            rounding="exact Decimal (the venue uses I80F48 fixed point)",
            bad_debt_path="perp_liq_negative_pnl_or_bankruptcy: insurance fund, then socialised loss",
        ),
        Profile(
            name="aave-v3.0", kind="lending", model="aave", sizing="close_factor_max",
            rounding="integers in token base units; prices 1e8; percentMul/percentDiv/wadDiv half-up",
            close_factor=D("0.5"), close_factor_full_hf=D("0.95"), close_factor_scope="reserve",
            bad_debt_path="collateral exhausted: the remaining debt stays on the account (HF 0)",
        ),
        Profile(
            name="aave-v3.3", kind="lending", model="aave", sizing="close_factor_max",
            rounding="integers in token base units; prices 1e8; percentMul/percentDiv/wadDiv half-up",
            close_factor=D("0.5"), close_factor_full_hf=D("0.95"), close_factor_scope="total",
            close_factor_min_base=D(2000), min_leftover_base=D(1000),
            bad_debt_path="collateral exhausted: the remaining debt is burned as reserve deficit",
        ),
        Profile(
            name="compound-v3", kind="lending", model="comet", sizing="absorb",
            rounding="exact Decimal (the venue: 1e8 prices, factors 1e18)",
            bad_debt_path="absorb: reserves take the debt the seized collateral does not cover",
        ),
        Profile(
            name="compound-v2", kind="lending", model="compound-v2", sizing="close_factor_max",
            rounding="Exp mantissa math: each market's value truncated to 1e-18 USD; seize truncated",
            close_factor=D("0.5"), liquidation_bonus=D("0.08"), protocol_seize_share=D("0.028"),
            bad_debt_path="collateral exhausted: the shortfall stays as unbacked borrow",
        ),
        Profile(
            name="morpho-blue", kind="lending", model="morpho",
            rounding="exact Decimal (the venue: mulDivDown collateral, toAssetsUp debt)",
            lif_max=D("1.15"), lif_cursor=D("0.3"),
            bad_debt_path="collateral exhausted: the remaining debt is socialised to the market's suppliers",
        ),
        Profile(
            name="marginfi-v2", kind="lending", model="marginfi", strictness="le", sizing="max_allowed",
            rounding="exact Decimal (the program: I80F48); prices biased by conf * 2.12 (capped at 5% "
            "of the price); the seized amount floored to the asset's native units",
            conf_multiple=D("2.12"), conf_cap=D("0.05"), conf_max=D("0.1"),
            liquidator_fee=D("0.025"), insurance_fee=D("0.025"), default_decimals=6,
            bad_debt_path="liquidators take the remaining assets, then lending_pool_handle_bankruptcy: "
            "the bank's insurance fund repays the bad debt, the rest is socialised to its depositors",
        ),
        Profile(
            name="vertex", kind="perp", model="vertex", sizing="max_allowed", size_quantum=D("1e-18"),
            rounding="exact Decimal (the contracts: x18 fixed point); liquidated amounts floored to 1e-18",
            liq_price_share=D("0.2"), spread_liq_share=D("0.04"), insurance_share=D("0.5"),
            bad_debt_path="finalizeSubaccount: the insurance fund buys the remaining liabilities, "
            "then the losses are socialised (perp and spot)",
        ),
        Profile(
            name="aevo", kind="perp", model="aevo", strictness="le", size_quantum=D("0.01"),
            rounding="exact Decimal; liquidated sizes rounded up to the 0.01 amount step",
            option_mm_rate=D("0.1"),
            bad_debt_path="the insurance fund takes the position at a markup, then auto-deleveraging "
            "of the most profitable traders at the mark price",
        ),
    )
}

PROFILE_NAMES: tuple[str, ...] = tuple(_PROFILES)


def get_profile(name: str) -> Profile:
    """The built-in profile called ``name``; :class:`UnknownProfile` names it otherwise."""
    try:
        return _PROFILES[name]
    except KeyError:
        raise UnknownProfile(name, PROFILE_NAMES) from None


def with_policy(profile: Profile, policy: SizingPolicy) -> Profile:
    """The profile a keeper plans with under its sizing ``policy``.

    ``least`` is the profile as it is. ``largest`` changes only what the venue leaves to the
    liquidator: a ``perp``-model profile sized ``restore`` (generic-perp, Binance, Bybit, KuCoin,
    dYdX) becomes ``whole_bucket``, the largest liquidation such a venue accepts: every position
    of the bucket closed in one request (one position: all of it). Sizes the venue dictates
    (``full``, ``close_factor_max``, ``absorb``, ``max_allowed``) and the other models stand
    (Aave already submits the whole close factor). Pure; equal arguments give equal profiles."""
    if policy == "largest" and profile.model == "perp" and profile.sizing == "restore":
        return msgspec.structs.replace(profile, sizing="whole_bucket")
    return profile
