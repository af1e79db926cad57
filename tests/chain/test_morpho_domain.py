"""Morpho Blue's pure domain: the contract's math, the market fold and its undo journal, the
liquidation rule and its plan, and the sans-I/O core, without a chain.

The parity test (``test_morpho_parity.py``) judges all of this against the real bytecode; these
are the fast checks of the documented contract of each piece: rounding directions, exact undo,
poison that changes nothing, the least seizure, and the core's busy/hold/episode rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from math import floor

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.domain.morpho import liquidation as lq
from keeper.domain.morpho import mathlib as ml
from keeper.domain.morpho.core import MorphoCore
from keeper.domain.morpho.state import (
    JOURNAL_BLOCKS,
    Market,
    MorphoState,
    MorphoStateError,
    Position,
    ReorgTooDeep,
    apply_block,
    apply_log,
    undo_log,
)
from keeper.domain.params import KeeperParams
from keeper.errors import DecodeError

CHAIN_ID = 31337
VENUE = "morpho-blue"
T0 = 1_700_000_000
"""Block time of block 0 (seconds); block ``b`` is at ``T0 + 12 * b``."""

ZERO_ADDRESS = "0x" + "00" * 20
IRM = "0x" + "1e" * 20
LLTVS = [385 * 10**15, 625 * 10**15, 770 * 10**15, 860 * 10**15, 915 * 10**15, 945 * 10**15,
         965 * 10**15, 980 * 10**15]
"""The LLTVs Morpho's governance enabled on Ethereum (0.385 ... 0.98)."""

# the worked example of the issue: a position one unit over its limit
EX_LLTV = 965 * 10**15
EX_COLLATERAL = 2154054762834647990724
EX_PRICE = 6679607595726462464273
EX_DEBT = 13884652
EX_MAX_BORROW = 13884651

LIVE = KeeperParams(profile="morpho-blue", mode="live", lookahead_s=0)
PAPER = KeeperParams(profile="morpho-blue", mode="paper", lookahead_s=0)


# ---------------------------------------------------------------- event builders


def addr(n: int) -> str:
    return f"0x{n:040x}"


def market_id(n: int) -> str:
    return f"0x{n:064x}"


def block_hash(block: int) -> str:
    return f"0x{block:064x}"


def block_time(block: int) -> int:
    return T0 + 12 * block


def chain_log(name: str, args: dict[str, int | str], *, block: int, index: int = 0,
              time: int | None = None) -> ev.ChainLog:
    t = block_time(block) if time is None else time
    return ev.ChainLog(
        event_id=f"evm:{CHAIN_ID}:{block_hash(block)}:{index}", ts_event=t * 1_000_000, venue=VENUE,
        name=name, block=block, block_hash=block_hash(block), tx_hash=f"0x{block * 1000 + index:064x}",
        log_index=index, block_time=t, args=args)


def chain_block(block: int, prices: dict[str, int] | None = None,
                rates: dict[str, int] | None = None) -> ev.ChainBlock:
    t = block_time(block)
    return ev.ChainBlock(
        event_id=f"blk:{CHAIN_ID}:{block_hash(block)}", ts_event=t * 1_000_000, venue=VENUE,
        chain_id=CHAIN_ID, block=block, block_hash=block_hash(block),
        parent_hash=block_hash(block - 1) if block else block_hash(0), block_time=t,
        prices=prices or {}, rates=rates or {})


def create_market(mid: str, lltv: int, irm: str = ZERO_ADDRESS) -> tuple[str, dict[str, int | str]]:
    return "CreateMarket", {"id": mid, "loanToken": addr(0xA1), "collateralToken": addr(0xC1),
                            "oracle": addr(0x0C), "irm": irm, "lltv": lltv}


def supply(mid: str, assets: int, shares: int) -> tuple[str, dict[str, int | str]]:
    who = addr(0x5)
    return "Supply", {"id": mid, "caller": who, "onBehalf": who, "assets": assets, "shares": shares}


def withdraw(mid: str, assets: int, shares: int) -> tuple[str, dict[str, int | str]]:
    who = addr(0x5)
    return "Withdraw", {"id": mid, "caller": who, "onBehalf": who, "receiver": who, "assets": assets,
                        "shares": shares}


def borrow(mid: str, borrower: str, assets: int, shares: int) -> tuple[str, dict[str, int | str]]:
    return "Borrow", {"id": mid, "caller": borrower, "onBehalf": borrower, "receiver": borrower,
                      "assets": assets, "shares": shares}


def repay(mid: str, borrower: str, assets: int, shares: int) -> tuple[str, dict[str, int | str]]:
    return "Repay", {"id": mid, "caller": borrower, "onBehalf": borrower, "assets": assets,
                     "shares": shares}


def supply_collateral(mid: str, borrower: str, assets: int) -> tuple[str, dict[str, int | str]]:
    return "SupplyCollateral", {"id": mid, "caller": borrower, "onBehalf": borrower, "assets": assets}


def withdraw_collateral(mid: str, borrower: str, assets: int) -> tuple[str, dict[str, int | str]]:
    return "WithdrawCollateral", {"id": mid, "caller": borrower, "onBehalf": borrower,
                                  "receiver": borrower, "assets": assets}


def accrue_interest(mid: str, interest: int, fee_shares: int, rate: int = 0
                    ) -> tuple[str, dict[str, int | str]]:
    return "AccrueInterest", {"id": mid, "prevBorrowRate": rate, "interest": interest,
                              "feeShares": fee_shares}


def liquidate_log(mid: str, borrower: str, repaid_assets: int, repaid_shares: int, seized: int,
                  bad_assets: int = 0, bad_shares: int = 0) -> tuple[str, dict[str, int | str]]:
    return "Liquidate", {"id": mid, "caller": addr(0x11D), "borrower": borrower,
                         "repaidAssets": repaid_assets, "repaidShares": repaid_shares,
                         "seizedAssets": seized, "badDebtAssets": bad_assets, "badDebtShares": bad_shares}


def set_fee(mid: str, fee: int) -> tuple[str, dict[str, int | str]]:
    return "SetFee", {"id": mid, "newFee": fee}


def fold(events: list[ev.ChainLog]) -> MorphoState:
    state = MorphoState()
    for e in events:
        apply_log(state, e)
    return state


def market(lltv: int, *, price: int, tsa: int, tss: int, tba: int, tbs: int, now: int = T0,
           rate: int = 0, last_update: int | None = None, irm: str = ZERO_ADDRESS) -> Market:
    return Market(id=market_id(1), loan_token=addr(0xA1), collateral_token=addr(0xC1), oracle=addr(0x0C),
                  irm=irm, lltv=lltv, total_supply_assets=tsa, total_supply_shares=tss,
                  total_borrow_assets=tba, total_borrow_shares=tbs,
                  last_update=now if last_update is None else last_update, price=price, rate=rate)


def totals(m: Market) -> lq.Totals:
    return lq.Totals(m.total_supply_assets, m.total_supply_shares, m.total_borrow_assets,
                     m.total_borrow_shares, m.last_update)


def example_market() -> tuple[Market, Position]:
    """The worked example: totals such that ``toAssetsUp(shares) == 13884652``."""
    shares = EX_DEBT * ml.VIRTUAL_SHARES
    m = market(EX_LLTV, price=EX_PRICE, tsa=10**12, tss=10**12 * ml.VIRTUAL_SHARES, tba=EX_DEBT,
               tbs=shares)
    return m, Position(borrow_shares=shares, collateral=EX_COLLATERAL)


# ---------------------------------------------------------------- 1. the worked example


def test_the_worked_example_is_liquidatable_one_unit_over_its_max_borrow() -> None:
    m, pos = example_market()
    t = totals(m)
    assert lq.max_borrow(EX_COLLATERAL, EX_PRICE, EX_LLTV) == EX_MAX_BORROW
    assert lq.borrowed(pos, t) == EX_DEBT
    assert ml.to_assets_up(pos.borrow_shares, t.borrow_assets, t.borrow_shares) == EX_DEBT
    assert not lq.healthy(pos, t, EX_PRICE, EX_LLTV)
    assert lq.health(pos, t, EX_PRICE, EX_LLTV) == Fraction(EX_MAX_BORROW, EX_DEBT)
    # one unit less of debt is exactly at the limit: healthy
    fewer = EX_DEBT - 1
    t1 = t._replace(borrow_assets=fewer, borrow_shares=fewer * ml.VIRTUAL_SHARES)
    assert lq.healthy(Position(borrow_shares=fewer * ml.VIRTUAL_SHARES, collateral=EX_COLLATERAL), t1,
                      EX_PRICE, EX_LLTV)
    p = lq.plan(m, pos, verdict_time=T0, plan_time=T0)
    assert p is not None
    assert p.borrowed == EX_DEBT
    assert p.max_borrow == EX_MAX_BORROW
    after = p.result.position
    assert after.borrow_shares == 0 or lq.healthy(after, p.result.totals, EX_PRICE, EX_LLTV)


# ---------------------------------------------------------------- 2. mathlib

uints = st.integers(min_value=0, max_value=2**128 - 1)
positive = st.integers(min_value=1, max_value=2**128 - 1)


@settings(max_examples=300, deadline=None)
@given(x=uints, y=uints, d=positive)
def test_mul_div_up_rounds_up_and_down_rounds_down_by_at_most_one(x: int, y: int, d: int) -> None:
    down, up = ml.mul_div_down(x, y, d), ml.mul_div_up(x, y, d)
    exact = Fraction(x * y, d)
    assert down <= exact <= up
    assert up - down == (0 if (x * y) % d == 0 else 1)


@settings(max_examples=300, deadline=None)
@given(amount=uints, total_assets=uints, total_shares=uints)
def test_shares_and_assets_round_up_at_least_as_high_as_down_and_by_at_most_one(
        amount: int, total_assets: int, total_shares: int) -> None:
    sd = ml.to_shares_down(amount, total_assets, total_shares)
    su = ml.to_shares_up(amount, total_assets, total_shares)
    ad = ml.to_assets_down(amount, total_assets, total_shares)
    au = ml.to_assets_up(amount, total_assets, total_shares)
    assert 0 <= su - sd <= 1
    assert 0 <= au - ad <= 1
    shares_exact = Fraction(amount * (total_shares + ml.VIRTUAL_SHARES), total_assets + ml.VIRTUAL_ASSETS)
    assets_exact = Fraction(amount * (total_assets + ml.VIRTUAL_ASSETS), total_shares + ml.VIRTUAL_SHARES)
    assert sd == floor(shares_exact)
    assert au == -floor(-assets_exact)


@settings(max_examples=300, deadline=None)
@given(amount=uints, total_assets=uints, total_shares=uints)
def test_share_round_trips_never_favour_the_user(amount: int, total_assets: int, total_shares: int) -> None:
    ta, ts = total_assets, total_shares
    # supply assets, withdraw the shares: never more assets back
    assert ml.to_assets_down(ml.to_shares_down(amount, ta, ts), ta, ts) <= amount
    # borrow assets (shares rounded up), owe them back: never less than borrowed
    assert ml.to_assets_up(ml.to_shares_up(amount, ta, ts), ta, ts) >= amount
    # withdraw the assets some shares are worth: never burns more shares than held
    assert ml.to_shares_up(ml.to_assets_down(amount, ta, ts), ta, ts) <= amount
    # repay what shares are owed: never retires fewer shares than owed
    assert ml.to_shares_down(ml.to_assets_up(amount, ta, ts), ta, ts) >= amount


def test_zero_floor_sub_floors_at_zero() -> None:
    assert ml.zero_floor_sub(10, 3) == 7
    assert ml.zero_floor_sub(10, 10) == 0
    assert ml.zero_floor_sub(10, 11) == 0
    assert ml.zero_floor_sub(0, 1) == 0


@pytest.mark.parametrize("lltv", LLTVS)
def test_liquidation_incentive_factor_is_the_contracts_floored_formula_capped_at_1_15(lltv: int) -> None:
    wad = 10**18
    cursor_part = floor(Fraction(3, 10) * (wad - lltv))  # LIQUIDATION_CURSOR.wMulDown(WAD - lltv)
    expected = min(115 * 10**16, floor(Fraction(wad * wad, wad - cursor_part)))  # WAD.wDivDown(...)
    got = ml.liquidation_incentive_factor(lltv)
    assert got == expected
    assert wad < got <= ml.MAX_LIQUIDATION_INCENTIVE_FACTOR
    exact = 1 / (1 - Fraction(3, 10) * (1 - Fraction(lltv, wad)))
    assert Fraction(got, wad) <= exact  # rounded down, never up
    if exact < Fraction(115, 100):
        assert exact - Fraction(got, wad) < Fraction(1, wad)


def test_liquidation_incentive_factor_is_capped_only_for_the_lowest_enabled_lltv() -> None:
    factors = [ml.liquidation_incentive_factor(lltv) for lltv in LLTVS]
    assert factors[0] == ml.MAX_LIQUIDATION_INCENTIVE_FACTOR  # 1 / (1 - 0.3 * 0.615) > 1.15
    assert all(f < ml.MAX_LIQUIDATION_INCENTIVE_FACTOR for f in factors[1:])
    assert factors == sorted(factors, reverse=True)  # a safer market pays less incentive
    assert ml.liquidation_incentive_factor(EX_LLTV) == 1010611419909044972  # 1 / 0.9895, floored


def test_taylor_compounding_is_the_three_term_expansion_floored() -> None:
    rate, elapsed = 1_585_489_599, 86_400 * 365  # ~5% a year per second
    x = rate * elapsed
    second = x * x // (2 * ml.WAD)
    assert ml.w_taylor_compounded(rate, elapsed) == x + second + second * x // (3 * ml.WAD)
    assert ml.w_taylor_compounded(0, 10**9) == 0


# ---------------------------------------------------------------- 3. the fold and its exact undo

MARKETS = [market_id(0xAA), market_id(0xBB)]
BORROWERS = [addr(0xB0), addr(0xB1), addr(0xB2)]


@dataclass
class _Totals:
    tsa: int = 0
    tss: int = 0
    tba: int = 0
    tbs: int = 0
    last_update: int = 0
    fee: int = 0


@dataclass
class _Book:
    """An independent model of the totals, so that every generated event is valid."""

    markets: dict[str, _Totals] = field(default_factory=dict)
    positions: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def pos(self, mid: str, who: str) -> list[int]:
        return self.positions.setdefault((mid, who), [0, 0])


Op = tuple[int, int, int, int, int]
ops_strategy = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 1), st.integers(0, 2),
              st.one_of(st.integers(0, 1000), st.integers(0, 10**30)),
              st.one_of(st.integers(0, 1000), st.integers(0, 10**30))),
    max_size=40)


def valid_history(ops: list[Op]) -> tuple[list[ev.ChainLog], _Book]:
    """Two CreateMarket, then ``ops`` interpreted as valid events (no total goes negative)."""
    book = _Book()
    events: list[ev.ChainLog] = []
    for i, mid in enumerate(MARKETS):
        name, args = create_market(mid, LLTVS[6 - i], irm=IRM)
        events.append(chain_log(name, args, block=1, index=i))
        book.markets[mid] = _Totals(last_update=block_time(1))
    for i, (kind, mi, bi, a, b) in enumerate(ops):
        mid, who = MARKETS[mi], BORROWERS[bi]
        blk, idx = 2 + i // 3, i % 3
        m, p = book.markets[mid], book.pos(mid, who)
        made: tuple[str, dict[str, int | str]]
        if kind == 0:
            made = supply(mid, a, b)
            m.tsa += a
            m.tss += b
        elif kind == 1:
            aa, bb = min(a, m.tsa), min(b, m.tss)
            made = withdraw(mid, aa, bb)
            m.tsa -= aa
            m.tss -= bb
        elif kind == 2:
            made = borrow(mid, who, a, b)
            m.tba += a
            m.tbs += b
            p[0] += b
        elif kind == 3:
            shares = min(b, p[0])
            assets = m.tba + 1 if a % 3 == 0 else min(a, m.tba)  # one over: zeroFloorSub
            made = repay(mid, who, assets, shares)
            m.tba = ml.zero_floor_sub(m.tba, assets)
            m.tbs -= shares
            p[0] -= shares
        elif kind == 4:
            made = supply_collateral(mid, who, a)
            p[1] += a
        elif kind == 5:
            aa = min(a, p[1])
            made = withdraw_collateral(mid, who, aa)
            p[1] -= aa
        elif kind == 6:
            made = accrue_interest(mid, a, b, rate=a % 10**10)
            m.tsa += a
            m.tba += a
            m.tss += b
            m.last_update = block_time(blk)
        elif kind == 7:
            shares = min(b, p[0])
            seized = p[1] if a % 2 == 0 else min(a, p[1])  # half of them seize everything
            repaid = m.tba + 1 if a % 5 == 0 else min(a // 7, m.tba)
            after = ml.zero_floor_sub(m.tba, repaid)
            bad_shares = bad_assets = 0
            if p[1] - seized == 0:
                bad_shares = p[0] - shares
                bad_assets = min(after, m.tsa, b // 3)
            made = liquidate_log(mid, who, repaid, shares, seized, bad_assets, bad_shares)
            m.tba = after - bad_assets
            m.tsa -= bad_assets
            m.tbs -= shares + bad_shares
            p[0] -= shares + bad_shares
            p[1] -= seized
        else:
            fee = a % (25 * 10**16)
            made = set_fee(mid, fee)
            m.fee = fee
        events.append(chain_log(made[0], made[1], block=blk, index=idx))
    return events, book


@settings(max_examples=150, deadline=None)
@given(ops=ops_strategy)
def test_the_fold_moves_the_totals_the_events_report(ops: list[Op]) -> None:
    events, book = valid_history(ops)
    state = fold(events)
    assert len(state.journal) == len(events)
    for mid, want in book.markets.items():
        m = state.markets[mid]
        got = (m.total_supply_assets, m.total_supply_shares, m.total_borrow_assets, m.total_borrow_shares,
               m.last_update, m.fee)
        assert got == (want.tsa, want.tss, want.tba, want.tbs, want.last_update, want.fee)
        kept = {who: Position(borrow_shares=p[0], collateral=p[1])
                for (m2, who), p in book.positions.items() if m2 == mid and p != [0, 0]}
        assert state.positions.get(mid, {}) == kept  # empty positions are not kept


@settings(max_examples=150, deadline=None)
@given(ops=ops_strategy, cut=st.integers(0, 10**6))
def test_undo_of_the_last_k_logs_restores_the_state_exactly(ops: list[Op], cut: int) -> None:
    events, _ = valid_history(ops)
    n = len(events)
    k = cut % (n + 1)
    state = fold(events)
    for e in reversed(events[n - k:]):
        assert undo_log(state, e.event_id, e.block) is not None
    expected = fold(events[:n - k])
    assert msgspec.json.encode(state.markets) == msgspec.json.encode(expected.markets)
    assert state.positions == expected.positions
    assert state.journal == expected.journal
    # and the undone entries can be applied again, to the same state as the whole history
    for e in events[n - k:]:
        apply_log(state, e)
    whole = fold(events)
    assert msgspec.json.encode(state.markets) == msgspec.json.encode(whole.markets)
    assert state.positions == whole.positions


def test_undo_of_a_repay_one_over_the_total_restores_the_floored_total() -> None:
    mid, who = MARKETS[0], BORROWERS[0]
    steps = [create_market(mid, EX_LLTV), supply(mid, 1000, 1000 * 10**6), borrow(mid, who, 100, 100 * 10**6),
             repay(mid, who, 101, 100 * 10**6)]
    events = [chain_log(n, a, block=1 + i) for i, (n, a) in enumerate(steps)]
    state = fold(events)
    assert state.markets[mid].total_borrow_assets == 0
    assert mid not in state.positions
    undo_log(state, events[-1].event_id, events[-1].block)
    assert state.markets[mid].total_borrow_assets == 100
    assert state.positions[mid][who] == Position(borrow_shares=100 * 10**6)


def test_undo_of_a_liquidation_with_bad_debt_restores_supply_borrow_and_the_position() -> None:
    mid, who = MARKETS[0], BORROWERS[0]
    steps = [create_market(mid, EX_LLTV), supply(mid, 1000, 1000 * 10**6), supply_collateral(mid, who, 50),
             borrow(mid, who, 100, 100 * 10**6),
             liquidate_log(mid, who, 60, 60 * 10**6, 50, bad_assets=40, bad_shares=40 * 10**6)]
    events = [chain_log(n, a, block=1 + i) for i, (n, a) in enumerate(steps)]
    before = fold(events[:-1])
    state = fold(events)
    m = state.markets[mid]
    assert (m.total_supply_assets, m.total_borrow_assets, m.total_borrow_shares) == (960, 0, 0)
    assert mid not in state.positions
    undo_log(state, events[-1].event_id, events[-1].block)
    assert msgspec.json.encode(state.markets) == msgspec.json.encode(before.markets)
    assert state.positions == before.positions


def test_undo_of_accrue_interest_restores_last_update_and_of_set_fee_the_fee() -> None:
    mid = MARKETS[0]
    steps = [create_market(mid, EX_LLTV, irm=IRM), supply(mid, 1000, 10**9), set_fee(mid, 10**17),
             accrue_interest(mid, 7, 3)]
    events = [chain_log(n, a, block=1 + 10 * i) for i, (n, a) in enumerate(steps)]
    state = fold(events)
    assert state.markets[mid].last_update == block_time(31)
    assert state.markets[mid].fee == 10**17
    undo_log(state, events[3].event_id, events[3].block)
    assert state.markets[mid].last_update == block_time(1)  # CreateMarket's block time
    undo_log(state, events[2].event_id, events[2].block)
    assert state.markets[mid].fee == 0
    assert msgspec.json.encode(state.markets) == msgspec.json.encode(fold(events[:2]).markets)


def test_the_fold_agrees_with_accrue_on_the_interest_it_reports() -> None:
    mid, who = MARKETS[0], BORROWERS[0]
    steps = [create_market(mid, EX_LLTV, irm=IRM), supply(mid, 10**12, 10**18), set_fee(mid, 10**17),
             borrow(mid, who, 5 * 10**11, 5 * 10**17)]
    events = [chain_log(n, a, block=1, index=i) for i, (n, a) in enumerate(steps)]
    state = fold(events)
    m = state.markets[mid]
    m.rate = 1_585_489_599
    later = block_time(1) + 86_400 * 30
    acc = lq.accrue(m, later)
    name, args = accrue_interest(mid, acc.interest, acc.fee_shares, rate=m.rate)
    apply_log(state, chain_log(name, args, block=2, time=later))
    assert acc.interest > 0
    assert acc.fee_shares > 0
    assert totals(state.markets[mid]) == acc.totals


def test_a_replayed_log_is_applied_once() -> None:
    mid = MARKETS[0]
    events = [chain_log(*create_market(mid, EX_LLTV), block=1), chain_log(*supply(mid, 10, 10), block=2)]
    state = fold(events + events[1:])
    assert state.markets[mid].total_supply_assets == 10


# ---------------------------------------------------------------- 4. poison


def _opened() -> tuple[MorphoState, str, str]:
    mid, who = MARKETS[0], BORROWERS[0]
    steps = [create_market(mid, EX_LLTV), supply(mid, 1000, 1000 * 10**6), supply_collateral(mid, who, 50),
             borrow(mid, who, 100, 100 * 10**6)]
    return fold([chain_log(n, a, block=1, index=i) for i, (n, a) in enumerate(steps)]), mid, who


@pytest.mark.parametrize("made", [
    repay(MARKETS[0], BORROWERS[0], 1, 100 * 10**6 + 1),  # more shares than the position owes
    repay(MARKETS[0], BORROWERS[1], 1, 1),  # a borrower without a position
    withdraw(MARKETS[0], 1001, 1),  # more than supplied
    withdraw(MARKETS[0], 1, 1000 * 10**6 + 1),
    withdraw_collateral(MARKETS[0], BORROWERS[0], 51),
    liquidate_log(MARKETS[0], BORROWERS[0], 1, 1, 51),
    liquidate_log(MARKETS[0], BORROWERS[0], 1, 100 * 10**6 + 1, 1),
    liquidate_log(MARKETS[0], BORROWERS[0], 60, 60 * 10**6, 50, bad_assets=41, bad_shares=40 * 10**6),
    borrow(MARKETS[1], BORROWERS[0], 1, 1),  # a market no CreateMarket created
    supply(MARKETS[1], 1, 1),
    supply_collateral(MARKETS[1], BORROWERS[0], 1),
    set_fee(MARKETS[1], 1),
    create_market(MARKETS[0], EX_LLTV),  # created twice
    ("Borrow", {"id": MARKETS[0], "onBehalf": BORROWERS[0], "assets": 1}),  # no shares
    ("Supply", {"id": MARKETS[0], "assets": "0x01", "shares": 1}),  # not an integer
], ids=lambda made: str(made[0]))
def test_an_event_the_state_cannot_take_raises_and_changes_nothing(
        made: tuple[str, dict[str, int | str]]) -> None:
    state, _, _ = _opened()
    before = msgspec.json.encode(state)
    with pytest.raises(MorphoStateError):
        apply_log(state, chain_log(made[0], made[1], block=2))
    assert msgspec.json.encode(state) == before


def test_an_event_the_keeper_does_not_keep_changes_nothing() -> None:
    state, _, _ = _opened()
    before = msgspec.json.encode(state)
    e = chain_log("SetAuthorization", {"caller": addr(1), "authorizer": addr(1), "authorized": addr(2),
                                       "newIsAuthorized": 1}, block=2)
    assert apply_log(state, e) is None
    assert undo_log(state, e.event_id, e.block) is None
    assert msgspec.json.encode(state) == before


@pytest.mark.parametrize("value", [2**256, 2**256 + 5, -1])
def test_a_chain_log_with_an_argument_out_of_uint256_cannot_be_built_nor_decoded(value: int) -> None:
    name, args = supply(MARKETS[0], 1, 1)
    with pytest.raises(ValueError, match="uint256"):
        chain_log(name, {**args, "assets": value}, block=1)
    good = chain_log(name, args, block=1)
    raw = msgspec.to_builtins(good)
    raw["args"]["assets"] = value
    with pytest.raises(DecodeError) as info:
        codec.decode(msgspec.json.encode(raw))
    assert info.value.reason == "invalid_field"
    assert codec.decode(codec.encode(good)) == good  # the valid one round-trips


@pytest.mark.parametrize("field_name", ["block", "log_index", "block_time"])
def test_a_chain_log_with_a_negative_position_cannot_be_decoded(field_name: str) -> None:
    raw = msgspec.to_builtins(chain_log(*supply(MARKETS[0], 1, 1), block=1))
    raw[field_name] = -1
    with pytest.raises(DecodeError):
        codec.decode(msgspec.json.encode(raw))


@pytest.mark.parametrize("price", [0, -1, 2**256])
def test_a_chain_block_with_a_price_out_of_range_cannot_be_built_nor_decoded(price: int) -> None:
    with pytest.raises(ValueError, match="prices"):
        chain_block(5, prices={MARKETS[0]: price})
    good = chain_block(5, prices={MARKETS[0]: EX_PRICE}, rates={MARKETS[0]: 10**9})
    raw = msgspec.to_builtins(good)
    raw["prices"][MARKETS[0]] = price
    with pytest.raises(DecodeError):
        codec.decode(msgspec.json.encode(raw))
    assert codec.decode(codec.encode(good)) == good


def test_a_chain_block_with_a_negative_rate_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="rates"):
        chain_block(5, rates={MARKETS[0]: -1})


def test_the_core_quarantines_a_poison_entry_and_keeps_deciding() -> None:
    run = Run(LIVE)
    mid, who = run.open_example()
    # poison: a repay of more shares than owed, and a borrow in a market that does not exist
    before = msgspec.json.encode(run.core.state)
    assert run.log(*repay(mid, who, 1, 10**30)) == []
    assert run.core.quarantined == 1
    assert run.core.last_quarantine.startswith(f"{run.last_entry}: ")
    assert "negative" in run.core.last_quarantine
    assert run.log(*borrow(MARKETS[1], who, 1, 1)) == []
    assert run.core.quarantined == 2
    assert run.core.last_quarantine.startswith(f"{run.last_entry}: ")
    assert MARKETS[1] in run.core.last_quarantine
    assert msgspec.json.encode(run.core.state) == before
    out = run.frame({mid: EX_PRICE})
    assert [i.decision.account for i in out] == [who]


@pytest.mark.parametrize("missing", ["lltv", "oracle"])
def test_a_create_market_missing_an_argument_is_quarantined(missing: str) -> None:
    core = MorphoCore(LIVE)
    name, args = create_market(MARKETS[0], EX_LLTV)
    del args[missing]
    core.handle("1-0", chain_log(name, args, block=1))
    assert core.quarantined == 1
    assert core.state.markets == {}


def test_an_undo_the_state_cannot_take_changes_nothing() -> None:
    state, mid, who = _opened()
    deposit = chain_log(*supply_collateral(mid, who, 10), block=2, index=0)
    taken = chain_log(*withdraw_collateral(mid, who, 60), block=2, index=1)
    apply_log(state, deposit)
    apply_log(state, taken)
    before = msgspec.json.encode(state)
    with pytest.raises(MorphoStateError):
        undo_log(state, deposit.event_id, deposit.block)  # out of order: collateral would be -10
    assert deposit.event_id in state.journal
    assert msgspec.json.encode(state) == before


# ---------------------------------------------------------------- 5. reorganisations too deep


def test_a_removal_older_than_the_journal_raises_reorg_too_deep() -> None:
    state, mid, _ = _opened()
    old = chain_log(*supply(mid, 5, 5), block=2)
    head = old.block + JOURNAL_BLOCKS + 1
    apply_log(state, old)
    apply_block(state, chain_block(head))
    before = msgspec.json.encode(state)
    with pytest.raises(ReorgTooDeep):
        undo_log(state, old.event_id, old.block)  # head - 2 > JOURNAL_BLOCKS
    with pytest.raises(ReorgTooDeep):
        undo_log(state, "evm:31337:0x00:0", head - JOURNAL_BLOCKS - 1)
    assert msgspec.json.encode(state) == before
    assert issubclass(ReorgTooDeep, MorphoStateError)


def test_a_removal_at_the_journal_edge_is_undone() -> None:
    state, mid, _ = _opened()
    edge = chain_log(*supply(mid, 5, 5), block=10)
    apply_log(state, edge)
    apply_block(state, chain_block(10 + JOURNAL_BLOCKS))
    assert undo_log(state, edge.event_id, edge.block) is not None
    assert state.markets[mid].total_supply_assets == 1000


def test_a_removal_of_an_entry_the_journal_no_longer_holds_is_never_silently_ignored() -> None:
    state, mid, _ = _opened()
    head = 300
    old = chain_log(*supply(mid, 5, 5), block=head - JOURNAL_BLOCKS)
    apply_log(state, old)
    apply_block(state, chain_block(head))
    apply_log(state, chain_log(*supply(mid, 1, 1), block=head + 1))  # the next block's logs, before its frame
    with pytest.raises(ReorgTooDeep):
        undo_log(state, old.event_id, old.block)


def test_the_core_quarantines_a_reorg_too_deep() -> None:
    run = Run(LIVE)
    mid, _ = run.open_example()
    old = chain_log(*supply(mid, 5, 5), block=run.block, index=99)
    run.feed(old)
    run.frame({mid: EX_PRICE})
    for _ in range(JOURNAL_BLOCKS + 1):
        run.frame({})
    run.feed(ev.ChainLogRemoved(event_id=f"rm:{old.event_id}", ts_event=0, venue=VENUE,
                                removed_id=old.event_id, block=old.block))
    assert run.core.quarantined == 1
    assert "older than" in run.core.last_quarantine


# ---------------------------------------------------------------- 6. liquidate


def test_liquidate_reverts_on_a_healthy_position() -> None:
    m, _ = example_market()
    fewer = EX_DEBT - 1
    t = totals(m)._replace(borrow_assets=fewer, borrow_shares=fewer * ml.VIRTUAL_SHARES)
    pos = Position(borrow_shares=fewer * ml.VIRTUAL_SHARES, collateral=EX_COLLATERAL)
    with pytest.raises(lq.Reverts, match=r"^position is healthy$"):
        lq.liquidate(m, pos, t, EX_PRICE, seized_assets=1)
    with pytest.raises(lq.Reverts, match=r"^position is healthy$"):
        lq.liquidate(m, Position(collateral=5), t, EX_PRICE, repaid_shares=1)


@pytest.mark.parametrize(("seized", "repaid"), [(0, 0), (1, 1), (10**18, 10**6)])
def test_liquidate_reverts_with_inconsistent_input_unless_exactly_one_input(seized: int, repaid: int) -> None:
    m, pos = example_market()
    with pytest.raises(lq.Reverts, match=r"^inconsistent input$"):
        lq.liquidate(m, pos, totals(m), EX_PRICE, seized_assets=seized, repaid_shares=repaid)


def test_seizing_all_the_collateral_of_an_insolvent_position_realises_the_bad_debt() -> None:
    m, pos = _insolvent()
    price = m.price
    t = totals(m)
    owed = lq.borrowed(pos, t)
    r = lq.liquidate(m, pos, t, price, seized_assets=pos.collateral)
    assert r.position == Position(borrow_shares=0, collateral=0)
    assert r.seized_assets == pos.collateral
    assert r.bad_debt_shares == pos.borrow_shares - r.repaid_shares > 0
    after_repay = t.borrow_assets - r.repaid_assets
    assert r.bad_debt_assets == min(after_repay, ml.to_assets_up(r.bad_debt_shares, after_repay,
                                                                 t.borrow_shares - r.repaid_shares))
    assert r.repaid_assets + r.bad_debt_assets >= owed - 1
    assert r.totals.borrow_shares == t.borrow_shares - pos.borrow_shares
    assert r.totals.borrow_assets == t.borrow_assets - r.repaid_assets - r.bad_debt_assets
    assert r.totals.supply_assets == t.supply_assets - r.bad_debt_assets
    assert r.totals.supply_shares == t.supply_shares
    p = lq.plan(m, pos, verdict_time=T0, plan_time=T0)
    assert p is not None
    assert p.seized_assets == pos.collateral
    assert p.result == r


def _insolvent() -> tuple[Market, Position]:
    m = market(860 * 10**15, price=10**36, tsa=10**9, tss=10**15, tba=10**6, tbs=10**12)
    return m, Position(borrow_shares=10**12 // 2, collateral=300_000)  # owes 500_000 for 300_000


def test_the_plan_of_an_insolvent_position_says_it_realises_bad_debt() -> None:
    m, pos = _insolvent()
    p = lq.plan(m, pos, verdict_time=T0, plan_time=T0)
    assert p is not None
    assert p.result.bad_debt_shares > 0
    assert "covered" not in p.why
    assert "bad debt" in p.why


def _contract_liquidate(lltv: int, tba: int, tbs: int, price: int, *, seized: int, repaid_shares: int
                        ) -> tuple[int, int, int]:
    """Morpho.liquidate's amounts, written out from the Solidity with ``//`` and ceilings."""
    wad = 10**18
    lif = min(115 * 10**16, wad * wad // (wad - (3 * 10**17 * (wad - lltv)) // wad))
    va, vs = tba + 1, tbs + 10**6
    if seized > 0:
        quoted = -(-seized * price // 10**36)
        w_div_up = -(-quoted * wad // lif)
        repaid_shares = -(-w_div_up * vs // va)
    else:
        seized = (repaid_shares * va // vs) * lif // wad * 10**36 // price
    repaid_assets = -(-repaid_shares * va // vs)
    return seized, repaid_shares, repaid_assets


@st.composite
def liquidatable(draw: st.DrawFn, *, small: bool = False) -> tuple[Market, Position, lq.Totals]:
    """A random position the contract finds liquidatable (after accrual to ``T0``)."""
    lltv = draw(st.sampled_from(LLTVS))
    if small:
        collateral = draw(st.integers(1, 400))
        price = draw(st.integers(10**35, 10**37))
    else:
        collateral = draw(st.integers(1, 10**27))
        price = draw(st.integers(10**20, 10**44))
    cap = lq.max_borrow(collateral, price, lltv)
    debt = cap * draw(st.integers(1000, 3000)) // 1000 + draw(st.integers(1, 1000))
    tba = debt + draw(st.integers(0, 10 * debt))
    tbs = max(1, tba * 10**6 * draw(st.integers(500, 2000)) // 1000)
    shares = min(ml.to_shares_up(debt, tba, tbs), tbs)
    tsa = tba + draw(st.integers(0, 10**30))
    accrued = draw(st.booleans())
    m = market(lltv, price=price, tsa=tsa, tss=tsa * 10**6, tba=tba, tbs=tbs,
               irm=IRM if accrued else ZERO_ADDRESS,
               rate=draw(st.integers(0, 10**11)) if accrued else 0,
               last_update=T0 - draw(st.integers(0, 86_400 * 30)) if accrued else T0)
    pos = Position(borrow_shares=shares, collateral=collateral)
    t = lq.accrue(m, T0).totals
    assume(not lq.healthy(pos, t, price, lltv))
    return m, pos, t


@settings(max_examples=200, deadline=None)
@given(case=liquidatable(), seize_part=st.integers(1, 1000), repay_part=st.integers(1, 1000))
def test_liquidate_amounts_are_the_contract_formula(case: tuple[Market, Position, lq.Totals], seize_part: int,
                                                    repay_part: int) -> None:
    m, pos, t = case
    price, ba, bs = m.price, t.borrow_assets, t.borrow_shares
    seized = max(1, pos.collateral * seize_part // 1000)
    want = _contract_liquidate(m.lltv, ba, bs, price, seized=seized, repaid_shares=0)
    if want[1] > pos.borrow_shares:  # the contract's subtraction underflows
        with pytest.raises(lq.Reverts, match="underflow"):
            lq.liquidate(m, pos, t, price, seized_assets=seized)
    else:
        r = lq.liquidate(m, pos, t, price, seized_assets=seized)
        assert (r.seized_assets, r.repaid_shares, r.repaid_assets) == want
    shares = max(1, pos.borrow_shares * repay_part // 1000)
    want = _contract_liquidate(m.lltv, ba, bs, price, seized=0, repaid_shares=shares)
    if want[0] > pos.collateral:
        with pytest.raises(lq.Reverts, match="underflow"):
            lq.liquidate(m, pos, t, price, repaid_shares=shares)
    else:
        r = lq.liquidate(m, pos, t, price, repaid_shares=shares)
        assert (r.seized_assets, r.repaid_shares, r.repaid_assets) == want
        assert r.position.collateral == pos.collateral - want[0]
        if r.position.collateral > 0:
            assert r.position.borrow_shares == pos.borrow_shares - shares
            assert r.bad_debt_shares == 0


def test_liquidate_at_price_zero_by_seized_assets_is_what_the_contract_does() -> None:
    m, pos = example_market()
    r = lq.liquidate(m, pos, totals(m), 0, seized_assets=10)
    assert (r.repaid_shares, r.repaid_assets, r.seized_assets) == (0, 0, 10)


def test_liquidate_at_price_zero_by_repaid_shares_panics() -> None:
    m, pos = example_market()
    with pytest.raises(lq.Reverts, match="division by zero"):
        lq.liquidate(m, pos, totals(m), 0, repaid_shares=10)


# ---------------------------------------------------------------- 7. plan


def test_plan_is_none_for_a_healthy_position_no_price_no_debt_or_no_collateral() -> None:
    m, pos = example_market()
    healthy_m = msgspec.structs.replace(m, price=EX_PRICE * 2)
    assert lq.plan(healthy_m, pos, verdict_time=T0, plan_time=T0) is None
    assert lq.plan(msgspec.structs.replace(m, price=0), pos, verdict_time=T0, plan_time=T0) is None
    assert lq.plan(m, Position(collateral=EX_COLLATERAL), verdict_time=T0, plan_time=T0) is None
    assert lq.plan(m, Position(borrow_shares=pos.borrow_shares), verdict_time=T0, plan_time=T0) is None


def _restores(m: Market, pos: Position, t: lq.Totals, seized: int) -> bool:
    try:
        r = lq.liquidate(m, pos, t, m.price, seized_assets=seized)
    except lq.Reverts:
        return False
    return r.position.borrow_shares == 0 or lq.healthy(r.position, r.totals, m.price, m.lltv)


def _check_plan(m: Market, pos: Position, t: lq.Totals) -> lq.Plan:
    p = lq.plan(m, pos, verdict_time=T0, plan_time=T0)
    assert p is not None
    assert (p.seized_assets == 0) != (p.repaid_shares == 0)
    assert p.result == lq.liquidate(m, pos, t, m.price, seized_assets=p.seized_assets,
                                    repaid_shares=p.repaid_shares)
    assert p.borrowed == lq.borrowed(pos, t)
    assert p.max_borrow == lq.max_borrow(pos.collateral, m.price, m.lltv) < p.borrowed
    after = p.result.position
    assert after.borrow_shares == 0 or lq.healthy(after, p.result.totals, m.price, m.lltv)
    if p.repaid_shares:
        assert p.repaid_shares == pos.borrow_shares
        assert after.borrow_shares == 0
    elif 1 < p.seized_assets < pos.collateral:
        assert not _restores(m, pos, t, p.seized_assets - 1)
    return p


@settings(max_examples=300, deadline=None)
@given(case=liquidatable())
def test_plan_restores_health_and_one_unit_less_does_not(case: tuple[Market, Position, lq.Totals]) -> None:
    _check_plan(*case)


def _repays_at_most_the_debt(m: Market, pos: Position, t: lq.Totals, seized: int) -> bool:
    try:
        lq.liquidate(m, pos, t, m.price, seized_assets=seized)
    except lq.Reverts:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(case=liquidatable(small=True))
def test_plan_never_seizes_past_where_every_larger_seizure_restores_health(
        case: tuple[Market, Position, lq.Totals]) -> None:
    """Brute force on small numbers. Restoring health is monotone in the seizure only up to the
    contract's roundings, and the plan's search is a bisection: it returns a seizure that restores
    health with one unit less failing, never one past the least seizure from which every larger
    valid one restores health."""
    m, pos, t = case
    p = _check_plan(m, pos, t)
    if not p.seized_assets:
        return
    valid = [s for s in range(1, pos.collateral + 1) if _repays_at_most_the_debt(m, pos, t, s)]
    assert valid == list(range(1, len(valid) + 1))  # the valid seizures are a prefix
    stable = len(valid) + 1
    while stable > 1 and _restores(m, pos, t, stable - 1):
        stable -= 1
    assert p.seized_assets <= stable


def test_where_roundings_make_health_non_monotone_the_plan_is_the_least_of_the_upper_run() -> None:
    """The documented limit of the bisection: seizing 1 restores health here, 2..10 do not (the
    double floor of maxBorrow), and the search lands on 11, the least seizure from which every
    larger one restores health (liquidation.py's docstring); 11 repays every share, so the plan
    repays them by shares instead (exact whenever it lands)."""
    m = market(625 * 10**15, price=10**35, tsa=3, tss=3 * 10**6, tba=3, tbs=15 * 10**5)
    pos = Position(borrow_shares=125 * 10**4, collateral=21)
    t = totals(m)
    assert _restores(m, pos, t, 1)
    assert not any(_restores(m, pos, t, s) for s in range(2, 11))
    p = _check_plan(m, pos, t)
    assert (p.seized_assets, p.repaid_shares) == (0, pos.borrow_shares)
    assert lq.liquidate(m, pos, t, m.price, seized_assets=11).repaid_shares >= pos.borrow_shares
    assert all(_restores(m, pos, t, s) for s in range(11, 22) if _repays_at_most_the_debt(m, pos, t, s))


def test_plan_sizes_on_interest_accrued_to_the_plan_time() -> None:
    m, pos = example_market()
    m = msgspec.structs.replace(m, irm=IRM, rate=10**10)  # ~37% a year
    now = T0
    p0 = lq.plan(m, pos, verdict_time=now, plan_time=now)
    later = lq.plan(m, pos, verdict_time=now, plan_time=now + 86_400)
    assert p0 is not None
    assert later is not None
    assert later.borrowed > p0.borrowed
    assert later.seized_assets >= p0.seized_assets


# ---------------------------------------------------------------- 8. the core


@dataclass
class Run:
    """Feeds one core (or several, identically) a chain venue's log: logs of a block, then its
    frame; the entry ids are ``<n>-0``."""

    params: KeeperParams
    cores: list[MorphoCore] = field(default_factory=list)
    seq: int = 0
    block: int = 1
    index: int = 0
    last_entry: str = ""
    outputs: list[list[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cores:
            self.cores = [MorphoCore(self.params)]
        self.outputs = [[] for _ in self.cores]

    @property
    def core(self) -> MorphoCore:
        return self.cores[0]

    def feed(self, event: ev.Event) -> list[ev.LiquidationIntended]:
        self.seq += 1
        self.last_entry = f"{self.seq}-0"
        first: list[ev.LiquidationIntended] = []
        for i, core in enumerate(self.cores):
            out = list(core.handle(self.last_entry, event))
            self.outputs[i].extend(codec.encode(o) for o in out)
            intents = [o for o in out if isinstance(o, ev.LiquidationIntended)]
            assert len(intents) == len(out)
            if i == 0:
                first = intents
        return first

    def log(self, name: str, args: dict[str, int | str]) -> list[ev.LiquidationIntended]:
        e = chain_log(name, args, block=self.block, index=self.index)
        self.index += 1
        return self.feed(e)

    def frame(self, prices: dict[str, int], rates: dict[str, int] | None = None
              ) -> list[ev.LiquidationIntended]:
        out = self.feed(chain_block(self.block, prices, rates))
        self.block += 1
        self.index = 0
        return out

    def record(self, intents: list[ev.LiquidationIntended]) -> None:
        """The runner appends the decided intents to the log: the core reads them back."""
        for i in intents:
            assert self.feed(i) == []

    def reject(self, intent: ev.LiquidationIntended) -> None:
        self.feed(ev.LiquidationRejected(event_id=f"rej:{self.seq}", ts_event=0, intent_id=intent.event_id,
                                         reason="execution reverted"))

    def confirm(self, intent: ev.LiquidationIntended, block: int) -> None:
        self.feed(ev.LiquidationConfirmed(event_id=f"ok:{self.seq}", ts_event=0, intent_id=intent.event_id,
                                          block=block))

    def open_market(self, mid: str, lltv: int = EX_LLTV) -> None:
        self.log(*create_market(mid, lltv))
        self.log(*supply(mid, 10**15, 10**21))

    def open_position(self, mid: str, who: str, collateral: int, debt: int) -> None:
        """Borrow at one asset per 1e6 shares (the market's totals keep that rate exactly)."""
        self.log(*supply_collateral(mid, who, collateral))
        self.log(*borrow(mid, who, debt, debt * ml.VIRTUAL_SHARES))

    def open_example(self) -> tuple[str, str]:
        mid, who = MARKETS[0], BORROWERS[0]
        self.open_market(mid)
        self.open_position(mid, who, EX_COLLATERAL, EX_DEBT)
        return mid, who


def test_a_liquidatable_position_yields_one_intent_on_the_frame_and_none_on_logs() -> None:
    run = Run(LIVE)
    mid, who = MARKETS[0], BORROWERS[0]
    run.open_market(mid)
    assert run.log(*supply_collateral(mid, who, EX_COLLATERAL)) == []
    assert run.log(*borrow(mid, who, EX_DEBT, EX_DEBT * ml.VIRTUAL_SHARES)) == []  # logs never decide
    out = run.frame({mid: EX_PRICE})
    frame_entry = run.last_entry
    assert len(out) == 1
    intent = out[0]
    assert intent.event_id == f"liq:{who}/{mid}@{frame_entry}"
    d = intent.decision
    assert (d.intent_id, d.account, d.bucket, d.market) == (intent.event_id, who, mid, mid)
    assert d.trigger == frame_entry
    assert d.mode == "live"
    assert d.profile == "morpho-blue"
    assert d.requirement == EX_DEBT
    assert d.equity == EX_MAX_BORROW
    assert intent.causation_id == f"blk:{CHAIN_ID}:{block_hash(run.block - 1)}"
    assert intent.ts_event == block_time(run.block - 1) * 1_000_000
    assert list(run.core.pending()) == [intent]
    # busy: the next frames yield nothing, whether the intent was read back yet or not
    assert run.frame({mid: EX_PRICE}) == []
    run.record(out)
    assert run.core.pending() == []
    assert run.frame({mid: EX_PRICE}) == []
    assert run.core.busy == {f"{who}/{mid}": intent.event_id}


def test_an_outcome_of_another_intent_does_not_free_the_position() -> None:
    run = Run(LIVE)
    mid, who = run.open_example()
    [intent] = run.frame({mid: EX_PRICE})
    run.record([intent])
    stale = msgspec.structs.replace(intent, event_id=f"liq:{who}/{mid}@0-1")
    run.reject(stale)
    assert run.frame({mid: EX_PRICE}) == []


def test_expiry_frees_the_position_at_the_next_frame() -> None:
    run = Run(LIVE)
    mid, _ = run.open_example()
    [intent] = run.frame({mid: EX_PRICE})
    run.record([intent])
    run.feed(ev.LiquidationExpired(event_id="exp:1", ts_event=0, intent_id=intent.event_id))
    assert len(run.frame({mid: EX_PRICE})) == 1


@pytest.mark.parametrize("rejections", [1, 2, 3, 5, 8])
def test_each_rejection_in_a_row_holds_the_position_twice_as_many_blocks(rejections: int) -> None:
    run = Run(LIVE)
    mid, _ = run.open_example()
    out = run.frame({mid: EX_PRICE})
    for n in range(1, rejections + 1):
        [intent] = out
        run.record(out)
        at = run.block - 1  # the block of the frame the rejection follows
        run.reject(intent)
        hold = min(64, 2 ** (n - 1))
        for _ in range(hold - 1):
            assert run.frame({mid: EX_PRICE}) == [], f"rejection {n}: held for {hold} blocks"
        assert run.block == at + hold
        out = run.frame({mid: EX_PRICE})
        assert len(out) == 1, f"rejection {n}: free after {hold} blocks"
    assert run.core.rejected[f"{BORROWERS[0]}/{mid}"][0] == rejections


def test_a_healthy_frame_forgets_the_rejections() -> None:
    run = Run(LIVE)
    mid, who = run.open_example()
    [intent] = run.frame({mid: EX_PRICE})
    run.record([intent])
    run.reject(intent)
    [intent] = run.frame({mid: EX_PRICE})
    run.record([intent])
    run.reject(intent)
    assert run.core.rejected[f"{who}/{mid}"][0] == 2
    assert run.frame({mid: EX_PRICE}) == []  # held 2 blocks
    assert run.frame({mid: EX_PRICE * 2}) == []  # healthy: the count starts again
    assert f"{who}/{mid}" not in run.core.rejected
    assert len(run.frame({mid: EX_PRICE})) == 1


def test_a_confirmation_holds_the_position_until_a_frame_at_its_block() -> None:
    run = Run(LIVE)
    mid, who = run.open_example()
    [intent] = run.frame({mid: EX_PRICE})
    run.record([intent])
    receipt = run.block + 2
    run.confirm(intent, receipt)
    assert run.frame({mid: EX_PRICE}) == []  # block receipt - 2
    assert run.frame({mid: EX_PRICE}) == []  # block receipt - 1
    assert run.block == receipt
    # the Liquidate the receipt reports is in this block's logs: the position is then healthy
    before = lq.borrowed(run.core.state.position(mid, who), totals(run.core.state.markets[mid]))
    assert before == EX_DEBT
    run.log(*liquidate_log(mid, who, 1000, 1000 * ml.VIRTUAL_SHARES, 0))
    assert run.frame({mid: EX_PRICE}) == []


def test_a_confirmation_whose_liquidation_did_not_restore_health_decides_again_at_its_block() -> None:
    run = Run(LIVE)
    mid, _ = run.open_example()
    [intent] = run.frame({mid: EX_PRICE})
    run.record([intent])
    run.confirm(intent, run.block + 1)
    assert run.frame({mid: EX_PRICE}) == []
    assert len(run.frame({mid: EX_PRICE})) == 1


def test_paper_mode_records_one_decision_per_unhealthy_episode() -> None:
    run = Run(PAPER)
    mid, who = run.open_example()
    [first] = run.frame({mid: EX_PRICE})
    assert first.decision.mode == "paper"
    run.record([first])
    assert run.core.busy == {}
    for _ in range(3):
        assert run.frame({mid: EX_PRICE}) == []
    assert run.frame({mid: EX_PRICE * 2}) == []  # healthy: the episode ends
    assert f"{who}/{mid}" not in run.core.episodes
    [second] = run.frame({mid: EX_PRICE})
    assert second.event_id == f"liq:{who}/{mid}@{run.last_entry}"
    assert second.event_id != first.event_id
    assert run.frame({mid: EX_PRICE}) == []


def test_a_frame_without_a_price_for_the_market_yields_nothing() -> None:
    run = Run(LIVE)
    mid, _ = run.open_example()
    other = MARKETS[1]
    run.open_market(other)
    assert run.frame({other: EX_PRICE}) == []
    assert run.core.state.markets[mid].price == 0
    assert run.frame({}) == []
    assert len(run.frame({mid: EX_PRICE})) == 1


def test_decisions_are_ordered_lowest_health_first() -> None:
    run = Run(LIVE)
    mid, other = MARKETS
    run.open_market(mid)
    run.open_market(other, lltv=860 * 10**15)
    debts = {BORROWERS[0]: EX_DEBT + 10, BORROWERS[1]: EX_DEBT + 5_000_000, BORROWERS[2]: EX_DEBT}
    for who, debt in debts.items():
        run.open_position(mid, who, EX_COLLATERAL, debt)
    # in the other market: one unit per collateral unit, lltv 0.86 -> max borrow 860 for 1000
    run.open_position(other, BORROWERS[0], 1000, 900)
    run.open_position(other, BORROWERS[1], 1000, 861)
    out = run.frame({mid: EX_PRICE, other: 10**36})
    assert len(out) == 5
    healths: list[Decimal] = []
    for i in out:
        assert i.decision.health_before is not None
        healths.append(i.decision.health_before)
    assert healths == sorted(healths)
    order = [(i.decision.account, i.decision.bucket) for i in out]
    assert order[0] == (BORROWERS[1], mid)  # 13884651 / 18884652
    assert order[1] == (BORROWERS[0], other)  # 860 / 900
    assert order[-1] == (BORROWERS[2], mid)  # 13884651 / 13884652


def test_snapshot_and_restore_round_trip_and_decide_byte_for_byte_the_same() -> None:
    run = Run(LIVE)
    mid, other = MARKETS
    run.open_market(mid)
    run.open_market(other, lltv=860 * 10**15)
    run.open_position(mid, BORROWERS[0], EX_COLLATERAL, EX_DEBT)
    run.open_position(other, BORROWERS[1], 1000, 900)
    run.open_position(other, BORROWERS[2], 1000, 700)
    first = run.frame({mid: EX_PRICE, other: 10**36})
    assert len(first) == 2
    run.record(first[:1])  # the other stays pending: the restored core must keep it
    run.reject(first[0])
    run.log(*borrow(mid, BORROWERS[0], 0, 0))
    run.log(*repay(mid, BORROWERS[0], 1, 10**30))  # poison
    assert run.core.quarantined == 1
    data = run.core.snapshot()
    restored = MorphoCore.restore(data, LIVE)
    assert restored.snapshot() == data
    assert [codec.encode(i) for i in restored.pending()] == [codec.encode(i) for i in run.core.pending()]
    assert (restored.offset, restored.applied, restored.quarantined, restored.last_quarantine) == (
        run.core.offset, run.core.applied, run.core.quarantined, run.core.last_quarantine)
    twin = Run(LIVE, cores=[run.core, restored], seq=run.seq, block=run.block, index=run.index)
    twin.record(first[1:])
    for price in (EX_PRICE, EX_PRICE, EX_PRICE // 2):
        twin.log(*accrue_interest(other, 0, 0))
        out = twin.frame({mid: price, other: 9 * 10**35}, rates={other: 10**9})
        twin.record(out)
        for intent in out[1:]:
            twin.reject(intent)
    twin.confirm(first[1], twin.block + 1)
    for _ in range(3):
        twin.record(twin.frame({mid: EX_PRICE // 3, other: 8 * 10**35}))
    assert twin.outputs[0], "the frames after the snapshot decided nothing"
    assert twin.outputs[0] == twin.outputs[1]
    assert run.core.snapshot() == restored.snapshot()
