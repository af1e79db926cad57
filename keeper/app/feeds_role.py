"""The feeds role's parts, built from ``[feeds]``: the price pipeline and, per source, its
parser and the frames it is sent after each connect. Pure functions of the configuration: the
daemon runs what they build (``keeper.feeds``)."""

from __future__ import annotations

import json
from typing import Any

from keeper.app.config import Config, FeedSource
from keeper.errors import ConfigError
from keeper.feeds import parsers
from keeper.feeds.combine import MarketLimits
from keeper.feeds.parsers import Parser
from keeper.feeds.pipeline import PricePipeline

__all__ = ["build_pipeline", "parser_for", "subscriptions"]

_PARSERS = {"binance": parsers.binance_mark_price, "bybit": parsers.bybit_tickers,
            "hyperliquid": parsers.hyperliquid_all_mids, "coinbase": parsers.coinbase_ticker}


def build_pipeline(cfg: Config) -> PricePipeline:
    """The price pipeline of ``[feeds]``: each source's symbol mapped to its market."""
    f = cfg.feeds
    symbol_map: dict[str, str] = {}
    for src in f.sources:
        for market, sym in src.symbols.items():
            symbol_map[f"{src.source_name}:{sym}"] = market
            symbol_map[f"{src.source_name}:{sym.upper()}"] = market
    limits = MarketLimits(max_jump=f.max_jump, max_deviation=f.max_deviation,
                          stale_after_us=f.staleness_ms * 1000, jump_confirmations=f.jump_confirmations)
    # each market is combined over the sources that price it; a market priced by one source
    # has no one to deviate from
    return PricePipeline(default=limits, symbol_map=symbol_map, only=f.markets(), check_age=True)


def parser_for(src: FeedSource) -> Parser:
    """The parser of a source's kind (every kind ``[[feeds.sources]]`` accepts)."""
    if src.kind == "pyth":  # the configured ids, however written, name the quotes
        return parsers.pyth_hermes(src.source_name, ids={i: i for i in src.symbols.values()})
    if src.kind == "generic":
        single = next(iter(src.symbols.values())) if len(src.symbols) == 1 else ""
        return parsers.generic_json(src.source_name, parsers.JsonPaths(
            price_path=src.price_path, symbol_path=src.symbol_path, time_path=src.time_path,
            time_unit=src.time_unit, symbol="" if src.symbol_path else single))
    make = _PARSERS.get(src.kind)
    if make is None:  # pragma: no cover - the config's kinds are all wired above
        raise ConfigError(f"feeds.sources: kind {src.kind!r} has no parser")
    return make(src.source_name)


def subscriptions(src: FeedSource) -> list[str]:
    """The frames a source is sent after each connect: ``subscribe`` when given, else its
    venue's own subscription for the configured symbols (Binance subscribes by its URL)."""
    if src.subscribe:
        return list(src.subscribe)
    syms = sorted(set(src.symbols.values()))
    frames: dict[str, dict[str, Any]] = {
        "bybit": {"op": "subscribe", "args": [f"tickers.{s}" for s in syms]},
        "hyperliquid": {"method": "subscribe", "subscription": {"type": "allMids"}},
        "pyth": {"type": "subscribe", "ids": syms},
        "coinbase": {"type": "subscribe", "product_ids": syms, "channels": ["ticker"]},
    }
    frame = frames.get(src.kind)
    return [] if frame is None else [json.dumps(frame, separators=(",", ":"))]
