"""Takeover in the sharded daemon (issue 21): ``kill -9`` of a shard's owner to the first decision
the new owner records on that shard.

Starts its own ``EmbeddedCluster`` (3 primaries with a replica each) and the reference venue;
two real ``keeper run --shards 16`` processes (``[keeper] lease_ttl_ms`` = ``TTL_MS``, 2,000)
liquidating live at the venue, a book of 400 accounts written as the feeds writer would
(``ShardedLog``). Once the 16 shards are spread 8/8 and every shard's keeper is up, one process
is killed with SIGKILL and a price that breaches buckets in every shard is appended at once
(the owner being dead, nobody can decide on its shards until one takes them over).

- ``cluster_takeover_s``: from the kill to the first ``LiquidationIntended`` appended to any of
  the killed process's shards (its stream entry's time, Redis' clock on this machine); median of
  ``RUNS`` runs (the cluster flushed between runs). Goal: at most twice the lease TTL. The
  bound by construction: the heartbeat and the lease expire ``TTL`` after the last renewal
  (renewals every ``TTL/3``), a survivor acquires at its next tick (``TTL/3``), then its
  worker loads the shard's snapshot, replays the tail and decides.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

# runnable as a plain script from a checkout where the project is not pip-installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHARDS = 16
TTL_MS = 2_000
RUNS = 3


async def one_run(url: str, folder: Path, k: int) -> float:
    from keeper.domain import events as ev
    from keeper.scenarios.book import generate_book
    from keeper.sim.server import SimServer
    from keeper.store.membership import shard_names
    from keeper.store.redis_log import RedisEventLog
    from keeper.store.shards import ShardedLog
    from tests.cluster.lease_helpers import open_client, until
    from tests.cluster.sharded_helpers import SECRET, KeeperProc, keeper_env, now_us, owners, price_events

    shards = shard_names(SHARDS)
    marks = {"SOL-USD": Decimal(150)}
    book = generate_book(400, 5 + k, marks)
    assets = sorted(e.params.symbol for e in book.events if isinstance(e, ev.AssetListed))
    sim = SimServer(SECRET.encode())
    sim.venue.set_marks(now_us(), marks)
    sim.venue.load(book.events)
    await sim.start(play=False)
    client = await open_client(url)
    writer = ShardedLog(client, SHARDS)
    env = keeper_env(url, sim.url, SHARDS, TTL_MS)
    procs: list[KeeperProc] = []
    try:
        await writer.append(list(book.events))
        await writer.append(price_events("p0", now_us(), marks, assets))
        procs = [await KeeperProc.spawn(env, folder / f"takeover-{k}-{i}.log") for i in range(2)]

        async def spread() -> bool:
            got = await owners(client, shards)
            return (len(got) == SHARDS and sorted(Counter(got.values()).values()) == [8, 8]
                    and sum(p.count("projector_started") for p in procs) >= SHARDS)
        await until(spread, 90, "16 shards spread 8/8, every shard's keeper up")
        await asyncio.sleep(1.5)  # a snapshot interval: the takeover restores a recent one
        before = await owners(client, shards)
        victim = procs[0]
        theirs = [s for s in shards if victim.tag in before[s]]
        victim.proc.kill()
        kill_ms = time.time() * 1000
        px = {"SOL-USD": Decimal(118)}
        sim.venue.set_marks(now_us(), px)
        await writer.append(price_events("crash", now_us(), px, assets))
        logs = [RedisEventLog(client, shard=s) for s in theirs]
        first: list[float] = []

        async def decided() -> bool:
            for lg in logs:
                for e in await lg.read("0-0", 100_000):
                    if isinstance(e.event, ev.LiquidationIntended) and int(e.id.split("-")[0]) > kill_ms:
                        first.append(int(e.id.split("-")[0]) - kill_ms)
            return bool(first)
        await until(decided, 60, "a decision on the killed process's shards")
        for lg in logs:
            await lg.close()
        return min(first) / 1000
    finally:
        for p in procs:
            await p.stop()
        await writer.close()
        await client.aclose()
        await sim.stop()


def main() -> None:
    import redis

    from keeper.store.cluster import EmbeddedCluster

    with tempfile.TemporaryDirectory(prefix="bench-takeover-") as tmp:
        cluster = EmbeddedCluster(Path(tmp) / "cluster")
        cluster.start()
        try:
            took = []
            for k in range(RUNS):
                for node in cluster.primaries():
                    with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5) as c:
                        c.flushall()
                took.append(asyncio.run(one_run(cluster.url, Path(tmp), k)))
                print(f"# run {k}: {took[-1]:.2f} s", flush=True)
        finally:
            cluster.stop()
    print(f"# lease ttl {TTL_MS} ms (goal <= {2 * TTL_MS / 1000:.1f} s); runs {[round(t, 2) for t in took]}")
    print(f"bench cluster_takeover_s {statistics.median(took):.2f} s")


if __name__ == "__main__":
    main()
