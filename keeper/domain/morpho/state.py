"""Morpho Blue's markets and positions, folded from the contract's own events in the log.

The fold moves the same storage the contract moves, by the amounts its events report
(``src/Morpho.sol``): market totals (supply and borrow, assets and shares), ``lastUpdate`` and
``fee``; per position, borrow shares and collateral. Supply positions are not kept (a keeper
never liquidates them); their totals are. Prices and IRM rates come from ``ChainBlock`` frames.

A reorganisation is undone entry by entry (``ChainLogRemoved``): every applied ``ChainLog``
keeps the exact change it made in a journal, so undoing it restores the state bit for bit,
``zeroFloorSub`` floors and ``lastUpdate`` included. The journal holds the last
``JOURNAL_BLOCKS`` blocks behind the newest block seen (by a log or a frame); a removal older
than that raises ``ReorgTooDeep``.

Errors: an event the state cannot take (a total or a balance would go negative, a market that
does not exist) raises ``MorphoStateError`` before anything is changed; the core counts it and
quarantines the entry.
"""

from __future__ import annotations

import msgspec

from keeper.domain.events import ChainBlock, ChainLog
from keeper.domain.morpho.mathlib import zero_floor_sub
from keeper.errors import KeeperError

__all__ = [
    "JOURNAL_BLOCKS",
    "Change",
    "Market",
    "MorphoState",
    "MorphoStateError",
    "Position",
    "ReorgTooDeep",
    "apply_block",
    "apply_log",
    "change_of",
    "undo_log",
]

JOURNAL_BLOCKS = 256
"""How many recent blocks a reorganisation may undo."""


class MorphoStateError(KeeperError):
    """A Morpho event that does not fit the state (quarantined, never applied in part)."""


class ReorgTooDeep(MorphoStateError):
    """A removal of an entry older than the journal."""


class Market(msgspec.Struct, gc=False, kw_only=True):
    """One market: its parameters (``MarketParams``) and the contract's ``Market`` storage."""

    id: str
    loan_token: str
    collateral_token: str
    oracle: str
    irm: str
    lltv: int
    total_supply_assets: int = 0
    total_supply_shares: int = 0
    total_borrow_assets: int = 0
    total_borrow_shares: int = 0
    last_update: int = 0
    fee: int = 0
    price: int = 0
    """The oracle's price at the latest block frame (0: none read yet)."""
    rate: int = 0
    """The IRM's borrow rate per second at the latest block frame."""


class Position(msgspec.Struct, gc=False, kw_only=True):
    """A borrower's position in one market (the contract's ``Position`` less supply shares)."""

    borrow_shares: int = 0
    collateral: int = 0


class Change(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What one ``ChainLog`` changed: added to totals and the position (``undo`` subtracts it),
    and the market's ``lastUpdate``/``fee`` before and after."""

    block: int
    market: str
    borrower: str = ""
    supply_assets: int = 0
    supply_shares: int = 0
    borrow_assets: int = 0
    borrow_shares: int = 0
    pos_borrow_shares: int = 0
    pos_collateral: int = 0
    last_update: tuple[int, int] | None = None
    fee: tuple[int, int] | None = None
    created: bool = False


class MorphoState(msgspec.Struct, gc=False, kw_only=True):
    """Every market and position of one Morpho deployment, and the chain position read."""

    markets: dict[str, Market] = msgspec.field(default_factory=dict)
    positions: dict[str, dict[str, Position]] = msgspec.field(default_factory=dict)
    """market id -> borrower address -> position."""
    journal: dict[str, Change] = msgspec.field(default_factory=dict)
    """ChainLog event id -> what it changed, for the last ``JOURNAL_BLOCKS`` blocks (in order)."""
    block: int = 0
    block_hash: str = ""
    block_time: int = 0
    journal_floor: int = 0
    """The oldest block the journal still holds every change of: an older removal is too deep."""

    def position(self, market: str, borrower: str) -> Position:
        return self.positions.get(market, {}).get(borrower) or Position()


def _market_of(state: MorphoState, e: ChainLog) -> Market:
    mid = str(e.args.get("id", ""))
    m = state.markets.get(mid)
    if m is None:
        raise MorphoStateError(f"{e.name} in market {mid}, which no CreateMarket in the log created")
    return m


def _int(e: ChainLog, name: str) -> int:
    v = e.args.get(name)
    if not isinstance(v, int):
        raise MorphoStateError(f"{e.name}: argument {name!r} missing or not an integer")
    return v


def _addr(e: ChainLog, name: str) -> str:
    v = e.args.get(name)
    if not isinstance(v, str):
        raise MorphoStateError(f"{e.name}: argument {name!r} missing or not an address")
    return v


def change_of(state: MorphoState, e: ChainLog) -> Change | None:
    """What ``e`` does to ``state`` (``None``: nothing the keeper keeps), without applying it."""
    n = e.name
    if n == "CreateMarket":
        mid = _addr(e, "id")
        if mid in state.markets:
            raise MorphoStateError(f"CreateMarket of {mid}, which exists")
        for name in ("loanToken", "collateralToken", "oracle", "irm"):
            _addr(e, name)
        _int(e, "lltv")
        return Change(block=e.block, market=mid, created=True, last_update=(0, e.block_time))
    if n not in _MOVES:
        return None
    m = _market_of(state, e)
    return _MOVES[n](m, e)


def _accrue(m: Market, e: ChainLog) -> Change:
    interest = _int(e, "interest")
    return Change(block=e.block, market=m.id, supply_assets=interest, borrow_assets=interest,
                  supply_shares=_int(e, "feeShares"), last_update=(m.last_update, e.block_time))


def _set_fee(m: Market, e: ChainLog) -> Change:
    return Change(block=e.block, market=m.id, fee=(m.fee, _int(e, "newFee")))


def _supply(m: Market, e: ChainLog) -> Change:
    return Change(block=e.block, market=m.id, supply_assets=_int(e, "assets"),
                  supply_shares=_int(e, "shares"))


def _withdraw(m: Market, e: ChainLog) -> Change:
    return Change(block=e.block, market=m.id, supply_assets=-_int(e, "assets"),
                  supply_shares=-_int(e, "shares"))


def _borrow(m: Market, e: ChainLog) -> Change:
    shares = _int(e, "shares")
    return Change(block=e.block, market=m.id, borrower=_addr(e, "onBehalf"),
                  borrow_assets=_int(e, "assets"), borrow_shares=shares, pos_borrow_shares=shares)


def _repay(m: Market, e: ChainLog) -> Change:
    shares = _int(e, "shares")
    # totalBorrowAssets = zeroFloorSub(totalBorrowAssets, assets): the repaid assets may be 1 over
    floored = zero_floor_sub(m.total_borrow_assets, _int(e, "assets"))
    return Change(block=e.block, market=m.id, borrower=_addr(e, "onBehalf"),
                  borrow_assets=floored - m.total_borrow_assets, borrow_shares=-shares,
                  pos_borrow_shares=-shares)


def _supply_collateral(m: Market, e: ChainLog) -> Change:
    return Change(block=e.block, market=m.id, borrower=_addr(e, "onBehalf"),
                  pos_collateral=_int(e, "assets"))


def _withdraw_collateral(m: Market, e: ChainLog) -> Change:
    return Change(block=e.block, market=m.id, borrower=_addr(e, "onBehalf"),
                  pos_collateral=-_int(e, "assets"))


def _liquidate(m: Market, e: ChainLog) -> Change:
    repaid_shares, bad_shares = _int(e, "repaidShares"), _int(e, "badDebtShares")
    bad_assets = _int(e, "badDebtAssets")
    after_repay = zero_floor_sub(m.total_borrow_assets, _int(e, "repaidAssets"))
    return Change(
        block=e.block, market=m.id, borrower=_addr(e, "borrower"),
        borrow_assets=after_repay - bad_assets - m.total_borrow_assets,
        borrow_shares=-(repaid_shares + bad_shares),
        supply_assets=-bad_assets,
        pos_borrow_shares=-(repaid_shares + bad_shares),
        pos_collateral=-_int(e, "seizedAssets"),
    )


_MOVES = {
    "AccrueInterest": _accrue,
    "SetFee": _set_fee,
    "Supply": _supply,
    "Withdraw": _withdraw,
    "Borrow": _borrow,
    "Repay": _repay,
    "SupplyCollateral": _supply_collateral,
    "WithdrawCollateral": _withdraw_collateral,
    "Liquidate": _liquidate,
}
"""The events that move what the keeper keeps; the others (owner, IRM and LLTV enabling,
authorisations, flash loans) change nothing here."""


def _move(state: MorphoState, c: Change, sign: int, args: dict[str, int | str] | None) -> None:
    """Apply ``c`` (sign 1) or undo it (sign -1), after checking nothing goes negative."""
    if c.created:
        if sign > 0:
            assert args is not None
            state.markets[c.market] = Market(
                id=c.market, loan_token=str(args["loanToken"]), collateral_token=str(args["collateralToken"]),
                oracle=str(args["oracle"]), irm=str(args["irm"]), lltv=int(args["lltv"]),
                last_update=c.last_update[1] if c.last_update else 0)
        else:
            if state.positions.get(c.market):
                raise MorphoStateError(f"undo of CreateMarket {c.market}, which has positions")
            state.markets.pop(c.market, None)
            state.positions.pop(c.market, None)
        return
    m = state.markets[c.market]
    tsa = m.total_supply_assets + sign * c.supply_assets
    tss = m.total_supply_shares + sign * c.supply_shares
    tba = m.total_borrow_assets + sign * c.borrow_assets
    tbs = m.total_borrow_shares + sign * c.borrow_shares
    pos = state.position(c.market, c.borrower) if c.borrower else None
    pbs = (pos.borrow_shares + sign * c.pos_borrow_shares) if pos is not None else 0
    pcol = (pos.collateral + sign * c.pos_collateral) if pos is not None else 0
    if min(tsa, tss, tba, tbs, pbs, pcol) < 0:
        raise MorphoStateError(f"market {c.market}: a total or balance would go negative "
                               f"(supply {tsa}/{tss}, borrow {tba}/{tbs}, position {pbs}/{pcol})")
    m.total_supply_assets, m.total_supply_shares = tsa, tss
    m.total_borrow_assets, m.total_borrow_shares = tba, tbs
    if c.last_update is not None:
        m.last_update = c.last_update[1] if sign > 0 else c.last_update[0]
    if c.fee is not None:
        m.fee = c.fee[1] if sign > 0 else c.fee[0]
    if pos is not None:
        book = state.positions.setdefault(c.market, {})
        if pbs == 0 and pcol == 0:
            book.pop(c.borrower, None)  # canonical form: empty positions are not kept
            if not book:
                del state.positions[c.market]
        else:
            book[c.borrower] = Position(borrow_shares=pbs, collateral=pcol)


def apply_log(state: MorphoState, e: ChainLog) -> Change | None:
    """Fold one contract event into ``state`` and journal it; returns what changed."""
    if e.event_id in state.journal:
        return None  # the log keeps one copy; a replayed pair of entries must too
    c = change_of(state, e)
    if c is None:
        return None
    _move(state, c, 1, e.args)
    state.journal[e.event_id] = c
    _prune(state, e.block)
    return c


def undo_log(state: MorphoState, removed_id: str, block: int) -> Change | None:
    """Undo the journalled ``ChainLog`` ``removed_id`` of ``block`` (a reorganisation removed
    it); ``None`` if it changed nothing the keeper keeps. Raises ``ReorgTooDeep`` for a block
    older than the journal."""
    if block < state.journal_floor:
        raise ReorgTooDeep(f"{removed_id}: block {block} is older than the last {JOURNAL_BLOCKS} blocks")
    c = state.journal.get(removed_id)
    if c is None:
        return None
    _move(state, c, -1, None)  # raises before changing anything: the entry stays journalled
    del state.journal[removed_id]
    return c


def _prune(state: MorphoState, block: int) -> None:
    j = state.journal
    floor = block - JOURNAL_BLOCKS
    state.journal_floor = max(state.journal_floor, floor)
    while j:
        k = next(iter(j))
        if j[k].block >= floor:
            break
        del j[k]


def apply_block(state: MorphoState, b: ChainBlock) -> None:
    """A block frame: the chain position, and each market's oracle price and IRM rate.

    A market the frame has no price for has none at this block (its oracle failed, or nobody
    reads it): price 0, and no decision in it until a frame brings a good price. A missing rate
    keeps the last one read (the IRM's answer only moves with the market's state).
    """
    state.block, state.block_hash, state.block_time = b.block, b.block_hash, b.block_time
    _prune(state, b.block)
    for mid, m in state.markets.items():
        m.price = b.prices.get(mid, 0)
        m.rate = b.rates.get(mid, m.rate)
