"""Recorded prices as a source: loaders for ``../shared/data`` formats and a paced player.

Formats (see ``../shared/data/README.md``):

- the tidy CSV (``event_windows_tidy.csv.gz``): ``event, source, venue, market, symbol,
  resolution, ts, open, high, low, close, volume``, filtered by event, source and symbols;
- freqtrade JSON (``.json``/``.json.gz``: ``[[open_ms, o, h, l, c, v], ...]``) and feather
  (``date, open, high, low, close, volume``); CoinAPI OHLCV JSON (the stablesims ETH files);
- Tardis-style trades CSV (``exchange,symbol,timestamp,local_timestamp,id,side,price,amount``,
  times in µs);
- data.binance.vision klines (a ``.zip`` holding one CSV, ``open_time`` in ms, header optional).

Prices are kept exact: decimal text is parsed as ``Decimal``; feather doubles go through their
shortest round-trip text (``repr``), i.e. the number as the writer printed it. Bars become quotes
at their close (published at bar open + resolution) or, with ``path="ohlc"``, as four quotes
walking open, the extreme the bar reached first (low first in a falling bar, high first in a
rising one), the other extreme, close, at open + 0, 1/4, 1/2 and 3/4 of the bar, so that wicks
reach the guards and the keeper.

The ``Player`` streams quotes through the ingest's normaliser (the same guards and combiner as
live) at real time, xN, or as fast as possible, with the data's own time as the clock of the
staleness watchdog.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import itertools
import os
import time
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import structlog

from keeper.feeds.ingest import Ingest
from keeper.feeds.parsers import Quote, iso_to_us

__all__ = [
    "INDEX",
    "ROOT",
    "TIDY",
    "Bar",
    "Player",
    "Series",
    "bar_quotes",
    "data_dir",
    "list_windows",
    "load_binance_klines",
    "load_coinapi_json",
    "load_feather",
    "load_file",
    "load_freqtrade_json",
    "load_tidy",
    "load_trades",
    "merge_quotes",
    "parse_speed",
]

log = structlog.get_logger()

ROOT = Path(__file__).resolve().parents[2]
TIDY = "event_windows_tidy.csv.gz"
INDEX = "event_windows_index.csv"


def data_dir(override: str | Path | None = None) -> Path:
    """The recorded-data folder: ``override``, else ``$KEEPER_DATA_DIR``, else ``../shared/data``."""
    if override is not None:
        return Path(override)
    env = os.environ.get("KEEPER_DATA_DIR")
    if env:
        return Path(env)
    shared = os.environ.get("KEEPER_SHARED_DIR")
    return Path(shared) / "data" if shared else ROOT.parent / "shared" / "data"


class Bar(NamedTuple):
    """One OHLC bar: ``ts_us`` is the bar's open time."""

    ts_us: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


class Series(NamedTuple):
    """A loaded recording: one symbol's bars or trades from one source."""

    source: str
    symbol: str
    resolution_us: int
    bars: list[Bar]


def _open(path: Path) -> io.TextIOWrapper:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _float_text(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def _gap(bars: Sequence[Bar]) -> int:
    gaps = sorted(b.ts_us - a.ts_us for a, b in itertools.pairwise(bars) if b.ts_us > a.ts_us)
    return gaps[len(gaps) // 2] if gaps else 60_000_000


def _names(path: Path) -> tuple[str, str]:
    """(source, symbol) guessed from a freqtrade-style file name: ``BTC_USDT-5m.json.gz``."""
    stem = path.name.split(".")[0]
    pair = stem.split("-")[0]
    for prefix in ("NFI_", "GeneTrader_"):
        pair = pair.removeprefix(prefix)
    parts = pair.split("_")
    symbol = f"{parts[0]}/{parts[1]}" if len(parts) >= 2 else pair
    return "binance", symbol


_ft_decoder = msgspec.json.Decoder(list[tuple[int, Decimal, Decimal, Decimal, Decimal, Any]],
                                   float_hook=Decimal)


def load_freqtrade_json(path: str | Path, symbol: str | None = None, source: str | None = None) -> Series:
    """freqtrade ``[[open_ms, o, h, l, c, v], ...]`` (``.json`` or ``.json.gz``)."""
    p = Path(path)
    data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    rows = _ft_decoder.decode(data)
    bars = [Bar(ms * 1000, Decimal(o), Decimal(h), Decimal(lo), Decimal(c)) for ms, o, h, lo, c, _ in rows]
    src, sym = _names(p)
    return Series(source or src, symbol or sym, _gap(bars), bars)


class _CoinApiBar(msgspec.Struct):
    time_period_start: str
    price_open: Decimal
    price_high: Decimal
    price_low: Decimal
    price_close: Decimal


_coinapi_decoder = msgspec.json.Decoder(list[_CoinApiBar], float_hook=Decimal)


def load_coinapi_json(path: str | Path, symbol: str = "ETH/USD", source: str = "coinapi") -> Series:
    """CoinAPI OHLCV export (``time_period_start``, ``price_open`` ..., the stablesims files)."""
    rows = _coinapi_decoder.decode(Path(path).read_bytes())
    bars = [Bar(iso_to_us(r.time_period_start), r.price_open, r.price_high, r.price_low, r.price_close)
            for r in rows]
    return Series(source, symbol, _gap(bars), bars)


def load_feather(path: str | Path, symbol: str | None = None, source: str | None = None) -> Series:
    """freqtrade feather (``date`` as a UTC timestamp, ``open..close`` doubles)."""
    import pyarrow as pa  # noqa: PLC0415 (heavy; only for this format)
    from pyarrow import feather  # noqa: PLC0415

    table = feather.read_table(str(path), columns=["date", "open", "high", "low", "close"])
    dates = table.column("date").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    cols = [table.column(c).to_pylist() for c in ("open", "high", "low", "close")]
    bars = [Bar(t, _float_text(o), _float_text(h), _float_text(lo), _float_text(c))
            for t, o, h, lo, c in zip(dates, *cols, strict=True)]
    src, sym = _names(Path(path))
    return Series(source or src, symbol or sym, _gap(bars), bars)


def load_binance_klines(path: str | Path, symbol: str | None = None, source: str = "binance") -> Series:
    """data.binance.vision klines: a ``.zip`` of one CSV (``open_time`` ms, then o, h, l, c)."""
    p = Path(path)
    with zipfile.ZipFile(p) as z:
        name = z.namelist()[0]
        text = z.read(name).decode()
    bars = []
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0].isdigit():
            continue  # the header (newer dumps have one)
        t = int(row[0])
        t_us = t * 1000 if t < 10**14 else t  # dumps since 2025 may be in µs
        bars.append(Bar(t_us, Decimal(row[1]), Decimal(row[2]), Decimal(row[3]), Decimal(row[4])))
    return Series(source, symbol or p.name.split("-")[0], _gap(bars), bars)


def load_trades(path: str | Path, symbol: str | None = None) -> Series:
    """Tardis-style trades CSV; each trade is a bar with o=h=l=c=price at its exchange time."""
    bars = []
    exchange = sym = ""
    with _open(Path(path)) as f:
        for row in csv.DictReader(f):
            exchange, sym = row["exchange"], row["symbol"]
            px = Decimal(row["price"])
            bars.append(Bar(int(row["timestamp"]), px, px, px, px))
    return Series(exchange or "trades", symbol or sym, 0, bars)


def load_tidy(path: str | Path, event: str, *, source: str | None = None,
              symbols: Iterable[str] | None = None, venue: str | None = None) -> list[Series]:
    """Series of ``event`` from the tidy CSV, one per (venue-market, symbol).

    ``source`` matches a substring of the ``source`` column (``owner/repo@commit``); where a
    symbol exists at several resolutions (2024-08-05: 1m and 5m) only the finest is kept.
    """
    wanted = set(symbols) if symbols is not None else None
    found: dict[tuple[str, str, int], list[Bar]] = {}
    with _open(Path(path)) as f:
        for row in csv.DictReader(f):
            if row["event"] != event or (wanted is not None and row["symbol"] not in wanted):
                continue
            if source is not None and source not in row["source"]:
                continue
            if venue is not None and row["venue"] != venue:
                continue
            h, m, s = (int(x) for x in row["resolution"].split(":"))
            res = ((h * 60 + m) * 60 + s) * 1_000_000
            src = f"{row['venue']}-{row['market'].split('(')[0]}"
            bar = Bar(iso_to_us(row["ts"]), Decimal(row["open"]), Decimal(row["high"]), Decimal(row["low"]),
                      Decimal(row["close"]))
            found.setdefault((src, row["symbol"], res), []).append(bar)
    finest: dict[tuple[str, str], tuple[int, list[Bar]]] = {}
    for (src, sym, res), bars in sorted(found.items()):
        if (src, sym) not in finest or res < finest[(src, sym)][0]:
            finest[(src, sym)] = (res, sorted(bars))
    return [Series(src, sym, res, bars) for (src, sym), (res, bars) in sorted(finest.items())]


def load_file(path: str | Path, symbol: str | None = None) -> Series:
    """Any single-file format, by its name."""
    name = Path(path).name
    if name.endswith(".zip"):
        return load_binance_klines(path, symbol)
    if name.endswith(".feather"):
        return load_feather(path, symbol)
    if name.endswith((".csv", ".csv.gz")):
        return load_trades(path, symbol)
    if name.endswith(".json") and Path(path).read_bytes()[:64].lstrip()[1:].lstrip().startswith(b"{"):
        return load_coinapi_json(path, symbol or "ETH/USD")
    if name.endswith((".json", ".json.gz")):
        return load_freqtrade_json(path, symbol)
    raise ValueError(f"unknown recording format: {name}")


def list_windows(folder: str | Path | None = None) -> list[dict[str, str]]:
    """The recorded windows: the tidy index rows, then the single files under the folder."""
    d = data_dir(folder)
    out: list[dict[str, str]] = []
    index = d / INDEX
    if index.is_file():
        with index.open(newline="") as f:
            out.extend({"kind": "tidy", **row} for row in csv.DictReader(f))
    kinds = (".json", ".json.gz", ".feather", ".zip", ".csv.gz")
    for p in sorted(d.glob("*/*")):
        if p.name.endswith(kinds) and "bookDepth" not in p.name:
            out.append({"kind": "file", "event": p.parent.name, "path": str(p.relative_to(d))})
    return out


# ---------------------------------------------------------------- bars -> quotes


def bar_quotes(series: Series, *, path: str = "close", symbol: str | None = None) -> Iterator[Quote]:
    """Quotes of one series (see the module docstring for the timing of ``close`` and ``ohlc``)."""
    sym = symbol or series.symbol
    res = series.resolution_us
    for b in series.bars:
        if res == 0:  # trades
            yield Quote(series.source, sym, b.close, b.ts_us)
        elif path == "close":
            yield Quote(series.source, sym, b.close, b.ts_us + res)
        elif path == "ohlc":
            first, second = (b.low, b.high) if b.close < b.open else (b.high, b.low)
            for k, px in enumerate((b.open, first, second, b.close)):
                yield Quote(series.source, sym, px, b.ts_us + k * res // 4)
        else:
            raise ValueError(f"bar path must be close or ohlc, not {path!r}")


def merge_quotes(series: Sequence[Series], *, path: str = "close",
                 symbol_map: Mapping[str, str] | None = None) -> list[Quote]:
    """All series' quotes in publish-time order (stable: ties keep the series order)."""
    m = symbol_map or {}
    quotes = [q for s in series for q in bar_quotes(s, path=path, symbol=m.get(s.symbol, s.symbol))]
    quotes.sort(key=lambda q: q.publish_time)
    return quotes


def parse_speed(text: str) -> float | None:
    """``max`` -> None (no pacing), ``realtime`` -> 1, ``x60``/``60`` -> 60."""
    t = text.strip().lower()
    if t == "max":
        return None
    if t == "realtime":
        return 1.0
    value = float(t.removeprefix("x"))
    if not value > 0:
        raise ValueError(f"speed must be > 0: {text}")
    return value


@dataclass
class Player:
    """Streams quotes into an ``Ingest`` at ``speed`` x real time (``None``: as fast as possible).

    Quotes sharing a publish time are submitted together; before each, the staleness watchdog
    runs at that data time, so a gap in the recording is reported as a stale market exactly as
    a silent live feed would be.
    """

    ingest: Ingest
    speed: float | None = None
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def play(self, quotes: Sequence[Quote], limit: int | None = None) -> Counter[str]:
        stats: Counter[str] = Counter()
        if not quotes:
            return stats
        todo = quotes[:limit] if limit is not None else quotes
        t0 = todo[0].publish_time
        w0 = self.monotonic()
        i = 0
        while i < len(todo):
            t = todo[i].publish_time
            j = i
            while j < len(todo) and todo[j].publish_time == t:
                j += 1
            if self.speed is not None:
                due = w0 + (t - t0) / 1_000_000 / self.speed
                delay = due - self.monotonic()
                if delay > 0:
                    await self.sleep(delay)
            await self.ingest.check_stale(t)
            await self.ingest.submit_quotes(todo[i:j], t)
            stats["quotes"] += j - i
            i = j
        log.info("recording_played", quotes=stats["quotes"], speed=self.speed,
                 first_us=t0, last_us=todo[-1].publish_time)
        return stats
