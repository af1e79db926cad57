"""Price paths the reference venue plays: a seeded synthetic crash, and an adapter for any
sequence of ``(ts_us, {symbol: price})``.

A **path** is a list of ``Tick(ts_us, prices)``, ``ts_us`` strictly increasing, prices keyed by
the keeper's market names (``BTC-USD``) as positive finite ``Decimal``. ``normalise_symbol``
maps the spellings found in recorded data (``BTCUSDT``, ``BTC/USDT``, ``BTCUSD_PERP``,
``BTC-USD``, ``BTC``) to that name; ``stream_symbol`` maps it to the Binance-style symbol of the
``/prices`` stream (``BTC-USD`` -> ``BTCUSDT``).

The synthetic crash (``synthetic_crash``), for when ``../shared/data`` is absent, with its
default parameters: BTC −25%, ETH −35%, SOL −45% from 60,000 / 3,000 / 150 over 30 minutes in
1 s steps; the fall follows a smoothstep curve with seeded Gaussian noise (0.05% of the price
per step, a random walk pulled back to the curve); at 60% of the window every market wicks a
further 10% down and back over 60 s (a triangle); prices are rounded to each market's tick.
The same seed and parameters give the same path.
"""

from __future__ import annotations

import csv
import gzip
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import NamedTuple

import msgspec

__all__ = [
    "QUOTES",
    "CrashParams",
    "Tick",
    "load_file",
    "normalise_symbol",
    "price_path",
    "stream_symbol",
    "synthetic_crash",
]

QUOTES = ("USDT", "USDC", "BUSD", "USD")


class Tick(NamedTuple):
    ts_us: int
    prices: dict[str, Decimal]


def normalise_symbol(symbol: str) -> str:
    """The keeper's market name of a recorded symbol: ``BTCUSDT``/``BTC/USDT``/``BTC`` -> ``BTC-USD``."""
    s = symbol.upper().strip()
    for suffix in ("_PERP", "-PERP", ":USDT", ":USD"):
        s = s.removesuffix(suffix)
    for sep in ("/", "-", "_"):
        if sep in s:
            return f"{s.split(sep)[0]}-USD"
    for q in QUOTES:
        if s.endswith(q) and len(s) > len(q):
            return f"{s[: -len(q)]}-USD"
    return f"{s}-USD"


def stream_symbol(market: str) -> str:
    """The ``/prices`` stream symbol of a market name: ``BTC-USD`` -> ``BTCUSDT``."""
    return f"{market.split('-', maxsplit=1)[0]}USDT"


def _decimal(v: object) -> Decimal:
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    if not d.is_finite() or d <= 0:
        raise ValueError(f"price must be finite and > 0, got {v!r}")
    return d


def price_path(ticks: Iterable[tuple[int, Mapping[str, object]]]) -> list[Tick]:
    """Adapt any ``(ts_us, {symbol: price})`` sequence (e.g. ``keeper.feeds.recorded``'s output).

    Symbols are normalised, prices converted to ``Decimal`` (floats through ``str``) and checked,
    ticks with the same ``ts_us`` merged; raises ``ValueError`` when time goes backwards.
    """
    out: list[Tick] = []
    for raw_ts, prices in ticks:
        ts = int(raw_ts)
        norm = {normalise_symbol(k): _decimal(v) for k, v in prices.items()}
        if out and ts == out[-1].ts_us:
            out[-1].prices.update(norm)
        elif out and ts < out[-1].ts_us:
            raise ValueError(f"price path goes back in time at {ts} (after {out[-1].ts_us})")
        else:
            out.append(Tick(ts, norm))
    return out


@dataclass(frozen=True)
class CrashParams:
    """The synthetic crash's parameters (see the module docstring for their meaning)."""

    start_prices: tuple[tuple[str, Decimal], ...] = (
        ("BTC-USD", Decimal(60000)), ("ETH-USD", Decimal(3000)), ("SOL-USD", Decimal(150)))
    drops: tuple[tuple[str, float], ...] = (("BTC-USD", -0.25), ("ETH-USD", -0.35), ("SOL-USD", -0.45))
    duration_s: int = 1800
    step_s: int = 1
    wick: float = 0.10
    wick_at: float = 0.6
    wick_s: int = 60
    noise: float = 0.0005
    start_us: int = 1_760_054_400_000_000  # 2025-10-10T00:00:00Z
    ticks: tuple[tuple[str, Decimal], ...] = (
        ("BTC-USD", Decimal("0.1")), ("ETH-USD", Decimal("0.01")), ("SOL-USD", Decimal("0.001")))


def synthetic_crash(seed: int = 1, params: CrashParams | None = None) -> list[Tick]:
    """A seeded synthetic crash path (deterministic for ``seed`` and ``params``)."""
    p = params or CrashParams()
    rng = random.Random(seed)
    drops = dict(p.drops)
    ticks = dict(p.ticks)
    steps = p.duration_s // p.step_s
    wick_mid = p.wick_at * p.duration_s
    noise = dict.fromkeys(drops, 0.0)
    out: list[Tick] = []
    for i in range(steps + 1):
        t = i * p.step_s
        x = t / p.duration_s
        curve = x * x * (3 - 2 * x)
        wick = max(0.0, 1 - abs(t - wick_mid) / (p.wick_s / 2)) * p.wick
        prices: dict[str, Decimal] = {}
        for market, start in p.start_prices:
            if 0 < i < steps:
                noise[market] = 0.9 * noise[market] + rng.gauss(0.0, p.noise)
            else:
                noise[market] = 0.0  # the path starts and ends exactly at the stated prices
            factor = (1 + drops.get(market, 0.0) * curve) * (1 - wick) * math.exp(noise[market])
            tick = ticks.get(market, Decimal("0.0001"))
            price = (start * Decimal(repr(factor))).quantize(tick, rounding=ROUND_HALF_EVEN)
            prices[market] = max(price, tick)
        out.append(Tick(p.start_us + t * 1_000_000, prices))
    return out


def load_file(path: str | Path) -> list[Tick]:
    """Read a price path from a file: NDJSON or CSV, optionally gzip-compressed.

    - NDJSON: one object a line, ``{"ts_us": 1760054400000000, "prices": {"BTCUSDT": "60000"}}``.
    - CSV with a header ``ts_us,symbol,price`` (one row per symbol and time).
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    name = p.name.removesuffix(".gz")
    with opener(p, "rt", encoding="utf-8") as f:
        if name.endswith((".ndjson", ".jsonl", ".json")):
            rows = [msgspec.json.decode(line) for line in f if line.strip()]
            return price_path((int(r["ts_us"]), r["prices"]) for r in rows)
        reader = csv.DictReader(f)
        grouped: dict[int, dict[str, str]] = {}
        for row in reader:
            grouped.setdefault(int(row["ts_us"]), {})[row["symbol"]] = row["price"]
        return price_path(sorted(grouped.items()))
