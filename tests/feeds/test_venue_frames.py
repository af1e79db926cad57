"""Real venue frames the parsers met when tried on public recordings: a venue's refusal or error
is a ``venue_error`` carrying its words (not silence until the staleness watchdog fires), an
ISO-8601 time keeps its UTC offset with a fraction, year 1 is not a time, and whitespace does
not change what a Binance frame is."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from keeper.feeds.parsers import (
    ParseError,
    binance_mark_price,
    bybit_tickers,
    coinbase_ticker,
    hyperliquid_all_mids,
    iso_to_us,
    pyth_hermes,
)

RECV = 1_700_000_000_000_000


def _venue_error(parse: object, frame: dict[str, object] | str) -> ParseError:
    raw = frame if isinstance(frame, str) else json.dumps(frame)
    with pytest.raises(ParseError) as e:
        parse(raw.encode(), RECV)  # type: ignore[operator]
    assert e.value.reason == "venue_error", e.value
    return e.value


def test_a_subscription_refused_by_bybit_is_a_venue_error_with_its_message() -> None:
    # Bybit v5: {"success": false, "ret_msg": "error:handler not found,topic:tickers.BTCUSDTX", ...}
    refused = {"success": False, "ret_msg": "error:handler not found,topic:tickers.BTCUSDTX",
               "conn_id": "d266o6hqo29sqmnq4vk0-1y3m8", "req_id": "", "op": "subscribe"}
    e = _venue_error(bybit_tickers(), refused)
    assert "handler not found" in e.detail and "subscribe" in e.detail


def test_an_error_response_from_pyth_is_a_venue_error() -> None:
    # Hermes websocket: {"type": "response", "status": "error", "error": "Price ids not found: ..."}
    e = _venue_error(pyth_hermes(), {"type": "response", "status": "error",
                                    "error": "Price ids not found: deadbeef"})
    assert "Price ids not found" in e.detail
    assert pyth_hermes()(b'{"type":"response","status":"success"}', RECV) == []


def test_hyperliquids_error_channel_is_a_venue_error() -> None:
    e = _venue_error(hyperliquid_all_mids(), {"channel": "error",
                                              "data": "Invalid subscription {\"type\":\"allMidz\"}"})
    assert "Invalid subscription" in e.detail


def test_coinbase_and_binance_errors_are_venue_errors() -> None:
    e = _venue_error(coinbase_ticker(), {"type": "error", "message": "Failed to subscribe",
                                         "reason": "ETH-USDX is not a valid product"})
    assert "Failed to subscribe" in e.detail
    e = _venue_error(binance_mark_price(), {"error": {"code": 2, "msg": "Invalid request: unknown"},
                                            "id": 1})
    assert "Invalid request" in e.detail and "code 2" in e.detail


def test_an_iso_time_with_a_fraction_keeps_its_utc_offset() -> None:
    assert iso_to_us("2020-06-17T08:31:19.399582+02:00") == iso_to_us("2020-06-17T06:31:19.399582Z")
    assert iso_to_us("2020-06-17T08:31:19.399582123-05:30") == iso_to_us("2020-06-17T14:01:19.399582Z")
    assert iso_to_us("2020-06-17T06:31:19.399582Z") == 1592375479399582


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z",
                                  "0001-01-01T00:00:00.5+00:00"])
def test_an_iso_time_before_1970_is_bad_time(text: str) -> None:
    with pytest.raises(ParseError) as e:
        iso_to_us(text)
    assert e.value.reason == "bad_time"


MARK = {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000"}


@pytest.mark.parametrize("frame", [
    json.dumps(MARK, indent=2),
    "\n\t " + json.dumps(MARK),
    json.dumps({"stream": "btcusdt@markPrice", "data": MARK}, indent=4),
    "   " + json.dumps([MARK, {**MARK, "s": "ETHUSDT"}], indent=3),
])
def test_whitespace_does_not_change_what_a_binance_frame_is(frame: str) -> None:
    quotes = binance_mark_price()(frame.encode(), RECV)
    assert quotes and quotes[0].price == Decimal("11794.15000000") and quotes[0].symbol == "BTCUSDT"
    assert binance_mark_price()(b'\n  {\n  "result": null,\n  "id": 1\n}', RECV) == []


# ---------------------------------------------------------------- every configurable kind runs


def _cfg(source: str) -> object:
    from keeper.app.config import load_config

    return load_config(None, env={"KEEPER_FEEDS__SOURCES": source})


@pytest.mark.parametrize("kind", ["binance", "bybit", "hyperliquid", "pyth", "coinbase", "generic"])
def test_every_feed_kind_the_config_accepts_has_a_parser_in_the_daemon(kind: str) -> None:
    from keeper.app.feeds_role import parser_for, subscriptions

    extra = ', price_path = "px"' if kind == "generic" else ""
    cfg = _cfg(f'[{{kind = "{kind}", url = "ws://127.0.0.1:1", symbols = {{"BTC-USD" = "BTC"}}{extra}}}]')
    [src] = cfg.feeds.sources  # type: ignore[attr-defined]
    assert callable(parser_for(src))
    subs = subscriptions(src)
    if kind in ("bybit", "hyperliquid", "pyth", "coinbase"):
        assert subs and json.loads(subs[0])  # the venue's own subscription, sent on each connect


def test_a_pyth_source_prices_its_market_by_the_configured_feed_id() -> None:
    from keeper.app.feeds_role import build_pipeline, parser_for

    fid = "0xe62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"
    cfg = _cfg(f'[{{kind = "pyth", url = "wss://hermes.pyth.network/ws", '
               f'symbols = {{"BTC-USD" = "{fid}"}}}}]')
    [src] = cfg.feeds.sources  # type: ignore[attr-defined]
    frame = {"type": "price_update", "price_feed": {"id": fid.removeprefix("0x"), "price": {
        "price": "6140993501000", "conf": "3287589234", "expo": -8, "publish_time": 1718000000}}}
    out = build_pipeline(cfg).process_frame("pyth", parser_for(src), json.dumps(frame), RECV)  # type: ignore[arg-type]
    assert [(e.symbol, e.price) for e in out.events] == [("BTC-USD", Decimal("61409.93501000"))]  # type: ignore[attr-defined]


def test_a_generic_source_without_its_price_path_is_refused_naming_the_key() -> None:
    from keeper.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^feeds\.sources\[0\]\.price_path: a generic source needs"):
        _cfg('[{kind = "generic", url = "ws://127.0.0.1:1", symbols = {X = "x"}}]')
    with pytest.raises(ConfigError, match=r"^feeds\.sources\[0\]\.price_path: only for kind 'generic'"):
        _cfg('[{kind = "bybit", url = "ws://127.0.0.1:1", symbols = {X = "x"}, price_path = "p"}]')
