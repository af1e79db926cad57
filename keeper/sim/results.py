"""What the reference venue answers and counts: a liquidation's ``Result``, the ``Rejection``
that refuses one, and the running ``Stats``.

Contract: a ``Result`` renders the JSON body of the wire protocol (``PROTOCOL.md``): ``status``,
``ref`` when there is one, then ``reason`` for a rejection or the account ``events`` otherwise.
A rejection's reason opens with a stable category (``reason_category``) that the venue counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import msgspec

__all__ = ["Rejection", "Result", "Stats", "format_amount", "format_hf", "reason_category"]


@dataclass(frozen=True)
class Result:
    """What the venue answered to one liquidation request.

    ``status`` is ``accepted``, ``duplicate`` or ``rejected``; ``http_status`` 200, 409 or 422.
    ``events`` are the account events the liquidation produced (the same on a duplicate).
    """

    status: str
    http_status: int
    ref: str | None = None
    events: tuple[bytes, ...] = ()
    reason: str | None = None

    def body(self) -> bytes:
        """The JSON response body of the wire protocol (``PROTOCOL.md``)."""
        out: dict[str, Any] = {"status": self.status}
        if self.ref is not None:
            out["ref"] = self.ref
        if self.status == "rejected":
            out["reason"] = self.reason
        else:
            out["events"] = [msgspec.Raw(p) for p in self.events]
        return msgspec.json.encode(out)


class Rejection(Exception):
    """A liquidation the venue refuses; the message is the reason sent to the keeper."""


@dataclass
class Stats:
    """The venue's running counts and its books (USD at the marks of each liquidation)."""

    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    requests_by_intent: dict[str, int] = field(default_factory=dict)
    accepted_by_intent: dict[str, int] = field(default_factory=dict)
    status_queries: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    bad_debt: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    liquidated_notional: Decimal = Decimal(0)
    collateral_lost: Decimal = Decimal(0)
    """What liquidations took from the owners (``keeper.sim.venue``'s docstring)."""


def format_hf(x: Decimal) -> str:
    """A health factor for rejection reasons: 4 decimals, rounded down (never shown as 1 when < 1)."""
    return format(x.quantize(Decimal("0.0001"), rounding=ROUND_FLOOR).normalize(), "f")


def format_amount(x: Decimal) -> str:
    """A short human form of an amount for rejection reasons."""
    q = x.quantize(Decimal("0.01")) if abs(x) >= 1 else x.quantize(Decimal("0.000001"))
    return format(q.normalize(), "f")


def reason_category(reason: str) -> str:
    """The stable head of a reason (``healthy``, ``unknown account``, ...) for counting."""
    for sep in (" at ", ":", " ("):
        reason = reason.split(sep, maxsplit=1)[0]
    return reason
