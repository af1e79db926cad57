"""``keeper log archive``: one retention pass from the command line, or (``--follow``) a pass
every ``interval_s`` until SIGTERM or SIGINT, as its own process (the ``retention`` line of the
Procfile, beside a daemon run with ``[retention] in_daemon = false``); and the archive-aware log
that ``keeper log export`` reads (the archive, then the hot log, as one log).

The policy is ``[retention]`` of ``--config`` (default: the built-in defaults and the
environment's ``KEEPER_RETENTION__*``), with the flags on top. The archive directory is
``--archive-dir``, else the config's ``archive_dir``, else the one this log's retention recorded
in Redis, else ``<keeper.state_dir>/archive``. Without ``--trim`` the pass only archives: Redis
keeps every entry, the dedup index and the dead letters as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any

from keeper.store.archive import ArchivedLog, meta_key, open_archive
from keeper.store.redis_log import RedisEventLog, wrap_errors
from keeper.store.retention import PassReport, Retention, RetentionPolicy, run_retention

__all__ = ["add_archive_arguments", "archive_pass", "policy_for", "readable_log"]


def add_archive_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="take [retention] from this TOML file")
    p.add_argument("--archive-dir", type=Path, metavar="DIR", help="where segments go")
    p.add_argument("--hot-window-s", type=float, metavar="S", help="keep entries younger than this")
    p.add_argument("--max-entries", type=int, metavar="N", help="keep at most this many (0: no cap)")
    p.add_argument("--dedup-window-s", type=float, metavar="S", help="the dedup index's window")
    p.add_argument("--trim", action="store_true",
                   help="also trim archived entries from Redis, expire old ids from the dedup index "
                        "and cap the dead letters (default: archive only)")
    p.add_argument("--cap-entries", type=int, metavar="N",
                   help="the hot log's hard cap: beyond it entries go even past a projector's "
                        "snapshot (archived first; 0: no cap)")
    p.add_argument("--interval-s", type=float, metavar="S", help="with --follow: seconds between passes")
    p.add_argument("--follow", action="store_true",
                   help="a pass every interval until SIGTERM/SIGINT (retention in its own process)")
    p.add_argument("--json", action="store_true", help="print the pass's report as JSON")


async def policy_for(lg: RedisEventLog, args: argparse.Namespace) -> RetentionPolicy:
    """The pass's policy: config, then flags (see the module docstring)."""
    from keeper.app.config import load_config

    cfg = load_config(args.config, register_secrets=False)
    policy = RetentionPolicy.from_config(cfg.retention, state_dir=cfg.keeper.state_dir)
    root = args.archive_dir
    if root is None and not cfg.retention.archive_dir:
        async with wrap_errors("retention_state"):
            recorded: Any = await lg.client.hget(meta_key(lg), "archive_dir")
        if recorded is not None:
            root = Path(recorded.decode())
    changes: dict[str, Any] = {"trim": bool(args.trim)}
    if root is not None:
        changes["archive_dir"] = root
    for name in ("hot_window_s", "max_entries", "dedup_window_s", "cap_entries", "interval_s"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    return dataclasses.replace(policy, **changes)


async def archive_pass(lg: RedisEventLog, args: argparse.Namespace) -> int:
    """Run one pass and print its report (one line, or ``--json``); 1 when it failed. With
    ``--follow``: passes until SIGTERM or SIGINT (a pass in progress finishes), a report line
    each; 0."""
    policy = await policy_for(lg, args)
    if args.follow:
        return await _follow(lg, policy, args.json)
    report = await Retention(lg, policy).run_pass()
    print(report.to_json() if args.json else report.summary())
    if report.skipped:
        print("another pass holds the shard's retention lock; try again later", file=sys.stderr)
    return 1 if report.error else 0


async def _follow(lg: RedisEventLog, policy: RetentionPolicy, as_json: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def report(r: PassReport) -> None:
        print(r.to_json() if as_json else r.summary(), flush=True)

    try:
        await run_retention(lg, policy, stop, report)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


async def readable_log(lg: RedisEventLog, root: Path | None) -> RedisEventLog | ArchivedLog:
    """``lg`` with its archive (``root``, else the recorded one) when it has one; ``LogError``
    when the hot log was trimmed and no archive here holds what was trimmed."""
    archive = await open_archive(lg, root)
    return lg if archive is None else ArchivedLog(lg, archive)
