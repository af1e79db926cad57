"""decide(): one intent per breach, only touched buckets, guards, modes, caps, determinism."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import KeeperCore, KeeperParams, bucket_of_intent, decide_log, intent_id
from tests.domain.keeper.keeper_scenarios import (
    Log,
    lending_account,
    lending_assets,
    perp_account,
    perp_market,
    random_perp_log,
    record_live,
)

D = Decimal
LIVE_PERP = KeeperParams(profile="generic-perp", mode="live")
LIVE_AAVE = KeeperParams(profile="aave-v3.3", mode="live")


def run(core: KeeperCore, log: Log, start: int = 0) -> list[ev.LiquidationIntended]:
    out: list[ev.LiquidationIntended] = []
    for entry_id, event in log.entries[start:]:
        out += [e for e in core.handle(entry_id, event) if isinstance(e, ev.LiquidationIntended)]
    return out


def perp_book() -> Log:
    """a1: cross BTC long 1 @20000 with 2000 USDC (liquidatable below 18947.37) and an isolated
    ETH long 1 @2000 with 500 (below 1578.95); a2: an isolated BTC long 2 @20000 with 5000
    (below 18421.05) and a cross ETH short 1 @2000 with 1000 (above 2857.14)."""
    log = Log()
    perp_market(log, "BTC")
    perp_market(log, "ETH")
    log.price("USDC", "1")
    log.price("BTC", "20000")
    log.price("ETH", "2000")
    perp_account(log, "a1", "cross", "BTC", "1", "20000", "2000")
    perp_account(log, "a1", "iso-ETH", "ETH", "1", "2000", "500")
    perp_account(log, "a2", "iso-BTC", "BTC", "2", "20000", "5000")
    perp_account(log, "a2", "cross", "ETH", "-1", "2000", "1000")
    return log


def test_a_cross_perp_bucket_crossing_its_threshold_gives_exactly_one_intent() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    assert run(core, log) == []
    start = len(log.entries)
    log.price("BTC", "19000")  # healthy still: E=1000, MM=950
    trigger = log.price("BTC", "18900")
    log.price("BTC", "18800")
    log.price("BTC", "18700")
    got = run(core, log, start)
    assert [i.event_id for i in got] == [intent_id("a1", "cross", trigger)]
    (intent,) = got
    d = intent.decision
    assert (d.account, d.bucket, d.trigger, d.mode, d.market) == ("a1", "cross", trigger, "live", "BTC")
    assert d.health_before is not None and d.health_before < 1
    assert d.prices == {"BTC": D(18900), "USDC": D(1)}
    assert intent.causation_id == log.entries[int(trigger.split("-")[0]) - 1][1].event_id
    assert intent.ts_event == log.entries[int(trigger.split("-")[0]) - 1][1].ts_event
    assert core.state.busy == {"a1/cross": intent.event_id}


def test_an_isolated_perp_bucket_liquidates_alone_and_other_buckets_stay_untouched() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    # ETH halves: a1's isolated ETH long breaches, a1's cross bucket (BTC) is not even
    # re-checked, a2's cross ETH short gains
    start = len(log.entries)
    trigger = log.price("ETH", "1500")
    rechecked = core.rechecked_total
    got = run(core, log, start)
    assert [i.event_id for i in got] == [intent_id("a1", "iso-ETH", trigger)]
    assert set(core.state.busy) == {"a1/iso-ETH"}
    assert core.rechecked_total - rechecked == 1  # only the screen's candidate was confirmed


def test_lending_cross_and_isolated_buckets_each_give_one_intent_and_healthy_ones_none() -> None:
    log = Log()
    lending_assets(log)
    log.price("USDC", "1")
    log.price("WETH", "2000")
    lending_account(log, "b1", "cross", "1", "1500")       # HF = 0.825 P / 1500: < 1 below 1818.18
    lending_account(log, "b1", "iso-1", "10", "5000")      # HF < 1 below 606.06: stays healthy
    lending_account(log, "b2", "iso-7", "2", "3200")       # HF < 1 below 1939.39
    core = KeeperCore(LIVE_AAVE)
    assert run(core, log) == []
    start = len(log.entries)
    t1 = log.price("WETH", "1900")
    t2 = log.price("WETH", "1800")
    log.price("WETH", "1790")
    got = run(core, log, start)
    assert [i.event_id for i in got] == [intent_id("b2", "iso-7", t1), intent_id("b1", "cross", t2)]
    for i in got:
        d = i.decision
        assert d.repay_asset == "USDC" and d.seize_asset == "WETH"
        assert d.repay_amount is not None and d.repay_amount > 0
        assert d.prices == {"USDC": D(1), "WETH": d.prices["WETH"]}
    assert "b1/iso-1" not in core.state.busy


def test_several_breaches_on_one_event_are_ordered_by_health_then_key() -> None:
    log = Log()
    perp_market(log, "BTC")
    log.price("USDC", "1")
    log.price("BTC", "20000")
    for acct, margin in (("z", "1500"), ("y", "1800"), ("x", "1800"), ("w", "1200")):
        perp_account(log, acct, "cross", "BTC", "1", "20000", margin)
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    start = len(log.entries)
    log.price("BTC", "18000")
    got = run(core, log, start)
    assert [i.decision.account for i in got] == ["w", "z", "x", "y"]
    healths = [i.decision.health_before for i in got]
    assert healths == sorted(healths)  # type: ignore[type-var]


def test_an_open_intent_blocks_the_bucket_until_its_outcome_then_it_is_rechecked() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    start = len(log.entries)
    first = log.price("BTC", "18900")
    (intent,) = run(core, log, start)
    log.entries.append((f"{len(log.entries) + 1}-0", intent))  # the outbox entry comes back
    log.price("BTC", "18850")
    start = len(log.entries) - 2
    assert run(core, log, start) == []
    rejected_at = log.add(ev.LiquidationRejected, intent_id=intent.event_id, account="a1", bucket="cross",
                          reason="venue says healthy")
    # rechecked, but after the restraint's backoff (1 s of log time after a first rejection)
    assert run(core, log, len(log.entries) - 1) == []
    log.price("BTC", "18840")
    assert run(core, log, len(log.entries) - 1) == []
    log.ts += LIVE_PERP.reject_backoff_us
    again = log.price("BTC", "18830")
    got = run(core, log, len(log.entries) - 1)
    assert [i.event_id for i in got] == [intent_id("a1", "cross", again)]
    assert first != rejected_at


def test_unsafe_market_blocks_decisions_and_recovery_reenables_it() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    start = len(log.entries)
    log.add(ev.FeedStale, symbol="BTC", reason="stale")
    log.price("BTC", "18000")
    assert run(core, log, start) == []
    assert core.skipped.get("unsafe_market", 0) >= 1
    recovered = log.add(ev.FeedRecovered, symbol="BTC", reason="stale")
    got = run(core, log, len(log.entries) - 1)
    assert sorted(i.event_id for i in got) == sorted(
        [intent_id("a1", "cross", recovered), intent_id("a2", "iso-BTC", recovered)])


def test_a_single_source_90pct_print_is_held_by_the_feed_guard_and_never_liquidates() -> None:
    from keeper.feeds.combine import MarketCombiner, MarketLimits
    from keeper.feeds.parsers import Quote

    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    comb = MarketCombiner("BTC", MarketLimits(max_jump=D("0.2"), max_deviation=D("0.05")))
    t = log.ts
    recorded: list[ev.Event] = []
    for k, (src, px) in enumerate([("a", "20000"), ("b", "20010"), ("c", "19990"),
                                   ("c", "2000"), ("a", "20005"), ("b", "20000")]):
        events, _ = comb.offer(Quote(src, "BTC", D(px), t + k * 1000))
        recorded += events
    assert any(isinstance(e, ev.FeedStale) and e.reason == "deviation" for e in recorded)
    assert all(e.price > 10000 for e in recorded if isinstance(e, ev.PriceUpdated))
    start = len(log.entries)
    for e in recorded:
        log.entries.append((f"{len(log.entries) + 1}-0", e))
    assert run(core, log, start) == []


def test_nan_zero_and_negative_prices_never_become_events() -> None:
    for bad in ("NaN", "0", "-5", "Infinity"):
        with pytest.raises(ValueError, match="price"):
            ev.PriceUpdated(event_id="x", ts_event=1, symbol="BTC", price=D(bad))


def test_paper_mode_records_one_decision_per_unhealthy_episode() -> None:
    log = perp_book()
    core = KeeperCore(KeeperParams(profile="generic-perp", mode="paper"))
    run(core, log)
    start = len(log.entries)
    first = log.price("BTC", "18900")
    for p in ("18800", "18700", "18600"):
        log.price("BTC", p)
    log.price("BTC", "20000")  # healthy again: the episode ends
    second = log.price("BTC", "18000")
    got = run(core, log, start)
    ids = [i.event_id for i in got]
    assert intent_id("a1", "cross", first) in ids and intent_id("a1", "cross", second) in ids
    assert len([i for i in ids if i.startswith("liq:a1/cross@")]) == 2
    assert all(i.decision.mode == "paper" for i in got)
    assert core.state.busy == {} and core.state.open_intents == {}


def test_kill_switch_turns_decisions_into_paper_and_resume_goes_live() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    start = len(log.entries)
    log.add(ev.KeeperPaused, scope="*", reason="operator")
    log.price("BTC", "18900")
    log.price("BTC", "18800")
    got = run(core, log, start)
    assert [i.decision.mode for i in got] == ["paused"]
    resumed = log.add(ev.KeeperResumed, scope="*")
    got = run(core, log, len(log.entries) - 1)
    assert [(i.event_id, i.decision.mode) for i in got] == [(intent_id("a1", "cross", resumed), "live")]


def test_caps_limit_live_decisions_per_interval_of_log_time() -> None:
    log = Log()
    perp_market(log, "BTC")
    log.price("USDC", "1")
    log.price("BTC", "20000")
    for k in range(5):
        perp_account(log, f"c{k}", "cross", "BTC", "1", "20000", str(1200 + 100 * k))
    core = KeeperCore(KeeperParams(profile="generic-perp", mode="live", cap_count=2,
                                   cap_interval_us=10_000_000))
    run(core, log)
    start = len(log.entries)
    log.price("BTC", "18000")
    log.price("BTC", "17990")  # still within the interval: capped ones are not re-recorded
    got = run(core, log, start)
    modes = [(i.decision.account, i.decision.mode) for i in got]
    assert modes == [("c0", "live"), ("c1", "live"), ("c2", "skip:cap"), ("c3", "skip:cap"),
                     ("c4", "skip:cap")]
    log.ts += 20_000_000  # the interval has passed (log time)
    log.price("BTC", "17980")
    got = run(core, log, len(log.entries) - 1)
    assert [(i.decision.account, i.decision.mode) for i in got] == [("c2", "live"), ("c3", "live")]


def test_profit_check_skips_when_the_bonus_does_not_cover_the_cost() -> None:
    log = Log()
    lending_assets(log)
    log.price("USDC", "1")
    log.price("WETH", "2000")
    lending_account(log, "b1", "cross", "1", "1500")
    core = KeeperCore(KeeperParams(profile="aave-v3.3", mode="live", min_profit=D("1000000")))
    run(core, log)
    start = len(log.entries)
    log.price("WETH", "1800")
    log.price("WETH", "1790")
    got = run(core, log, start)
    assert [i.decision.mode for i in got] == ["skip:profit"]
    assert core.state.busy == {}


def test_intent_ids_name_the_bucket_and_trigger() -> None:
    iid = intent_id("acct/with", "iso-BTC", "17-3")
    assert iid == "liq:acct/with/iso-BTC@17-3"
    assert bucket_of_intent(intent_id("a", "cross", "5-0")) == "a/cross"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replaying_a_recorded_log_gives_byte_identical_decisions(seed: int) -> None:
    source = random_perp_log(seed).entries
    recorded = record_live(source, KeeperCore(LIVE_PERP), seed)
    live = [encode(e) for _, e in recorded if isinstance(e, ev.LiquidationIntended)]
    assert live, "the scenario must liquidate something"
    once = [encode(e) for e in decide_log(recorded, LIVE_PERP)]
    twice = [encode(e) for e in decide_log(recorded, LIVE_PERP)]
    assert once == twice == live


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.8])
def test_a_core_restored_mid_log_decides_as_the_uninterrupted_one(cut: float) -> None:
    source = random_perp_log(7).entries
    recorded = record_live(source, KeeperCore(LIVE_PERP), 7)
    k = int(len(recorded) * cut)
    whole = KeeperCore(LIVE_PERP)
    full = [encode(e) for eid, x in recorded for e in whole.handle(eid, x)]
    first = KeeperCore(LIVE_PERP)
    head = [encode(e) for eid, x in recorded[:k] for e in first.handle(eid, x)]
    restored = KeeperCore.restore(first.snapshot(), LIVE_PERP)
    assert restored.offset == recorded[k - 1][0]
    tail = [encode(e) for eid, x in recorded[k:] for e in restored.handle(eid, x)]
    assert head + tail == full
    assert restored.snapshot() == whole.snapshot()


def test_pending_holds_decided_intents_until_they_are_seen_in_the_log() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    log.price("BTC", "18900")
    (intent,) = run(core, log, len(log.entries) - 1)
    assert core.pending() == [intent]
    restored = KeeperCore.restore(core.snapshot(), LIVE_PERP)
    assert restored.pending() == [intent]
    restored.handle(f"{len(log.entries) + 1}-0", intent)
    assert restored.pending() == []
    assert "a1/cross" in restored.state.busy


def test_restore_refuses_another_profile_and_damaged_bytes() -> None:
    core = KeeperCore(LIVE_PERP)
    with pytest.raises(ValueError, match="profile"):
        KeeperCore.restore(core.snapshot(), LIVE_AAVE)
    with pytest.raises(msgspec.DecodeError):
        KeeperCore.restore(b"\x00garbage", LIVE_PERP)


def test_params_reject_unknown_keys_by_name() -> None:
    with pytest.raises(msgspec.ValidationError, match="bogus"):
        msgspec.convert({"profile": "generic-perp", "bogus": 1}, KeeperParams)


def test_a_confirmed_bucket_waits_for_the_venues_account_events_before_deciding_again() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    log.price("BTC", "18900")
    (intent,) = run(core, log, len(log.entries) - 1)
    start = len(log.entries)
    log.entries.append((f"{len(log.entries) + 1}-0", intent))
    log.add(ev.LiquidationConfirmed, intent_id=intent.event_id, account="a1", bucket="cross")
    log.price("BTC", "18800")  # the state still shows the position: no second liquidation
    assert run(core, log, start) == []
    assert core.skipped["settling"] == 1
    start = len(log.entries)
    log.add(ev.PositionChanged, account="a1", bucket="cross", market="BTC", size=D(0),
            realized_pnl=D(-1100), causation_id=intent.event_id)
    log.price("BTC", "18500")
    assert run(core, log, start) == []  # closed: healthy
    assert core.state.find_bucket("a1/cross").positions == {}  # type: ignore[union-attr]


def test_settling_ends_after_the_intent_ttl_of_log_time_without_the_venues_events() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    log.price("BTC", "18900")
    (intent,) = run(core, log, len(log.entries) - 1)
    start = len(log.entries)
    log.entries.append((f"{len(log.entries) + 1}-0", intent))
    log.add(ev.LiquidationConfirmed, intent_id=intent.event_id, account="a1", bucket="cross")
    log.ts += LIVE_PERP.intent_ttl_us + 1
    again = log.price("BTC", "18800")
    got = run(core, log, start)
    assert [i.event_id for i in got] == [intent_id("a1", "cross", again)]


def test_a_perp_core_and_a_lending_core_on_one_log_each_take_their_own_buckets() -> None:
    log = perp_book()
    lending_assets(log)
    log.price("WETH", "2000")
    lending_account(log, "b1", "cross", "1", "1500")
    perp, lending = KeeperCore(LIVE_PERP), KeeperCore(LIVE_AAVE)
    run(perp, log)
    run(lending, log)
    start = len(log.entries)
    log.price("BTC", "18900")
    log.price("WETH", "1800")
    assert [i.event_id.split("@")[0] for i in run(perp, log, start)] == ["liq:a1/cross"]
    assert [i.event_id.split("@")[0] for i in run(lending, log, start)] == ["liq:b1/cross"]


def test_a_bucket_the_engine_cannot_evaluate_is_skipped_and_the_others_still_decided() -> None:
    log = perp_book()
    perp_account(log, "z9", "cross", "XYZ", "1", "100", "1")  # a market nobody listed
    log.price("XYZ", "100")
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    start = len(log.entries)
    log.price("XYZ", "50")
    trigger = log.price("BTC", "18900")
    assert [i.event_id for i in run(core, log, start)] == [intent_id("a1", "cross", trigger)]
    assert core.skipped["engine_error"] >= 1


def test_an_untagged_position_change_of_the_bucket_ends_settling() -> None:
    log = perp_book()
    core = KeeperCore(LIVE_PERP)
    run(core, log)
    log.price("BTC", "18900")
    (intent,) = run(core, log, len(log.entries) - 1)
    start = len(log.entries)
    log.entries.append((f"{len(log.entries) + 1}-0", intent))
    log.add(ev.LiquidationConfirmed, intent_id=intent.event_id, account="a1", bucket="cross")
    # the venue halved the position; its account stream does not name the intent
    log.add(ev.PositionChanged, account="a1", bucket="cross", market="BTC", size=D("0.5"),
            entry_price=D(20000), realized_pnl=D(-550))
    trigger = log.price("BTC", "17500")  # the rest goes under water: decided again
    assert intent_id("a1", "cross", trigger) in [i.event_id for i in run(core, log, start)]
    assert core.skipped.get("settling", 0) == 0
