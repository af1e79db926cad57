"""A burst in the core: one tick breaching many buckets is decided in chunks, most at risk first;
a streaming core (the daemon's) hands out each chunk before checking the next and decides exactly
what a core deciding the burst at once (replay's) decides."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import DECIDE_CHUNK, FIRST_CHUNK, KeeperCore, KeeperParams
from tests.domain.keeper.keeper_scenarios import Log, perp_market

D = Decimal
PARAMS = KeeperParams(profile="generic-perp", mode="live")
CAPPED = KeeperParams(profile="generic-perp", mode="live", cap_count=40)
"""Caps spent in the burst's order: its chunks decide which buckets are live."""
DAEMON = KeeperParams(profile="generic-perp", mode="live", cap_count=40, first_chunk=8)
"""The daemon's first chunk (``[keeper] first_chunk``), with caps."""


def burst_log(collaterals: list[int], then: list[str]) -> Log:
    """Accounts long 1 BTC from 100 with the given collateral; BTC falls to 80 in one tick, then
    the ``then`` prices follow."""
    log = Log()
    perp_market(log, "BTC")
    log.price("USDC", "1")
    log.price("BTC", "100")
    for i, c in enumerate(collaterals):
        log.add(ev.Deposit, account=f"a{i:03d}", bucket="cross", asset="USDC", amount=D(c))
        log.add(ev.PositionChanged, account=f"a{i:03d}", bucket="cross", market="BTC", size=D(1),
                entry_price=D(100))
    log.price("BTC", "80")
    for p in then:
        log.price("BTC", p)
    return log


def run_streaming(core: KeeperCore, entries: list[tuple[str, ev.Event]]) -> list[list[bytes]]:
    """Drive a streaming core as the projector does; the intents of each hand-out."""
    core.streaming = True
    chunks: list[list[bytes]] = []
    todo = entries
    while todo or core.backlog is not None:
        if core.backlog is not None:
            out = core.continue_backlog()
        else:
            out = core.handle_batch(todo)
            done = next(i for i in range(len(todo) - 1, -1, -1) if todo[i][0] == core.offset) + 1
            todo = todo[done:]
        if out:
            chunks.append([encode(e) for e in out])
    return chunks


@settings(max_examples=12, deadline=None)
@given(collaterals=st.lists(st.integers(6, 23), min_size=DECIDE_CHUNK + 1, max_size=3 * DECIDE_CHUNK),
       then=st.lists(st.sampled_from(["79", "78", "90", "75"]), max_size=4),
       params=st.sampled_from([PARAMS, CAPPED, DAEMON]), later=st.booleans())
def test_streaming_decides_what_deciding_at_once_decides(collaterals: list[int], then: list[str],
                                                         params: KeeperParams, later: bool) -> None:
    """``later``: the streaming core's screen leaves every tick's settling for later
    (``Screen.settle``, which a burst of thousands does): the same decisions."""
    log = burst_log(collaterals, then)
    whole = KeeperCore(params)
    expected = [encode(e) for e in whole.handle_batch(log.entries)]
    streamed = KeeperCore(params)
    if later:
        streamed.screen._settle_later_from = 0
    chunks = run_streaming(streamed, log.entries)
    assert [e for c in chunks for e in c] == expected
    assert streamed.snapshot() == whole.snapshot()
    if params is PARAMS:
        assert len(expected) == len(collaterals), "every account breaches on the one tick"
    assert all(len(c) <= DECIDE_CHUNK for c in chunks[:-1])
    assert len(chunks) >= 2
    assert len(chunks[0]) == params.first_chunk


def test_the_first_chunk_of_a_burst_is_the_most_at_risk() -> None:
    collaterals = [6 + (i * 37) % 18 for i in range(3 * DECIDE_CHUNK)]  # 6..23, shuffled
    log = burst_log(collaterals, [])
    core = KeeperCore(PARAMS)
    chunks = run_streaming(core, log.entries)
    decided = [msgspec_decision(e) for e in chunks[0]]
    first_health = max(d.health_before for d in decided)  # type: ignore[type-var]
    rest = [msgspec_decision(e) for c in chunks[1:] for e in c]
    assert len(decided) == FIRST_CHUNK
    assert [len(c) for c in chunks[1:-1]] == [DECIDE_CHUNK] * (len(chunks) - 2), "then full chunks"
    assert all(d.health_before >= first_health for d in rest)  # type: ignore[operator]
    # within a chunk: lowest health first, ties by bucket key
    keys = [(d.health_before, f"{d.account}/{d.bucket}") for d in decided]
    assert keys == sorted(keys)


def msgspec_decision(payload: bytes) -> ev.Decision:
    from keeper.domain.codec import decode

    e = decode(payload)
    assert isinstance(e, ev.LiquidationIntended)
    return e.decision


def test_a_book_recorded_before_its_prices_is_screened_once_they_arrive() -> None:
    """Buckets the screen could not linearise for want of a price are linearised at that price's
    first tick (``Screen.refresh``): a later tick re-checks only the buckets it can breach, and
    the decisions are those of a core that knew the prices first."""
    before, after = Log(), Log()
    for log in (before, after):
        perp_market(log, "BTC")
    after.price("USDC", "1")
    after.price("BTC", "100")
    for log in (before, after):
        for i in range(200):
            log.add(ev.Deposit, account=f"a{i:03d}", bucket="cross", asset="USDC", amount=D(6 + i % 30))
            log.add(ev.PositionChanged, account=f"a{i:03d}", bucket="cross", market="BTC", size=D(1),
                    entry_price=D(100))
    before.price("USDC", "1")
    before.price("BTC", "100")
    for log in (before, after):
        for p in ("99", "97", "90", "85"):
            log.price("BTC", p)
    late, early = KeeperCore(PARAMS), KeeperCore(PARAMS)
    decided_late = [e for entry in before.entries for e in late.handle(*entry)]
    decided_early = [e for entry in after.entries for e in early.handle(*entry)]
    assert [e.decision for e in decided_late] == [e.decision for e in decided_early]  # type: ignore[attr-defined]
    assert late.screen.stats()["always_check"] == 0
    # the last tick (85) re-checked only what it could breach, not all 200 buckets
    assert late.rechecked_last == early.rechecked_last < 200
