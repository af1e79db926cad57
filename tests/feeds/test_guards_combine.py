"""Guards, the median combiner and the staleness watchdog: pure, no I/O, no clock."""

from __future__ import annotations

from decimal import Decimal

from keeper.domain.events import FeedRecovered, FeedStale, PriceUpdated
from keeper.feeds.combine import MarketCombiner, MarketLimits, median
from keeper.feeds.guards import OrderGuard, check_value, exponent_check
from keeper.feeds.parsers import Quote
from keeper.feeds.pipeline import PricePipeline
from keeper.feeds.watchdog import StalenessWatchdog

S = 1_000_000
T0 = 1_700_000_000 * S


def q(source: str, price: str, t: int, symbol: str = "BTC") -> Quote:
    return Quote(source, symbol, Decimal(price), t)


def test_value_guard_reasons() -> None:
    prices = ["NaN", "sNaN", "Infinity", "-Infinity", "0", "-0", "-1", "1"]
    assert [check_value(q("a", p, T0)) for p in prices] == [
        "nan", "nan", "infinite", "infinite", "zero", "zero", "negative", None]


def test_exponent_guard_bounds_scale_and_magnitude() -> None:
    check = exponent_check(min_exponent=-8, max_digits=12)
    assert check(q("a", "0.00000001", T0)) is None
    assert check(q("a", "0.000000001", T0)) == "wrong_exponent"
    assert check(q("a", "999999999999", T0)) is None
    assert check(q("a", "1E+12", T0)) == "wrong_exponent"


def test_order_guard_is_per_source_and_symbol_and_remembers_only_accepted() -> None:
    g = OrderGuard()
    g.accept(q("a", "1", T0 + 10))
    assert g.check(q("a", "1", T0 + 9)) == "out_of_order"
    assert g.check(q("a", "1", T0 + 10)) is None
    assert g.check(q("b", "1", T0 + 1)) is None
    assert g.check(q("a", "1", T0 + 1, symbol="ETH")) is None


def test_median_odd_and_even() -> None:
    assert median([Decimal(3), Decimal(1), Decimal(2)]) == 2
    assert median([Decimal("1.1"), Decimal("1.3")]) == Decimal("1.2")


def test_one_source_jumping_90pct_while_two_hold_leaves_price_and_raises_deviation() -> None:
    m = MarketCombiner("BTC", MarketLimits(max_deviation=Decimal("0.05")))
    recorded = []
    for i, src in enumerate(["a", "b", "c"]):
        events, reason = m.offer(q(src, "100", T0 + i))
        assert reason is None
        recorded += [e for e in events if isinstance(e, PriceUpdated)]
    assert recorded[-1].price == Decimal(100)
    assert recorded[-1].source == "median(a,b,c)"
    assert recorded[-1].spread == Decimal("0E-8")

    events, reason = m.offer(q("c", "190", T0 + 10))
    assert reason == "deviation"
    assert [type(e) for e in events] == [FeedStale]
    assert events[0].reason == "deviation" and "190" in events[0].detail  # type: ignore[attr-defined]
    assert m.last_price == Decimal(100)

    # the others keep recording at their level; the market stays unsafe while c is an outlier
    events, reason = m.offer(q("a", "101", T0 + 20))
    assert reason is None
    assert [type(e) for e in events] == [PriceUpdated]
    assert events[0].price == Decimal("100.5")  # type: ignore[attr-defined]
    # c comes back within the limit: recorded and recovered
    events, reason = m.offer(q("c", "100", T0 + 30))
    assert [type(e) for e in events] == [PriceUpdated, FeedRecovered]
    assert events[0].price == Decimal(100)  # type: ignore[attr-defined]
    assert events[0].spread == Decimal("0.01")  # type: ignore[attr-defined]
    assert m.unsafe == set()


def test_two_sources_disagreeing_record_nothing_until_they_agree() -> None:
    m = MarketCombiner("BTC", MarketLimits(max_deviation=Decimal("0.05")))
    m.offer(q("a", "100", T0))
    events, reason = m.offer(q("b", "120", T0 + 1))
    assert reason == "deviation" and isinstance(events[0], FeedStale)
    assert m.last_price == Decimal(100)
    events, reason = m.offer(q("b", "101", T0 + 2))
    assert reason is None
    assert [type(e) for e in events] == [PriceUpdated, FeedRecovered]
    assert m.last_price == Decimal("100.5")


def test_jump_is_held_until_confirmed_then_recorded() -> None:
    m = MarketCombiner("ETH", MarketLimits(max_jump=Decimal("0.2"), jump_confirmations=3))
    m.offer(q("a", "100", T0))
    events, reason = m.offer(q("a", "50", T0 + 1))
    assert reason == "jump" and isinstance(events[0], FeedStale) and events[0].reason == "jump"
    # a single bad print that reverts does not move anything and recovers
    events, reason = m.offer(q("a", "101", T0 + 2))
    assert reason is None
    assert [type(e) for e in events] == [PriceUpdated, FeedRecovered]
    # a real crash: three consecutive prints at the new level are recorded on the third
    assert m.offer(q("a", "60", T0 + 3))[1] == "jump"
    assert m.offer(q("a", "59", T0 + 4))[1] == "jump"
    events, reason = m.offer(q("a", "58", T0 + 5))
    assert reason is None
    assert [type(e) for e in events] == [PriceUpdated, FeedRecovered]
    assert m.last_price == Decimal(58)


def test_stale_sources_leave_the_median() -> None:
    m = MarketCombiner("BTC", MarketLimits(stale_after_us=5 * S))
    m.offer(q("a", "100", T0))
    m.offer(q("b", "200", T0 + S))
    assert m.last_price == Decimal(150)
    events, _ = m.offer(q("b", "210", T0 + 10 * S))
    assert events[0].price == Decimal(210)  # type: ignore[attr-defined]
    assert events[0].source == "b"  # type: ignore[attr-defined]


def test_event_ids_are_stable_for_a_replayed_quote() -> None:
    a = MarketCombiner("BTC", MarketLimits())
    b = MarketCombiner("BTC", MarketLimits())
    ea, _ = a.offer(q("x", "5", T0), ts_ingest=1)
    eb, _ = b.offer(q("x", "5", T0), ts_ingest=2)
    assert ea[0].event_id == eb[0].event_id == f"x:BTC:{T0}"


def test_watchdog_stale_once_then_recovers() -> None:
    w = StalenessWatchdog(lambda s: 2 * S)
    assert w.observe("BTC", T0) == []
    assert w.check(T0 + 2 * S) == []
    [stale] = w.check(T0 + 2 * S + 1)
    assert isinstance(stale, FeedStale) and stale.reason == "stale" and stale.symbol == "BTC"
    assert w.check(T0 + 10 * S) == []
    [rec] = w.observe("BTC", T0 + 11 * S)
    assert isinstance(rec, FeedRecovered) and rec.reason == "stale"
    assert w.observe("BTC", T0 + 12 * S) == []


def test_watchdog_reports_a_watched_market_that_never_delivered() -> None:
    w = StalenessWatchdog(lambda s: S)
    w.watch("SOL", T0)
    assert [e.symbol for e in w.check(T0 + 2 * S)] == ["SOL"]  # type: ignore[attr-defined]


def test_pipeline_counts_and_returns_each_reject_kind() -> None:
    p = PricePipeline(symbol_map={"BTCUSDT": "BTC-USD"})
    raw = [("NaN", T0), ("0", T0), ("-2", T0), ("Infinity", T0), ("1E+50", T0),
           ("10", T0 + 5), ("11", T0 + 4)]
    out = p.process_quotes([q("a", px, t, "BTCUSDT") for px, t in raw], T0)
    assert [r.reason for r in out.rejects] == ["nan", "zero", "negative", "infinite", "wrong_exponent",
                                               "out_of_order"]
    assert [(e.symbol, e.price) for e in out.events] == [("BTC-USD", Decimal(10))]  # type: ignore[attr-defined]
    assert p.rejected == {"nan": 1, "zero": 1, "negative": 1, "infinite": 1, "wrong_exponent": 1,
                          "out_of_order": 1}


def test_pipeline_only_filter_and_watchdog_recovery_after_price() -> None:
    p = PricePipeline(only=["BTC"], default=MarketLimits(stale_after_us=S))
    out = p.process_quotes([q("h", "1", T0, "BTC"), q("h", "2", T0, "DOGE")], T0)
    assert len(out.events) == 1 and p.ignored == 1
    assert [e.reason for e in p.check_stale(T0 + 2 * S)] == ["stale"]  # type: ignore[attr-defined]
    out = p.process_quotes([q("h", "1", T0 + 3 * S, "BTC")], T0 + 3 * S)
    assert [type(e) for e in out.events] == [PriceUpdated, FeedRecovered]
