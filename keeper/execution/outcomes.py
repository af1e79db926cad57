"""The records the executor role appends for an intent, built from its ``Decision``: pure.

Every outcome of an intent has the event id ``out:<intent>`` (``outcome_id``), whatever its kind,
so the log's dedup keeps exactly one per intent; a submission is ``sub:<intent>#<token>``, one
per claim token. Each record names the intent as its ``causation_id``.
"""

from __future__ import annotations

from keeper.domain import events as ev
from keeper.execution.base import Submission

__all__ = ["confirmed", "expired", "outcome_id", "rejected", "submitted"]


def outcome_id(intent_id: str) -> str:
    """The event id every outcome of ``intent_id`` shares, so only the first one is recorded."""
    return f"out:{intent_id}"


def submitted(d: ev.Decision, token: int, executor: str, now: int) -> ev.LiquidationSubmitted:
    """``LiquidationSubmitted``: the intent sent under claim ``token`` by ``executor``."""
    return ev.LiquidationSubmitted(
        event_id=f"sub:{d.intent_id}#{token}", ts_event=now, causation_id=d.intent_id,
        intent_id=d.intent_id, account=d.account, bucket=d.bucket, attempt=token, executor=executor)


def confirmed(d: ev.Decision, sub: Submission, now: int) -> ev.LiquidationConfirmed:
    """``LiquidationConfirmed`` with the venue's answer (its reference, duplicate flag, amounts)."""
    return ev.LiquidationConfirmed(
        event_id=outcome_id(d.intent_id), ts_event=now, causation_id=d.intent_id,
        intent_id=d.intent_id, account=d.account, bucket=d.bucket, venue_ref=sub.ref,
        duplicate=sub.duplicate, block=sub.block, repaid=sub.repaid, seized=sub.seized)


def rejected(d: ev.Decision, reason: str, now: int) -> ev.LiquidationRejected:
    """``LiquidationRejected`` with the venue's reason."""
    return ev.LiquidationRejected(
        event_id=outcome_id(d.intent_id), ts_event=now, causation_id=d.intent_id,
        intent_id=d.intent_id, account=d.account, bucket=d.bucket, reason=reason)


def expired(d: ev.Decision, reason: str, now: int) -> ev.LiquidationExpired:
    """``LiquidationExpired``: the intent is too old to send, and the venue does not have it."""
    return ev.LiquidationExpired(
        event_id=outcome_id(d.intent_id), ts_event=now, causation_id=d.intent_id,
        intent_id=d.intent_id, account=d.account, bucket=d.bucket, reason=reason)
