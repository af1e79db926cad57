"""The reference venue's wire helpers (``PROTOCOL.md``): request signatures, the deadline
header, the batch bound, and the Binance USD-M mark-price frames it streams on ``/prices``.

Contract: ``sign`` is hex HMAC-SHA256 of the exact bytes signed; a status query signs
``status_message(intent_id)``, which can never equal a liquidation's JSON body. Frames are
compact JSON text, prices in plain decimal notation.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from decimal import Decimal

import msgspec

from keeper.sim.prices import stream_symbol

__all__ = [
    "DEADLINE_HEADER",
    "FUNDING_INTERVAL_MS",
    "MAX_BATCH",
    "mark_price_array",
    "mark_price_frame",
    "sign",
    "status_message",
]

FUNDING_INTERVAL_MS = 8 * 3600 * 1000
DEADLINE_HEADER = "X-Keeper-Deadline"
"""Unix time in ms after which a liquidation request must not be applied (optional)."""
MAX_BATCH = 1000
"""The most decisions one ``POST /liquidations/batch`` takes."""


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Keeper-Signature`` of a request body: hex HMAC-SHA256 under ``secret``."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def status_message(intent_id: str) -> bytes:
    """What ``GET /liquidations/{intent_id}`` signs: ``status:<intent_id>`` in UTF-8 (never a
    JSON body, so a status signature cannot pass for a liquidation's)."""
    return f"status:{intent_id}".encode()


def _mark_price(market: str, price: Decimal, ts_ms: int) -> dict[str, object]:
    p = format(price, "f")
    nxt = (ts_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
    return {"e": "markPriceUpdate", "E": ts_ms, "s": stream_symbol(market), "p": p, "i": p, "P": p,
            "r": "0", "T": nxt}


def mark_price_frame(market: str, price: Decimal, ts_ms: int) -> str:
    """One Binance USD-M ``markPriceUpdate`` frame for a market (``BTC-USD`` -> ``BTCUSDT``)."""
    return msgspec.json.encode(_mark_price(market, price, ts_ms)).decode()


def mark_price_array(prices: Mapping[str, Decimal], ts_ms: int) -> str:
    """One Binance ``!markPrice@arr`` frame: every market's ``markPriceUpdate`` of one tick, so a
    client sees the tick as the one instant it is (the keeper decides on it as a whole)."""
    return msgspec.json.encode([_mark_price(m, p, ts_ms) for m, p in prices.items()]).decode()
