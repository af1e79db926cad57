"""Projected state and the pure ``apply``: the log folded into accounts, markets and prices.

``apply(state, entry_id, event)`` mutates ``state`` in place (the state is owned by one
projector; a copy is a snapshot) and returns it. It does no I/O and reads no clock: the same
entries in the same order give the same state, which is what snapshots, replay and the property
``snapshot at k + tail == full replay`` rest on. Canonical form: a balance that reaches zero and
a position closed to size zero are removed, so equal histories give equal encodings.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from keeper.domain import events as ev
from keeper.domain.model import Account, AssetParams, Bucket, MarketParams, Position, bucket_key

STATE_FORMAT = 1
"""Bumped whenever ``State``'s encoding changes; snapshots of another format are not trusted."""


class OpenIntent(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """An intent recorded in the log whose outcome is not in the log yet."""

    intent_id: str
    bucket: str
    status: str  # intended | submitted
    ts_event: int
    trigger: str


class State(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """Everything the log says, as of ``offset`` (the last applied stream entry id)."""

    markets: dict[str, MarketParams] = msgspec.field(default_factory=dict)
    assets: dict[str, AssetParams] = msgspec.field(default_factory=dict)
    prices: dict[str, Decimal] = msgspec.field(default_factory=dict)
    price_time: dict[str, int] = msgspec.field(default_factory=dict)
    accounts: dict[str, Account] = msgspec.field(default_factory=dict)
    open_intents: dict[str, OpenIntent] = msgspec.field(default_factory=dict)
    busy: dict[str, str] = msgspec.field(default_factory=dict)
    unsafe: dict[str, str] = msgspec.field(default_factory=dict)
    paused: dict[str, str] = msgspec.field(default_factory=dict)
    offset: str = "0-0"
    applied: int = 0
    log_time: int = 0

    def account(self, account_id: str) -> Account:
        """The account, created empty on first use."""
        a = self.accounts.get(account_id)
        if a is None:
            a = self.accounts[account_id] = Account(account_id)
        return a

    def find_bucket(self, key: str) -> Bucket | None:
        """The bucket named by ``account/bucket``, or None."""
        account, _, name = key.partition("/")
        a = self.accounts.get(account)
        return None if a is None else a.buckets.get(name)


def _credit(bucket: Bucket, asset: str, amount: Decimal) -> None:
    bal = bucket.balances.get(asset, Decimal(0)) + amount
    if bal:
        bucket.balances[asset] = bal
    else:
        bucket.balances.pop(asset, None)


def _close_intent(state: State, intent_id: str) -> None:
    intent = state.open_intents.pop(intent_id, None)
    if intent is not None and state.busy.get(intent.bucket) == intent_id:
        del state.busy[intent.bucket]


def apply(state: State, entry_id: str, event: ev.Event) -> State:
    """Fold one log entry into ``state`` (in place) and return it."""
    t = type(event)
    if t is ev.PriceUpdated:
        assert isinstance(event, ev.PriceUpdated)
        state.prices[event.symbol] = event.price
        state.price_time[event.symbol] = event.publish_time or event.ts_event
    elif t is ev.Deposit or t is ev.Repay:
        assert isinstance(event, ev._AmountEvent)
        _credit(state.account(event.account).bucket(event.bucket), event.asset, event.amount)
    elif t is ev.Withdraw or t is ev.Borrow:
        assert isinstance(event, ev._AmountEvent)
        _credit(state.account(event.account).bucket(event.bucket), event.asset, -event.amount)
    elif t is ev.PositionChanged:
        assert isinstance(event, ev.PositionChanged)
        b = state.account(event.account).bucket(event.bucket)
        if event.size:
            b.positions[event.market] = Position(event.market, event.size, event.entry_price, event.quote)
        else:
            b.positions.pop(event.market, None)
        if event.realized_pnl:
            _credit(b, event.settle_asset, event.realized_pnl)
    elif t is ev.FundingApplied:
        assert isinstance(event, ev.FundingApplied)
        if event.amount:
            _credit(state.account(event.account).bucket(event.bucket), event.asset, event.amount)
    elif t is ev.MarketListed or t is ev.MarketParamsChanged:
        assert isinstance(event, ev.MarketListed | ev.MarketParamsChanged)
        state.markets[event.params.symbol] = event.params
    elif t is ev.AssetListed or t is ev.AssetParamsChanged:
        assert isinstance(event, ev.AssetListed | ev.AssetParamsChanged)
        state.assets[event.params.symbol] = event.params
    elif t is ev.LiquidationIntended:
        assert isinstance(event, ev.LiquidationIntended)
        d = event.decision
        if d.intent_id not in state.open_intents and d.mode == "live":
            key = bucket_key(d.account, d.bucket)
            state.open_intents[d.intent_id] = OpenIntent(
                d.intent_id, key, "intended", event.ts_event, d.trigger)
            state.busy[key] = d.intent_id
    elif t is ev.LiquidationSubmitted:
        assert isinstance(event, ev.LiquidationSubmitted)
        intent = state.open_intents.get(event.intent_id)
        if intent is not None:
            intent.status = "submitted"
    elif t is ev.LiquidationConfirmed or t is ev.LiquidationRejected or t is ev.LiquidationExpired:
        assert isinstance(event, ev._Outcome)
        _close_intent(state, event.intent_id)
    elif t is ev.FeedStale:
        assert isinstance(event, ev.FeedStale)
        state.unsafe[event.symbol] = event.reason
    elif t is ev.FeedRecovered:
        assert isinstance(event, ev.FeedRecovered)
        state.unsafe.pop(event.symbol, None)
    elif t is ev.KeeperPaused:
        assert isinstance(event, ev.KeeperPaused)
        state.paused[event.scope] = event.reason
    elif t is ev.KeeperResumed:
        assert isinstance(event, ev.KeeperResumed)
        state.paused.pop(event.scope, None)
    state.offset = entry_id
    state.applied += 1
    state.log_time = max(state.log_time, event.ts_event)
    return state


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(State)


def encode_state(state: State) -> bytes:
    """The state's canonical binary form (msgpack); equal states give equal bytes."""
    return _state_encoder.encode(state)


def decode_state(data: bytes) -> State:
    """Inverse of ``encode_state``; raises ``msgspec.ValidationError`` on a damaged encoding."""
    return _state_decoder.decode(data)
