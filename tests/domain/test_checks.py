"""The events' field checks (``keeper.domain.checks``, installed as ``__post_init__``): every
bad number is refused when an event is built, and when one is decoded, with the field named."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.errors import DecodeError

D = Decimal
BASE: dict[str, Any] = {"event_id": "e1", "ts_event": 1}
AMOUNT = {**BASE, "account": "a", "bucket": "cross", "asset": "USDC"}
POSITION = {**BASE, "account": "a", "bucket": "cross", "market": "BTC-USD"}
FUNDING = {**POSITION, "asset": "USDC"}

BAD: list[tuple[type[ev.Event], dict[str, Any], str]] = [
    *[(ev.PriceUpdated, {**BASE, "symbol": "X", "price": D(p)}, "price")
      for p in ("0", "-1", "NaN", "Infinity")],
    *[(t, {**AMOUNT, "amount": D(a)}, "amount")
      for t in (ev.Deposit, ev.Withdraw, ev.Borrow, ev.Repay) for a in ("0", "-5", "NaN", "-Infinity")],
    (ev.PositionChanged, {**POSITION, "size": D("NaN")}, "size"),
    (ev.PositionChanged, {**POSITION, "size": D(1), "realized_pnl": D("Infinity")}, "realized_pnl"),
    (ev.PositionChanged, {**POSITION, "size": D(1), "entry_price": D(0)}, "entry_price"),
    (ev.PositionChanged, {**POSITION, "size": D(1), "entry_price": D("-3")}, "entry_price"),
    (ev.PositionChanged, {**POSITION, "size": D(1), "quote": D("NaN")}, "quote"),
    (ev.FundingApplied, {**FUNDING, "amount": D("-Infinity")}, "amount"),
]
GOOD: list[tuple[type[ev.Event], dict[str, Any]]] = [
    (ev.PriceUpdated, {**BASE, "symbol": "X", "price": D("0.0001")}),
    (ev.Deposit, {**AMOUNT, "amount": D("0.01")}),
    (ev.PositionChanged, {**POSITION, "size": D("-2"), "entry_price": D(100), "quote": D(-5),
                          "realized_pnl": D("-7.5")}),
    (ev.PositionChanged, {**POSITION, "size": D(0)}),
    (ev.FundingApplied, {**FUNDING, "amount": D("-3")}),
    (ev.FundingApplied, {**FUNDING, "amount": D(0)}),
]


@pytest.mark.parametrize(("cls", "fields", "name"), BAD)
def test_a_bad_number_is_refused_when_built_and_when_decoded(cls: type[ev.Event], fields: dict[str, Any],
                                                              name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be (finite|a finite number > 0), got "):
        cls(**fields)
    tag = cls.__struct_config__.tag
    wire = json.dumps({"type": tag, **{k: str(v) if isinstance(v, Decimal) else v
                                       for k, v in fields.items()}})
    with pytest.raises(DecodeError) as exc:
        codec.decode(wire.encode())
    assert name in str(exc.value)


@pytest.mark.parametrize(("cls", "fields"), GOOD)
def test_good_numbers_pass_and_round_trip(cls: type[ev.Event], fields: dict[str, Any]) -> None:
    e = cls(**fields)
    assert codec.decode(codec.encode(e)) == e
