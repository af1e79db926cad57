"""Parsers: one small pure function per source format, bytes in, normalised quotes out.

A parser has the shape ``parse(raw, received_us) -> list[Quote]``. It either returns the quotes
the message carries (an empty list for control messages such as subscription acks, or a delta
that does not touch the price) or raises ``ParseError`` with a short reason code; it never
raises anything else, whatever the bytes (fuzzed with hypothesis in tests/feeds).

Parsers do not judge values: a ``"NaN"`` or ``"-1"`` price parses into a quote and is rejected
by ``keeper.feeds.guards`` with a counted reason, so every rejection is counted in one place.
Text that is not a number at all is a ``ParseError`` (``bad_price``). Prices stay ``Decimal``
(parsed from the venue's decimal string, or from the JSON literal itself: never via a float).
Times are normalised to integer microseconds since the Unix epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from keeper.errors import EventError

__all__ = [
    "EPOCH",
    "MAX_TIME_US",
    "JsonPaths",
    "ParseError",
    "Parser",
    "Quote",
    "binance_mark_price",
    "bybit_tickers",
    "coinbase_ticker",
    "generic_json",
    "hyperliquid_all_mids",
    "iso_to_us",
    "pyth_hermes",
    "to_decimal",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_TIME_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}


class ParseError(EventError):
    """A message that cannot be read as quotes. ``reason`` is a short code.

    Codes: ``bad_json``, ``bad_shape``, ``missing_field``, ``bad_price``, ``bad_time``,
    ``wrong_exponent``, ``venue_error`` (the venue refused a subscription or reported an error:
    ``detail`` carries its words).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Quote(msgspec.Struct, frozen=True, gc=False):
    """One source's price for one symbol at its publish time (µs). Not yet guarded."""

    source: str
    symbol: str
    price: Decimal
    publish_time: int
    conf: Decimal | None = None


Parser = Callable[[bytes | str, int], list[Quote]]
"""``parse(raw, received_us)``: ``received_us`` stamps formats that carry no time of their own."""

_json_decimal = msgspec.json.Decoder(float_hook=Decimal)


def _load(raw: bytes | str) -> Any:
    try:
        return _json_decimal.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ParseError("bad_json", str(exc)[:200]) from None


def to_decimal(value: object, what: str = "price") -> Decimal:
    """A JSON number or decimal string as ``Decimal`` (never through a float); else ParseError."""
    if type(value) is str and len(value) <= 64:  # the hot path: venues send decimal strings
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
    if isinstance(value, bool):
        raise ParseError(f"bad_{what}", repr(value)[:80])
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if type(value) is str and len(value) <= 64:
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            pass
    raise ParseError(f"bad_{what}", repr(value)[:80])


def _int(value: object, what: str = "time") -> int:
    if isinstance(value, bool):
        raise ParseError(f"bad_{what}", repr(value))
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) <= 24:
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    raise ParseError(f"bad_{what}", repr(value)[:80])


def _time_us(value: object, unit: str) -> int:
    """A timestamp in ``unit`` (s, ms, us, ns, or iso) as µs since the epoch, exactly."""
    if unit == "iso":
        return iso_to_us(value)
    if unit not in _TIME_UNITS:
        raise ParseError("bad_time", f"unknown unit {unit}")
    if isinstance(value, Decimal):
        # fractional seconds (1718000000.123) are common in generic feeds
        if not value.is_finite():
            raise ParseError("bad_time", str(value))
        scale = _TIME_UNITS[unit]
        us = value * scale if scale is not None else value / 1000
        t = int(us.to_integral_value())
    else:
        n = _int(value)
        scale = _TIME_UNITS[unit]
        t = n * scale if scale is not None else n // 1000
    if not 0 < t < 10**17:  # before 1970 or after year 5000: not a real publish time
        raise ParseError("bad_time", repr(value)[:80])
    return t


MAX_TIME_US = 10**17
"""Times at or past this (the year 5138) are not real publish times; nor are times before 1970."""


def iso_to_us(value: object) -> int:
    """An ISO-8601 time (``2022-10-19T23:28:22.061769Z``, ``...+02:00``; UTC without an offset)
    as µs since the epoch; a time before 1970 or after the year 5000 is ``bad_time``."""
    if not isinstance(value, str) or len(value) > 40:
        raise ParseError("bad_time", repr(value)[:80])
    text = value.strip()
    # fromisoformat takes at most 6 fractional digits; venues send up to 9 (ns). The fraction is
    # the run of digits after the point: an offset after it (+02:00) is kept as it is.
    if "." in text:
        head, _, frac = text.partition(".")
        n = len(frac) - len(frac.lstrip("0123456789"))
        text = f"{head}.{(frac[:n] + '000000')[:6]}{frac[n:]}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ParseError("bad_time", repr(value)[:80]) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    us = (dt - EPOCH) // _US
    if not 0 <= us < MAX_TIME_US:
        raise ParseError("bad_time", f"{value!r} is before 1970 or too far ahead"[:80])
    return us


def _said(words: object) -> str:
    """What a venue's error message says, short (a dict's ``msg``/``message``/``error`` first)."""
    if isinstance(words, dict):
        for k in ("msg", "message", "ret_msg", "error"):
            if isinstance(words.get(k), str):
                code = words.get("code", words.get("ret_code"))
                return (f"{words[k]} (code {code})" if code is not None else words[k])[:200]
    return str(words)[:200]


def _get(obj: Any, key: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ParseError("missing_field", key)
    return obj[key]


def _guarded(fn: Parser) -> Parser:
    """Holds the parser boundary: anything but a ParseError becomes ``ParseError('bad_shape')``."""

    def parse(raw: bytes | str, received_us: int) -> list[Quote]:
        try:
            return fn(raw, received_us)
        except ParseError:
            raise
        except Exception as exc:  # the boundary: a parser never raises anything else
            raise ParseError("bad_shape", f"{type(exc).__name__}: {exc}"[:200]) from None

    parse.__name__ = fn.__name__
    parse.__doc__ = fn.__doc__
    return parse


# ---------------------------------------------------------------- Binance USD-M markPrice


class _BinanceMark(msgspec.Struct):
    e: str
    E: int
    s: str
    p: str


class _BinanceCombined(msgspec.Struct):
    stream: str
    data: _BinanceMark | list[_BinanceMark]


_bn_one = msgspec.json.Decoder(_BinanceMark)
_bn_many = msgspec.json.Decoder(list[_BinanceMark])
_bn_combined = msgspec.json.Decoder(_BinanceCombined)


def binance_mark_price(source: str = "binance") -> Parser:
    """Binance USD-M ``<symbol>@markPrice`` (and ``!markPrice@arr``, and combined streams).

    Publish time is the event time ``E`` (ms); the price is the mark price ``p``. Subscription
    replies (``{"result": null, "id": 1}``) yield no quotes.
    """

    def one(m: _BinanceMark) -> Quote:
        if m.e != "markPriceUpdate":
            raise ParseError("bad_shape", f"event type {m.e!r}")
        if not 0 < m.E < 10**14:
            raise ParseError("bad_time", str(m.E))
        return Quote(source, m.s, to_decimal(m.p), m.E * 1000)

    def parse_binance(raw: bytes | str, received_us: int) -> list[Quote]:
        # told apart by their first key, whitespace between the tokens whatever it is
        head = "".join((raw[:64] if isinstance(raw, str) else raw[:64].decode("latin-1")).split())
        try:
            if head.startswith("["):
                return [one(m) for m in _bn_many.decode(raw)]
            if head.startswith('{"stream"'):
                c = _bn_combined.decode(raw)
                return [one(m) for m in (c.data if isinstance(c.data, list) else [c.data])]
            if head.startswith('{"e"'):
                return [one(_bn_one.decode(raw))]
            msg = _load(raw)
            if isinstance(msg, dict) and msg.get("error") is not None:
                raise ParseError("venue_error", _said(msg["error"]))  # {"error": {"code", "msg"}, "id"}
            if isinstance(msg, dict) and ("result" in msg or "id" in msg):
                return []
            return [one(_bn_one.decode(raw))]
        except msgspec.ValidationError as exc:
            raise ParseError("bad_shape", str(exc)[:200]) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ParseError("bad_json", str(exc)[:200]) from None

    return _guarded(parse_binance)


# ---------------------------------------------------------------- Bybit v5 tickers


def bybit_tickers(source: str = "bybit") -> Parser:
    """Bybit v5 public ``tickers.<symbol>`` (snapshot and delta); price = ``data.markPrice``.

    A delta without ``markPrice`` carries no new price and yields no quotes; ``ts`` (ms) is the
    publish time. Operation replies (``{"success": true, "op": "subscribe"}``) yield no quotes;
    a refused one (``"success": false``) is ``ParseError('venue_error')`` with its ``ret_msg``.
    """

    def parse_bybit(raw: bytes | str, received_us: int) -> list[Quote]:
        msg = _load(raw)
        if isinstance(msg, dict) and "op" in msg and "topic" not in msg:
            if msg.get("success") is False:  # a refused subscription: say why, now
                raise ParseError("venue_error", f"{msg.get('op')}: {_said(msg)}")
            return []
        topic = _get(msg, "topic")
        if not isinstance(topic, str) or not topic.startswith("tickers."):
            raise ParseError("bad_shape", f"topic {topic!r}"[:80])
        if _get(msg, "type") not in ("snapshot", "delta"):
            raise ParseError("bad_shape", "type")
        data = _get(msg, "data")
        if not isinstance(data, dict):
            raise ParseError("bad_shape", "data")
        if "markPrice" not in data:
            return []
        symbol = data.get("symbol", topic.removeprefix("tickers."))
        if not isinstance(symbol, str):
            raise ParseError("bad_shape", "symbol")
        return [Quote(source, symbol, to_decimal(data["markPrice"]), _time_us(_get(msg, "ts"), "ms"))]

    return _guarded(parse_bybit)


# ---------------------------------------------------------------- Hyperliquid allMids


def hyperliquid_all_mids(source: str = "hyperliquid") -> Parser:
    """Hyperliquid ``allMids``: ``{"channel": "allMids", "data": {"mids": {coin: px}}}``.

    The message carries no time: quotes are stamped with ``received_us``. Other channels
    (``subscriptionResponse``, ``pong``) yield no quotes; the ``error`` channel is
    ``ParseError('venue_error')`` with its text.
    """

    def parse_hl(raw: bytes | str, received_us: int) -> list[Quote]:
        msg = _load(raw)
        channel = _get(msg, "channel")
        if channel == "error":  # {"channel": "error", "data": "Invalid subscription ..."}
            raise ParseError("venue_error", _said(msg.get("data")))
        if channel != "allMids":
            if isinstance(channel, str):
                return []
            raise ParseError("bad_shape", "channel")
        mids = _get(_get(msg, "data"), "mids")
        if not isinstance(mids, dict):
            raise ParseError("bad_shape", "mids")
        return [Quote(source, str(coin), to_decimal(px), received_us) for coin, px in sorted(mids.items())]

    return _guarded(parse_hl)


# ---------------------------------------------------------------- Pyth Hermes


def pyth_hermes(source: str = "pyth", ids: Mapping[str, str] | None = None,
                expo_range: tuple[int, int] = (-18, 0)) -> Parser:
    """Pyth Hermes price updates: ``price = price * 10^expo``, ``conf`` likewise.

    Reads the REST/SSE form (``{"parsed": [{"id", "price": {...}}]}``) and the websocket form
    (``{"type": "price_update", "price_feed": {...}}``). ``ids`` maps feed ids (hex, with or
    without ``0x``) to symbols; unmapped ids keep the id as symbol. An exponent outside
    ``expo_range`` (inclusive; positive ones by default) is ``ParseError('wrong_exponent')``.
    ``publish_time`` is in seconds.
    """
    names = {k.lower().removeprefix("0x"): v for k, v in (ids or {}).items()}
    lo, hi = expo_range

    def feed(obj: Any) -> Quote:
        fid = _get(obj, "id")
        if not isinstance(fid, str):
            raise ParseError("bad_shape", "id")
        px = _get(obj, "price")
        expo = _int(_get(px, "expo"), "exponent")
        if not lo <= expo <= hi:
            raise ParseError("wrong_exponent", f"{expo} outside [{lo}, {hi}]")
        price = to_decimal(_get(px, "price")).scaleb(expo)
        conf = to_decimal(_get(px, "conf"), "conf").scaleb(expo)
        key = fid.lower().removeprefix("0x")
        return Quote(source, names.get(key, fid), price, _time_us(_get(px, "publish_time"), "s"), conf)

    def parse_pyth(raw: bytes | str, received_us: int) -> list[Quote]:
        msg = _load(raw)
        if isinstance(msg, dict) and msg.get("type") == "price_update":
            return [feed(_get(msg, "price_feed"))]
        if isinstance(msg, dict) and "type" in msg and "parsed" not in msg:
            if msg.get("status") == "error" or msg.get("type") == "error":
                raise ParseError("venue_error", _said(msg))  # {"type": "response", "status": "error"}
            return []  # {"type": "response", "status": "success"}
        parsed = _get(msg, "parsed")
        if not isinstance(parsed, list):
            raise ParseError("bad_shape", "parsed")
        return [feed(f) for f in parsed]

    return _guarded(parse_pyth)


# ---------------------------------------------------------------- Coinbase ticker


def coinbase_ticker(source: str = "coinbase") -> Parser:
    """Coinbase Exchange ``ticker`` channel: ``product_id``, ``price``, ``time`` (ISO-8601).

    ``subscriptions``/``heartbeat`` messages yield no quotes; ``error`` is
    ``ParseError('venue_error')`` with its message.
    """

    def parse_cb(raw: bytes | str, received_us: int) -> list[Quote]:
        msg = _load(raw)
        kind = _get(msg, "type")
        if kind == "error":
            raise ParseError("venue_error", _said(msg))
        if kind != "ticker":
            if isinstance(kind, str):
                return []
            raise ParseError("bad_shape", "type")
        symbol = _get(msg, "product_id")
        if not isinstance(symbol, str):
            raise ParseError("bad_shape", "product_id")
        return [Quote(source, symbol, to_decimal(_get(msg, "price")), iso_to_us(_get(msg, "time")))]

    return _guarded(parse_cb)


# ---------------------------------------------------------------- generic JSON


@dataclass(frozen=True)
class JsonPaths:
    """Where a generic JSON source keeps its fields: dotted paths (``data.0.px``).

    ``symbol_path`` may be empty when ``symbol`` is fixed; ``time_path`` empty stamps quotes
    with the receive time. ``time_unit`` is ``s``, ``ms``, ``us``, ``ns`` or ``iso``.
    """

    price_path: str
    symbol_path: str = ""
    time_path: str = ""
    time_unit: str = "ms"
    symbol: str = ""


def _walk(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, list) and part.lstrip("-").isdigit():
            i = int(part)
            if not -len(obj) <= i < len(obj):
                raise ParseError("missing_field", path)
            obj = obj[i]
        else:
            obj = _get(obj, part)
    return obj


def generic_json(source: str, paths: JsonPaths) -> Parser:
    """A JSON source described by field paths (see ``JsonPaths``)."""
    if not paths.symbol and not paths.symbol_path:
        raise ValueError("generic_json needs symbol_path or a fixed symbol")

    def parse_generic(raw: bytes | str, received_us: int) -> list[Quote]:
        msg = _load(raw)
        symbol = paths.symbol or _walk(msg, paths.symbol_path)
        if not isinstance(symbol, str) or not symbol:
            raise ParseError("bad_shape", "symbol")
        t = _time_us(_walk(msg, paths.time_path), paths.time_unit) if paths.time_path else received_us
        return [Quote(source, symbol, to_decimal(_walk(msg, paths.price_path)), t)]

    return _guarded(parse_generic)
