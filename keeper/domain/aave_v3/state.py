"""An Aave v3.0.2 pool's reserves and users, folded from the contracts' own events in the log.

Emitters (``ChainLog.address``) tell the contracts apart: the configurator's events create and
configure reserves (``ReserveInitialized`` names each reserve's aToken and debt tokens); the
tokens' own ``Initialized`` gives the decimals; the pool's ``ReserveDataUpdated`` the indexes and
rates (the update's time is the block's); ``ReserveUsedAsCollateralEnabled``/``Disabled`` and
``UserEModeSet`` the users' flags; the tokens' ``Mint``, ``Burn`` and ``BalanceTransfer`` the
users' **scaled** balances, by the amounts the tokens themselves scaled
(``amount.rayDiv(index)``), so that a balance is ``scaled.rayMul(normalised index)`` to the
wei, as ``balanceOf`` computes it. A ``Mint`` whose value is below its balance increase is a
burn (``_burnScaled`` emits it so); one equal to it only reports interest.

Stable debt is tracked only as "this user has some" (the keeper refuses to decide such an
account); the rest of the stable-rate machinery is not modelled.

A reorganisation is undone entry by entry: each applied ``ChainLog`` keeps the prior value of
every record it touched (a journal of the last ``JOURNAL_BLOCKS`` blocks behind the newest
block seen); undoing restores them, newest first, bit for bit. ``AaveStateError`` (nothing
changed) for an event the state cannot take; ``ReorgTooDeep`` for a removal past the journal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from keeper.domain.aave_v3.raymath import RAY, ray_div
from keeper.domain.events import ChainBlock, ChainLog
from keeper.errors import KeeperError

__all__ = [
    "JOURNAL_BLOCKS",
    "AaveState",
    "AaveStateError",
    "ReorgTooDeep",
    "Reserve",
    "User",
    "apply_block",
    "apply_log",
    "undo_log",
]

JOURNAL_BLOCKS = 256


class AaveStateError(KeeperError):
    """An Aave event that does not fit the state (quarantined, never applied in part)."""


class ReorgTooDeep(AaveStateError):
    """A removal of an entry older than the journal."""


class Reserve(msgspec.Struct, gc=False, kw_only=True):
    """One reserve: its tokens and parameters, and the pool's ``ReserveData`` the keeper needs."""

    asset: str
    id: int
    a_token: str
    stable_debt_token: str
    variable_debt_token: str
    ltv: int = 0
    threshold: int = 0
    bonus: int = 0
    protocol_fee: int = 0
    reserve_factor: int = 0
    liquidity_index: int = RAY
    variable_index: int = RAY
    liquidity_rate: int = 0
    variable_rate: int = 0
    last_update: int = 0
    active: bool = True
    frozen: bool = False
    paused: bool = False
    emode_category: int = 0
    debt_ceiling: int = 0
    price: int = 0
    """The oracle's price (base currency, 8 decimals) at the latest block frame; 0: none."""


class User(msgspec.Struct, gc=False, kw_only=True):
    """A user's scaled balances (aToken, variable debt token) by asset and flags."""

    supplied: dict[str, int] = msgspec.field(default_factory=dict)
    borrowed: dict[str, int] = msgspec.field(default_factory=dict)
    collateral: list[str] = msgspec.field(default_factory=list)
    """Assets used as collateral (sorted)."""
    emode: int = 0
    stable: list[str] = msgspec.field(default_factory=list)
    """Assets this user holds stable debt in (sorted): such an account is not decided."""


class AaveState(msgspec.Struct, gc=False, kw_only=True):
    """Every reserve and user of one pool, and the chain position read."""

    reserves: dict[str, Reserve] = msgspec.field(default_factory=dict)
    users: dict[str, User] = msgspec.field(default_factory=dict)
    tokens: dict[str, tuple[str, str]] = msgspec.field(default_factory=dict)
    """token address -> (asset, ``a`` | ``v`` | ``s``)."""
    decimals: dict[str, int] = msgspec.field(default_factory=dict)
    journal: dict[str, list[tuple[str, str, bytes | None]]] = msgspec.field(default_factory=dict)
    """ChainLog id -> (record kind, key, prior JSON or None) of what it touched, in order."""
    journal_blocks: dict[str, int] = msgspec.field(default_factory=dict)
    journal_floor: int = 0
    block: int = 0
    block_hash: str = ""
    block_time: int = 0


_TYPES: dict[str, Any] = {"reserve": Reserve, "user": User, "token": tuple[str, str], "decimals": int}


def _table(state: AaveState, kind: str) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = {"reserve": state.reserves, "user": state.users,
                                          "token": state.tokens, "decimals": state.decimals}
    return tables[kind]


class _Tx:
    """The records one log touches, with their prior values (for the journal)."""

    def __init__(self, state: AaveState) -> None:
        self.state = state
        self.priors: list[tuple[str, str, bytes | None]] = []
        self._seen: set[tuple[str, str]] = set()

    def touch(self, kind: str, key: str) -> None:
        if (kind, key) in self._seen:
            return
        self._seen.add((kind, key))
        prior = _table(self.state, kind).get(key)
        self.priors.append((kind, key, None if prior is None else msgspec.json.encode(prior)))

    def reserve(self, asset: str) -> Reserve:
        r = self.state.reserves.get(asset)
        if r is None:
            raise AaveStateError(f"reserve {asset} has no ReserveInitialized in the log")
        self.touch("reserve", asset)
        return msgspec.structs.replace(r)

    def user(self, who: str) -> User:
        self.touch("user", who)
        u = self.state.users.get(who)
        return User() if u is None else msgspec.structs.replace(
            u, supplied=dict(u.supplied), borrowed=dict(u.borrowed), collateral=list(u.collateral),
            stable=list(u.stable))


def _int(e: ChainLog, name: str) -> int:
    v = e.args.get(name)
    if not isinstance(v, int):
        raise AaveStateError(f"{e.name}: argument {name!r} missing or not an integer")
    return v


def _addr(e: ChainLog, name: str) -> str:
    v = e.args.get(name)
    if not isinstance(v, str):
        raise AaveStateError(f"{e.name}: argument {name!r} missing or not an address")
    return v


def _scaled_change(e: ChainLog) -> tuple[str, int]:
    """(user, scaled delta) of a token's ``Mint``/``Burn`` (``_mintScaled``/``_burnScaled``)."""
    value, increase, index = _int(e, "value"), _int(e, "balanceIncrease"), _int(e, "index")
    if index == 0:
        raise AaveStateError(f"{e.name}: index 0")
    if e.name == "Mint":
        who = _addr(e, "onBehalfOf")
        if value > increase:
            return who, ray_div(value - increase, index)
        return who, -ray_div(increase - value, index) if value < increase else 0
    return _addr(e, "from"), -ray_div(value + increase, index)


def _set_balance(book: dict[str, int], asset: str, delta: int, what: str) -> None:
    new = book.get(asset, 0) + delta
    if new < 0:
        raise AaveStateError(f"{what} of {asset} would go negative ({new})")
    if new == 0:
        book.pop(asset, None)
    else:
        book[asset] = new


def _flag(items: list[str], asset: str, on: bool) -> list[str]:
    s = set(items)
    if on:
        s.add(asset)
    else:
        s.discard(asset)
    return sorted(s)


def _token_event(tx: _Tx, e: ChainLog) -> None:
    asset, kind = tx.state.tokens[e.address]
    if kind == "s":  # stable debt: only whether the user holds some
        who = _addr(e, "onBehalfOf") if e.name == "Mint" else _addr(e, "from")
        u = tx.user(who)
        # StableDebtToken: a Burn's amount is the repayment less the interest it first accrued
        # (balanceIncrease), so what is left is currentBalance - amount - balanceIncrease; a Mint
        # (a borrow, or a repayment smaller than the interest) always leaves some
        left = 1 if e.name == "Mint" else (
            _int(e, "currentBalance") - _int(e, "amount") - _int(e, "balanceIncrease"))
        u.stable = _flag(u.stable, asset, left > 0)
        tx.state.users[who] = u
        return
    if e.name == "BalanceTransfer":
        if kind != "a":
            raise AaveStateError("BalanceTransfer from a debt token")
        value = _int(e, "value")
        src, dst = _addr(e, "from"), _addr(e, "to")
        for who, delta in ((src, -value), (dst, value)):
            u = tx.user(who)
            _set_balance(u.supplied, asset, delta, f"{who}'s aToken balance")
            tx.state.users[who] = u
        return
    who, delta = _scaled_change(e)
    u = tx.user(who)
    book = u.supplied if kind == "a" else u.borrowed
    _set_balance(book, asset, delta, f"{who}'s {'aToken' if kind == 'a' else 'variable debt'} balance")
    tx.state.users[who] = u


def _reserve_initialized(tx: _Tx, e: ChainLog) -> None:
    asset = _addr(e, "asset")
    if asset in tx.state.reserves:
        raise AaveStateError(f"ReserveInitialized of {asset}, which exists")
    tokens = {_addr(e, "aToken"): "a", _addr(e, "stableDebtToken"): "s", _addr(e, "variableDebtToken"): "v"}
    tx.touch("reserve", asset)
    for token, kind in tokens.items():
        tx.touch("token", token)
        tx.state.tokens[token] = (asset, kind)
    tx.state.reserves[asset] = Reserve(
        asset=asset, id=len(tx.state.reserves), a_token=_addr(e, "aToken"),
        stable_debt_token=_addr(e, "stableDebtToken"), variable_debt_token=_addr(e, "variableDebtToken"))


def _configure(tx: _Tx, e: ChainLog) -> None:
    r = tx.reserve(_addr(e, "asset"))
    n = e.name
    if n == "CollateralConfigurationChanged":
        r.ltv, r.threshold = _int(e, "ltv"), _int(e, "liquidationThreshold")
        r.bonus = _int(e, "liquidationBonus")
    elif n == "LiquidationProtocolFeeChanged":
        r.protocol_fee = _int(e, "newFee")
    elif n == "ReserveFactorChanged":
        r.reserve_factor = _int(e, "newReserveFactor")
    elif n == "ReserveFrozen":
        r.frozen = bool(_int(e, "frozen"))
    elif n == "ReservePaused":
        r.paused = bool(_int(e, "paused"))
    elif n == "ReserveActive":
        r.active = bool(_int(e, "active"))
    elif n == "EModeAssetCategoryChanged":
        r.emode_category = _int(e, "newCategoryId")
    elif n == "DebtCeilingChanged":
        r.debt_ceiling = _int(e, "newDebtCeiling")
    tx.state.reserves[r.asset] = r


def _reserve_data(tx: _Tx, e: ChainLog) -> None:
    r = tx.reserve(_addr(e, "reserve"))
    r.liquidity_rate, r.variable_rate = _int(e, "liquidityRate"), _int(e, "variableBorrowRate")
    r.liquidity_index, r.variable_index = _int(e, "liquidityIndex"), _int(e, "variableBorrowIndex")
    r.last_update = e.block_time
    tx.state.reserves[r.asset] = r


def _collateral_flag(tx: _Tx, e: ChainLog) -> None:
    asset, who = _addr(e, "reserve"), _addr(e, "user")
    tx.reserve(asset)
    u = tx.user(who)
    u.collateral = _flag(u.collateral, asset, e.name == "ReserveUsedAsCollateralEnabled")
    tx.state.users[who] = u


def _emode(tx: _Tx, e: ChainLog) -> None:
    who = _addr(e, "user")
    u = tx.user(who)
    u.emode = _int(e, "categoryId")
    tx.state.users[who] = u


def _token_initialized(tx: _Tx, e: ChainLog) -> None:
    asset = _addr(e, "underlyingAsset")
    decimals = e.args.get("aTokenDecimals", e.args.get("debtTokenDecimals"))
    if not isinstance(decimals, int):
        raise AaveStateError("Initialized: no token decimals")
    tx.touch("decimals", asset)
    tx.state.decimals[asset] = decimals


_POOL: dict[str, Callable[[_Tx, ChainLog], None]] = {
    "ReserveInitialized": _reserve_initialized,
    "CollateralConfigurationChanged": _configure,
    "LiquidationProtocolFeeChanged": _configure,
    "ReserveFactorChanged": _configure,
    "ReserveFrozen": _configure,
    "ReservePaused": _configure,
    "ReserveActive": _configure,
    "EModeAssetCategoryChanged": _configure,
    "DebtCeilingChanged": _configure,
    "ReserveDataUpdated": _reserve_data,
    "ReserveUsedAsCollateralEnabled": _collateral_flag,
    "ReserveUsedAsCollateralDisabled": _collateral_flag,
    "UserEModeSet": _emode,
}
_TOKEN_EVENTS = frozenset({"Mint", "Burn", "BalanceTransfer"})


def apply_log(state: AaveState, e: ChainLog) -> bool:
    """Fold one event into ``state`` and journal it; False if it changed nothing kept here."""
    if e.event_id in state.journal:
        return False
    tx = _Tx(state)
    try:
        if e.name == "Initialized" and ("aTokenDecimals" in e.args or "debtTokenDecimals" in e.args):
            _token_initialized(tx, e)
        elif e.address in state.tokens and e.name in _TOKEN_EVENTS:
            _token_event(tx, e)
        elif e.name in _POOL:
            _POOL[e.name](tx, e)
        else:
            return False
    except AaveStateError:
        _restore(state, tx.priors)  # all or nothing: what it already wrote is put back
        raise
    state.journal[e.event_id] = tx.priors
    state.journal_blocks[e.event_id] = e.block
    _prune(state, e.block)
    return True


def undo_log(state: AaveState, removed_id: str, block: int) -> bool:
    """Undo the journalled ``ChainLog`` ``removed_id`` (newest first, as reorgs remove them)."""
    if block < state.journal_floor:
        raise ReorgTooDeep(f"{removed_id}: block {block} is older than the last {JOURNAL_BLOCKS} blocks")
    priors = state.journal.pop(removed_id, None)
    state.journal_blocks.pop(removed_id, None)
    if priors is None:
        return False
    _restore(state, priors)
    return True


def _restore(state: AaveState, priors: list[tuple[str, str, bytes | None]]) -> None:
    for kind, key, prior in reversed(priors):
        table = _table(state, kind)
        if prior is None:
            table.pop(key, None)
        else:
            table[key] = msgspec.json.decode(prior, type=_TYPES[kind])


def _prune(state: AaveState, block: int) -> None:
    """Drop journal entries older than the horizon (in log order: the oldest first)."""
    state.journal_floor = max(state.journal_floor, block - JOURNAL_BLOCKS)
    blocks = state.journal_blocks
    while blocks:
        k = next(iter(blocks))
        if blocks[k] >= state.journal_floor:
            break
        del blocks[k]
        del state.journal[k]


def apply_block(state: AaveState, b: ChainBlock) -> None:
    """A block frame: the chain position and each reserve's oracle price (0 where none was read)."""
    state.block, state.block_hash, state.block_time = b.block, b.block_hash, b.block_time
    _prune(state, b.block)
    for asset, r in state.reserves.items():
        r.price = b.prices.get(asset, 0)
