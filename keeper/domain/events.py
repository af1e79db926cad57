"""The v1 event catalogue.

Every event is immutable and carries ``type`` (the tag), ``v`` (schema version), ``event_id``
(stable, from the source: a retried or replayed event has the same id and is dropped as a
duplicate), ``ts_event`` (source time) and ``ts_ingest`` (when it entered the log), both integer
**microseconds** since the Unix epoch, and ``causation_id`` where one event follows from another
(an outcome names its intent; a venue's account event names the liquidation that caused it).

Amounts and prices are ``Decimal``: decimal strings on the wire. Constructing an event with a
NaN, infinite, zero or negative price (or a non-positive amount where one must be positive)
raises ``ValueError``; decoding one raises ``keeper.errors.DecodeError``.

Adding a version: bump the class's ``VERSION``, change its fields, and register an upcaster
from the old version in ``keeper.domain.codec``; the log is never rewritten, old entries are
converted when read.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import msgspec

from keeper.domain import checks
from keeper.domain.model import AssetParams, MarketParams

__all__ = [
    "ACCOUNT_EVENTS",
    "CHAIN_EVENTS",
    "EVENT_TYPES",
    "OUTCOME_EVENTS",
    "AnyEvent",
    "AssetListed",
    "AssetParamsChanged",
    "Borrow",
    "ChainBlock",
    "ChainLog",
    "ChainLogRemoved",
    "ChainTxSigned",
    "Decision",
    "Deposit",
    "Event",
    "FeedRecovered",
    "FeedStale",
    "FundingApplied",
    "KeeperPaused",
    "KeeperResumed",
    "LiquidationConfirmed",
    "LiquidationExpired",
    "LiquidationIntended",
    "LiquidationRejected",
    "LiquidationSubmitted",
    "MarketListed",
    "MarketParamsChanged",
    "PositionChanged",
    "PriceUpdated",
    "Repay",
    "Withdraw",
    "_AmountEvent",
    "_Outcome",
    "event_type",
]


class Event(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag_field="type",
            forbid_unknown_fields=True):
    """Fields every event carries. Subclasses set their tag and ``VERSION``."""

    VERSION: ClassVar[int] = 1

    event_id: str
    ts_event: int
    ts_ingest: int = 0
    causation_id: str | None = None
    v: int = 1

    # every event's times are checked (``keeper.domain.limits``); subclasses with more fields to
    # check install their own check, which checks the times too
    __post_init__ = checks.times  # type: ignore[misc]


# ---------------------------------------------------------------- markets, assets and prices


class MarketListed(Event, frozen=True, tag="market_listed"):
    params: MarketParams


class MarketParamsChanged(Event, frozen=True, tag="market_params_changed"):
    """Replaces a market's parameters as a whole."""

    params: MarketParams


class AssetListed(Event, frozen=True, tag="asset_listed"):
    params: AssetParams


class AssetParamsChanged(Event, frozen=True, tag="asset_params_changed"):
    """Replaces an asset's parameters as a whole."""

    params: AssetParams


class PriceUpdated(Event, frozen=True, tag="price_updated"):
    """A guarded price for one market or asset symbol.

    ``publish_time`` is the source's own time of the price (µs); ``source`` names the feed (or
    ``median(a,b,c)`` for a combined price) and ``spread`` the relative spread between the
    sources that were combined, where there were several.

    ``frame_more``: more prices of the same published instant follow this one (one source frame
    carrying several prices: Binance ``!markPrice@arr``, Hyperliquid ``allMids``, one tick of the
    reference venue). The keeper applies such a price but decides only once the frame's last
    price (``frame_more`` false) or any other entry is applied: never on a state holding part of
    an instant.
    """

    symbol: str
    price: Decimal
    publish_time: int = 0
    source: str = ""
    spread: Decimal | None = None
    conf: Decimal | None = None
    frame_more: bool = False

    # compiled, and called by msgspec with the event (mypy wants a method: it need not be one)
    __post_init__ = checks.price_updated  # type: ignore[misc]


# ---------------------------------------------------------------- account events


class _AmountEvent(Event, frozen=True):
    account: str
    bucket: str
    asset: str
    amount: Decimal

    __post_init__ = checks.amount_event  # type: ignore[misc]


class Deposit(_AmountEvent, frozen=True, tag="deposit"):
    """Collateral added to a bucket."""


class Withdraw(_AmountEvent, frozen=True, tag="withdraw"):
    """Collateral taken out of a bucket."""


class Borrow(_AmountEvent, frozen=True, tag="borrow"):
    """Debt taken on in a bucket (the balance goes down by ``amount``)."""


class Repay(_AmountEvent, frozen=True, tag="repay"):
    """Debt repaid in a bucket (the balance goes up by ``amount``)."""


class PositionChanged(Event, frozen=True, tag="position_changed"):
    """A position's new absolute state, as the venue reports it after a fill.

    ``size`` 0 closes it. ``realized_pnl`` (signed) is credited to ``settle_asset`` in the same
    bucket, so a close that realises a loss moves the balance in the same event.
    """

    account: str
    bucket: str
    market: str
    size: Decimal
    entry_price: Decimal | None = None
    quote: Decimal | None = None
    realized_pnl: Decimal = Decimal(0)
    settle_asset: str = "USDC"

    __post_init__ = checks.position_changed  # type: ignore[misc]


class FundingApplied(Event, frozen=True, tag="funding_applied"):
    """Funding settled into a bucket: ``amount`` (signed) credited to ``asset``."""

    account: str
    bucket: str
    market: str
    asset: str
    amount: Decimal

    __post_init__ = checks.funding_applied  # type: ignore[misc]


# ---------------------------------------------------------------- the keeper's own decisions


class Decision(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One liquidation the keeper decided, with everything that explains it.

    ``trigger`` is the log position (stream entry id) of the event after which the decision was
    made; ``intent_id`` is derived from (bucket, trigger) so that a retry, a restart or a second
    process derives the same id.
    """

    intent_id: str
    account: str
    bucket: str
    trigger: str
    trigger_event_id: str
    profile: str
    rule: str
    action: str
    market: str | None = None
    size: Decimal | None = None
    repay_asset: str | None = None
    repay_amount: Decimal | None = None
    repay_shares: Decimal | None = None
    seize_asset: str | None = None
    seize_amount: Decimal | None = None
    protocol_fee: Decimal | None = None
    close_factor: Decimal | None = None
    bonus: Decimal | None = None
    notional: Decimal = Decimal(0)
    equity: Decimal | None = None
    requirement: Decimal | None = None
    health_before: Decimal | None = None
    health_after: Decimal | None = None
    bankrupt: bool = False
    prices: dict[str, Decimal] = msgspec.field(default_factory=dict)
    mode: str = "live"


class LiquidationIntended(Event, frozen=True, tag="liquidation_intended"):
    """The outbox entry: recorded before anything is submitted. ``event_id`` is the intent id."""

    decision: Decision


class _Outcome(Event, frozen=True):
    intent_id: str
    account: str = ""
    bucket: str = ""


class LiquidationSubmitted(_Outcome, frozen=True, tag="liquidation_submitted"):
    attempt: int = 1
    executor: str = ""


class LiquidationConfirmed(_Outcome, frozen=True, tag="liquidation_confirmed"):
    """The venue accepted the liquidation. A chain venue also reports what its contract did:
    ``block`` (the receipt's), ``repaid`` and ``seized`` (the contract's own event, in token units)."""

    venue_ref: str | None = None
    duplicate: bool = False
    block: int | None = None
    repaid: Decimal | None = None
    seized: Decimal | None = None


class LiquidationRejected(_Outcome, frozen=True, tag="liquidation_rejected"):
    reason: str = ""


class LiquidationExpired(_Outcome, frozen=True, tag="liquidation_expired"):
    reason: str = ""


# ---------------------------------------------------------------- feeds and controls


class FeedStale(Event, frozen=True, tag="feed_stale"):
    """A market became unsafe: no liquidation in it until ``FeedRecovered``.

    ``reason`` is ``stale`` (no fresh price within the limit), ``jump`` (a move beyond the
    per-market limit) or ``deviation`` (sources disagree beyond the limit).
    """

    symbol: str
    reason: str = "stale"
    detail: str = ""


class FeedRecovered(Event, frozen=True, tag="feed_recovered"):
    symbol: str
    reason: str = "stale"


class KeeperPaused(Event, frozen=True, tag="keeper_paused"):
    """Kill switch (``scope`` ``*``) or a per-market pause: decide in paper mode, submit nothing."""

    scope: str = "*"
    reason: str = ""


class KeeperResumed(Event, frozen=True, tag="keeper_resumed"):
    scope: str = "*"


# ---------------------------------------------------------------- chain venues


class ChainLog(Event, frozen=True, tag="chain_log"):
    """One event a protocol's contract emitted, decoded, as the chain delivered it.

    ``event_id`` is ``evm:<chain id>:<block hash>:<log index>``: a block read twice lands once,
    and the same transaction mined again in a block that replaced a reorganised one has another
    id. ``args`` holds the event's arguments by their Solidity names (a struct's fields flattened
    into it): uints as ints (``0 <= x < 2**256``), addresses and bytes32 as ``0x`` lowercase hex.
    ``block_time`` is the block's timestamp in seconds (``ts_event`` the same in µs); ``address``
    the contract that emitted it (a venue of several contracts, Aave's tokens, tells them apart).
    """

    venue: str
    name: str
    block: int
    block_hash: str
    tx_hash: str
    log_index: int
    block_time: int
    args: dict[str, int | str]
    address: str = ""

    __post_init__ = checks.chain_log  # type: ignore[misc]


class ChainLogRemoved(Event, frozen=True, tag="chain_log_removed"):
    """A reorganisation removed the recorded ``ChainLog`` ``removed_id``: its effect is undone
    (the log is never rewritten). ``event_id`` is ``rm:<removed_id>``."""

    venue: str
    removed_id: str
    block: int


class ChainBlock(Event, frozen=True, tag="chain_block"):
    """A block as the keeper read it: its header and the protocol readings taken at it.

    Recorded after the block's ``ChainLog`` entries, it closes the block: one published instant,
    decided on as a whole. ``prices``: market id -> the oracle's ``price()`` (Morpho: loan-token
    units per collateral unit, scaled by 1e36); ``rates``: market id -> the IRM's borrow rate per
    second (WAD) for the market as it stands after this block.
    """

    venue: str
    chain_id: int
    block: int
    block_hash: str
    parent_hash: str
    block_time: int
    prices: dict[str, int] = msgspec.field(default_factory=dict)
    rates: dict[str, int] = msgspec.field(default_factory=dict)

    __post_init__ = checks.chain_block  # type: ignore[misc]


class ChainTxSigned(Event, frozen=True, tag="chain_tx_signed"):
    """The executor signed ``raw_tx`` for ``intent_id``: recorded before it is broadcast, so a
    restarted executor sends this same transaction again (or finds its receipt) and never signs a
    second one for the intent. ``attempt`` > 1 is a fee bump with the same nonce."""

    intent_id: str
    chain_id: int
    sender: str
    nonce: int
    tx_hash: str
    raw_tx: str
    max_fee_per_gas: int
    attempt: int = 1


AnyEvent = (
    MarketListed
    | MarketParamsChanged
    | AssetListed
    | AssetParamsChanged
    | PriceUpdated
    | Deposit
    | Withdraw
    | Borrow
    | Repay
    | PositionChanged
    | FundingApplied
    | LiquidationIntended
    | LiquidationSubmitted
    | LiquidationConfirmed
    | LiquidationRejected
    | LiquidationExpired
    | FeedStale
    | FeedRecovered
    | KeeperPaused
    | KeeperResumed
    | ChainLog
    | ChainLogRemoved
    | ChainBlock
    | ChainTxSigned
)

EVENT_TYPES: dict[str, type[Event]] = {
    t.__struct_config__.tag: t
    for t in AnyEvent.__args__
}

ACCOUNT_EVENTS = (Deposit, Withdraw, Borrow, Repay, PositionChanged, FundingApplied)
OUTCOME_EVENTS = (LiquidationSubmitted, LiquidationConfirmed, LiquidationRejected, LiquidationExpired)
CHAIN_EVENTS: tuple[type[Event], ...] = (ChainLog, ChainLogRemoved, ChainBlock, ChainTxSigned)


def event_type(event: Event) -> str:
    """The wire tag of an event (``price_updated``, ...)."""
    return type(event).__struct_config__.tag  # type: ignore[return-value]
