"""The keeper core for an Aave v3.0.2 pool on a chain (``keeper.domain.chain_core`` holds what
every chain core shares).

- **State.** The pool's, the configurator's and the tokens' ``ChainLog`` entries fold into
  ``AaveState``; ``ChainLogRemoved`` undoes one; a ``ChainBlock`` frame sets the block and
  every reserve's oracle price.
- **What.** On a frame, every user with debt is checked with the pool's own account data at the
  frame's block time (indexes accrued); a health factor below 1 (WAD) gets ``liquidation.plan``:
  the largest debt against the largest collateral, the most the close factor allows. Bucket:
  ``cross`` (one health factor per user); account: the user.
- **Refused, visibly.** An account the keeper does not model is never decided: one in an eMode
  category, one holding stable-rate debt, one with an isolation-mode collateral (a reserve with a
  debt ceiling), one touching a reserve without a price. ``refused`` names each with its reason.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from functools import partial

from keeper.domain import events as ev
from keeper.domain.aave_v3 import liquidation as lq
from keeper.domain.aave_v3.state import AaveState, User, apply_block, apply_log, undo_log
from keeper.domain.chain_core import Breach, ChainCore
from keeper.domain.params import KeeperParams

__all__ = ["BUCKET", "CORE_FORMAT", "VENUE", "AaveCore"]

CORE_FORMAT = 3002
"""Snapshot format of an Aave core."""
VENUE = "aave-v3.0"
BUCKET = "cross"
_RATIO = decimal.Context(prec=20, rounding=decimal.ROUND_HALF_EVEN)


class AaveCore(ChainCore):
    """Folds an Aave pool's log entries and decides its liquidations (module docstring)."""

    FORMAT = CORE_FORMAT
    VENUE = VENUE
    STATE = AaveState

    def __init__(self, params: KeeperParams, venue: str | None = None) -> None:
        super().__init__(params, venue)
        self.state: AaveState = AaveState()
        self.refused: dict[str, str] = {}
        """bucket key -> why the keeper does not decide that account."""

    def apply_log(self, e: ev.ChainLog) -> None:
        apply_log(self.state, e)

    def undo_log(self, e: ev.ChainLogRemoved) -> None:
        undo_log(self.state, e.removed_id, e.block)

    def apply_block(self, e: ev.ChainBlock) -> None:
        apply_block(self.state, e)

    def why_refused(self, user: User) -> str | None:
        """Why the keeper does not decide this account (None: it does)."""
        if user.emode:
            return f"eMode category {user.emode} is not modelled"
        if user.stable:
            return f"stable-rate debt in {', '.join(user.stable)} is not modelled"
        for asset in sorted({*user.supplied, *user.borrowed}):
            r = self.state.reserves[asset]
            if r.price <= 0:
                return f"no price for reserve {asset} at this block"
            if asset in user.collateral and r.debt_ceiling:
                return f"isolation-mode collateral {asset} (debt ceiling) is not modelled"
        return None

    def scan(self, frame: ev.ChainBlock) -> Iterator[tuple[str, Breach | None]]:
        now = frame.block_time
        cache: lq.Indexes = {}
        for who in sorted(self.state.users):
            user = self.state.users[who]
            if not user.borrowed and not user.stable:
                continue
            key = f"{who}/{BUCKET}"
            why = self.why_refused(user)
            if why is not None:
                self.refused[key] = why
                yield key, None
                continue
            self.refused.pop(key, None)
            acct = lq.account(self.state, user, now, cache)
            if acct.health_factor >= lq.HF_THRESHOLD or lq.pick_pair(self.state, acct) is None:
                yield key, None
                continue
            # the plan only for an account that is not held
            yield key, Breach(key, Fraction(acct.health_factor, lq.HF_THRESHOLD),
                              partial(self._decision, frame=frame, who=who, acct=acct))

    def _decision(self, iid: str, *, frame: ev.ChainBlock, who: str, acct: lq.Account) -> ev.Decision | None:
        p = lq.plan(self.state, self.state.users[who], frame.block_time)
        if p is None:
            return None
        c, d = self.state.reserves[p.collateral_asset], self.state.reserves[p.debt_asset]
        hf = _RATIO.divide(Decimal(acct.health_factor), Decimal(lq.HF_THRESHOLD))
        seized = p.collateral_to_liquidator + p.protocol_fee
        exhausted = seized >= acct.holdings[p.collateral_asset].supplied
        bad = exhausted and p.debt_covered < acct.holdings[d.asset].debt
        rule = (f"{self.params.profile}: HF {hf} < 1 at block {frame.block} (collateral "
                f"{acct.total_collateral_base}, debt {acct.total_debt_base} in base units, avg LT "
                f"{acct.avg_threshold} bps); largest debt {d.asset}, largest collateral {c.asset}; close "
                f"factor {p.close_factor // 100}%: liquidationCall(debtToCover {p.debt_covered}) -> "
                f"seizes {p.collateral_to_liquidator} + protocol fee {p.protocol_fee}"
                + ("; the collateral is exhausted, the rest of the debt stays (v3.0)" if exhausted else ""))
        return ev.Decision(
            intent_id=iid, account=who, bucket=BUCKET, trigger=self.offset,
            trigger_event_id=frame.event_id, profile=self.params.profile, rule=rule,
            action="bad_debt" if bad else "repay_seize",
            market=BUCKET, repay_asset=d.asset, repay_amount=Decimal(p.debt_covered),
            seize_asset=c.asset, seize_amount=Decimal(seized), protocol_fee=Decimal(p.protocol_fee),
            close_factor=Decimal(p.close_factor).scaleb(-4), bonus=Decimal(c.bonus - 10_000).scaleb(-4),
            notional=Decimal(p.debt_covered), equity=Decimal(acct.total_collateral_base),
            requirement=Decimal(acct.total_debt_base), health_before=hf,
            prices={a: Decimal(self.state.reserves[a].price) for a in sorted(acct.holdings)},
            mode=self.mode,
        )
