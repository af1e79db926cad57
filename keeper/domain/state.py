"""Projected state and the pure ``apply``: the log folded into accounts, markets and prices.

``apply(state, entry_id, event)`` mutates ``state`` in place (the state is owned by one
projector; a copy is a snapshot) and returns it. It does no I/O and reads no clock: the same
entries in the same order give the same state, which is what snapshots, replay and the property
``snapshot at k + tail == full replay`` rest on. Canonical form: a balance that reaches zero and
a position closed to size zero are removed, so equal histories give equal encodings.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from keeper.domain import events as ev
from keeper.domain.model import Account, AssetParams, Bucket, MarketParams, Position, bucket_key

__all__ = ["HANDLERS", "STATE_FORMAT", "OpenIntent", "State", "apply", "decode_state", "encode_state"]

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


def _bucket(state: State, account_id: str, name: str) -> Bucket:
    a = state.accounts.get(account_id)
    if a is None:
        a = state.accounts[account_id] = Account(account_id)
    b = a.buckets.get(name)
    if b is None:
        b = a.buckets[name] = Bucket(name)
    return b


def _credit(bucket: Bucket, asset: str, amount: Decimal) -> None:
    balances = bucket.balances
    bal = balances.get(asset)
    bal = amount if bal is None else bal + amount
    if bal:
        balances[asset] = bal
    else:
        balances.pop(asset, None)


def _debit(bucket: Bucket, asset: str, amount: Decimal) -> None:
    balances = bucket.balances
    bal = balances.get(asset)
    bal = -amount if bal is None else bal - amount
    if bal:
        balances[asset] = bal
    else:
        balances.pop(asset, None)


def _close_intent(state: State, intent_id: str) -> None:
    intent = state.open_intents.pop(intent_id, None)
    if intent is not None and state.busy.get(intent.bucket) == intent_id:
        del state.busy[intent.bucket]


# One small handler per event type, looked up by exact type (``HANDLERS``): the hot path of
# every rebuild and replay, so no isinstance chains. Each handler's ``e`` is the type it is
# registered for.

def _price(state: State, e: Any) -> None:
    state.prices[e.symbol] = e.price
    state.price_time[e.symbol] = e.publish_time or e.ts_event


def _plus(state: State, e: Any) -> None:
    _credit(_bucket(state, e.account, e.bucket), e.asset, e.amount)


def _minus(state: State, e: Any) -> None:
    _debit(_bucket(state, e.account, e.bucket), e.asset, e.amount)


def _position(state: State, e: Any) -> None:
    b = _bucket(state, e.account, e.bucket)
    if e.size:
        b.positions[e.market] = Position(e.market, e.size, e.entry_price, e.quote)
    else:
        b.positions.pop(e.market, None)
    if e.realized_pnl:
        _credit(b, e.settle_asset, e.realized_pnl)


def _funding(state: State, e: Any) -> None:
    if e.amount:
        _credit(_bucket(state, e.account, e.bucket), e.asset, e.amount)


def _market(state: State, e: Any) -> None:
    state.markets[e.params.symbol] = e.params


def _asset(state: State, e: Any) -> None:
    state.assets[e.params.symbol] = e.params


def _intended(state: State, e: Any) -> None:
    d: ev.Decision = e.decision
    if d.intent_id not in state.open_intents and d.mode == "live":
        key = bucket_key(d.account, d.bucket)
        state.open_intents[d.intent_id] = OpenIntent(d.intent_id, key, "intended", e.ts_event, d.trigger)
        state.busy[key] = d.intent_id


def _submitted(state: State, e: Any) -> None:
    intent = state.open_intents.get(e.intent_id)
    if intent is not None:
        intent.status = "submitted"


def _outcome(state: State, e: Any) -> None:
    _close_intent(state, e.intent_id)


def _stale(state: State, e: Any) -> None:
    state.unsafe[e.symbol] = e.reason


def _recovered(state: State, e: Any) -> None:
    state.unsafe.pop(e.symbol, None)


def _paused(state: State, e: Any) -> None:
    state.paused[e.scope] = e.reason


def _resumed(state: State, e: Any) -> None:
    state.paused.pop(e.scope, None)


def _chain(state: State, e: Any) -> None:
    """Chain entries are folded by the chain venue's own core (``keeper.domain.morpho``)."""


HANDLERS: dict[type[ev.Event], Callable[[State, Any], None]] = {
    ev.PriceUpdated: _price,
    ev.Deposit: _plus,
    ev.Repay: _plus,
    ev.Withdraw: _minus,
    ev.Borrow: _minus,
    ev.PositionChanged: _position,
    ev.FundingApplied: _funding,
    ev.MarketListed: _market,
    ev.MarketParamsChanged: _market,
    ev.AssetListed: _asset,
    ev.AssetParamsChanged: _asset,
    ev.LiquidationIntended: _intended,
    ev.LiquidationSubmitted: _submitted,
    ev.LiquidationConfirmed: _outcome,
    ev.LiquidationRejected: _outcome,
    ev.LiquidationExpired: _outcome,
    ev.FeedStale: _stale,
    ev.FeedRecovered: _recovered,
    ev.KeeperPaused: _paused,
    ev.KeeperResumed: _resumed,
    **dict.fromkeys(ev.CHAIN_EVENTS, _chain),
}
"""How each event type folds into the state: ``apply``'s dispatch, by exact type."""
assert set(HANDLERS) == set(ev.EVENT_TYPES.values()), "every event type needs a handler"


def apply(state: State, entry_id: str, event: ev.Event) -> State:
    """Fold one log entry into ``state`` (in place) and return it: the event's handler
    (``HANDLERS``), then the state's position (``offset``), count and log time.

    This is the reference fold; ``keeper.domain.state_batch.apply_many`` is its fast twin."""
    HANDLERS[type(event)](state, event)
    state.offset = entry_id
    state.applied += 1
    ts = event.ts_event
    if ts > state.log_time:  # noqa: PLR1730 (max() without the builtin call: the hot path)
        state.log_time = ts
    return state


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(State)


def encode_state(state: State) -> bytes:
    """The state's canonical binary form (msgpack); equal states give equal bytes."""
    return _state_encoder.encode(state)


def decode_state(data: bytes) -> State:
    """Inverse of ``encode_state``; raises ``msgspec.ValidationError`` on a damaged encoding."""
    return _state_decoder.decode(data)
