"""The keeper (projector + KeeperCore + runner with the reference-venue client) as a process,
for the exactly-once tests: runs until SIGTERM. ``KEEPER_TEST_CRASH_AT`` and
``KEEPER_VENUE_SECRET`` come from the environment."""

from __future__ import annotations

import argparse
import asyncio
import signal

from keeper.app.keeper_role import RoleConfig, run_keeper
from keeper.backoff import jittered_backoff
from keeper.domain.decide import KeeperParams
from keeper.execution import SimVenueExecutor


async def amain(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    executor = SimVenueExecutor(args.venue_url, backoff=jittered_backoff(0.01, 0.1), timeout_s=2.0,
                                max_attempts=5)
    cfg = RoleConfig(redis_url=args.redis_url, consumer=args.consumer, group=args.group,
                     snapshot_interval_s=0.5, stale_ms=2_000, block_ms=50)
    try:
        await run_keeper(cfg, KeeperParams(profile="generic-perp", mode="live"), executor, stop)
    finally:
        await executor.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis-url", required=True)
    p.add_argument("--venue-url", required=True)
    p.add_argument("--consumer", required=True)
    p.add_argument("--group", default="executor")
    asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    main()
