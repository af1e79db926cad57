"""The wire form of events: readable JSON, typed decoding, a reason for every refusal."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.errors import DecodeError

GOOD = {"type": "price_updated", "event_id": "binance:BTCUSDT:1", "ts_event": 1, "symbol": "BTC-USD",
        "price": "64000.5"}


def payload(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_amounts_and_prices_are_decimal_strings_on_the_wire() -> None:
    e = ev.PriceUpdated(event_id="x", ts_event=1, symbol="ETH-USD", price=Decimal("3000.10"))
    raw = json.loads(codec.encode(e))
    assert raw["type"] == "price_updated"
    assert raw["price"] == "3000.10"
    assert raw["v"] == 1


@pytest.mark.parametrize(("data", "reason"), [
    (payload()[:-5], "bad_json"),
    (b"not json at all", "bad_json"),
    (payload(type="price_teleported"), "unknown_type"),
    (payload(type=...), "unknown_type"),
    (payload(v=7), "unknown_version"),
    (payload(v=0), "unknown_version"),
    (payload(price="NaN"), "invalid_price"),
    (payload(price="-3"), "invalid_price"),
    (payload(price="0"), "invalid_price"),
    (payload(price="Infinity"), "invalid_price"),
    (payload(symbol=...), "missing_field"),
    (payload(ts_event="yesterday"), "invalid_field"),
    (payload(surprise=1), "invalid_field"),
])
def test_every_refusal_has_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.reason == reason


def test_old_versions_are_upcast_on_read_without_rewriting_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend price_updated is now v2, whose v1 spelled the symbol "sym".
    monkeypatch.setitem(codec._CURRENT, ev.PriceUpdated, 2)
    old_raw = {k: v for k, v in {**GOOD, "v": 1}.items() if k != "symbol"} | {"sym": "BTC-USD"}
    stored = json.dumps(old_raw).encode()

    def v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
        raw = dict(raw)
        raw["symbol"] = raw.pop("sym")
        return raw

    codec.register_upcaster("price_updated", 1, v1_to_v2)
    try:
        event = codec.decode(stored)
    finally:
        codec.unregister_upcaster("price_updated", 1)
    assert isinstance(event, ev.PriceUpdated)
    assert event.symbol == "BTC-USD"
    assert event.v == 2
    assert json.loads(stored)["sym"] == "BTC-USD"  # the stored bytes were never touched


def test_a_version_without_an_upcaster_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(codec._CURRENT, ev.PriceUpdated, 2)
    with pytest.raises(DecodeError) as info:
        codec.decode(payload(v=1))
    assert info.value.reason == "unknown_version"
