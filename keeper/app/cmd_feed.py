"""``keeper feed``: play a recorded price window into the log, or list the recorded windows.

``keeper feed play FILE_OR_WINDOW`` takes a recording file (freqtrade ``.json[.gz]``/``.feather``,
Tardis trades ``.csv[.gz]``, data.binance.vision ``.zip``; a path, or one relative to the data
folder) or an event window of the tidy CSV (``2021-05-19``, narrowed with ``--source`` and
``--symbol``), and streams it through the live normaliser and guards into the log at
``--speed`` (``realtime``, ``x60``, ``max``). The data folder is ``--data-dir``, else
``$KEEPER_DATA_DIR``, else ``../shared/data``. ``--map BTC/USDT=BTC-USD`` renames symbols.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from keeper.app import datadir
from keeper.errors import ConfigError

__all__ = ["HELP", "add_arguments", "run"]

if TYPE_CHECKING:
    from keeper.feeds.recorded import Series

HELP = "play a recorded price window into the log (play), or list recorded windows (list)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="recorded data folder (default $KEEPER_DATA_DIR, else ../shared/data)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="list recorded windows and files")
    p = sub.add_parser("play", help="stream a recording into the log")
    p.add_argument("what", metavar="FILE_OR_WINDOW")
    p.add_argument("--speed", default="max", help="realtime, xN (x60) or max (default max)")
    p.add_argument("--source", default=None, help="tidy CSV: substring of the source column")
    p.add_argument("--symbol", action="append", default=None, help="tidy CSV: symbol to keep (repeat)")
    p.add_argument("--map", action="append", default=[], metavar="FROM=TO", help="rename a symbol (repeat)")
    p.add_argument("--path", choices=["close", "ohlc"], default="close",
                   help="bar prices: close only, or open/extremes/close to see wicks")
    p.add_argument("--limit", type=int, default=None, help="play at most N quotes")
    p.add_argument("--max-jump", type=Decimal, default=None, help="per-market max move (fraction)")
    p.add_argument("--stale-after", type=float, default=None,
                   help="seconds of data time without a price before a market is stale "
                        "(default: 3 bars)")
    p.add_argument("--redis-url", default=None,
                   help="the log's Redis (default $REDIS_URL; none: the data folder's own server)")
    p.add_argument("--redis-data-dir", type=Path, default=datadir.redis_dir(datadir.DEFAULT),
                   help="the private redis-server's folder when there is no URL (default "
                        ".keeper/redis: the log keeper run, keeper demo and keeper log use)")
    p.add_argument("--shard", default="0")
    p.add_argument("--prefix", default="keeper")


def run(args: argparse.Namespace) -> int:
    from keeper.feeds import recorded

    if args.action == "list":
        for w in recorded.list_windows(args.data_dir):
            if w["kind"] == "tidy":
                print(f"{w['event']:<11} {w['venue']:<9} {w['market']:<32} {w['symbol']:<16} "
                      f"{w['resolution']} {w['rows']:>6} {w['start']} .. {w['end']}  {w['source']}")
            else:
                print(f"{w['event']:<11} file {w['path']}")
        return 0
    return asyncio.run(_play(args))


def _load(args: argparse.Namespace) -> list[Series]:
    from keeper.feeds import recorded

    folder = recorded.data_dir(args.data_dir)
    path = Path(args.what)
    for candidate in (path, folder / path):
        if candidate.is_file():
            try:
                return [recorded.load_file(candidate)]
            except (ValueError, OSError, KeyError) as exc:  # not a recording this reads
                raise ConfigError(f"FILE_OR_WINDOW: {candidate}: {exc} (see keeper feed list and "
                                  "keeper feed --help for the formats)") from None
    tidy = folder / recorded.TIDY
    if not tidy.is_file():
        raise ConfigError(f"FILE_OR_WINDOW: {args.what} is not a file and {tidy} is absent")
    series = recorded.load_tidy(tidy, args.what, source=args.source, symbols=args.symbol)
    if not series:
        raise ConfigError(f"FILE_OR_WINDOW: no file and no tidy window named {args.what!r} "
                          "(see `keeper feed list`)")
    return series


async def _play(args: argparse.Namespace) -> int:
    from keeper.feeds import recorded
    from keeper.feeds.combine import MarketLimits
    from keeper.feeds.ingest import Ingest
    from keeper.feeds.pipeline import PricePipeline
    from keeper.store.embedded import open_redis
    from keeper.store.redis_log import RedisEventLog

    try:
        speed = recorded.parse_speed(args.speed)
        mapping = dict(m.split("=", 1) for m in args.map)
    except ValueError as exc:
        raise ConfigError(f"--speed/--map: {exc}") from None
    origin = "--redis-url" if args.redis_url else "REDIS_URL"
    given = args.redis_url or os.environ.get("REDIS_URL") or None
    if given:
        datadir.check_redis_url(given, origin)
    series = _load(args)
    quotes = recorded.merge_quotes(series, path=args.path, symbol_map=mapping)
    res = max((s.resolution_us for s in series), default=0) or 60_000_000
    stale_us = int(args.stale_after * 1_000_000) if args.stale_after is not None else 3 * res
    limits = MarketLimits(max_jump=args.max_jump, stale_after_us=stale_us)
    if given:
        datadir.announce("feed play", given, None, origin)
    else:
        print(f"keeper feed play: the log: {args.redis_data_dir} (a private redis-server)", file=sys.stderr)
    url, server = await open_redis(given, args.redis_data_dir)
    try:
        log = await RedisEventLog.connect(url, shard=args.shard, prefix=args.prefix)
        try:
            ingest = Ingest(log, pipeline=PricePipeline(default=limits), conflate=False)
            writer = asyncio.create_task(ingest.run())
            try:
                stats = await recorded.Player(ingest, speed).play(quotes, args.limit)
            finally:
                await ingest.close()
                await writer
        finally:
            await log.close()
    finally:
        if server is not None:
            server.stop()
    names = ", ".join(f"{s.source}:{s.symbol}" for s in series)
    print(f"played {stats['quotes']} quotes of {names}: appended {ingest.stats['appended']}, "
          f"duplicates {ingest.stats['duplicates']}, rejected {sum(ingest.pipeline.rejected.values())} "
          f"{dict(ingest.pipeline.rejected)}")
    return 0
