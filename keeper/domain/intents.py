"""What a keeper decision is made of: its id, its mode, and the intent recorded for it.

Pure functions of their arguments (``mode_of`` also expires the cap window it reads). The keeper
core (``keeper.domain.decide``) calls them once a bucket is confirmed liquidatable and planned;
the chain venues' cores share the ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from keeper.domain import guards
from keeper.domain.caps import CapWindow
from keeper.domain.events import Decision, Event, LiquidationIntended
from keeper.domain.margin.types import BucketHealth, LiquidationPlan
from keeper.domain.params import KeeperParams
from keeper.domain.state import State

__all__ = ["bucket_of_intent", "intent_id", "intent_of", "mode_of"]


def intent_id(account: str, bucket: str, trigger: str) -> str:
    """The intent id of a liquidation of ``account/bucket`` decided after log entry ``trigger``."""
    return f"liq:{account}/{bucket}@{trigger}"


def bucket_of_intent(intent: str) -> str:
    """``account/bucket`` from an intent id."""
    return intent.removeprefix("liq:").rpartition("@")[0]


def mode_of(params: KeeperParams, state: State, window: CapWindow, symbols: Sequence[str],
            plan: LiquidationPlan) -> str:
    """The mode of a decision to carry out ``plan`` on a bucket holding ``symbols``: ``paper``,
    ``paused``, ``skip:profit``, ``skip:cap`` or ``live``, the first that applies in that order
    (``docs/keeper.md``, Modes). The cap window is first expired to ``cap_interval_us`` before
    the state's log time."""
    p = params
    if p.mode == "paper":
        return "paper"
    if guards.paused_scope(symbols, state.paused) is not None:
        return "paused"
    notional, bonus, fee = plan.notional, plan.bonus, plan.protocol_fee
    if bonus is not None and p.min_profit > 0:
        fee_value = Decimal(0)
        seize_asset = plan.seize_asset
        if fee and seize_asset is not None and seize_asset in state.prices:
            fee_value = fee * state.prices[seize_asset]
        if notional * bonus - fee_value < p.min_profit:
            return "skip:profit"
    if p.cap_count is not None or p.cap_notional is not None:
        window.expire(state.log_time - p.cap_interval_us)
        if p.cap_count is not None and len(window) >= p.cap_count:
            return "skip:cap"
        if p.cap_notional is not None and window.notional + notional > p.cap_notional:
            return "skip:cap"
    return "live"


def intent_of(key: str, entry_id: str, trigger: Event, *, profile: str, health: BucketHealth,
              plan: LiquidationPlan, prices: dict[str, Decimal], mode: str) -> LiquidationIntended:
    """The ``LiquidationIntended`` to record for ``plan`` on bucket ``key`` decided after log
    entry ``entry_id`` (event ``trigger``): id ``intent_id(...)``, the trigger's ``ts_event``,
    ``causation_id`` the trigger's event id; ``prices``: the bucket's own symbols' prices."""
    account, _, name = key.partition("/")
    iid = intent_id(account, name, entry_id)
    decision = Decision(
        intent_id=iid, account=account, bucket=name, trigger=entry_id,
        trigger_event_id=trigger.event_id, profile=profile, rule=plan.rule,
        action=plan.action, market=plan.market, size=plan.size,
        repay_asset=plan.repay_asset, repay_amount=plan.repay_amount,
        seize_asset=plan.seize_asset, seize_amount=plan.seize_amount,
        protocol_fee=plan.protocol_fee, close_factor=plan.close_factor, bonus=plan.bonus,
        notional=plan.notional, equity=health.equity, requirement=health.requirement,
        health_before=health.health_factor, health_after=plan.health_after,
        bankrupt=health.bankrupt, prices=prices, mode=mode)
    return LiquidationIntended(event_id=iid, ts_event=trigger.ts_event, causation_id=trigger.event_id,
                               decision=decision)
