"""The projection law: state is a pure fold of the log."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings

from keeper.domain import events as ev
from keeper.domain.codec import decode, encode
from keeper.domain.state import State, apply, decode_state, encode_state
from tests.strategies import histories


def fold(history: list[tuple[str, ev.Event]], state: State | None = None) -> State:
    s = state if state is not None else State()
    for entry_id, event in history:
        apply(s, entry_id, event)
    return s


@settings(max_examples=150, deadline=None)
@given(histories(max_size=40))
def test_snapshot_at_any_k_plus_tail_equals_full_replay(history: list[tuple[str, ev.Event]]) -> None:
    full = encode_state(fold(history))
    for k in range(len(history) + 1):
        snap = encode_state(fold(history[:k]))
        resumed = fold(history[k:], decode_state(snap))
        assert encode_state(resumed) == full, f"diverged when resuming at k={k}"


@settings(max_examples=100, deadline=None)
@given(histories(max_size=30))
def test_events_survive_the_wire_unchanged(history: list[tuple[str, ev.Event]]) -> None:
    for _, event in history:
        assert decode(encode(event)) == event


def test_balances_that_reach_zero_are_removed_so_equal_histories_encode_equally() -> None:
    base = {"ts_event": 1, "account": "a", "bucket": "cross", "asset": "USDC"}
    s = fold([("1-0", ev.Deposit(event_id="d", amount=Decimal(5), **base)),
              ("2-0", ev.Withdraw(event_id="w", amount=Decimal("5.00"), **base))])
    assert s.accounts["a"].buckets["cross"].balances == {}
    assert s.offset == "2-0"
    assert s.applied == 2


def test_position_close_removes_position_and_books_realized_pnl() -> None:
    common = {"ts_event": 1, "account": "a", "bucket": "iso-1", "market": "ETH-USD"}
    s = fold([
        ("1-0", ev.PositionChanged(event_id="p1", size=Decimal(2), entry_price=Decimal(3000), **common)),
        ("2-0", ev.PositionChanged(event_id="p2", size=Decimal(0), realized_pnl=Decimal(-150), **common)),
    ])
    b = s.accounts["a"].buckets["iso-1"]
    assert b.positions == {}
    assert b.balances == {"USDC": Decimal(-150)}


def test_intent_marks_bucket_busy_until_its_outcome_is_applied() -> None:
    d = ev.Decision(intent_id="liq:a/cross@1-0", account="a", bucket="cross", trigger="1-0",
                    trigger_event_id="p", profile="generic-perp", rule="r", action="close_position")
    s = fold([("2-0", ev.LiquidationIntended(event_id=d.intent_id, ts_event=1, decision=d))])
    assert s.busy == {"a/cross": d.intent_id}
    # applying the same intent again (a retried append that slipped past dedup) changes nothing
    again = fold([("3-0", ev.LiquidationIntended(event_id=d.intent_id, ts_event=1, decision=d))],
                 decode_state(encode_state(s)))
    assert again.busy == s.busy and len(again.open_intents) == 1
    done = fold([("4-0", ev.LiquidationRejected(event_id="o", ts_event=2, intent_id=d.intent_id,
                                                 reason="healthy"))], again)
    assert done.busy == {} and done.open_intents == {}


def test_paper_decisions_never_block_a_bucket() -> None:
    d = ev.Decision(intent_id="liq:a/cross@1-0", account="a", bucket="cross", trigger="1-0",
                    trigger_event_id="p", profile="generic-perp", rule="r", action="close_position",
                    mode="paper")
    s = fold([("2-0", ev.LiquidationIntended(event_id=d.intent_id, ts_event=1, decision=d))])
    assert s.busy == {} and s.open_intents == {}


@pytest.mark.parametrize("price", ["NaN", "Infinity", "-Infinity", "0", "-1", "-0.0001"])
def test_an_unusable_price_cannot_even_be_constructed(price: str) -> None:
    with pytest.raises(ValueError, match="price"):
        ev.PriceUpdated(event_id="p", ts_event=1, symbol="BTC-USD", price=Decimal(price))
