"""Price feeds: parsers per venue format, guards, median combination, the websocket shell,
staleness watchdog, ingest into the log, and recorded data as a source.

The pieces, in the order a frame meets them::

    WsFeed (ws.py) -> Parser (parsers.py) -> PricePipeline (pipeline.py: guards.py, combine.py,
    watchdog.py) -> Ingest (ingest.py: conflation, backpressure, retries) -> EventLog

``recorded.Player`` feeds quotes from recorded files into the same ``Ingest``.
"""

from keeper.clock import SystemClock
from keeper.feeds.combine import MarketCombiner, MarketLimits, median
from keeper.feeds.guards import OrderGuard, check_value, exponent_check
from keeper.feeds.ingest import Ingest, LogSink
from keeper.feeds.parsers import (
    JsonPaths,
    ParseError,
    Parser,
    Quote,
    binance_mark_price,
    bybit_tickers,
    coinbase_ticker,
    generic_json,
    hyperliquid_all_mids,
    pyth_hermes,
)
from keeper.feeds.pipeline import Outcome, PricePipeline, Reject
from keeper.feeds.watchdog import StalenessWatchdog
from keeper.feeds.ws import WsConfig, WsFeed

__all__ = [
    "Ingest",
    "JsonPaths",
    "LogSink",
    "MarketCombiner",
    "MarketLimits",
    "OrderGuard",
    "Outcome",
    "ParseError",
    "Parser",
    "PricePipeline",
    "Quote",
    "Reject",
    "StalenessWatchdog",
    "SystemClock",
    "WsConfig",
    "WsFeed",
    "binance_mark_price",
    "bybit_tickers",
    "check_value",
    "coinbase_ticker",
    "exponent_check",
    "generic_json",
    "hyperliquid_all_mids",
    "median",
    "pyth_hermes",
]
