"""Aave v3.0.2's pure domain: ray math and interest, the pool folded from its contracts' own events
(scaled balances from the tokens' Mint/Burn/BalanceTransfer) with its undo journal, the account
data and ``liquidationCall``, and the sans-I/O core, without a chain.

The parity test (``test_aave_parity.py``) judges all of this against the real bytecode; these are
the fast checks of the documented contract of each piece, against independent transcriptions of
the Solidity (``WadRayMath``, ``MathUtils``, ``ScaledBalanceTokenBase``, ``GenericLogic``,
``LiquidationLogic``): rounding directions, the scaled amounts the tokens store, exact undo, poison
that changes nothing, the health factor and the liquidation amounts to the wei, and the core's
refusals, busy/backoff rules and snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal
from fractions import Fraction
from math import floor

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.domain.aave_v3 import liquidation as lq
from keeper.domain.aave_v3 import raymath as rm
from keeper.domain.aave_v3.core import AaveCore
from keeper.domain.aave_v3.state import (
    JOURNAL_BLOCKS,
    AaveState,
    AaveStateError,
    ReorgTooDeep,
    Reserve,
    User,
    apply_block,
    apply_log,
    undo_log,
)
from keeper.domain.params import KeeperParams

CHAIN_ID = 31337
VENUE = "aave-v3.0"
T0 = 1_700_000_000
"""Block time of block 0 (seconds); block ``b`` is at ``T0 + 12 * b``."""

RAY = 10**27
WAD = 10**18
SECONDS_PER_YEAR = 365 * 86_400
MAX_UINT256 = 2**256 - 1

LIVE = KeeperParams(profile="aave-v3.0", chain="aave-v3.0", mode="live")

Log = tuple[str, str, dict[str, int | str]]
"""(emitting contract, event name, arguments): a log before it is placed in a block."""


def addr(n: int) -> str:
    return f"0x{n:040x}"


CONFIGURATOR = addr(0xC0F16)
POOL = addr(0x9001)
TREASURY = addr(0x7EA5)
INCENTIVES = addr(0x1CE7)
IRM = addr(0x1A7E)
ASSETS = [addr(0xA55E7000 + i) for i in range(4)]
USERS = [addr(0xB0B0 + i) for i in range(3)]
C, D = ASSETS[0], ASSETS[1]
"""The collateral (reserve 0) and debt (reserve 1) assets of the worked accounts."""


def a_token(i: int) -> str:
    return addr(0xA7000 + i)


def stable_token(i: int) -> str:
    return addr(0x57000 + i)


def variable_token(i: int) -> str:
    return addr(0x7D000 + i)


# ---------------------------------------------------------------- independent transcriptions


def sol_ray_mul(a: int, b: int) -> int:
    """``WadRayMath.rayMul``: ``div(add(mul(a, b), HALF_RAY), RAY)``."""
    return (a * b + RAY // 2) // RAY


def sol_ray_div(a: int, b: int) -> int:
    """``WadRayMath.rayDiv``: ``div(add(mul(a, RAY), div(b, 2)), b)``."""
    return (a * RAY + b // 2) // b


def sol_wad_div(a: int, b: int) -> int:
    """``WadRayMath.wadDiv``: ``div(add(mul(a, WAD), div(b, 2)), b)``."""
    return (a * WAD + b // 2) // b


def sol_percent_mul(value: int, pct: int) -> int:
    """``PercentageMath.percentMul``: ``div(add(mul(value, pct), HALF_PERCENTAGE_FACTOR), 1e4)``."""
    return (value * pct + 5_000) // 10_000


def sol_percent_div(value: int, pct: int) -> int:
    """``PercentageMath.percentDiv``: ``div(add(mul(value, 1e4), div(pct, 2)), pct)``."""
    return (value * 10_000 + pct // 2) // pct


def sol_linear_interest(rate: int, last: int, now: int) -> int:
    """``MathUtils.calculateLinearInterest``."""
    result = rate * (now - last)
    result = result // SECONDS_PER_YEAR
    return RAY + result


def sol_compounded_interest(rate: int, last: int, now: int) -> int:
    """``MathUtils.calculateCompoundedInterest`` (binomial expansion to the third term)."""
    exp = now - last
    if exp == 0:
        return RAY
    exp_minus_one = exp - 1
    exp_minus_two = exp - 2 if exp > 2 else 0
    base_power_two = sol_ray_mul(rate, rate) // (SECONDS_PER_YEAR * SECONDS_PER_YEAR)
    base_power_three = sol_ray_mul(base_power_two, rate) // SECONDS_PER_YEAR
    second_term = exp * exp_minus_one * base_power_two
    second_term //= 2
    third_term = exp * exp_minus_one * exp_minus_two * base_power_three
    third_term //= 6
    return RAY + (rate * exp) // SECONDS_PER_YEAR + second_term + third_term


def sol_normalized_income(r: Reserve, now: int) -> int:
    """``ReserveLogic.getNormalizedIncome``."""
    if r.last_update == now:
        return r.liquidity_index
    return sol_ray_mul(sol_linear_interest(r.liquidity_rate, r.last_update, now), r.liquidity_index)


def sol_normalized_debt(r: Reserve, now: int) -> int:
    """``ReserveLogic.getNormalizedDebt``."""
    if r.last_update == now:
        return r.variable_index
    return sol_ray_mul(sol_compounded_interest(r.variable_rate, r.last_update, now), r.variable_index)


@dataclass(frozen=True)
class SolAccount:
    total_collateral: int
    total_debt: int
    avg_threshold: int
    health_factor: int


def sol_account(state: AaveState, user: User, now: int) -> SolAccount:
    """``GenericLogic.calculateUserAccountData`` (v3.0.2, no eMode, no stable debt): the reserves in
    the pool's list order, collateral only where used as collateral with a threshold."""
    coll = debt = avg_lt = 0
    for r in sorted(state.reserves.values(), key=lambda r: r.id):
        using = r.asset in user.collateral
        borrowing = r.asset in user.borrowed
        if not (using or borrowing):
            continue
        unit = 10 ** state.decimals.get(r.asset, 18)
        if r.threshold != 0 and using:
            balance = user.supplied.get(r.asset, 0)
            value = sol_ray_mul(balance, sol_normalized_income(r, now)) * r.price // unit
            coll += value
            avg_lt += value * r.threshold
        if borrowing:
            owed = user.borrowed[r.asset]
            if owed != 0:
                owed = sol_ray_mul(owed, sol_normalized_debt(r, now))
            debt += r.price * owed // unit
    avg_lt = avg_lt // coll if coll != 0 else 0
    hf = MAX_UINT256 if debt == 0 else sol_wad_div(sol_percent_mul(coll, avg_lt), debt)
    return SolAccount(coll, debt, avg_lt, hf)


@dataclass(frozen=True)
class SolLiquidation:
    debt_to_liquidate: int
    collateral_to_liquidator: int
    protocol_fee: int
    close_factor: int


def sol_available_collateral(*, collateral_price: int, debt_price: int, collateral_decimals: int,
                             debt_decimals: int, debt_to_cover: int, balance: int, bonus: int,
                             fee_pct: int) -> tuple[int, int, int]:
    """``LiquidationLogic._calculateAvailableCollateralToLiquidate``: (collateral to the liquidator,
    debt needed, protocol fee)."""
    collateral_unit, debt_unit = 10**collateral_decimals, 10**debt_decimals
    base_collateral = (debt_price * debt_to_cover * collateral_unit) // (collateral_price * debt_unit)
    max_collateral = sol_percent_mul(base_collateral, bonus)
    if max_collateral > balance:
        amount = balance
        bought = (collateral_price * amount * debt_unit) // (debt_price * collateral_unit)
        needed = sol_percent_div(bought, bonus)
    else:
        amount = max_collateral
        needed = debt_to_cover
    if fee_pct != 0:
        bonus_collateral = amount - sol_percent_div(amount, bonus)
        fee = sol_percent_mul(bonus_collateral, fee_pct)
        return amount - fee, needed, fee
    return amount, needed, 0


def sol_liquidation_call(state: AaveState, user: User, now: int, collateral: str, debt: str,
                         debt_to_cover: int) -> SolLiquidation | str:
    """``executeLiquidationCall`` (receiveAToken false): the amounts, or the revert's error code."""
    c, d = state.reserves.get(collateral), state.reserves.get(debt)
    if c is None or d is None:
        return "27"
    hf = sol_account(state, user, now).health_factor
    scaled_debt = user.borrowed.get(debt, 0)
    variable = sol_ray_mul(scaled_debt, sol_normalized_debt(d, now)) if scaled_debt else 0
    total_debt = variable
    close_factor = 5_000 if hf > 95 * 10**16 else 10_000
    actual = min(debt_to_cover, sol_percent_mul(total_debt, close_factor))
    if not (c.active and d.active):
        return "27"
    if c.paused or d.paused:
        return "29"
    if hf >= WAD:
        return "45"
    if not (c.threshold != 0 and collateral in user.collateral):
        return "46"
    if total_debt == 0:
        return "47"
    income = sol_normalized_income(c, now)
    balance = sol_ray_mul(user.supplied.get(collateral, 0), income)
    to_liquidator, needed, fee = sol_available_collateral(
        collateral_price=c.price, debt_price=d.price, collateral_decimals=state.decimals.get(collateral, 18),
        debt_decimals=state.decimals.get(debt, 18), debt_to_cover=actual, balance=balance, bonus=c.bonus,
        fee_pct=c.protocol_fee)
    if needed == 0 or to_liquidator == 0:
        return "25"  # _burnDebtTokens / _burnCollateralATokens: _burnScaled of 0 (INVALID_BURN_AMOUNT)
    if fee != 0:
        scaled_left = user.supplied.get(collateral, 0) - sol_ray_div(to_liquidator, income)
        if sol_ray_div(fee, income) > scaled_left:
            fee = sol_ray_mul(scaled_left, income)
    return SolLiquidation(needed, to_liquidator, fee, close_factor)


@dataclass
class ScaledToken:
    """``ScaledBalanceTokenBase`` (and ``AToken._transfer``'s ``BalanceTransfer``) transcribed: the
    scaled balances the token stores and the events it emits. A call the contract would revert
    returns None and changes nothing."""

    address: str
    balance: dict[str, int] = field(default_factory=dict)
    previous_index: dict[str, int] = field(default_factory=dict)

    def _increase(self, user: str, index: int) -> int:
        scaled = self.balance.get(user, 0)
        return sol_ray_mul(scaled, index) - sol_ray_mul(scaled, self.previous_index.get(user, 0))

    def mint_scaled(self, caller: str, on_behalf_of: str, amount: int, index: int) -> list[Log] | None:
        amount_scaled = sol_ray_div(amount, index)
        if amount_scaled == 0:
            return None  # INVALID_MINT_AMOUNT
        increase = self._increase(on_behalf_of, index)
        self.previous_index[on_behalf_of] = index
        self.balance[on_behalf_of] = self.balance.get(on_behalf_of, 0) + amount_scaled
        return [(self.address, "Mint", {"caller": caller, "onBehalfOf": on_behalf_of,
                                        "value": amount + increase, "balanceIncrease": increase,
                                        "index": index})]

    def burn_scaled(self, user: str, target: str, amount: int, index: int) -> list[Log] | None:
        amount_scaled = sol_ray_div(amount, index)
        if amount_scaled == 0 or amount_scaled > self.balance.get(user, 0):
            return None  # INVALID_BURN_AMOUNT, or the balance's checked underflow
        increase = self._increase(user, index)
        self.previous_index[user] = index
        self.balance[user] = self.balance.get(user, 0) - amount_scaled
        if increase > amount:
            return [(self.address, "Mint", {"caller": user, "onBehalfOf": user, "value": increase - amount,
                                            "balanceIncrease": increase, "index": index})]
        return [(self.address, "Burn", {"from": user, "target": target, "value": amount - increase,
                                        "balanceIncrease": increase, "index": index})]

    def transfer(self, sender: str, recipient: str, amount: int, index: int) -> list[Log] | None:
        scaled = sol_ray_div(amount, index)
        if scaled > self.balance.get(sender, 0):
            return None
        sender_increase = self._increase(sender, index)
        recipient_increase = self._increase(recipient, index)
        self.previous_index[sender] = index
        self.previous_index[recipient] = index
        self.balance[sender] = self.balance.get(sender, 0) - scaled
        self.balance[recipient] = self.balance.get(recipient, 0) + scaled
        out: list[Log] = []
        if sender_increase > 0:
            out.append((self.address, "Mint", {"caller": sender, "onBehalfOf": sender,
                                               "value": sender_increase,
                                               "balanceIncrease": sender_increase, "index": index}))
        if sender != recipient and recipient_increase > 0:
            out.append((self.address, "Mint", {"caller": sender, "onBehalfOf": recipient,
                                               "value": recipient_increase,
                                               "balanceIncrease": recipient_increase, "index": index}))
        out.append((self.address, "BalanceTransfer", {"from": sender, "to": recipient,
                                                      "value": sol_ray_div(amount, index), "index": index}))
        return out


# ---------------------------------------------------------------- event builders


def block_hash(block: int) -> str:
    return f"0x{block:064x}"


def block_time(block: int) -> int:
    return T0 + 12 * block


def chain_log(log: Log, *, block: int, index: int, time: int | None = None) -> ev.ChainLog:
    address, name, args = log
    t = block_time(block) if time is None else time
    return ev.ChainLog(
        event_id=f"evm:{CHAIN_ID}:{block_hash(block)}:{index}", ts_event=t * 1_000_000, venue=VENUE,
        name=name, block=block, block_hash=block_hash(block), tx_hash=f"0x{block * 1000 + index:064x}",
        log_index=index, block_time=t, args=args, address=address)


def in_blocks(logs: list[Log], *, first_block: int = 1, per_block: int = 4) -> list[ev.ChainLog]:
    """The logs placed ``per_block`` to a block from ``first_block`` on."""
    return [chain_log(log, block=first_block + i // per_block, index=i % per_block)
            for i, log in enumerate(logs)]


def chain_block(block: int, prices: dict[str, int] | None = None) -> ev.ChainBlock:
    t = block_time(block)
    return ev.ChainBlock(
        event_id=f"blk:{CHAIN_ID}:{block_hash(block)}", ts_event=t * 1_000_000, venue=VENUE,
        chain_id=CHAIN_ID, block=block, block_hash=block_hash(block),
        parent_hash=block_hash(block - 1) if block else block_hash(0), block_time=t, prices=prices or {})


def reserve_initialized(i: int) -> Log:
    return CONFIGURATOR, "ReserveInitialized", {
        "asset": ASSETS[i], "aToken": a_token(i), "stableDebtToken": stable_token(i),
        "variableDebtToken": variable_token(i), "interestRateStrategyAddress": IRM}


def collateral_configuration(i: int, ltv: int, threshold: int, bonus: int) -> Log:
    return CONFIGURATOR, "CollateralConfigurationChanged", {
        "asset": ASSETS[i], "ltv": ltv, "liquidationThreshold": threshold, "liquidationBonus": bonus}


def protocol_fee_changed(i: int, fee: int, old: int = 0) -> Log:
    return CONFIGURATOR, "LiquidationProtocolFeeChanged", {"asset": ASSETS[i], "oldFee": old, "newFee": fee}


def reserve_paused(i: int, paused: bool) -> Log:
    return CONFIGURATOR, "ReservePaused", {"asset": ASSETS[i], "paused": int(paused)}


def debt_ceiling_changed(i: int, ceiling: int, old: int = 0) -> Log:
    return CONFIGURATOR, "DebtCeilingChanged", {"asset": ASSETS[i], "oldDebtCeiling": old,
                                                "newDebtCeiling": ceiling}


def a_token_initialized(i: int, decimals: int) -> Log:
    return a_token(i), "Initialized", {
        "underlyingAsset": ASSETS[i], "pool": POOL, "treasury": TREASURY, "incentivesController": INCENTIVES,
        "aTokenDecimals": decimals, "aTokenName": f"Aave token {i}", "aTokenSymbol": f"aT{i}", "params": "0x"}


def debt_token_initialized(i: int, decimals: int, *, stable: bool) -> Log:
    token, kind = (stable_token(i), "stable") if stable else (variable_token(i), "variable")
    return token, "Initialized", {
        "underlyingAsset": ASSETS[i], "pool": POOL, "incentivesController": INCENTIVES,
        "debtTokenDecimals": decimals, "debtTokenName": f"Aave {kind} debt {i}",
        "debtTokenSymbol": f"{kind[0]}d{i}", "params": "0x"}


def reserve_data_updated(i: int, *, liquidity_rate: int = 0, variable_rate: int = 0,
                         liquidity_index: int = RAY, variable_index: int = RAY) -> Log:
    return POOL, "ReserveDataUpdated", {
        "reserve": ASSETS[i], "liquidityRate": liquidity_rate, "stableBorrowRate": 0,
        "variableBorrowRate": variable_rate, "liquidityIndex": liquidity_index,
        "variableBorrowIndex": variable_index}


def collateral_enabled(i: int, user: str, enabled: bool = True) -> Log:
    name = "ReserveUsedAsCollateralEnabled" if enabled else "ReserveUsedAsCollateralDisabled"
    return POOL, name, {"reserve": ASSETS[i], "user": user}


def emode_set(user: str, category: int) -> Log:
    return POOL, "UserEModeSet", {"user": user, "categoryId": category}


def mint(token: str, user: str, value: int, increase: int, index: int) -> Log:
    return token, "Mint", {"caller": user, "onBehalfOf": user, "value": value, "balanceIncrease": increase,
                           "index": index}


def burn(token: str, user: str, value: int, increase: int, index: int) -> Log:
    return token, "Burn", {"from": user, "target": user, "value": value, "balanceIncrease": increase,
                           "index": index}


def balance_transfer(i: int, src: str, dst: str, scaled: int, index: int) -> Log:
    return a_token(i), "BalanceTransfer", {"from": src, "to": dst, "value": scaled, "index": index}


def stable_mint(i: int, user: str, amount: int, current: int, increase: int) -> Log:
    """``StableDebtToken.mint``'s event: ``amount`` is the amount minted plus the balance increase."""
    return stable_token(i), "Mint", {
        "user": user, "onBehalfOf": user, "amount": amount, "currentBalance": current,
        "balanceIncrease": increase, "newRate": 5 * 10**25, "avgStableRate": 5 * 10**25,
        "newTotalSupply": current + amount}


def stable_burn(i: int, user: str, amount: int, current: int, increase: int) -> Log:
    """``StableDebtToken.burn``'s event: ``amount`` is the amount repaid less the balance increase."""
    return stable_token(i), "Burn", {
        "from": user, "amount": amount, "currentBalance": current, "balanceIncrease": increase,
        "avgStableRate": 0, "newTotalSupply": 0}


def listing(i: int, decimals: int, *, ltv: int = 8000, threshold: int = 8500, bonus: int = 10500,
            fee: int = 1000) -> list[Log]:
    """A reserve as the configurator lists it: the tokens' Initialized, then ReserveInitialized and
    its configuration."""
    return [a_token_initialized(i, decimals), debt_token_initialized(i, decimals, stable=True),
            debt_token_initialized(i, decimals, stable=False), reserve_initialized(i),
            collateral_configuration(i, ltv, threshold, bonus), protocol_fee_changed(i, fee)]


def fold(events: list[ev.ChainLog]) -> AaveState:
    state = AaveState()
    for e in events:
        apply_log(state, e)
    return state


def encoded(state: AaveState) -> bytes:
    """What the fold keeps: reserves, users, tokens and decimals."""
    kept = (state.reserves, state.users, state.tokens, state.decimals)
    return b"|".join(msgspec.json.encode(x) for x in kept)


# the worked pool: C (18 decimals, $2000) lent against D (6 decimals, $1)
PRICES = {C: 2_000 * 10**8, D: 10**8}
NOW = block_time(1)
ONE_C = 10**18


def pool_logs(*, c_decimals: int = 18, threshold: int = 8500, bonus: int = 10500, fee: int = 1000,
              c_index: int = RAY) -> list[Log]:
    return [*listing(0, c_decimals, threshold=threshold, bonus=bonus, fee=fee),
            *listing(1, 6, threshold=8800, bonus=10450, fee=500),
            reserve_data_updated(0, liquidity_index=c_index), reserve_data_updated(1)]


def account_logs(who: str, *, supplied: int, borrowed: int, c_index: int = RAY) -> list[Log]:
    """``supplied`` units of C as collateral (at C's liquidity index), ``borrowed`` units of D."""
    return [mint(a_token(0), who, supplied, 0, c_index), collateral_enabled(0, who),
            mint(variable_token(1), who, borrowed, 0, RAY)]


def worked_state(*extra: Log, supplied: int = ONE_C, borrowed: int = 1_750 * 10**6,
                 prices: dict[str, int] | None = None, **pool: int) -> tuple[AaveState, User]:
    """The worked pool and one account at block 1 (indexes as stored: no time elapsed)."""
    logs = [*pool_logs(**pool),
            *account_logs(USERS[0], supplied=supplied, borrowed=borrowed, c_index=pool.get("c_index", RAY)),
            *extra]
    state = fold([chain_log(log, block=1, index=i) for i, log in enumerate(logs)])
    apply_block(state, chain_block(1, PRICES if prices is None else prices))
    return state, state.users[USERS[0]]


# ---------------------------------------------------------------- 1. ray math and interest

uints = st.integers(0, 2**128)
positive = st.integers(1, 2**128)


def half_up(x: Fraction) -> int:
    return floor(x + Fraction(1, 2))


@settings(max_examples=300, deadline=None)
@given(a=uints, b=positive)
def test_ray_mul_and_ray_div_round_half_up_exactly(a: int, b: int) -> None:
    assert rm.ray_mul(a, b) == half_up(Fraction(a * b, RAY))
    assert rm.ray_div(a, b) == half_up(Fraction(a * RAY, b))
    assert rm.wad_div(a, b) == half_up(Fraction(a * WAD, b))


def test_ray_mul_and_ray_div_round_an_exact_half_up_and_below_it_down() -> None:
    assert rm.ray_mul(1, RAY // 2) == 1
    assert rm.ray_mul(1, RAY // 2 - 1) == 0
    assert rm.ray_div(1, 2 * RAY) == 1  # 0.5
    assert rm.ray_div(1, 2 * RAY + 1) == 0
    assert rm.ray_div(5, 3 * RAY) == 2  # 1.67
    assert rm.ray_div(4, 3 * RAY) == 1  # 1.33


rates = st.one_of(st.integers(0, 10**22), st.integers(0, 3 * RAY))
elapsed = st.one_of(st.integers(0, 3), st.integers(0, 86_400 * 30), st.integers(0, 5 * SECONDS_PER_YEAR))


@settings(max_examples=300, deadline=None)
@given(rate=rates, dt=elapsed)
def test_compounded_interest_is_the_solidity_binomial_below_exp_and_above_linear(rate: int, dt: int) -> None:
    compounded = rm.compounded_interest(rate, T0, T0 + dt)
    assert compounded == sol_compounded_interest(rate, T0, T0 + dt)
    linear = rm.linear_interest(rate, T0, T0 + dt)
    assert linear == sol_linear_interest(rate, T0, T0 + dt)
    ctx = Context(prec=80)
    growth = ctx.exp(ctx.divide(Decimal(rate * dt), Decimal(RAY * SECONDS_PER_YEAR)))
    exact = ctx.multiply(growth, Decimal(RAY))
    assert linear <= compounded <= exact
    if rate > 0 and dt > 0:
        assert compounded < exact
    if dt >= 2 and rate >= 10**22:  # the second term is then at least one unit
        assert compounded > linear
    if dt <= 1:
        assert compounded == linear


def test_compounded_interest_of_zero_elapsed_time_is_one_ray() -> None:
    assert rm.compounded_interest(3 * RAY, T0, T0) == RAY
    assert rm.linear_interest(3 * RAY, T0, T0) == RAY


@settings(max_examples=150, deadline=None)
@given(index=st.integers(RAY, 5 * RAY), rate=rates, dt=elapsed)
def test_normalized_income_and_debt_are_the_reserve_logic_at_the_block_time(index: int, rate: int,
                                                                            dt: int) -> None:
    assert rm.normalized_income(index, rate, T0, T0) == index  # updated in this block: stored index
    assert rm.normalized_debt(index, rate, T0, T0) == index
    r = Reserve(asset=C, id=0, a_token=a_token(0), stable_debt_token=stable_token(0),
                variable_debt_token=variable_token(0), liquidity_index=index, variable_index=index,
                liquidity_rate=rate, variable_rate=rate, last_update=T0)
    assert rm.normalized_income(index, rate, T0, T0 + dt) == sol_normalized_income(r, T0 + dt)
    assert rm.normalized_debt(index, rate, T0, T0 + dt) == sol_normalized_debt(r, T0 + dt)


# ---------------------------------------------------------------- 2. scaled balances from Mint/Burn


def _listed_two() -> list[Log]:
    return [*listing(0, 18), *listing(1, 6)]


def _fold_logs(logs: list[Log]) -> AaveState:
    return fold(in_blocks(logs))


INDEX = 1_234_567_891_234_567_891_234_567_891


def test_a_mint_above_its_balance_increase_adds_the_scaled_amount() -> None:
    who = USERS[0]
    state = _fold_logs([*_listed_two(), mint(a_token(0), who, 10**18 + 777, 777, INDEX)])
    assert state.users[who].supplied == {C: sol_ray_div(10**18, INDEX)}
    state = _fold_logs([*_listed_two(), mint(variable_token(1), who, 5 * 10**6, 0, INDEX)])
    assert state.users[who].borrowed == {D: sol_ray_div(5 * 10**6, INDEX)}


def test_a_mint_below_its_balance_increase_is_a_burn_of_the_difference() -> None:
    who = USERS[0]
    logs = [*_listed_two(), mint(a_token(0), who, 10**18, 0, RAY),
            mint(a_token(0), who, 400, 1_000, INDEX)]  # _burnScaled of 600 with 1000 of interest
    state = _fold_logs(logs)
    assert state.users[who].supplied == {C: 10**18 - sol_ray_div(600, INDEX)}


def test_a_mint_equal_to_its_balance_increase_only_reports_interest() -> None:
    who = USERS[0]
    before = _fold_logs([*_listed_two(), mint(a_token(0), who, 10**18, 0, RAY)])
    after = _fold_logs([*_listed_two(), mint(a_token(0), who, 10**18, 0, RAY),
                        mint(a_token(0), who, 12_345, 12_345, INDEX)])
    assert encoded(after) == encoded(before)


def test_a_burn_subtracts_its_value_plus_balance_increase_scaled() -> None:
    who = USERS[0]
    state = _fold_logs([*_listed_two(), mint(variable_token(1), who, 10**9, 0, RAY),
                        burn(variable_token(1), who, 3 * 10**8, 5_000, INDEX)])
    assert state.users[who].borrowed == {D: 10**9 - sol_ray_div(3 * 10**8 + 5_000, INDEX)}


def test_a_balance_transfer_moves_the_scaled_value_and_a_zero_balance_is_not_kept() -> None:
    src, dst = USERS[0], USERS[1]
    logs = [*_listed_two(), mint(a_token(0), src, 10**18, 0, RAY),
            balance_transfer(0, src, dst, 4 * 10**17, INDEX)]
    state = _fold_logs(logs)
    assert state.users[src].supplied == {C: 6 * 10**17}
    assert state.users[dst].supplied == {C: 4 * 10**17}
    state = _fold_logs([*logs, balance_transfer(0, src, dst, 6 * 10**17, INDEX)])
    assert state.users[src].supplied == {}
    assert state.users[dst].supplied == {C: 10**18}


TokenOp = tuple[int, int, int, int, int, int, int]
"""(kind: mint | burn | transfer, token slot (a0 v0 a1 v1), user, other user, amount, part per mille,
index step)."""

parts = st.one_of(st.just(0), st.integers(1, 1000))
"""0: a small burn or transfer (below the interest accrued on a large balance), else per mille of it."""

token_ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 2), st.integers(0, 2),
              st.one_of(st.integers(1, 1000), st.integers(10**18, 10**30)), parts,
              st.one_of(st.just(0), st.integers(0, 10**22), st.integers(0, RAY))),
    min_size=2, max_size=40)


@dataclass
class Tokens:
    """The a/variable tokens of two reserves (independent models) with their indexes."""

    tokens: dict[str, ScaledToken] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i in range(2):
            for t in (a_token(i), variable_token(i)):
                self.tokens[t] = ScaledToken(t)
                self.index[t] = RAY + 10**25 * (i + 1)

    def apply(self, op: TokenOp) -> list[Log]:
        """The events the tokens emit for one operation (none where the contract reverts)."""
        kind, slot, user, other, amount, part, step = op
        token = a_token(slot // 2) if kind == 2 or slot % 2 == 0 else variable_token(slot // 2)
        if kind != 0 and not any(self.tokens[token].balance.values()):  # burn or move what someone holds
            held = [x for x in self.tokens if (kind == 1 or x in (a_token(0), a_token(1)))
                    and any(self.tokens[x].balance.values())]
            token = held[0] if held else token
        t = self.tokens[token]
        self.index[token] += step
        index = self.index[token]
        who, to = USERS[user], USERS[other]
        if kind != 0 and not t.balance.get(who):  # a burn or transfer by a holder, where there is one
            who = next((u for u in USERS if t.balance.get(u)), who)
        full = sol_ray_mul(t.balance.get(who, 0), index)
        part_of_full = full * part // 1000 if part else min(1 + amount % 997, full)
        made: list[Log] | None
        if kind == 0:
            made = t.mint_scaled(who, who, amount, index)
        elif kind == 1:
            made = t.burn_scaled(who, who, part_of_full, index)
        else:
            made = t.transfer(who, to, part_of_full, index)
        return made or []

    def expected(self, user: str) -> tuple[dict[str, int], dict[str, int]]:
        """(supplied, borrowed) scaled balances by asset, zeros left out."""
        supplied, borrowed = {}, {}
        for i in range(2):
            if s := self.tokens[a_token(i)].balance.get(user, 0):
                supplied[ASSETS[i]] = s
            if b := self.tokens[variable_token(i)].balance.get(user, 0):
                borrowed[ASSETS[i]] = b
        return supplied, borrowed


@settings(max_examples=120, deadline=None)
@given(ops=token_ops)
def test_the_scaled_balances_are_those_the_tokens_store(ops: list[TokenOp]) -> None:
    tokens = Tokens()
    logs = _listed_two()
    for op in ops:
        logs += tokens.apply(op)
    state = _fold_logs(logs)
    for who in USERS:
        u = state.users.get(who, User())
        assert (u.supplied, u.borrowed) == tokens.expected(who)


# ---------------------------------------------------------------- 3. undo, horizon, poison

HistOp = tuple[int, int, int, int, int, int, int]
"""(kind, reserve, user, other user, amount, part per thousand, index step / parameter)."""

hist_ops = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 1), st.integers(0, 2), st.integers(0, 2),
              st.one_of(st.integers(1, 1000), st.integers(10**18, 10**30)), parts,
              st.one_of(st.just(0), st.integers(0, 10**22), st.integers(0, RAY))),
    max_size=40)


def valid_history(ops: list[HistOp]) -> list[ev.ChainLog]:
    """Two reserves listed, then ``ops`` as events the contracts could emit (no balance negative)."""
    tokens = Tokens()
    stable: dict[tuple[int, str], int] = {}
    logs = _listed_two()
    for op in ops:
        kind, reserve, user, other, amount, part, param = op
        who = USERS[user]
        if kind <= 2:
            logs += tokens.apply((kind, 2 * reserve + part % 2, user, other, amount, part, param))
        elif kind == 3:
            logs.append(reserve_data_updated(reserve, liquidity_rate=param % RAY,
                                             variable_rate=amount % (2 * RAY), liquidity_index=RAY + param,
                                             variable_index=RAY + amount % RAY))
        elif kind == 4:
            logs.append(collateral_enabled(reserve, who, part % 2 == 0))
        elif kind == 5:
            logs.append(emode_set(who, part % 3))
        elif kind == 6:
            logs.append(collateral_configuration(reserve, part * 7, part * 8, 10_000 + part))
        elif kind == 7:
            logs.append(protocol_fee_changed(reserve, part * 10))
        elif kind == 8:
            logs.append(reserve_paused(reserve, part % 2 == 1))
        elif kind == 9:
            logs.append(debt_ceiling_changed(reserve, amount if part % 2 else 0))
        elif kind in (10, 11):
            held = stable.get((reserve, who), 0)
            interest = held * part // 10_000
            current = held + interest
            if kind == 10 or held == 0:
                logs.append(stable_mint(reserve, who, amount + interest, current, interest))
                stable[(reserve, who)] = current + amount
            else:
                repaid = max(interest, current * part // 1000)
                logs.append(stable_burn(reserve, who, repaid - interest, current, interest))
                stable[(reserve, who)] = current - repaid
        else:
            logs += tokens.apply((0, 2 * reserve + part % 2, user, other, amount, part, param))
    return in_blocks(logs, per_block=3)


@settings(max_examples=120, deadline=None)
@given(ops=hist_ops, cut=st.integers(0, 10**6))
def test_undo_of_the_last_k_logs_restores_the_state_exactly(ops: list[HistOp], cut: int) -> None:
    events = valid_history(ops)
    n = len(events)
    k = cut % (n + 1)
    state = fold(events)
    assert len(state.journal) == n
    for e in reversed(events[n - k:]):
        assert undo_log(state, e.event_id, e.block)
    expected = fold(events[:n - k])
    assert encoded(state) == encoded(expected)
    assert state.journal == expected.journal
    # the undone entries applied again: the state of the whole history
    for e in events[n - k:]:
        assert apply_log(state, e)
    assert encoded(state) == encoded(fold(events))


def test_a_replayed_log_is_applied_once() -> None:
    events = in_blocks([*_listed_two(), mint(a_token(0), USERS[0], 10**18, 0, RAY)])
    state = fold(events)
    assert not apply_log(state, events[-1])
    assert state.users[USERS[0]].supplied == {C: 10**18}


def test_an_event_the_keeper_does_not_keep_changes_nothing() -> None:
    state = fold(in_blocks(_listed_two()))
    before = msgspec.json.encode(state)
    other = addr(0xDEAD)
    stranger: Log = (other, "Mint", {"caller": other, "onBehalfOf": USERS[0], "value": 5,
                                     "balanceIncrease": 0, "index": RAY})
    assert not apply_log(state, chain_log(stranger, block=9, index=0))
    assert not apply_log(state, chain_log((POOL, "Supply", {"reserve": C}), block=9, index=1))
    assert msgspec.json.encode(state) == before


def test_undo_restores_a_reserve_listing_its_tokens_and_decimals() -> None:
    events = in_blocks([*listing(0, 18), *listing(1, 6)])
    state = fold(events)
    assert state.decimals == {C: 18, D: 6}
    assert state.tokens[variable_token(1)] == (D, "v")
    for e in reversed(events[6:]):
        undo_log(state, e.event_id, e.block)
    assert list(state.reserves) == [C]
    assert variable_token(1) not in state.tokens
    assert state.decimals == {C: 18}


@pytest.mark.parametrize("seen_by", ["log", "frame"])
def test_a_removal_older_than_the_journal_raises_reorg_too_deep_and_changes_nothing(seen_by: str) -> None:
    events = in_blocks([*_listed_two(), mint(a_token(0), USERS[0], 10**18, 0, RAY)], first_block=10,
                       per_block=20)
    old = events[-1]
    state = fold(events)
    newest = old.block + JOURNAL_BLOCKS + 1
    if seen_by == "log":
        apply_log(state, chain_log(emode_set(USERS[1], 0), block=newest, index=0))
    else:
        apply_block(state, chain_block(newest, PRICES))
    before = msgspec.json.encode(state)
    with pytest.raises(ReorgTooDeep):
        undo_log(state, old.event_id, old.block)
    assert msgspec.json.encode(state) == before
    assert old.event_id not in state.journal  # pruned: never silently ignored


@pytest.mark.parametrize("seen_by", ["log", "frame"])
def test_a_removal_at_the_journal_edge_is_undone(seen_by: str) -> None:
    events = in_blocks([*_listed_two(), mint(a_token(0), USERS[0], 10**18, 0, RAY)], first_block=10,
                       per_block=20)
    old = events[-1]
    state = fold(events)
    newest = old.block + JOURNAL_BLOCKS
    if seen_by == "log":
        apply_log(state, chain_log(emode_set(USERS[1], 0), block=newest, index=0))
    else:
        apply_block(state, chain_block(newest, PRICES))
    assert undo_log(state, old.event_id, old.block)
    assert USERS[0] not in state.users


def _poisons() -> list[tuple[str, Log]]:
    who = USERS[0]
    return [
        ("aToken burn past the balance", burn(a_token(0), who, 10**18, 1, RAY)),
        ("debt burn past the balance", burn(variable_token(1), who, 10**7, 0, RAY)),
        ("mint reporting a burn past the balance", mint(variable_token(1), who, 0, 10**7, RAY)),
        ("transfer past the sender's balance", balance_transfer(0, who, USERS[1], 10**18 + 1, RAY)),
        ("transfer from a debt token", (variable_token(1), "BalanceTransfer",
                                        {"from": who, "to": USERS[1], "value": 1, "index": RAY})),
        ("mint at index 0", mint(a_token(0), who, 5, 0, 0)),
        ("mint missing its index", (a_token(0), "Mint", {"caller": who, "onBehalfOf": who, "value": 5,
                                                          "balanceIncrease": 0})),
        ("data of an unknown reserve", (POOL, "ReserveDataUpdated", {
            "reserve": ASSETS[3], "liquidityRate": 0, "stableBorrowRate": 0, "variableBorrowRate": 0,
            "liquidityIndex": RAY, "variableBorrowIndex": RAY})),
        ("configuration of an unknown reserve", collateral_configuration(3, 1, 2, 10_001)),
        ("pause of an unknown reserve", reserve_paused(3, True)),
        ("collateral flag on an unknown reserve", collateral_enabled(3, who)),
        ("a second ReserveInitialized", reserve_initialized(0)),
        ("configuration missing an argument", (CONFIGURATOR, "CollateralConfigurationChanged",
                                               {"asset": C, "ltv": 1, "liquidationThreshold": 2})),
        ("stable burn missing its balance", (stable_token(0), "Burn", {"from": who, "amount": 1})),
    ]


@pytest.mark.parametrize(("what", "poison"), _poisons(), ids=[p[0] for p in _poisons()])
def test_an_event_the_state_cannot_take_raises_and_changes_nothing(what: str, poison: Log) -> None:
    state, _ = worked_state(supplied=10**18 - 5, borrowed=10**6)
    before = msgspec.json.encode(state)
    with pytest.raises(AaveStateError):
        apply_log(state, chain_log(poison, block=2, index=0))
    assert msgspec.json.encode(state) == before, what


# ---------------------------------------------------------------- 4. account data

DECIMALS = [6, 8, 18]


@st.composite
def accounts(draw: st.DrawFn, *, liquidatable: bool = False) -> tuple[AaveState, User, int]:
    """A random account over 2-4 reserves at a block time, its debt sized to a random health."""
    n = draw(st.integers(2, 4))
    now = T0 + draw(st.integers(0, 10**6))
    state = AaveState()
    user = User()
    for i in range(n):
        asset = ASSETS[i]
        decimals = draw(st.sampled_from(DECIMALS))
        # reserve 0 always counts as collateral where enabled; another has threshold 0 one time in 4
        threshold = draw(st.integers(1, 9_500) if i == 0 else st.one_of(st.integers(1, 9_500), st.just(0)))
        state.reserves[asset] = Reserve(
            asset=asset, id=i, a_token=a_token(i), stable_debt_token=stable_token(i),
            variable_debt_token=variable_token(i), ltv=max(0, threshold - 500), threshold=threshold,
            bonus=draw(st.integers(10_001, 11_500)) if threshold else 0,
            protocol_fee=draw(st.sampled_from([0, 500, 1000, 5000, 10_000])),
            liquidity_index=draw(st.integers(RAY, 3 * RAY)), variable_index=draw(st.integers(RAY, 3 * RAY)),
            liquidity_rate=draw(st.integers(0, RAY)), variable_rate=draw(st.integers(0, 2 * RAY)),
            last_update=now - draw(st.one_of(st.just(0), st.integers(0, 2 * SECONDS_PER_YEAR))),
            price=draw(st.integers(10**4, 10**13)))
        state.decimals[asset] = decimals
        if i == 0 or draw(st.integers(0, 3)) > 0:
            user.supplied[asset] = draw(st.integers(1, 10 ** (decimals + 7)))
        if draw(st.integers(0, 7)) > 0:
            user.collateral.append(asset)
    n_debts = draw(st.integers(1, 2))
    debt_assets = draw(st.permutations(ASSETS[:n]))[:n_debts]
    acct = sol_account(state, user, now)
    capacity = sol_percent_mul(acct.total_collateral, acct.avg_threshold)
    if liquidatable:
        milli = draw(st.one_of(st.integers(100, 950), st.integers(950, 999)))  # health in thousandths
    else:
        milli = draw(st.one_of(st.integers(100, 3000), st.integers(990, 1010)))
    target = capacity * 1000 // milli if capacity else draw(st.integers(1, 10**12))
    for j, asset in enumerate(debt_assets):
        r = state.reserves[asset]
        share = target // n_debts + (target % n_debts if j == 0 else 0)
        units = share * 10 ** state.decimals[asset] // r.price + 1
        user.borrowed[asset] = max(1, sol_ray_div(units, sol_normalized_debt(r, now)))
    user.collateral.sort()
    return state, user, now


@settings(max_examples=150, deadline=None)
@given(case=accounts())
def test_account_is_calculate_user_account_data(case: tuple[AaveState, User, int]) -> None:
    state, user, now = case
    got = lq.account(state, user, now)
    want = sol_account(state, user, now)
    assert (got.total_collateral_base, got.total_debt_base, got.avg_threshold, got.health_factor) == (
        want.total_collateral, want.total_debt, want.avg_threshold, want.health_factor)
    for asset, h in got.holdings.items():
        r = state.reserves[asset]
        assert h.supplied == sol_ray_mul(user.supplied.get(asset, 0), sol_normalized_income(r, now))
        assert h.debt == sol_ray_mul(user.borrowed.get(asset, 0), sol_normalized_debt(r, now))
        assert h.collateral == (asset in user.collateral and r.threshold != 0)


def test_an_account_without_debt_has_the_maximal_health_factor() -> None:
    state, user = worked_state(borrowed=1)
    user = msgspec.structs.replace(user, borrowed={})
    acct = lq.account(state, user, NOW)
    assert acct.health_factor == MAX_UINT256
    assert acct.total_collateral_base == 2_000 * 10**8
    assert acct.avg_threshold == 8500


def test_a_collateral_with_threshold_zero_or_not_enabled_does_not_count() -> None:
    state, user = worked_state(collateral_configuration(0, 0, 0, 0))
    assert lq.account(state, user, NOW).total_collateral_base == 0
    state, user = worked_state(collateral_enabled(0, USERS[0], False))
    acct = lq.account(state, user, NOW)
    assert (acct.total_collateral_base, acct.health_factor) == (0, 0)


# ---------------------------------------------------------------- 5. liquidationCall


def test_the_close_factor_is_half_above_hf_0_95_and_all_at_or_below() -> None:
    # threshold 95%: $2000 of collateral against $2000 of debt is HF 0.95 exactly
    state, user = worked_state(threshold=9500, borrowed=2_000 * 10**6)
    assert lq.account(state, user, NOW).health_factor == 95 * 10**16
    three_quarters = 1_500 * 10**6  # $1575 of collateral with the bonus: the balance suffices
    r = lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=three_quarters)
    assert (r.close_factor, r.debt_covered) == (10_000, three_quarters)
    state, user = worked_state(threshold=9500, borrowed=2_000 * 10**6 - 1)
    hf = lq.account(state, user, NOW).health_factor
    assert 95 * 10**16 < hf < WAD
    owed = 2_000 * 10**6 - 1
    for to_cover in (three_quarters, MAX_UINT256):
        r = lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=to_cover)
        assert r.close_factor == 5_000
        assert r.debt_covered == sol_percent_mul(owed, 5_000) == 1_000 * 10**6
    assert r.health_factor == hf
    small = lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=12_345)
    assert small.debt_covered == 12_345


def test_liquidation_reverts_45_at_hf_one_and_not_one_wei_of_debt_above() -> None:
    state, user = worked_state(borrowed=1_700 * 10**6)  # $2000 * 85% = $1700
    assert lq.account(state, user, NOW).health_factor == WAD
    with pytest.raises(lq.Reverts) as e:
        lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=MAX_UINT256)
    assert (e.value.code, e.value.name) == ("45", "HEALTH_FACTOR_NOT_BELOW_THRESHOLD")
    assert lq.plan(state, user, NOW) is None
    state, user = worked_state(borrowed=1_700 * 10**6 + 1)
    assert lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=MAX_UINT256).debt_covered > 0


@pytest.mark.parametrize("extra", [collateral_enabled(0, USERS[0], False),
                                   collateral_configuration(0, 0, 0, 0)], ids=["not enabled", "threshold 0"])
def test_liquidation_reverts_46_on_a_collateral_that_does_not_count(extra: Log) -> None:
    state, user = worked_state(extra)
    with pytest.raises(lq.Reverts) as e:
        lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=MAX_UINT256)
    assert e.value.code == "46"


def test_liquidation_reverts_47_on_a_debt_asset_not_borrowed() -> None:
    state, user = worked_state(borrowed=1_800 * 10**6)
    with pytest.raises(lq.Reverts) as e:
        lq.liquidation(state, user, NOW, collateral=C, debt=C, debt_to_cover=MAX_UINT256)
    assert e.value.code == "47"


@pytest.mark.parametrize("paused", [0, 1])
@pytest.mark.parametrize("borrowed", [1_800 * 10**6, 10**6])
def test_liquidation_reverts_29_when_a_reserve_is_paused_before_any_health_check(paused: int, borrowed: int
                                                                                   ) -> None:
    state, user = worked_state(reserve_paused(paused, True), borrowed=borrowed)
    with pytest.raises(lq.Reverts) as e:
        lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=MAX_UINT256)
    assert (e.value.code, e.value.name) == ("29", "RESERVE_PAUSED")
    assert lq.plan(state, user, NOW) is None


def test_liquidation_reverts_27_on_an_unknown_reserve() -> None:
    state, user = worked_state(borrowed=1_800 * 10**6)
    with pytest.raises(lq.Reverts) as e:
        lq.liquidation(state, user, NOW, collateral=ASSETS[3], debt=D, debt_to_cover=MAX_UINT256)
    assert e.value.code == "27"


def test_a_whole_collateral_seizure_repays_the_debt_the_balance_buys() -> None:
    state, user = worked_state(supplied=ONE_C // 2, borrowed=1_800 * 10**6)  # $1000 against $1800
    r = lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=MAX_UINT256)
    assert r.close_factor == 10_000
    assert r.collateral_to_liquidator + r.protocol_fee == ONE_C // 2
    bought = sol_percent_div((PRICES[C] * (ONE_C // 2) * 10**6) // (PRICES[D] * 10**18), 10_500)
    assert r.debt_covered == bought < 1_800 * 10**6
    bonus_part = ONE_C // 2 - sol_percent_div(ONE_C // 2, 10_500)
    assert r.protocol_fee == sol_percent_mul(bonus_part, 1000)
    p = lq.plan(state, user, NOW)
    assert p == r


def test_the_protocol_fee_is_cut_to_the_scaled_balance_left_when_it_would_exceed_it() -> None:
    # 63 scaled at index 1.5: a balance of 94.5 -> 95; the fee of 1 rounds to one scaled unit, of
    # which none is left after the liquidator's 94 (62.67 -> 63 scaled) are burnt
    index = 3 * RAY // 2
    state, user = worked_state(supplied=95, borrowed=1000, c_decimals=6, c_index=index,
                               prices={C: 10**8, D: 10**8})
    assert user.supplied == {C: 63}
    to_liquidator, _, fee = sol_available_collateral(
        collateral_price=10**8, debt_price=10**8, collateral_decimals=6, debt_decimals=6, debt_to_cover=1000,
        balance=95, bonus=10_500, fee_pct=1000)
    assert (to_liquidator, fee) == (94, 1)
    assert sol_ray_div(fee, index) > 63 - sol_ray_div(to_liquidator, index)  # the guard applies
    r = lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=MAX_UINT256)
    assert (r.collateral_to_liquidator, r.protocol_fee) == (94, 0)
    assert r == lq.plan(state, user, NOW)


def test_the_protocol_fee_is_not_cut_when_the_balance_left_covers_it() -> None:
    index = 3 * RAY // 2
    # $10 of C against $9 of D: HF 0.944, all the debt covered by part of the collateral
    state, user = worked_state(supplied=10**7, borrowed=9 * 10**6, c_decimals=6, c_index=index,
                               prices={C: 10**8, D: 10**8})
    want = sol_liquidation_call(state, user, NOW, C, D, MAX_UINT256)
    assert isinstance(want, SolLiquidation)
    assert want.debt_to_liquidate == 9 * 10**6
    _, _, uncut = sol_available_collateral(
        collateral_price=10**8, debt_price=10**8, collateral_decimals=6, debt_decimals=6,
        debt_to_cover=9 * 10**6, balance=sol_ray_mul(user.supplied[C], index), bonus=10_500, fee_pct=1000)
    r = lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=MAX_UINT256)
    assert r.protocol_fee == uncut > 0
    assert (r.debt_covered, r.collateral_to_liquidator, r.protocol_fee) == (
        want.debt_to_liquidate, want.collateral_to_liquidator, want.protocol_fee)


@st.composite
def liquidation_calls(draw: st.DrawFn) -> tuple[AaveState, User, int, str, str, int]:
    state, user, now = draw(accounts(liquidatable=True))
    assets = sorted(state.reserves)
    collaterals = [a for a in user.collateral if user.supplied.get(a)] or assets
    mostly_held = st.sampled_from(collaterals)
    collateral = draw(st.one_of(mostly_held, mostly_held, mostly_held, st.sampled_from(assets)))
    mostly_owed = st.sampled_from(sorted(user.borrowed))
    debt = draw(st.one_of(mostly_owed, mostly_owed, mostly_owed, st.sampled_from(assets)))
    to_cover = draw(st.one_of(st.just(MAX_UINT256), st.integers(0, 10**30)))
    if draw(st.integers(0, 9)) == 0:
        r = state.reserves[draw(st.sampled_from(assets))]
        state.reserves[r.asset] = msgspec.structs.replace(r, paused=True)
    return state, user, now, collateral, debt, to_cover


@settings(max_examples=200, deadline=None)
@given(case=liquidation_calls())
def test_liquidation_is_execute_liquidation_call(case: tuple[AaveState, User, int, str, str, int]) -> None:
    state, user, now, collateral, debt, to_cover = case
    want = sol_liquidation_call(state, user, now, collateral, debt, to_cover)
    if isinstance(want, str):
        with pytest.raises(lq.Reverts) as e:
            lq.liquidation(state, user, now, collateral=collateral, debt=debt, debt_to_cover=to_cover)
        assert e.value.code == want
        return
    r = lq.liquidation(state, user, now, collateral=collateral, debt=debt, debt_to_cover=to_cover)
    assert (r.debt_covered, r.collateral_to_liquidator, r.protocol_fee, r.close_factor) == (
        want.debt_to_liquidate, want.collateral_to_liquidator, want.protocol_fee, want.close_factor)
    assert (r.collateral_asset, r.debt_asset) == (collateral, debt)
    assert r.health_factor == sol_account(state, user, now).health_factor


@settings(max_examples=80, deadline=None)
@given(case=accounts(liquidatable=True))
def test_plan_liquidates_the_largest_debt_against_the_largest_collateral(case: tuple[AaveState, User, int]
                                                                         ) -> None:
    state, user, now = case
    p = lq.plan(state, user, now)
    acct = lq.account(state, user, now)

    def value(asset: str, units: int) -> int:
        unit: int = 10 ** state.decimals[asset]
        return units * state.reserves[asset].price // unit

    colls = [(-value(a, h.supplied), a) for a, h in acct.holdings.items() if h.collateral and h.supplied]
    debts = [(-value(a, h.debt), a) for a, h in acct.holdings.items() if h.debt]
    if acct.health_factor >= WAD or not colls or not debts:
        assert p is None
        return
    collateral, debt = min(colls)[1], min(debts)[1]
    want = sol_liquidation_call(state, user, now, collateral, debt, MAX_UINT256)
    if isinstance(want, str):
        assert p is None
        return
    assert p is not None
    assert (p.collateral_asset, p.debt_asset) == (collateral, debt)
    assert (p.debt_covered, p.collateral_to_liquidator, p.protocol_fee) == (
        want.debt_to_liquidate, want.collateral_to_liquidator, want.protocol_fee)


def test_a_liquidation_that_would_repay_no_debt_reverts_as_the_debt_burn_does() -> None:
    # dust collateral (1e-7 of C, worth less than one unit of D) against 1 unit of D debt
    state, user = worked_state(supplied=10**11, borrowed=1, prices={C: 10**8, D: 10**8})
    assert lq.account(state, user, NOW).health_factor < 95 * 10**16  # $1e-7 * 85% against $1e-6
    # _burnDebtTokens: burn(user, 0, index) -> _burnScaled reverts '25' (the transcription says so too)
    assert sol_liquidation_call(state, user, NOW, C, D, MAX_UINT256) == "25"
    with pytest.raises(lq.Reverts) as e:
        lq.liquidation(state, user, NOW, collateral=C, debt=D, debt_to_cover=MAX_UINT256)
    assert e.value.code == "25"


# ---------------------------------------------------------------- 6. the core


@dataclass
class Run:
    """Feeds one core (or several, identically) the pool's log: logs of a block, then its frame;
    the entry ids are ``<n>-0``."""

    params: KeeperParams
    cores: list[AaveCore] = field(default_factory=list)
    seq: int = 0
    block: int = 1
    index: int = 0
    last_entry: str = ""
    outputs: list[list[bytes]] = field(default_factory=list)
    logged: list[ev.ChainLog] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cores:
            self.cores = [AaveCore(self.params)]
        self.outputs = [[] for _ in self.cores]

    @property
    def core(self) -> AaveCore:
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

    def log(self, *logs: Log) -> list[ev.LiquidationIntended]:
        out: list[ev.LiquidationIntended] = []
        for log in logs:
            e = chain_log(log, block=self.block, index=self.index)
            self.index += 1
            self.logged.append(e)
            out += self.feed(e)
        return out

    def frame(self, prices: dict[str, int] | None = None) -> list[ev.LiquidationIntended]:
        out = self.feed(chain_block(self.block, PRICES if prices is None else prices))
        self.block += 1
        self.index = 0
        return out

    def record(self, intents: list[ev.LiquidationIntended]) -> None:
        """The runner appends the decided intents to the log: the core reads them back."""
        for i in intents:
            assert self.feed(i) == []

    def reject(self, intent: ev.LiquidationIntended) -> None:
        self.feed(ev.LiquidationRejected(event_id=f"rej:{self.seq}", ts_event=0, intent_id=intent.event_id,
                                         reason="execution reverted: 45"))

    def confirm(self, intent: ev.LiquidationIntended, block: int) -> None:
        self.feed(ev.LiquidationConfirmed(event_id=f"ok:{self.seq}", ts_event=0, intent_id=intent.event_id,
                                          block=block))

    def open_pool(self) -> None:
        self.log(*pool_logs())

    def open_account(self, who: str, *, supplied: int = ONE_C, borrowed: int = 1_750 * 10**6) -> str:
        """An account of ``supplied`` C against ``borrowed`` D (the default: HF 0.971)."""
        self.log(*account_logs(who, supplied=supplied, borrowed=borrowed))
        return f"{who}/cross"


def test_a_liquidatable_account_yields_one_intent_on_the_frame_and_none_on_logs() -> None:
    run = Run(LIVE)
    run.open_pool()
    who = USERS[0]
    assert run.log(*account_logs(who, supplied=ONE_C, borrowed=1_750 * 10**6)) == []  # logs never decide
    out = run.frame()
    frame_entry = run.last_entry
    assert len(out) == 1
    intent = out[0]
    assert intent.event_id == f"liq:{who}/cross@{frame_entry}"
    d = intent.decision
    assert (d.intent_id, d.account, d.bucket, d.market) == (intent.event_id, who, "cross", "cross")
    assert (d.trigger, d.trigger_event_id) == (frame_entry, f"blk:{CHAIN_ID}:{block_hash(run.block - 1)}")
    assert (d.mode, d.profile, d.action) == ("live", "aave-v3.0", "repay_seize")
    assert (d.repay_asset, d.seize_asset) == (D, C)
    p = lq.plan(run.core.state, run.core.state.users[who], block_time(run.block - 1))
    assert p is not None
    assert p.close_factor == 5_000
    assert d.repay_amount == p.debt_covered == sol_percent_mul(1_750 * 10**6, 5_000)
    assert d.seize_amount == p.collateral_to_liquidator + p.protocol_fee
    assert d.protocol_fee == p.protocol_fee
    assert intent.causation_id == d.trigger_event_id
    assert intent.ts_event == block_time(run.block - 1) * 1_000_000
    assert list(run.core.pending()) == [intent]
    # busy: the next frames yield nothing, whether the intent was read back yet or not
    assert run.frame() == []
    run.record(out)
    assert run.core.pending() == []
    assert run.frame() == []
    assert run.core.busy == {f"{who}/cross": intent.event_id}


def test_a_healthy_account_or_one_without_debt_is_not_decided() -> None:
    run = Run(LIVE)
    run.open_pool()
    run.open_account(USERS[0], borrowed=1_600 * 10**6)
    run.log(mint(a_token(0), USERS[1], ONE_C, 0, RAY), collateral_enabled(0, USERS[1]))
    assert run.frame() == []
    assert run.core.refused == {}
    assert run.frame({C: 1_800 * 10**8, D: 10**8}) != []  # the price falls: HF 0.9


@pytest.mark.parametrize("rejections", [1, 2, 3, 5])
def test_each_rejection_in_a_row_holds_the_account_twice_as_many_blocks(rejections: int) -> None:
    run = Run(LIVE)
    run.open_pool()
    key = run.open_account(USERS[0])
    out = run.frame()
    for n in range(1, rejections + 1):
        [intent] = out
        run.record(out)
        at = run.block - 1
        run.reject(intent)
        hold = 2 ** (n - 1)
        for _ in range(hold - 1):
            assert run.frame() == [], f"rejection {n}: held for {hold} blocks"
        assert run.block == at + hold
        out = run.frame()
        assert len(out) == 1, f"rejection {n}: free after {hold} blocks"
    assert run.core.rejected[key][0] == rejections


def test_a_confirmation_holds_the_account_until_a_frame_at_its_block() -> None:
    run = Run(LIVE)
    run.open_pool()
    run.open_account(USERS[0])
    [intent] = run.frame()
    run.record([intent])
    run.confirm(intent, run.block + 1)
    assert run.frame() == []
    assert len(run.frame()) == 1  # the liquidation's own events were not folded: still liquidatable


RefusalCase = tuple[list[Log], dict[str, int] | None, str, list[Log]]


def _refusals() -> dict[str, RefusalCase]:
    who = USERS[0]
    return {
        "eMode": ([emode_set(who, 1)], None, "eMode category 1", [emode_set(who, 0)]),
        "stable debt": ([stable_mint(1, who, 10**6, 0, 0)], None, "stable-rate debt",
                        [stable_burn(1, who, 10**6, 10**6, 0)]),
        "isolation": ([debt_ceiling_changed(0, 10**8)], None, "isolation-mode collateral",
                      [debt_ceiling_changed(0, 0, 10**8)]),
        "no price": ([], {D: 10**8}, "no price for reserve", []),
    }


@pytest.mark.parametrize("case", list(_refusals()))
def test_an_account_the_keeper_does_not_model_is_refused_visibly_and_never_decided(case: str) -> None:
    cause, prices, reason, lift = _refusals()[case]
    run = Run(LIVE)
    run.open_pool()
    key = run.open_account(USERS[0], borrowed=1_900 * 10**6)
    run.log(*cause)
    for _ in range(3):
        assert run.frame(prices) == []
        assert reason in run.core.refused[key]
    run.log(*lift)
    assert len(run.frame()) == 1
    assert key not in run.core.refused


def test_an_account_with_only_stable_debt_is_refused_visibly() -> None:
    run = Run(LIVE)
    run.open_pool()
    who = USERS[0]
    run.log(mint(a_token(0), who, ONE_C, 0, RAY), collateral_enabled(0, who),
            stable_mint(1, who, 1_900 * 10**6, 0, 0))
    assert run.frame() == []
    assert "stable-rate debt" in run.core.refused.get(f"{who}/cross", "")


def test_a_stable_debt_repaid_in_full_with_interest_clears_the_stable_flag() -> None:
    run = Run(LIVE)
    run.open_pool()
    who = USERS[0]
    key = run.open_account(who, borrowed=1_900 * 10**6)
    run.log(stable_mint(1, who, 10**6, 0, 0))
    assert run.core.state.users[who].stable == [D]
    # a month later: 10**6 principal grew to 1_010_000; repaying it all burns 1_000_000 past the
    # 10_000 of interest (StableDebtToken.burn: amountToBurn = amount - balanceIncrease)
    run.log(stable_burn(1, who, 1_000_000, 1_010_000, 10_000))
    assert run.core.state.users[who].stable == []
    assert len(run.frame()) == 1
    assert key not in run.core.refused


def test_the_core_quarantines_a_poison_entry_and_keeps_deciding() -> None:
    run = Run(LIVE)
    run.open_pool()
    run.open_account(USERS[0])
    before = run.core.state_bytes()
    run.log(burn(a_token(0), USERS[0], 2 * ONE_C, 0, RAY))
    poison_entry = run.last_entry
    run.log((POOL, "ReserveDataUpdated", {"reserve": ASSETS[3], "liquidityRate": 0, "stableBorrowRate": 0,
                                          "variableBorrowRate": 0, "liquidityIndex": RAY,
                                          "variableBorrowIndex": RAY}))
    assert run.core.quarantined == 2
    assert run.core.last_quarantine.startswith(f"{run.last_entry}: ")
    assert "ReserveInitialized" in run.core.last_quarantine
    assert run.core.state_bytes() == before
    assert poison_entry != run.last_entry
    assert len(run.frame()) == 1


def test_a_removed_log_is_undone_and_a_removal_past_the_journal_is_quarantined() -> None:
    run = Run(LIVE)
    run.open_pool()
    run.open_account(USERS[0])
    borrow_log = run.logged[-1]
    run.feed(ev.ChainLogRemoved(event_id=f"rm:{borrow_log.event_id}", ts_event=0, venue=VENUE,
                                removed_id=borrow_log.event_id, block=borrow_log.block))
    assert run.core.state.users[USERS[0]].borrowed == {}
    assert run.frame() == []
    run.log(mint(variable_token(1), USERS[0], 1_750 * 10**6, 0, RAY))
    first = run.logged[0]
    run.block += JOURNAL_BLOCKS + 1
    run.frame()
    before = run.core.state_bytes()
    run.feed(ev.ChainLogRemoved(event_id=f"rm:{first.event_id}", ts_event=0, venue=VENUE,
                                removed_id=first.event_id, block=first.block))
    assert run.core.quarantined == 1
    assert run.core.last_quarantine.startswith(f"{run.last_entry}: ")
    assert run.core.state_bytes() == before


def test_logs_and_frames_of_another_venue_are_ignored() -> None:
    run = Run(LIVE)
    run.open_pool()
    key = run.open_account(USERS[0])
    e = chain_log(burn(variable_token(1), USERS[0], 1_750 * 10**6, 0, RAY), block=run.block, index=99)
    run.feed(msgspec.structs.replace(e, venue="morpho-blue"))
    assert run.core.quarantined == 0
    assert run.feed(msgspec.structs.replace(chain_block(run.block, PRICES), venue="morpho-blue")) == []
    assert len(run.frame()) == 1
    assert key in run.core.busy


def test_snapshot_and_restore_round_trip_and_decide_byte_for_byte_the_same() -> None:
    run = Run(LIVE)
    run.open_pool()
    run.open_account(USERS[0], borrowed=1_800 * 10**6)
    run.open_account(USERS[1], borrowed=1_750 * 10**6)
    run.open_account(USERS[2], borrowed=1_200 * 10**6)
    first = run.frame()
    assert [i.decision.account for i in first] == [USERS[0], USERS[1]]  # lowest health first
    run.record(first[:1])  # the other stays pending: the restored core must keep it
    run.reject(first[0])
    run.log(burn(a_token(0), USERS[2], 5 * ONE_C, 0, RAY))  # poison
    assert run.core.quarantined == 1
    data = run.core.snapshot()
    restored = AaveCore.restore(data, LIVE)
    assert restored.snapshot() == data
    assert [codec.encode(i) for i in restored.pending()] == [codec.encode(i) for i in run.core.pending()]
    assert (restored.offset, restored.applied, restored.quarantined, restored.last_quarantine) == (
        run.core.offset, run.core.applied, run.core.quarantined, run.core.last_quarantine)
    twin = Run(LIVE, cores=[run.core, restored], seq=run.seq, block=run.block, index=run.index)
    twin.record(first[1:])
    twin.log(reserve_data_updated(1, variable_rate=RAY // 2))  # 50% a year on D: the debts grow
    for price in (2_000 * 10**8, 1_990 * 10**8, 1_500 * 10**8):
        twin.block += 200
        out = twin.frame({C: price, D: 10**8})
        twin.record(out)
        for intent in out[1:]:
            twin.reject(intent)
    twin.confirm(first[1], twin.block + 1)
    for _ in range(3):
        twin.record(twin.frame({C: 1_000 * 10**8, D: 10**8}))
    assert twin.outputs[0], "the frames after the snapshot decided nothing"
    assert twin.outputs[0] == twin.outputs[1]
    assert run.core.snapshot() == restored.snapshot()
