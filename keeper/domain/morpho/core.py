"""The keeper core for Morpho Blue markets on a chain: sans-I/O, driven by the projector live and
by replay offline, exactly like ``keeper.domain.decide.KeeperCore`` (the ``Core`` protocol).

Rules:

- **State.** ``ChainLog`` entries of this venue fold into ``MorphoState`` (``state.apply_log``);
  ``ChainLogRemoved`` undoes one; a ``ChainBlock`` frame sets the block, prices and IRM rates.
- **When.** Decisions are taken on a ``ChainBlock`` frame only: the block's logs and readings are
  then all applied (one published instant is judged as a whole, never half applied).
- **What.** Every position with debt in a market with a price is checked with the contract's
  own ``_isHealthy`` at the frame's block time (interest accrued); a liquidatable one gets
  ``liquidation.plan`` sized at the block time plus ``lookahead_s``. Lowest health first, ties
  by bucket key (``borrower/market``).
- **Busy.** A position with an intent in flight is skipped until its outcome is in the log; after
  ``LiquidationConfirmed`` it stays skipped until a frame at or past the receipt's block (the
  contract's ``Liquidate`` is then folded in). After a rejection it waits ``2**(n-1)`` blocks
  (n: rejections in a row, at most 64 blocks), so a market that refuses is not hammered.
- **Poison.** An entry the state cannot take (``MorphoStateError``) changes nothing, is counted
  in ``quarantined`` with its reason, and the core carries on (live and replay alike).
- **Ids.** ``liq:<borrower>/<market id>@<frame entry id>``, as every keeper core derives them.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

import msgspec

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.domain.decide import bucket_of_intent, intent_id
from keeper.domain.morpho import liquidation as lq
from keeper.domain.morpho.mathlib import WAD
from keeper.domain.morpho.state import MorphoState, MorphoStateError, apply_block, apply_log, undo_log
from keeper.domain.params import KeeperParams

CORE_FORMAT = 3001
"""Snapshot format of a Morpho core."""
VENUE = "morpho-blue"
_MAX_HOLD_BLOCKS = 64
_RATIO = decimal.Context(prec=20, rounding=decimal.ROUND_HALF_EVEN)


class _Saved(msgspec.Struct, forbid_unknown_fields=True):
    state: MorphoState
    offset: str
    applied: int
    busy: dict[str, str]
    settling: dict[str, int]
    rejected: dict[str, tuple[int, int]]
    pending: list[str]
    episodes: dict[str, str]
    quarantined: int
    last_quarantine: str


def _ratio(n: int, d: int) -> Decimal:
    return _RATIO.divide(Decimal(n), Decimal(d))


class MorphoCore:
    """Folds a chain venue's log entries and decides Morpho Blue liquidations (module docstring)."""

    FORMAT = CORE_FORMAT

    def __init__(self, params: KeeperParams, venue: str = VENUE) -> None:
        self.params = params
        self.venue = venue
        self.state = MorphoState()
        self._offset = "0-0"
        self.applied = 0
        self.busy: dict[str, str] = {}
        """bucket key -> the intent in flight."""
        self.settling: dict[str, int] = {}
        """bucket key -> the receipt's block: skipped until a frame at or past it."""
        self.rejected: dict[str, tuple[int, int]] = {}
        """bucket key -> (rejections in a row, block of the last one)."""
        self._pending: dict[str, ev.LiquidationIntended] = {}
        """Intents decided but not yet seen in the log (re-appended after a restart)."""
        self.episodes: dict[str, str] = {}
        """bucket key -> the mode of the paper decision recorded in its unhealthy episode (a
        paper decision is recorded once per episode, not at every block)."""
        self.quarantined = 0
        self.last_quarantine = ""

    # ------------------------------------------------------------------ the Core protocol

    @property
    def offset(self) -> str:
        return self._offset

    def pending(self) -> Sequence[ev.Event]:
        return list(self._pending.values())

    def handle(self, entry_id: str, event: ev.Event) -> Sequence[ev.Event]:
        """Apply one log entry; return the intents to record (only on a block frame)."""
        self._offset = entry_id
        self.applied += 1
        t = type(event)
        out: Sequence[ev.Event] = ()
        try:
            if t is ev.ChainLog:
                assert isinstance(event, ev.ChainLog)
                if event.venue == self.venue:
                    apply_log(self.state, event)
            elif t is ev.ChainLogRemoved:
                assert isinstance(event, ev.ChainLogRemoved)
                if event.venue == self.venue:
                    undo_log(self.state, event.removed_id, event.block)
            elif t is ev.ChainBlock:
                assert isinstance(event, ev.ChainBlock)
                if event.venue == self.venue:
                    apply_block(self.state, event)
                    out = self._decide(entry_id, event)
            elif t is ev.LiquidationIntended:
                assert isinstance(event, ev.LiquidationIntended)
                self._intended(event)
            elif t in (ev.LiquidationConfirmed, ev.LiquidationRejected, ev.LiquidationExpired):
                assert isinstance(event, ev._Outcome)
                self._outcome(event)
        except MorphoStateError as exc:
            self.quarantined += 1
            self.last_quarantine = f"{entry_id}: {exc}"
        return out

    def snapshot(self) -> bytes:
        return msgspec.json.encode(_Saved(
            self.state, self._offset, self.applied, self.busy, self.settling, self.rejected,
            [codec.encode(i).decode() for i in self._pending.values()], self.episodes,
            self.quarantined, self.last_quarantine))

    @classmethod
    def restore(cls, data: bytes, params: KeeperParams, venue: str = VENUE) -> MorphoCore:
        saved = msgspec.json.decode(data, type=_Saved)
        core = cls(params, venue)
        core.state, core._offset, core.applied = saved.state, saved.offset, saved.applied
        core.busy, core.settling, core.rejected = saved.busy, saved.settling, saved.rejected
        for raw in saved.pending:
            intent = codec.decode(raw)
            assert isinstance(intent, ev.LiquidationIntended)
            core._pending[intent.event_id] = intent
        core.episodes = saved.episodes
        core.quarantined, core.last_quarantine = saved.quarantined, saved.last_quarantine
        return core

    # ------------------------------------------------------------------ outcomes

    def _mine(self, decision: ev.Decision) -> bool:
        return decision.profile == self.params.profile

    def _intended(self, e: ev.LiquidationIntended) -> None:
        self._pending.pop(e.event_id, None)
        d = e.decision
        if self._mine(d) and d.mode == "live":
            self.busy[f"{d.account}/{d.bucket}"] = d.intent_id

    def _outcome(self, e: ev._Outcome) -> None:
        key = bucket_of_intent(e.intent_id)
        if self.busy.get(key) != e.intent_id:
            return
        del self.busy[key]
        if isinstance(e, ev.LiquidationConfirmed):
            self.settling[key] = e.block if e.block is not None else self.state.block
            self.rejected.pop(key, None)
        elif isinstance(e, ev.LiquidationRejected):
            n, _ = self.rejected.get(key, (0, 0))
            self.rejected[key] = (n + 1, self.state.block)

    def _held(self, key: str) -> bool:
        if key in self.busy:
            return True
        settle = self.settling.get(key)
        if settle is not None:
            if self.state.block < settle:
                return True
            del self.settling[key]
        rej = self.rejected.get(key)
        if rej is not None:
            n, at = rej
            hold: int = min(_MAX_HOLD_BLOCKS, 1 << (n - 1))
            return self.state.block < at + hold
        return False

    # ------------------------------------------------------------------ decisions

    def _decide(self, entry_id: str, frame: ev.ChainBlock) -> list[ev.Event]:
        now = frame.block_time
        found: list[tuple[Fraction, str, lq.Plan, str]] = []
        for mid in sorted(self.state.positions):
            m = self.state.markets[mid]
            if m.price <= 0:
                continue
            for borrower in sorted(self.state.positions[mid]):
                key = f"{borrower}/{mid}"
                pos = self.state.positions[mid][borrower]
                t = lq.accrue(m, now).totals
                if pos.borrow_shares == 0 or lq.healthy(pos, t, m.price, m.lltv):
                    self.rejected.pop(key, None)
                    self.episodes.pop(key, None)
                    continue
                if self._held(key) or self.episodes.get(key) == self._mode:
                    continue
                p = lq.plan(m, pos, verdict_time=now, plan_time=now + self.params.lookahead_s,
                            target=WAD)
                if p is None:
                    continue
                found.append((Fraction(p.max_borrow, max(p.borrowed, 1)), key, p, mid))
        found.sort(key=lambda f: (f[0], f[1]))
        out: list[ev.Event] = []
        for _, key, p, mid in found:
            intent = self._intent(entry_id, frame, key, mid, p)
            out.append(intent)
            self._pending[intent.event_id] = intent
            if intent.decision.mode == "live":
                self.busy[key] = intent.event_id
            else:
                self.episodes[key] = intent.decision.mode
        return out

    @property
    def _mode(self) -> str:
        return "live" if self.params.mode == "live" else "paper"

    def _intent(self, entry_id: str, frame: ev.ChainBlock, key: str, mid: str, p: lq.Plan
                ) -> ev.LiquidationIntended:
        m = self.state.markets[mid]
        borrower = key.partition("/")[0]
        r = p.result
        after = r.position
        owed_after = lq.borrowed(after, r.totals)
        iid = intent_id(borrower, mid, entry_id)
        by = (f"seizedAssets {p.seized_assets}" if p.seized_assets
              else f"repaidShares {p.repaid_shares}")
        rule = (f"{self.params.profile}: borrowed {p.borrowed} > maxBorrow {p.max_borrow} at block "
                f"{frame.block}; {p.why}; liquidate({by}) -> repays {r.repaid_assets} "
                f"({r.repaid_shares} shares), seizes {r.seized_assets}"
                + (f", realises bad debt {r.bad_debt_assets}" if r.bad_debt_shares else ""))
        decision = ev.Decision(
            intent_id=iid, account=borrower, bucket=mid, trigger=entry_id,
            trigger_event_id=frame.event_id, profile=self.params.profile, rule=rule,
            action="bad_debt" if r.bad_debt_shares else "repay_seize", market=mid,
            repay_asset=m.loan_token, repay_amount=Decimal(r.repaid_assets),
            repay_shares=Decimal(p.repaid_shares) if p.repaid_shares else None,
            seize_asset=m.collateral_token, seize_amount=Decimal(r.seized_assets),
            bonus=_ratio(p.incentive - WAD, WAD), notional=Decimal(r.repaid_assets),
            equity=Decimal(p.max_borrow), requirement=Decimal(p.borrowed),
            health_before=_ratio(p.max_borrow, p.borrowed),
            health_after=None if owed_after == 0 or after.borrow_shares == 0
            else _ratio(lq.max_borrow(after.collateral, m.price, m.lltv), owed_after),
            bankrupt=r.bad_debt_shares > 0, prices={mid: Decimal(m.price)},
            mode=self._mode,
        )
        return ev.LiquidationIntended(event_id=iid, ts_event=frame.ts_event,
                                      causation_id=frame.event_id, decision=decision)
