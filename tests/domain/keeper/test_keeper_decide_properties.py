"""Laws of decide(), checked over generated price paths (hypothesis): replay equals live, and a
snapshot at any point plus the tail equals the uninterrupted run."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import KeeperCore, KeeperParams, decide_log
from tests.domain.keeper.keeper_scenarios import Log, perp_account, perp_market, record_live

D = Decimal
PARAMS = KeeperParams(profile="generic-perp", mode="live", cap_count=6, cap_interval_us=40_000)

moves = st.lists(st.tuples(st.sampled_from(["BTC", "ETH"]), st.integers(-400, 300)), min_size=5,
                 max_size=80)
books = st.lists(st.tuples(st.sampled_from(["BTC", "ETH"]), st.sampled_from(["cross", "iso"]),
                           st.integers(-30, 30).filter(bool), st.integers(2, 20)), min_size=1, max_size=25)


def build(book: list[tuple[str, str, int, int]], path: list[tuple[str, int]]) -> Log:
    log = Log()
    perp_market(log, "BTC")
    perp_market(log, "ETH")
    log.price("USDC", "1")
    prices = {"BTC": D(20000), "ETH": D(2000)}
    for sym, p in prices.items():
        log.price(sym, p)
    for i, (sym, kind, size10, lev) in enumerate(book):
        size = D(size10) / 10
        bucket = "cross" if kind == "cross" else f"iso-{sym}"
        perp_account(log, f"h{i:02d}", bucket, sym, str(size), str(prices[sym]),
                     str(abs(size) * prices[sym] / lev))
    for k, (sym, bp) in enumerate(path):
        prices[sym] = (prices[sym] * (1 + D(bp) / 10000)).quantize(D("0.01"))
        log.price(sym, prices[sym])
        if k % 11 == 7:
            log.add(ev.KeeperPaused, scope=sym)
        if k % 11 == 9:
            log.add(ev.KeeperResumed, scope=sym)
    return log


@settings(max_examples=30, deadline=None)
@given(book=books, path=moves, seed=st.integers(0, 1000))
def test_replay_of_the_recorded_log_equals_live(book: list[tuple[str, str, int, int]],
                                                path: list[tuple[str, int]], seed: int) -> None:
    recorded = record_live(build(book, path).entries, KeeperCore(PARAMS), seed)
    live = [encode(e) for _, e in recorded if isinstance(e, ev.LiquidationIntended)]
    assert [encode(e) for e in decide_log(recorded, PARAMS)] == live


@settings(max_examples=30, deadline=None)
@given(book=books, path=moves, seed=st.integers(0, 1000), cut=st.floats(0.0, 1.0))
def test_snapshot_plus_tail_equals_the_uninterrupted_run(book: list[tuple[str, str, int, int]],
                                                         path: list[tuple[str, int]], seed: int,
                                                         cut: float) -> None:
    recorded = record_live(build(book, path).entries, KeeperCore(PARAMS), seed)
    k = int(len(recorded) * cut)
    whole = KeeperCore(PARAMS)
    full = [encode(e) for eid, x in recorded for e in whole.handle(eid, x)]
    first = KeeperCore(PARAMS)
    head = [encode(e) for eid, x in recorded[:k] for e in first.handle(eid, x)]
    again = KeeperCore.restore(first.snapshot(), PARAMS)
    tail = [encode(e) for eid, x in recorded[k:] for e in again.handle(eid, x)]
    assert head + tail == full
    assert again.snapshot() == whole.snapshot()
