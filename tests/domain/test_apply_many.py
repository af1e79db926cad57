"""``apply_many``, the fast twin of ``apply``, folds a batch exactly as ``apply`` does entry by entry."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hs

from keeper.domain import events as ev
from keeper.domain.state import State, apply, encode_state
from keeper.domain.state_batch import apply_many
from tests.strategies import histories


def fold(history: list[tuple[str, ev.Event]]) -> State:
    s = State()
    for entry_id, event in history:
        apply(s, entry_id, event)
    return s


@settings(max_examples=150, deadline=None)
@given(histories(max_size=40), hs.integers(1, 7))
def test_batched_folds_equal_one_apply_per_entry(history: list[tuple[str, ev.Event]], size: int) -> None:
    want = encode_state(fold(history))
    a = State()
    for i in range(0, len(history), size):
        apply_many(a, history[i:i + size])
    assert encode_state(a) == want
    assert a.applied == len(history)


def test_an_empty_batch_changes_nothing() -> None:
    s = State(offset="5-0", applied=3, log_time=7)
    before = encode_state(s)
    apply_many(s, [])
    assert encode_state(s) == before
