"""``KeeperCore.handle_batch`` and the screen's shortcuts change no decision (hypothesis).

- handle_batch over any split of a log into batches gives byte-identical intents and snapshot
  bytes to one ``handle`` per entry;
- a core whose screen flags every bucket on every tick (each exposed bucket confirmed with the
  exact engine, no account event's check skipped) decides exactly the same intents: the screen's
  price bands and the skipped checks of cleared buckets lose nothing.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import KeeperCore, KeeperParams
from tests.domain.keeper.keeper_scenarios import record_live
from tests.domain.keeper.test_keeper_decide_properties import PARAMS, books, build, moves

PAPER = KeeperParams(profile="generic-perp", mode="paper")


def _exact_everywhere(params: KeeperParams) -> KeeperCore:
    """The oracle: every bucket is a candidate on every tick of its symbols (a setting, not a
    subclass: ``KeeperCore`` may be compiled, and compiled classes take no Python subclasses)."""
    core = KeeperCore(params)
    lending, at_entry, _ = core.index.screen_mode
    core.index.screen_mode = (lending, at_entry, True)
    return core


def _per_entry(core: KeeperCore, entries: list[tuple[str, ev.Event]]) -> list[bytes]:
    return [encode(e) for entry_id, event in entries for e in core.handle(entry_id, event)]


def _split(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(pairwise(edges))


@settings(max_examples=30, deadline=None)
@given(book=books, path=moves, seed=st.integers(0, 1000), cuts=st.lists(st.integers(0, 10**6), max_size=12),
       paper=st.booleans())
def test_handle_batch_over_any_split_equals_handle_per_entry(
        book: list[tuple[str, str, int, int]], path: list[tuple[str, int]], seed: int, cuts: list[int],
        paper: bool) -> None:
    params = PAPER if paper else PARAMS
    entries = record_live(build(book, path).entries, KeeperCore(params), seed)
    one = KeeperCore(params)
    expected = _per_entry(one, entries)
    batched = KeeperCore(params)
    got = [encode(e) for a, b in _split(len(entries), cuts) for e in batched.handle_batch(entries[a:b])]
    assert got == expected
    assert batched.snapshot() == one.snapshot()
    assert batched.handle_batch([]) == []


@settings(max_examples=30, deadline=None)
@given(book=books, path=moves, seed=st.integers(0, 1000), paper=st.booleans())
def test_screen_shortcuts_decide_what_exact_checks_of_every_bucket_decide(
        book: list[tuple[str, str, int, int]], path: list[tuple[str, int]], seed: int, paper: bool) -> None:
    params = PAPER if paper else PARAMS
    entries = record_live(build(book, path).entries, KeeperCore(params), seed)
    screened, oracle = KeeperCore(params), _exact_everywhere(params)
    assert _per_entry(screened, entries) == _per_entry(oracle, entries)
    assert screened.snapshot() == oracle.snapshot()
    assert oracle.rechecked_total >= screened.rechecked_total
