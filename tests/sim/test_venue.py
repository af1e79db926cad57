"""The venue's own rules, without sockets: its check, its effects, idempotency, the history."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.domain.model import CROSS
from tests.sim.helpers import decision, small_venue

D = Decimal


def _events(result_events: tuple[bytes, ...]) -> list[ev.Event]:
    return [codec.decode(p) for p in result_events]


def test_perp_bucket_health_is_equity_against_maintenance_at_the_mark() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(50100)})
    # equity = 1000 + 0.1 * (50100 - 60000) = 10; MM = 0.1 * 50100 * 0.004 = 20.04
    assert v.perp_health("alice", CROSS) == (D(10), D("20.04"))


def test_healthy_bucket_is_rejected_with_the_venue_price_and_numbers() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(55000)})
    seq = v.seq
    r = v.liquidate(decision("i1", "alice", CROSS, market="BTC-USD", size=D("0.1")))
    # equity = 1000 - 500 = 500; MM = 0.1 * 55000 * 0.004 = 22
    assert (r.status, r.http_status) == ("rejected", 422)
    assert r.reason == "healthy at venue price 55000 (equity 500 >= MM 22)"
    assert v.seq == seq
    assert v.accounts["alice"].buckets[CROSS].positions["BTC-USD"].size == D("0.1")


def test_liquidatable_partial_close_realises_pnl_minus_fee_at_the_mark() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(50100)})
    fund = v.insurance_fund
    r = v.liquidate(decision("i2", "alice", CROSS, market="BTC-USD", size=D("0.05")))
    assert (r.status, r.http_status, r.ref) == ("accepted", 200, "sim-liq-1")
    (pc,) = _events(r.events)
    assert isinstance(pc, ev.PositionChanged)
    # pnl = 0.05 * (50100 - 60000) = -495; fee = 0.05 * 50100 * 1% = 25.05
    assert pc.size == D("0.05") and pc.entry_price == D(60000)
    assert pc.realized_pnl == D("-520.05") and pc.settle_asset == "USDC"
    assert pc.causation_id == "i2" and pc.event_id == f"sim-{v.seq}"
    assert v.accounts["alice"].buckets[CROSS].balances["USDC"] == D("479.95")
    assert v.insurance_fund == fund + D("25.05")
    assert v.stats.bad_debt == 0


def test_bankrupt_isolated_close_books_bad_debt_and_leaves_cross_untouched() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(59100)})
    cross_before = msgspec.json.encode(v.accounts["bob"].buckets[CROSS])
    fund = v.insurance_fund
    r = v.liquidate(decision("i3", "bob", "iso-BTC-USD", market="BTC-USD", size=D(1)))
    pc, dep = _events(r.events)
    # pnl = 1 * (59100 - 60000) = -900; fee = 591; balance 1000 - 1491 = -491 -> deposit 491
    assert isinstance(pc, ev.PositionChanged) and pc.size == 0 and pc.realized_pnl == D(-1491)
    assert isinstance(dep, ev.Deposit) and dep.amount == D(491) and dep.causation_id == "i3"
    assert "USDC" not in v.accounts["bob"].buckets["iso-BTC-USD"].balances
    assert v.stats.bad_debt == D(491)
    assert v.insurance_fund == fund + D(591) - D(491)
    assert msgspec.json.encode(v.accounts["bob"].buckets[CROSS]) == cross_before


def test_accepted_key_answers_duplicate_with_the_same_events_and_changes_nothing() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(50100)})
    first = v.liquidate(decision("i4", "alice", CROSS, market="BTC-USD", size=D("0.05")))
    seq, bal = v.seq, v.accounts["alice"].buckets[CROSS].balances["USDC"]
    again = v.liquidate(decision("i4", "alice", CROSS, market="BTC-USD", size=D("0.05")))
    assert (again.status, again.http_status, again.ref, again.events) == (
        "duplicate", 409, first.ref, first.events)
    assert (v.seq, v.accounts["alice"].buckets[CROSS].balances["USDC"]) == (seq, bal)
    assert (v.stats.accepted, v.stats.duplicates, v.stats.accepted_by_intent) == (1, 1, {"i4": 1})


def test_rejected_key_is_re_evaluated_later() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(55000)})
    assert v.liquidate(decision("i5", "alice", CROSS, market="BTC-USD", size=D("0.1"))).status == "rejected"
    v.set_marks(2, {"BTC-USD": D(50000)})
    assert v.liquidate(decision("i5", "alice", CROSS, market="BTC-USD", size=D("0.1"))).status == "accepted"


def test_rejection_reasons() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(50100)})
    cases = {
        "unknown account": decision("r1", "nobody", CROSS, market="BTC-USD", size=D(1)),
        "no such position in ETH-USD": decision("r2", "alice", CROSS, market="ETH-USD", size=D(1)),
        "size exceeds position: 0.2 > 0.1": decision("r3", "alice", CROSS, market="BTC-USD", size=D("0.2")),
        "size exceeds position: -0.1 against 0.1 (wrong sign)":
            decision("r4", "alice", CROSS, market="BTC-USD", size=D("-0.1")),
        "unknown bucket iso-SOL-USD": decision("r5", "alice", "iso-SOL-USD", market="BTC-USD", size=D(1)),
    }
    for reason, d in cases.items():
        r = v.liquidate(d)
        assert (r.status, r.reason) == ("rejected", reason)
    v.halted.add("BTC-USD")
    r = v.liquidate(decision("r6", "alice", CROSS, market="BTC-USD", size=D("0.1")))
    assert r.reason == "market halted: BTC-USD"
    assert v.stats.rejected == 6 and v.stats.accepted == 0
    assert v.stats.rejected_by_reason["size exceeds position"] == 2


def test_lending_health_factor_close_factor_and_bonus_bound() -> None:
    v = small_venue()
    v.set_marks(1, {"ETH-USD": D(3000)})
    # HF = 1 * 3000 * 0.83 / 2000 = 1.245
    assert v.health_factor("carol", "lend-ETH") == D("1.245")
    d = decision("l1", "carol", "lend-ETH", "repay_seize", repay_asset="USDC", repay_amount=D(1000),
                 seize_asset="ETH", seize_amount=D("0.35"))
    assert v.liquidate(d).reason == "healthy at venue price 3000 (HF 1.245 >= 1)"
    v.set_marks(2, {"ETH-USD": D(2400)})  # HF = 2400 * 0.83 / 2000 = 0.996: close factor 50%
    over = decision("l2", "carol", "lend-ETH", "repay_seize", repay_asset="USDC", repay_amount=D(1001),
                    seize_asset="ETH", seize_amount=D("0.4"))
    assert (v.liquidate(over).reason or "").startswith("close factor exceeded")
    # at most 1000 * 1 * 1.05 / 2400 = 0.4375 ETH (+ one wei)
    greedy = decision("l3", "carol", "lend-ETH", "repay_seize", repay_asset="USDC", repay_amount=D(1000),
                      seize_asset="ETH", seize_amount=D("0.4376"))
    assert (v.liquidate(greedy).reason or "").startswith("seize exceeds bonus")
    ok = decision("l4", "carol", "lend-ETH", "repay_seize", repay_asset="USDC", repay_amount=D(1000),
                  seize_asset="ETH", seize_amount=D("0.4375"))
    r = v.liquidate(ok)
    repay, withdraw = _events(r.events)
    assert isinstance(repay, ev.Repay) and repay.amount == D(1000) and repay.causation_id == "l4"
    assert isinstance(withdraw, ev.Withdraw) and withdraw.amount == D("0.4375")
    assert v.accounts["carol"].buckets["lend-ETH"].balances == {"ETH": D("0.5625"), "USDC": D(-1000)}
    # now small (debt $1,000, collateral 0.5625 ETH = $1,181.25 < $2,000): the close factor is
    # 100% above HF 0.95 too (Aave v3.3); HF = 0.5625 * 2100 * 0.83 / 1000 = 0.980
    v.set_marks(3, {"ETH-USD": D(2100)})
    full = decision("l5", "carol", "lend-ETH", "repay_seize", repay_asset="USDC", repay_amount=D(1000),
                    seize_asset="ETH", seize_amount=D("0.5"))
    assert v.liquidate(full).status == "accepted"
    assert v.accounts["carol"].buckets["lend-ETH"].balances.get("USDC", D(0)) == 0


def test_lending_full_close_factor_below_095_and_bad_debt_write_off() -> None:
    v = small_venue()
    v.set_marks(1, {"ETH-USD": D(1000)})  # HF = 0.415: 100% close factor
    d = decision("l5", "carol", "lend-ETH", "repay_seize", repay_asset="USDC", repay_amount=D(960),
                 seize_asset="ETH", seize_amount=D(1))  # allowed 960 * 1.05 / 1000 = 1.008
    repay, withdraw, write_off = _events(v.liquidate(d).events)
    assert isinstance(repay, ev.Repay) and repay.amount == D(960)
    assert isinstance(withdraw, ev.Withdraw) and withdraw.amount == D(1)
    assert isinstance(write_off, ev.Repay) and write_off.amount == D(1040) and write_off.causation_id == "l5"
    assert "carol" in v.accounts and v.accounts["carol"].buckets["lend-ETH"].balances == {}
    assert v.stats.bad_debt == D(1040)


def test_collateral_lost_is_what_the_liquidation_took_from_the_owner_up_to_what_was_left() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(59100), "ETH-USD": D(2400)})
    v.liquidate(decision("c1", "bob", "iso-BTC-USD", market="BTC-USD", size=D(1)))
    # worth 1000 - 900 = 100 before; the fee is 591: the owner pays 100, the fund 491 (bad debt)
    assert (v.stats.collateral_lost, v.stats.bad_debt) == (D(100), D(491))
    v.liquidate(decision("c2", "carol", "lend-ETH", "repay_seize", repay_asset="USDC",
                         repay_amount=D(1000), seize_asset="ETH", seize_amount=D("0.4375")))
    # HF 0.996; worth 2400 - 2000 = 400 before, 0.5625 * 2400 - 1000 = 350 after: the 5% bonus
    assert v.stats.collateral_lost == D(150)
    assert D(v.stats_view()["collateral_lost"]) == 150


def test_collateral_lost_of_an_underwater_bucket_is_zero() -> None:
    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(50100)})
    v.liquidate(decision("c3", "alice", CROSS, market="BTC-USD", size=D("0.05")))
    # worth 1000 - 990 = 10 before, 479.95 - 495 < 0 after: the owner loses the 10 left
    assert v.stats.collateral_lost == D(10)
    v.set_marks(2, {"ETH-USD": D(1000)})  # carol: worth 1000 - 2000 < 0 before and 0 after
    v.liquidate(decision("c4", "carol", "lend-ETH", "bad_debt"))
    assert v.stats.collateral_lost == D(10) and v.stats.bad_debt == D(2000)


def test_history_replays_from_any_sequence_with_stable_ids() -> None:
    v = small_venue()
    everything = v.events_after(0)
    assert [s for s, _ in everything] == list(range(1, v.seq + 1))
    assert [codec.decode(p).event_id for _, p in everything] == [f"sim-{i}" for i in range(1, v.seq + 1)]
    assert v.events_after(5) == everything[5:]
    assert v.events_after(3, limit=2) == everything[3:5]


def test_events_are_keeper_codec_payloads_that_rebuild_the_same_balances() -> None:
    from keeper.domain.state import State, apply

    v = small_venue()
    v.set_marks(1, {"BTC-USD": D(59100), "ETH-USD": D(1000)})
    v.liquidate(decision("k1", "bob", "iso-BTC-USD", market="BTC-USD", size=D(1)))
    v.liquidate(decision("k2", "carol", "lend-ETH", "repay_seize", repay_asset="USDC", repay_amount=D(960),
                         seize_asset="ETH", seize_amount=D(1)))
    s = State()
    for seq, p in v.events_after(0):
        apply(s, f"{seq}-0", codec.decode(p))
    for acct, a in v.accounts.items():
        for name, b in a.buckets.items():
            kb = s.accounts[acct].buckets[name]
            assert kb.balances == b.balances
            assert {m: (p.size, p.entry_price, p.quote) for m, p in kb.positions.items()} == {
                m: (p.size, p.entry_price, p.quote) for m, p in b.positions.items()}
