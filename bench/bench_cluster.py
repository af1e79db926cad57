"""Appends on a real Redis Cluster (issue 21): 3 primaries with a replica each, events spread
over 6 shards (each its own hash slot, two per primary: the first shard ids 0, 1, 2, ... whose
slot lands on a primary with fewer than two; ids 0-5 alone would put 1, 2 and 3 on the three).

Starts its own ``EmbeddedCluster`` (appendfsync everysec, the nodes' default) in a temporary
folder. Events: ``bench_log.make_payloads`` (the single-Redis bench's mix), 600,000 by default
(``BENCH_CLUSTER_EVENTS``), each shard taking every 6th batch of 2,000 (a stable split, as
accounts by their hash would be). One process writes every shard at once: each shard's
``RedisEventLog`` (``redis+cluster://``) sends ``append_encoded`` batches over its raw
pipelined connection to the slot's primary (EVALSHA of the dedup + XADD script), four in
flight per shard, as ``bench_log`` does on one Redis.

- ``cluster_append_events_per_s``: all events over all shards / wall time; median of 3 runs (the
  cluster is flushed between runs).
- ``cluster_append_replicated_events_per_s``: the same with ``wait_replicas=1`` (each batch
  acknowledged once the replica holds it: INCR + ``WAIT 1`` on the batch's connection).
- A ``#`` line gives the same writer and shards on one ``EmbeddedRedis`` for comparison.
- ``cluster_price_fanout_us``: one price appended to all of ``FANOUT_SHARDS`` (16) shards'
  logs through ``keeper.store.shards.ShardedLog`` (16 scripts, one per shard, sent at once to
  the primaries serving their slots), one price at a time: the median time per price of
  ``FANOUT_PRICES`` (the p99 in a ``#`` line); ``cluster_price_fanout_prices_per_s``: prices
  fanned out to all 16 shards in batches of 500 (each shard's log takes every one).

On this machine (2 vCPUs shared with other work) the six redis-servers, their replication and
the writer share two cores: the figure is the cluster on one small box, not three machines.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# runnable as a plain script from a checkout where the project is not pip-installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

N_EVENTS = int(os.environ.get("BENCH_CLUSTER_EVENTS", "600000"))
SHARDS = 6
BATCH = 2_000
IN_FLIGHT = 4
RUNS = 3
FANOUT_SHARDS = 16
FANOUT_PRICES = 2_000
FANOUT_BATCH = 500


async def fanout_run(url: str) -> tuple[list[float], float]:
    """Per-price fan-out times (µs), one at a time; then prices/s in batches."""
    from decimal import Decimal

    import redis.asyncio as aioredis

    from keeper.domain.events import PriceUpdated
    from keeper.store.shards import ShardedLog
    from keeper.store.slotconn import is_cluster_url, make_cluster_client

    if is_cluster_url(url):
        client = make_cluster_client(url, socket_timeout=10)
        await client.initialize()
    else:
        client = aioredis.Redis.from_url(url)
    writer = ShardedLog(client, FANOUT_SHARDS)

    def px(i: int, name: str = "px") -> PriceUpdated:
        return PriceUpdated(event_id=f"{name}-{i}", ts_event=i, symbol=f"M{i % 20}",
                            price=Decimal(100 + i % 50))

    try:
        await writer.append([px(0, "warm-up")])  # connections opened, scripts loaded
        times = []
        for i in range(FANOUT_PRICES):
            e = [px(i)]
            t0 = time.perf_counter()
            await writer.append(e)
            times.append((time.perf_counter() - t0) * 1e6)
        n = 100 * FANOUT_BATCH
        batches = [[px(FANOUT_PRICES + k + j) for j in range(FANOUT_BATCH)]
                   for k in range(0, n, FANOUT_BATCH)]
        t0 = time.perf_counter()
        for b in batches:
            await writer.append(b)
        rate = n / (time.perf_counter() - t0)
    finally:
        await writer.close()
        await client.aclose()
    return times, rate


async def append_run(url: str, shards: list[str], payloads: list[tuple[str, bytes]],
                     wait_replicas: int) -> float:
    from keeper.store.redis_log import RedisEventLog

    logs = [await RedisEventLog.connect(url, shard=s, wait_replicas=wait_replicas,
                                        wait_timeout_ms=5000) for s in shards]
    try:
        batches = [payloads[i:i + BATCH] for i in range(0, len(payloads), BATCH)]
        per_shard = [batches[s::SHARDS] for s in range(SHARDS)]

        async def shard(log: RedisEventLog, mine: list[list[tuple[str, bytes]]]) -> None:
            sem = asyncio.Semaphore(IN_FLIGHT)

            async def one(b: list[tuple[str, bytes]]) -> None:
                async with sem:
                    res = await log.append_encoded(b)
                    assert res[-1] is not None

            await asyncio.gather(*(one(b) for b in mine))

        t0 = time.perf_counter()
        await asyncio.gather(*(shard(lg, mine) for lg, mine in zip(logs, per_shard, strict=True)))
        dt = time.perf_counter() - t0
        total = 0
        for lg, mine in zip(logs, per_shard, strict=True):
            n = await lg.length()
            assert n == sum(len(b) for b in mine), (lg.shard, n)
            total += n
        assert total == len(payloads)
        dup = await logs[0].append_encoded(per_shard[0][0])  # the dedup really is on
        assert dup == [None] * len(per_shard[0][0])
        return len(payloads) / dt
    finally:
        for lg in logs:
            await lg.close()


def main() -> None:
    import redis
    import structlog
    from bench_log import make_payloads

    from keeper.store.cluster import EmbeddedCluster
    from keeper.store.embedded import EmbeddedRedis

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        cluster = EmbeddedCluster(Path(tmp) / "cluster", primaries=3, replicas=1)
        t0 = time.perf_counter()
        url = cluster.start()
        print(f"# cluster of {len(cluster.nodes)} nodes up in {time.perf_counter() - t0:.1f}s",
              flush=True)
        try:
            per_primary = SHARDS // len(cluster.primaries())
            where: Counter[int] = Counter()
            shards: list[str] = []
            for s in range(1000):
                port = cluster.node_for_key(f"keeper:{{{s}}}:log").port
                if where[port] < per_primary:
                    where[port] += 1
                    shards.append(str(s))
                if len(shards) == SHARDS:
                    break
            print(f"# shards {shards}, per primary {sorted(where.values())}", flush=True)
            payloads = make_payloads(N_EVENTS)
            gc.freeze()

            def flush() -> None:
                for node in cluster.primaries():
                    with redis.Redis(host="127.0.0.1", port=node.port) as c:
                        c.flushall()

            for name, wait in (("cluster_append_events_per_s", 0),
                               ("cluster_append_replicated_events_per_s", 1)):
                rates = []
                for _ in range(RUNS):
                    flush()
                    rates.append(asyncio.run(append_run(url, shards, payloads, wait)))
                    print(f"# {name} run {rates[-1]:,.0f}/s", flush=True)
                print(f"bench {name} {statistics.median(rates):.0f} events/s", flush=True)
            flush()
            times, rate = asyncio.run(fanout_run(url))
            times.sort()
            print(f"# one price to {FANOUT_SHARDS} shards: p50 {statistics.median(times):.0f} µs, "
                  f"p99 {times[int(len(times) * 0.99)]:.0f} µs", flush=True)
            print(f"bench cluster_price_fanout_us {statistics.median(times):.0f} us", flush=True)
            print(f"bench cluster_price_fanout_prices_per_s {rate:.0f} prices/s", flush=True)
        finally:
            cluster.stop()
        one = EmbeddedRedis(Path(tmp) / "one")
        one_url = one.start()
        try:
            rates = []
            for _ in range(RUNS):
                one.flushall()
                rates.append(asyncio.run(append_run(one_url, shards, payloads, 0)))
            print(f"# one redis-server, the same shards and writer: "
                  f"{statistics.median(rates):,.0f} events/s", flush=True)
            one.flushall()
            times, rate = asyncio.run(fanout_run(one_url))
            print(f"# one redis-server, one price to {FANOUT_SHARDS} shards: p50 "
                  f"{statistics.median(times):.0f} µs; batches of {FANOUT_BATCH}: {rate:,.0f} prices/s",
                  flush=True)
        finally:
            one.stop()


if __name__ == "__main__":
    main()
