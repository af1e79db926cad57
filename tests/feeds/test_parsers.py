"""Every parser on the venue's documented sample message, on each bad value, and fuzzed."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.feeds.guards import check_value, exponent_check
from keeper.feeds.parsers import (
    JsonPaths,
    ParseError,
    Quote,
    binance_mark_price,
    bybit_tickers,
    coinbase_ticker,
    generic_json,
    hyperliquid_all_mids,
    iso_to_us,
    pyth_hermes,
)

RECV = 1_700_000_000_000_000

# https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Mark-Price-Stream
BINANCE = {
    "e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000",
    "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167", "T": 1562306400000,
}
# https://bybit-exchange.github.io/docs/v5/websocket/public/ticker (linear, snapshot)
BYBIT = {
    "topic": "tickers.BTCUSDT", "type": "snapshot",
    "data": {
        "symbol": "BTCUSDT", "tickDirection": "PlusTick", "price24hPcnt": "0.017103",
        "lastPrice": "17216.00", "prevPrice24h": "16926.50", "highPrice24h": "17281.50",
        "lowPrice24h": "16915.00", "prevPrice1h": "17238.00", "markPrice": "17217.33",
        "indexPrice": "17227.36", "openInterest": "68744.761", "openInterestValue": "1183601235.91",
        "turnover24h": "1570383121.943499", "volume24h": "91705.276", "nextFundingTime": "1673280000000",
        "fundingRate": "-0.000212", "bid1Price": "17215.50", "bid1Size": "84.489",
        "ask1Price": "17216.00", "ask1Size": "83.020",
    },
    "cs": 24987956059, "ts": 1673272861686,
}
# https://hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/websocket/subscriptions (AllMids)
HYPERLIQUID = {"channel": "allMids", "data": {"mids": {"BTC": "67234.5", "ETH": "3456.15", "@107": "0.0312"}}}
# https://docs.pyth.network/price-feeds/api-reference (Hermes /v2/updates/price/latest, parsed)
PYTH_ID = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"
PYTH = {
    "binary": {"encoding": "hex", "data": ["504e4155"]},
    "parsed": [{
        "id": PYTH_ID,
        "price": {"price": "6140993501000", "conf": "3287589234", "expo": -8, "publish_time": 1718000000},
        "ema_price": {"price": "6141242000000", "conf": "3155950000", "expo": -8, "publish_time": 1718000000},
        "metadata": {"slot": 85480034, "proof_available_time": 1718000001, "prev_publish_time": 1717999999},
    }],
}
# https://docs.cdp.coinbase.com/exchange/websocket-feed/channels#ticker-channel
COINBASE = {
    "type": "ticker", "sequence": 37475248783, "product_id": "ETH-USD", "price": "1285.22",
    "open_24h": "1310.79", "volume_24h": "245532.79269678", "low_24h": "1280.52", "high_24h": "1313.8",
    "volume_30d": "9788783.60117027", "best_bid": "1285.04", "best_bid_size": "0.46688654",
    "best_ask": "1285.27", "best_ask_size": "1.56637040", "side": "buy",
    "time": "2022-10-19T23:28:22.061769Z", "trade_id": 370843401, "last_size": "11.4396987",
}
GENERIC_PATHS = JsonPaths(price_path="data.px", symbol_path="data.sym", time_path="data.t", time_unit="s")
GENERIC = {"data": {"sym": "SOL-USD", "px": 142.57, "t": 1718000000.25}}

PARSERS = {
    "binance": binance_mark_price(),
    "bybit": bybit_tickers(),
    "hyperliquid": hyperliquid_all_mids(),
    "pyth": pyth_hermes(ids={PYTH_ID: "BTC-USD"}),
    "coinbase": coinbase_ticker(),
    "generic": generic_json("gen", GENERIC_PATHS),
}


def _raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_binance_mark_price_sample() -> None:
    assert PARSERS["binance"](_raw(BINANCE), RECV) == [
        Quote("binance", "BTCUSDT", Decimal("11794.15000000"), 1562305380000 * 1000)]


def test_binance_combined_and_array_streams() -> None:
    other = {**BINANCE, "s": "ETHUSDT", "p": "3000.1"}
    combined = {"stream": "btcusdt@markPrice", "data": BINANCE}
    assert [q.symbol for q in PARSERS["binance"](_raw(combined), RECV)] == ["BTCUSDT"]
    batch = PARSERS["binance"](_raw([BINANCE, other]), RECV)
    assert [(q.symbol, q.price) for q in batch] == [("BTCUSDT", Decimal("11794.15")),
                                                     ("ETHUSDT", Decimal("3000.1"))]
    assert PARSERS["binance"](b'{"result":null,"id":1}', RECV) == []


def test_binance_other_event_type_is_rejected() -> None:
    with pytest.raises(ParseError) as e:
        PARSERS["binance"](_raw({**BINANCE, "e": "aggTrade"}), RECV)
    assert e.value.reason == "bad_shape"


def test_bybit_tickers_snapshot_and_delta() -> None:
    assert PARSERS["bybit"](_raw(BYBIT), RECV) == [
        Quote("bybit", "BTCUSDT", Decimal("17217.33"), 1673272861686 * 1000)]
    delta = {"topic": "tickers.BTCUSDT", "type": "delta", "data": {"symbol": "BTCUSDT", "bid1Price": "1"},
             "cs": 1, "ts": 1673272861700}
    assert PARSERS["bybit"](_raw(delta), RECV) == []
    delta["data"] = {"symbol": "BTCUSDT", "markPrice": "17218.00"}
    assert PARSERS["bybit"](_raw(delta), RECV)[0].price == Decimal("17218.00")
    ack = {"success": True, "ret_msg": "", "conn_id": "x", "op": "subscribe"}
    assert PARSERS["bybit"](_raw(ack), RECV) == []


def test_hyperliquid_all_mids_stamped_with_receive_time() -> None:
    quotes = PARSERS["hyperliquid"](_raw(HYPERLIQUID), RECV)
    assert {(q.symbol, q.price) for q in quotes} == {
        ("BTC", Decimal("67234.5")), ("ETH", Decimal("3456.15")), ("@107", Decimal("0.0312"))}
    assert {q.publish_time for q in quotes} == {RECV}
    assert PARSERS["hyperliquid"](b'{"channel":"subscriptionResponse","data":{}}', RECV) == []


def test_pyth_scales_price_and_conf_by_exponent() -> None:
    [q] = PARSERS["pyth"](_raw(PYTH), RECV)
    assert q == Quote("pyth", "BTC-USD", Decimal("61409.93501000"), 1718000000 * 1_000_000,
                      Decimal("32.87589234"))
    ws_form = {"type": "price_update", "price_feed": {"id": PYTH_ID, **PYTH["parsed"][0]}}  # type: ignore[index]
    assert PARSERS["pyth"](_raw(ws_form), RECV) == [q]


@pytest.mark.parametrize("expo", [2, 0 + 1, -40])
def test_pyth_wrong_exponent_is_rejected(expo: int) -> None:
    bad = json.loads(json.dumps(PYTH))
    bad["parsed"][0]["price"]["expo"] = expo
    with pytest.raises(ParseError) as e:
        PARSERS["pyth"](_raw(bad), RECV)
    assert e.value.reason == "wrong_exponent"


def test_coinbase_ticker_time_is_exact_microseconds() -> None:
    [q] = PARSERS["coinbase"](_raw(COINBASE), RECV)
    assert q == Quote("coinbase", "ETH-USD", Decimal("1285.22"), 1666222102061769)
    assert PARSERS["coinbase"](b'{"type":"subscriptions","channels":[]}', RECV) == []
    assert iso_to_us("2022-10-19T23:28:22.061769123Z") == 1666222102061769
    assert iso_to_us("1970-01-01T00:00:01+00:00") == 1_000_000


def test_generic_json_by_paths_keeps_the_literal_exact() -> None:
    [q] = PARSERS["generic"](_raw(GENERIC), RECV)
    assert q == Quote("gen", "SOL-USD", Decimal("142.57"), 1718000000250000)
    no_time = generic_json("g2", JsonPaths(price_path="0.p", symbol="X"))
    assert no_time(b'[{"p": "1.5"}]', RECV) == [Quote("g2", "X", Decimal("1.5"), RECV)]


# ---------------------------------------------------------------- bad values, each kind

def _with_price(name: str, price: str) -> bytes:
    if name == "binance":
        return _raw({**BINANCE, "p": price})
    if name == "bybit":
        return _raw({**BYBIT, "data": {**BYBIT["data"], "markPrice": price}})  # type: ignore[dict-item]
    if name == "hyperliquid":
        return _raw({"channel": "allMids", "data": {"mids": {"BTC": price}}})
    if name == "pyth":
        bad = json.loads(json.dumps(PYTH))
        bad["parsed"][0]["price"]["price"] = price
        return _raw(bad)
    if name == "coinbase":
        return _raw({**COINBASE, "price": price})
    return _raw({"data": {**GENERIC["data"], "px": price}})


@pytest.mark.parametrize("name", sorted(PARSERS))
@pytest.mark.parametrize(("price", "reason"), [("NaN", "nan"), ("Infinity", "infinite"),
                                               ("-Infinity", "infinite"), ("0", "zero"), ("0.000", "zero"),
                                               ("-5", "negative")])
def test_bad_values_parse_then_guard_rejects(name: str, price: str, reason: str) -> None:
    quotes = PARSERS[name](_with_price(name, price), RECV)
    assert quotes
    assert {check_value(q) for q in quotes} == {reason}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_non_numeric_price_is_a_parse_error(name: str) -> None:
    with pytest.raises(ParseError) as e:
        PARSERS[name](_with_price(name, "12a.5"), RECV)
    assert e.value.reason == "bad_price"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_mis_scaled_price_fails_the_exponent_guard(name: str) -> None:
    [q, *_] = PARSERS[name](_with_price(name, "1E+40" if name != "pyth" else "1" + "0" * 45), RECV)
    assert check_value(q) is None
    assert exponent_check()(q) == "wrong_exponent"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_truncated_frame_is_bad_json(name: str) -> None:
    raw = _with_price(name, "100")
    with pytest.raises(ParseError) as e:
        PARSERS[name](raw[: len(raw) // 2], RECV)
    assert e.value.reason == "bad_json"


# ---------------------------------------------------------------- fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(["e", "E", "s", "p", "topic", "type", "data", "ts", "channel", "mids", "parsed",
                         "price", "expo", "conf", "publish_time", "id", "product_id", "time", "px", "sym",
                         "t", "markPrice", "stream", "price_feed"])
_shaped = st.recursive(
    st.none() | st.integers() | st.text(max_size=12) | st.sampled_from(
        ["markPriceUpdate", "tickers.BTC", "snapshot", "allMids", "ticker", "price_update", "NaN", "1e999"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_keys, c, max_size=6),
    max_leaves=25,
)


def _never_raises_past_boundary(raw: bytes | str) -> None:
    for parser in PARSERS.values():
        try:
            out = parser(raw, RECV)
        except ParseError:
            continue
        assert all(isinstance(q, Quote) for q in out)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _never_raises_past_boundary(raw)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fuzz_random_json(obj: object) -> None:
    _never_raises_past_boundary(json.dumps(obj))


@settings(max_examples=500, deadline=None)
@given(_shaped)
def test_fuzz_venue_shaped_json(obj: object) -> None:
    _never_raises_past_boundary(json.dumps(obj).encode())
