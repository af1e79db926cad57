"""``keeper run``: the daemon (every role in one process, or the ``--role`` ones).

Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT), 1 on a configuration error (the
message names the key), a role that failed, or a shutdown that did not finish within
``[keeper] shutdown_grace_s`` (or a second signal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import msgspec
import structlog

from keeper.app import datadir
from keeper.app.config import Config, load_config
from keeper.app.daemon import ROLES, Daemon
from keeper.app.logging import configure_logging
from keeper.errors import ConfigError
from keeper.store.embedded import EmbeddedRedis

__all__ = ["HELP", "ShutdownDeadline", "add_arguments", "run", "serve", "with_shards"]

HELP = "run the keeper daemon (all roles, or the --role ones) until SIGTERM/SIGINT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file (default: built-in defaults)")
    parser.add_argument("--role", action="append", choices=ROLES, metavar="ROLE",
                        help=f"run only this role (repeatable): {', '.join(ROLES)}")
    parser.add_argument("--consumer", help="stable name of this process in the executor group")
    parser.add_argument("--shards", type=int, metavar="N",
                        help="the sharded mode over N shards (sets [keeper] sharded and shards)")


async def serve(daemon: Daemon, grace_s: float | None = None) -> None:
    """Run ``daemon`` until SIGTERM or SIGINT; the process is gone within ``grace_s`` seconds of
    the first (``ShutdownDeadline``), and a second one ends it at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = ShutdownDeadline(grace_s if grace_s is not None else
                                daemon.config.keeper.shutdown_grace_s)

    def on_signal() -> None:
        if stop.is_set():
            deadline.expire("second signal")
        stop.set()
        deadline.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await daemon.run(stop)
    finally:
        deadline.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class ShutdownDeadline:
    """Ends the process ``grace_s`` seconds after ``start`` unless ``cancel`` comes first.

    A thread, not the event loop: whatever the loop is stuck on (a task that ignores its
    cancellation, a blocking call), the deadline holds. On expiry it stops the private
    redis-server (it runs in its own session, so nothing else would) and exits 1.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.grace_s, self.expire, args=("grace period over",))
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def expire(self, why: str) -> None:
        structlog.get_logger().error("shutdown_deadline", reason=why, grace_s=self.grace_s,
                                     code=1)
        for server in list(EmbeddedRedis.running_servers):
            with contextlib.suppress(Exception):
                server.stop()
        os._exit(1)


def with_shards(cfg: Config, shards: int) -> Config:
    """``cfg`` in the sharded mode over ``shards`` shards (``--shards``: ``[keeper] shards``
    replaced, ``sharded`` on), checked as the file's would be."""
    if shards < 1 or cfg.keeper.shard >= shards:
        raise ConfigError(f"--shards: {shards} is not a shard count above keeper.shard "
                          f"{cfg.keeper.shard}")
    keeper = msgspec.structs.replace(cfg.keeper, shards=shards, sharded=True)
    return msgspec.structs.replace(cfg, keeper=keeper)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # ConfigError -> exit 1 naming the key (keeper.app.cli)
    if getattr(args, "shards", None) is not None:
        cfg = with_shards(cfg, args.shards)
    url = cfg.redis_url()
    if url:
        datadir.announce("run", url, None, "REDIS_URL" if cfg.secrets.redis_url is not None else "redis.url")
    else:
        print(f"keeper run: the log: {cfg.redis.data_dir} (a private redis-server; [redis] data_dir)",
              file=sys.stderr)
        datadir.claim_for_run(Path(cfg.redis.data_dir))
    configure_logging(cfg.log.format, cfg.log.level)
    daemon = Daemon(cfg, roles=args.role, consumer=args.consumer)
    asyncio.run(serve(daemon))
    structlog.get_logger().info("daemon_exit", code=0)
    return 0
