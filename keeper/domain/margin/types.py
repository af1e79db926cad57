"""The margin engine's result types, its errors and its arithmetic context.

Every number that decides or sizes a liquidation is a ``Decimal`` computed inside
:func:`exact`'s local context (60 significant digits, traps on invalid operations and division
by zero), so nothing rounds silently: a profile rounds only where its venue rounds, explicitly.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Literal, ParamSpec, TypeVar

import msgspec

from keeper.errors import KeeperError

__all__ = [
    "CONTEXT",
    "ENGINE",
    "INF",
    "NO_EXTRAS",
    "ONE",
    "ZERO",
    "Action",
    "BucketHealth",
    "Extras",
    "LiquidationPlan",
    "LiquidationRequest",
    "MissingParameter",
    "MissingPrice",
    "OptionSpec",
    "OracleRefused",
    "PerpWeights",
    "UnknownProfile",
    "exact",
    "fmt_num",
    "fmt_usd",
    "price_of",
    "quantize_up",
]

P = ParamSpec("P")
R = TypeVar("R")

INF = Decimal("Infinity")
ZERO = Decimal(0)
ONE = Decimal(1)

CONTEXT = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
"""The engine's Decimal context: wide enough that wei amounts times 8-decimal prices stay exact."""


_ACTIVE = CONTEXT.copy()
"""The context ``exact`` installs. One object, so a call made inside another (``plan_liquidation``
evaluates health several times) costs an identity check, not a context copy. Its flags collect
whatever the engine raised without trapping: nothing reads them, and the traps above raise on the
operation that sets them, whatever the flags already hold."""


ENGINE = _ACTIVE
"""``exact``'s context, for compiled callers that install it themselves around ``health_of`` and
``plan_of`` (the wrapper is an interpreted call with packed arguments)."""


def exact(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` inside the engine's Decimal context (the caller's context is restored)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        caller = decimal.getcontext()
        if caller is _ACTIVE:
            return fn(*args, **kwargs)
        decimal.setcontext(_ACTIVE)
        try:
            return fn(*args, **kwargs)
        finally:
            decimal.setcontext(caller)

    return wrapper


class MissingPrice(KeeperError):
    """A price the computation needs is absent; ``symbol`` names it."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"missing price for {symbol!r}")
        self.symbol = symbol


class UnknownProfile(KeeperError):
    """No profile has this name; ``name`` is the name asked for."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown profile {name!r} (known: {', '.join(known)})")
        self.name = name


class MissingParameter(KeeperError):
    """A market or asset lacks a parameter the profile needs (names the symbol and the field)."""


class OracleRefused(KeeperError):
    """The venue refuses a price (MarginFi: a confidence interval wider than the bank's
    ``oracle_max_confidence``); the message names the symbol."""


class OptionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An option market (Aevo): a ``call`` or ``put`` on the price of ``underlying``."""

    kind: Literal["call", "put"]
    underlying: str


class PerpWeights(msgspec.Struct, frozen=True, kw_only=True):
    """A perp's explicit long and short weights (Vertex), maintenance and initial; None where the
    market's ``mmf`` / ``imf`` gives them (``1 - mmf`` long, ``1 + mmf`` short)."""

    long: Decimal | None = None
    short: Decimal | None = None
    long_init: Decimal | None = None
    short_init: Decimal | None = None


class Extras(msgspec.Struct, frozen=True, kw_only=True):
    """What some venues read beyond ``MarketParams`` and ``AssetParams``, by symbol. Every field
    is optional and empty by default; a profile reads only its own (docs/margin.md).

    * ``conf``: the oracle's confidence interval of a symbol's price, in price units (MarginFi
      biases prices by it: assets at ``P - c``, liabilities at ``P + c``).
    * ``initial``: an asset's initial weights ``(asset, liability)`` (MarginFi, Vertex).
    * ``perp_weights``: a perp market's explicit long/short weights (Vertex).
    * ``spreads``: a perp market's paired spot asset (Vertex spreads).
    * ``options``: option markets (Aevo standard margin).
    """

    conf: dict[str, Decimal] = msgspec.field(default_factory=dict)
    initial: dict[str, tuple[Decimal, Decimal]] = msgspec.field(default_factory=dict)
    perp_weights: dict[str, PerpWeights] = msgspec.field(default_factory=dict)
    spreads: dict[str, str] = msgspec.field(default_factory=dict)
    options: dict[str, OptionSpec] = msgspec.field(default_factory=dict)


NO_EXTRAS = Extras()
"""The empty ``Extras``: what the engine reads when a caller passes none."""


class BucketHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One bucket's health under one profile, at one set of prices.

    Perpetual buckets: ``equity`` and ``requirement`` (maintenance). Lending buckets
    (``lending`` true): ``equity`` is the threshold-weighted collateral value and
    ``requirement`` the debt value. ``health_factor`` is ``equity / requirement`` (for Aave the
    venue's own integer HF), ``Decimal("Infinity")`` when the requirement is zero.
    ``liquidatable`` applies the venue's strictness; ``bankrupt`` is equity below zero (lending:
    unweighted collateral value below debt value).
    """

    lending: bool
    equity: Decimal
    requirement: Decimal
    health_factor: Decimal
    liquidatable: bool
    bankrupt: bool


class LiquidationRequest(msgspec.Struct, frozen=True):
    """A liquidator's own choice: repay ``amount`` of ``repay_asset``, seize ``seize_asset``.

    ``by = "seize"``: ``amount`` is of ``seize_asset`` instead, the collateral the liquidator
    takes (what MarginFi's ``lending_account_liquidate`` is given).
    """

    repay_asset: str
    seize_asset: str
    amount: Decimal
    by: Literal["repay", "seize"] = "repay"


Action = Literal["close_position", "repay_seize", "bad_debt"]


class LiquidationPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What the keeper would submit for one liquidatable bucket.

    ``rule`` names the profile rule that fired, in words. Perpetuals fill ``market`` and
    ``size`` (signed like the position: the amount of it to close); lending fills the repay and
    seize legs (``seize_amount`` is everything taken from the account, ``protocol_fee``
    included, in the seized asset's units). ``notional`` is the USD value closed or repaid.
    ``health_after`` is the bucket's health factor after the plan at the same prices (None
    where the venue takes the bucket over).
    """

    rule: str
    action: Action
    notional: Decimal
    market: str | None = None
    size: Decimal | None = None
    close_factor: Decimal | None = None
    repay_asset: str | None = None
    repay_amount: Decimal | None = None
    seize_asset: str | None = None
    seize_amount: Decimal | None = None
    protocol_fee: Decimal | None = None
    bonus: Decimal | None = None
    health_after: Decimal | None = None
    fee: Decimal | None = None
    """The venue's liquidation or insurance fee taken with this liquidation, in ``fee_asset``."""
    fee_asset: str | None = None
    price: Decimal | None = None
    """The price the venue fills the liquidated amount at (Vertex: from the weights)."""
    maintenance_health_after: Decimal | None = None
    """Weighted-health venues (MarginFi, Vertex): the maintenance health after the plan."""


def price_of(prices: Mapping[str, Decimal], symbol: str) -> Decimal:
    """``prices[symbol]`` or :class:`MissingPrice`."""
    p = prices.get(symbol)
    if p is None:
        raise MissingPrice(symbol)
    return p


def quantize_up(x: Decimal, q: Decimal) -> Decimal:
    """``x`` rounded up (toward +inf) to a multiple of ``q``."""
    return (x / q).to_integral_value(rounding=decimal.ROUND_CEILING) * q


_CENT = Decimal("0.01")
_QUANTA = {places: Decimal(1).scaleb(-places) for places in range(13)}
"""``fmt_num``'s quantum by places, built once (every decision's rule text formats a few)."""


def fmt_usd(x: Decimal) -> str:
    """A money amount for a rule text: ``$2,000`` or ``$1,234.56``."""
    q = x.quantize(_CENT, rounding=decimal.ROUND_HALF_EVEN)
    if q == q.to_integral_value():
        return f"${int(q):,}"
    return f"${q:,}"


def fmt_num(x: Decimal, places: int = 4) -> str:
    """A ratio for a rule text, rounded for reading only (never for deciding)."""
    if x.is_infinite():
        return "inf"
    quantum = _QUANTA.get(places)
    if quantum is None:
        quantum = Decimal(1).scaleb(-places)
    q = x.quantize(quantum, rounding=decimal.ROUND_HALF_EVEN).normalize()
    return f"{q:f}"
