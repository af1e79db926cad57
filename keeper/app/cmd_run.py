"""``keeper run``: the daemon (every role in one process, or the ``--role`` ones).

Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT), 1 on a configuration error (the
message names the key) or a role that failed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import structlog

from keeper.app.config import load_config
from keeper.app.daemon import ROLES, Daemon
from keeper.app.logging import configure_logging

HELP = "run the keeper daemon (all roles, or the --role ones) until SIGTERM/SIGINT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file (default: built-in defaults)")
    parser.add_argument("--role", action="append", choices=ROLES, metavar="ROLE",
                        help=f"run only this role (repeatable): {', '.join(ROLES)}")
    parser.add_argument("--consumer", help="stable name of this process in the executor group")


async def serve(daemon: Daemon) -> None:
    """Run ``daemon`` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await daemon.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # ConfigError -> exit 1 naming the key (keeper.app.cli)
    configure_logging(cfg.log.format, cfg.log.level)
    daemon = Daemon(cfg, roles=args.role, consumer=args.consumer)
    asyncio.run(serve(daemon))
    structlog.get_logger().info("daemon_exit", code=0)
    return 0
