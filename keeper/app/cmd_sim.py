"""``keeper sim``: run the reference venue (REST + websockets) on 127.0.0.1.

The first line on stdout is the bound base URL (``http://127.0.0.1:<port>``), so a script can
start it with ``--port 0`` and read where it listens; logs go to stderr. Runs until SIGINT or
SIGTERM (or, with ``--exit-after-play``, until the price path has been played). The HMAC secret
for ``POST /liquidations`` is read from the environment variable named by ``--secret-env``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from keeper.errors import ConfigError
from keeper.sim import prices
from keeper.sim.prices import Tick

__all__ = ["HELP", "add_arguments", "load_path", "run"]

HELP = "Run the reference venue (prices + account streams, liquidation REST) for demos and tests."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts in the generated book")
    parser.add_argument("--seed", type=int, default=1, help="seed of the book and the synthetic crash")
    parser.add_argument("--prices", default="synthetic",
                        help="'synthetic' (the built-in crash) or a price file (NDJSON/CSV, .gz ok)")
    parser.add_argument("--speed", type=float, default=60.0,
                        help="playback speed: path seconds per wall second (0: as fast as possible)")
    parser.add_argument("--secret-env", default="KEEPER_SIM_SECRET",
                        help="environment variable holding the HMAC secret")
    parser.add_argument("--timestamps", choices=("wall", "path"), default="wall",
                        help="event and frame times from the wall clock or from the price path")
    parser.add_argument("--hold", action="store_true", help="do not play prices until POST /play")
    parser.add_argument("--exit-after-play", action="store_true",
                        help="stop once the whole price path has been played")


def load_path(spec: str, seed: int) -> list[Tick]:
    """The price path named by ``--prices``: the synthetic crash, or a file."""
    if spec == "synthetic":
        return list(prices.synthetic_crash(seed))
    p = Path(spec)
    if not p.exists():
        raise ConfigError(f"--prices: {spec} does not exist (use 'synthetic' or a price file)")
    try:
        return list(prices.load_file(p))
    except (KeyError, ValueError, OSError) as exc:
        raise ConfigError(f"--prices: cannot read {spec}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    import structlog

    secret = os.environ.get(args.secret_env, "")
    if not secret:
        raise ConfigError(f"--secret-env: environment variable {args.secret_env} is empty or unset")
    if args.accounts < 0:
        raise ConfigError("--accounts must be >= 0")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    path = load_path(args.prices, args.seed)
    return asyncio.run(_serve(args, secret.encode(), path))


async def _serve(args: argparse.Namespace, secret: bytes, path: list[Tick]) -> int:
    from keeper.sim.server import start_sim

    sim = await start_sim(secret, accounts=args.accounts, seed=args.seed, path=path, speed=args.speed,
                          host=args.host, port=args.port, play=not args.hold, timestamps=args.timestamps)
    print(sim.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(stop.wait())]
    if args.exit_after_play:
        waiters.append(asyncio.create_task(sim.played.wait()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
        await sim.stop()
    return 0
