"""The keeper core for Morpho Blue markets on a chain (``keeper.domain.chain_core`` holds what
every chain core shares: outcomes, restraint, poison, order, ids).

- **State.** ``ChainLog`` entries of this venue fold into ``MorphoState`` (``state.apply_log``);
  ``ChainLogRemoved`` undoes one; a ``ChainBlock`` frame sets the block, prices and IRM rates.
- **What.** On a frame, every position with debt in a market with a price is checked with the
  contract's own ``_isHealthy`` at the frame's block time (interest accrued); a liquidatable one
  gets ``liquidation.plan`` sized at the block time plus ``lookahead_s``, restoring the profile's
  ``target_health``. Bucket: the market id; account: the borrower.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from functools import partial

from keeper.domain import events as ev
from keeper.domain.chain_core import Breach, ChainCore
from keeper.domain.margin import get_profile
from keeper.domain.morpho import liquidation as lq
from keeper.domain.morpho.mathlib import WAD
from keeper.domain.morpho.state import MorphoState, apply_block, apply_log, undo_log
from keeper.domain.params import KeeperParams

__all__ = ["CORE_FORMAT", "VENUE", "MorphoCore", "ratio"]

CORE_FORMAT = 3001
"""Snapshot format of a Morpho core."""
VENUE = "morpho-blue"
_RATIO = decimal.Context(prec=20, rounding=decimal.ROUND_HALF_EVEN)


def ratio(n: int, d: int) -> Decimal:
    """``n / d`` as a 20-digit Decimal (health factors in a decision's record)."""
    return _RATIO.divide(Decimal(n), Decimal(d))


class MorphoCore(ChainCore):
    """Folds a Morpho venue's log entries and decides its liquidations (module docstring)."""

    FORMAT = CORE_FORMAT
    VENUE = VENUE
    STATE = MorphoState

    def __init__(self, params: KeeperParams, venue: str | None = None) -> None:
        super().__init__(params, venue)
        self.state: MorphoState = MorphoState()
        target = get_profile(params.profile).target_health if params.profile == VENUE else Decimal(1)
        self.target = int(target.scaleb(18).to_integral_value(rounding=decimal.ROUND_CEILING))

    def apply_log(self, e: ev.ChainLog) -> None:
        apply_log(self.state, e)

    def undo_log(self, e: ev.ChainLogRemoved) -> None:
        undo_log(self.state, e.removed_id, e.block)

    def apply_block(self, e: ev.ChainBlock) -> None:
        apply_block(self.state, e)

    def scan(self, frame: ev.ChainBlock) -> Iterator[tuple[str, Breach | None]]:
        now = frame.block_time
        for mid in sorted(self.state.positions):
            m = self.state.markets[mid]
            if m.price <= 0:
                continue
            t = lq.accrue(m, now).totals
            for borrower in sorted(self.state.positions[mid]):
                pos = self.state.positions[mid][borrower]
                key = f"{borrower}/{mid}"
                if pos.borrow_shares == 0 or pos.collateral == 0 or lq.healthy(pos, t, m.price, m.lltv):
                    yield key, None
                    continue
                owed = lq.borrowed(pos, t)
                health = Fraction(lq.max_borrow(pos.collateral, m.price, m.lltv), max(owed, 1))
                # the plan (a search over ``liquidate``) only for a position that is not held
                decide = partial(self._decision, frame=frame, mid=mid, borrower=borrower)
                yield key, Breach(key, health, decide)

    def _decision(self, iid: str, *, frame: ev.ChainBlock, mid: str, borrower: str) -> ev.Decision | None:
        m = self.state.markets[mid]
        now = frame.block_time
        p = lq.plan(m, self.state.positions[mid][borrower], verdict_time=now,
                    plan_time=now + self.params.lookahead_s, target=self.target)
        if p is None:
            return None
        r = p.result
        after = r.position
        owed_after = lq.borrowed(after, r.totals)
        by = (f"seizedAssets {p.seized_assets}" if p.seized_assets
              else f"repaidShares {p.repaid_shares}")
        rule = (f"{self.params.profile}: borrowed {p.borrowed} > maxBorrow {p.max_borrow} at block "
                f"{frame.block}; {p.why}; liquidate({by}) -> repays {r.repaid_assets} "
                f"({r.repaid_shares} shares), seizes {r.seized_assets}"
                + (f", realises bad debt {r.bad_debt_assets}" if r.bad_debt_shares else ""))
        return ev.Decision(
            intent_id=iid, account=borrower, bucket=mid, trigger=self.offset,
            trigger_event_id=frame.event_id, profile=self.params.profile, rule=rule,
            action="bad_debt" if r.bad_debt_shares else "repay_seize", market=mid,
            repay_asset=m.loan_token, repay_amount=Decimal(r.repaid_assets),
            repay_shares=Decimal(p.repaid_shares) if p.repaid_shares else None,
            seize_asset=m.collateral_token, seize_amount=Decimal(r.seized_assets),
            bonus=ratio(p.incentive - WAD, WAD), notional=Decimal(r.repaid_assets),
            equity=Decimal(p.max_borrow), requirement=Decimal(p.borrowed),
            health_before=ratio(p.max_borrow, p.borrowed),
            health_after=None if owed_after == 0 or after.borrow_shares == 0
            else ratio(lq.max_borrow(after.collateral, m.price, m.lltv), owed_after),
            bankrupt=r.bad_debt_shares > 0, prices={mid: Decimal(m.price)}, mode=self.mode,
        )
