"""A lease-holding process for the fault tests: a ``LeaseKeeper`` over ``--shards`` shards and,
every ``--append-ms``, one fenced outcome appended to each shard it holds, with the fence it took
*before* waiting (as a process that is paused between deciding and recording would).

One JSON line on stdout per fact: ``{"ev": "acquired"|"lost"|"released", "shard", "token"}``,
``{"ev": "appended"|"refused", "shard", "token", "id"}``. SIGTERM stops it cleanly.

Run, with the repository on ``PYTHONPATH``:
``python tests/cluster/lease_proc.py --url URL --holder NAME --ttl-ms 1000 --shards 16``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable

import structlog

from keeper.errors import LeaseLost, LogUnavailable
from keeper.store.lease_keeper import LeaseKeeper
from keeper.store.leases import Lease, ShardLeases
from keeper.store.membership import Membership, shard_names
from keeper.store.redis_log import RedisEventLog
from tests.cluster.lease_helpers import open_client, outcome


def say(**fact: object) -> None:
    sys.stdout.write(json.dumps(fact) + "\n")
    sys.stdout.flush()


async def append_loop(keeper: LeaseKeeper, logs: dict[str, RedisEventLog], holder: str,
                      every_s: float, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        fences = {s: f for s in logs if (f := keeper.fence(s)) is not None}
        await asyncio.sleep(every_s)  # a SIGSTOP here resumes with these fences
        for shard, fence in fences.items():
            n += 1
            name = f"{holder}-{n}"
            try:
                await logs[shard].append([outcome(name)], fence=fence)
                say(ev="appended", shard=shard, token=fence.token, id=name)
            except LeaseLost:
                say(ev="refused", shard=shard, token=fence.token, id=name)
            except LogUnavailable:
                pass


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--holder", required=True)
    p.add_argument("--ttl-ms", type=int, default=1000)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--append-ms", type=int, default=0)
    a = p.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    client = await open_client(a.url)
    shards = shard_names(a.shards)

    def fact(ev: str) -> Callable[[Lease], None]:
        return lambda lease: say(ev=ev, shard=lease.shard, token=lease.token)

    keeper = LeaseKeeper(ShardLeases(client, ttl_ms=a.ttl_ms), Membership(client, ttl_ms=a.ttl_ms),
                         shards, a.holder, on_acquired=fact("acquired"),
                         on_released=fact("released"), on_lost=fact("lost"))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    logs = {s: RedisEventLog(client, shard=s) for s in shards}
    tasks = [asyncio.ensure_future(keeper.run(stop))]
    if a.append_ms:
        tasks.append(asyncio.ensure_future(append_loop(keeper, logs, a.holder, a.append_ms / 1000,
                                                       stop)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for lg in logs.values():
            await lg.close()
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
