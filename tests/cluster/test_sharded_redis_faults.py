"""Redis node faults under the sharded daemon, on the real cluster: three ``keeper run --shards 16``
processes (``wait_replicas`` auto: 1 on a cluster) liquidate a falling market at the reference
venue while the feeds writer appends prices to every shard; mid-burst the primary serving the
most shards is killed with SIGKILL and

- ``primary_killed``: its replica is promoted (the cluster's failover); that primary has no
  replica of its own, so its shards' workers wait (``WAIT 1`` times out: each process stays up,
  ``/readyz`` 503 naming a shard waiting for a replica) until the killed node is restarted, as
  an operator would, 3 s after the failover (it rejoins as the new primary's replica); then
  ``/readyz`` is 200 again and the burst's liquidations go on;
- ``node_restarted``: the node is restarted at once (before the cluster fails it over): the
  shard's primary comes back from its AOF, its shards unreachable meanwhile.

In each: every liquidation the venue accepted is accepted exactly once (its own records), every
intent has exactly one outcome in its shard's log (a live one its venue answer; one decided on
prices the stall left older than the staleness limit is recorded withheld, its outcome the
expiry), no outcome without its intent, every shard's log replays with 0
divergences, and no keeper process died."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from keeper.app.freshness import WITHHELD
from keeper.domain import events as ev
from keeper.errors import LogError
from keeper.scenarios.book import generate_book
from keeper.sim.server import SimServer
from keeper.store.cluster import EmbeddedCluster
from keeper.store.embedded import free_port
from keeper.store.membership import shard_names
from keeper.store.shards import ShardedLog
from tests.cluster.lease_helpers import open_client, until
from tests.cluster.sharded_helpers import (
    SECRET,
    KeeperProc,
    keeper_env,
    now_us,
    open_intents,
    owners,
    params,
    price_events,
    shard_entries,
    verify,
)

D = Decimal
SHARDS = 16
TTL_MS = 2_000
KILL_AT = 12


async def append_until_accepted(writer: ShardedLog, events: list[ev.Event]) -> int:
    """As ``Ingest`` does: a batch retried until every shard took it (duplicates dropped)."""
    attempts = 0
    while True:
        try:
            await writer.append(events)
            return attempts
        except LogError:
            attempts += 1
            await asyncio.sleep(0.1)


async def readyz(http: aiohttp.ClientSession, port: int) -> tuple[bool, list[str]]:
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz",
                            timeout=aiohttp.ClientTimeout(total=3)) as r:
            body: dict[str, Any] = await r.json()
            return r.status == 200, list(body.get("reasons", []))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, [f"no answer: {exc}"]


@pytest.mark.parametrize("fault", ["primary_killed", "node_restarted"])
async def test_a_redis_node_fault_mid_burst_loses_and_repeats_no_liquidation(
        redis_cluster: EmbeddedCluster, cluster_url: str, tmp_path: Path, fault: str) -> None:
    t_start = time.monotonic()
    shards = shard_names(SHARDS)
    marks = {"SOL-USD": D(150)}
    book = generate_book(400, 5, marks)
    assets = sorted(e.params.symbol for e in book.events if isinstance(e, ev.AssetListed))
    sim = SimServer(SECRET.encode())
    ts = now_us()
    sim.venue.set_marks(ts, marks)
    sim.venue.load(book.events)
    await sim.start(play=False)
    client = await open_client(cluster_url)
    writer = ShardedLog(client, SHARDS)
    env = keeper_env(cluster_url, sim.url, SHARDS, TTL_MS)
    ports = [free_port() for _ in range(3)]
    procs: list[KeeperProc] = []
    http = aiohttp.ClientSession()
    try:
        await writer.append(list(book.events))
        await writer.append(price_events("p0", ts, marks, assets))
        for k in range(3):
            admin = {"KEEPER_ADMIN__ENABLED": "true", "KEEPER_ADMIN__PORT": str(ports[k])}
            procs.append(await KeeperProc.spawn({**env, **admin}, tmp_path / f"keeper-{k}.log",
                                                admin=True))

        async def spread() -> bool:
            got = await owners(client, shards)
            if not (len(got) == SHARDS and sorted(Counter(got.values()).values()) == [5, 5, 6]
                    and sum(p.count("projector_started") for p in procs) >= SHARDS):
                return False
            # settled, not a moment of a rebalance (one keeper releasing what another will take)
            await asyncio.sleep(TTL_MS / 3000 + 0.1)
            return await owners(client, shards) == got
        await until(spread, 60, "16 shards spread 6/5/5 over three keepers, each shard's keeper up")
        by_node = Counter(redis_cluster.node_for_key(f"keeper:{{{s}}}:log").port for s in shards)
        victim = next(n for n in redis_cluster.nodes if n.port == by_node.most_common(1)[0][0])
        hit = [s for s in shards if redis_cluster.node_for_key(f"keeper:{{{s}}}:log") is victim]
        samples: list[tuple[float, bool, list[str]]] = []
        timeline: dict[str, float] = {}

        async def watch_ready() -> None:
            while True:
                for port in ports:
                    ok, reasons = await readyz(http, port)
                    samples.append((time.monotonic(), ok, reasons))
                await asyncio.sleep(0.2)

        async def operator() -> None:
            """Kill the node; restart it at once, or once its replica was promoted + 3 s."""
            await asyncio.to_thread(redis_cluster.kill, victim)
            timeline["killed"] = time.monotonic()
            if fault == "primary_killed":
                await asyncio.to_thread(redis_cluster.wait_for_failover, victim)
                timeline["promoted"] = time.monotonic()
                await asyncio.sleep(3.0)
            else:
                await asyncio.sleep(0.3)
            await asyncio.to_thread(redis_cluster.restart, victim)
            timeline["restarted"] = time.monotonic()

        watching = asyncio.ensure_future(watch_ready())
        operating: asyncio.Future[None] | None = None
        retries = 0
        # the burst: SOL falls 150 -> 111 in 40 steps of 75 ms; the venue marks each step first
        for step in range(1, 41):
            px = {"SOL-USD": D(150) - D(step) * D("0.975")}
            t = now_us()
            sim.venue.set_marks(t, px)
            retries += await append_until_accepted(writer, price_events(f"p{step}", t, px, assets))
            if step == KILL_AT:
                operating = asyncio.ensure_future(operator())
            await asyncio.sleep(0.075)
        assert operating is not None
        await asyncio.wait_for(operating, 60)

        async def all_done() -> bool:
            for s in shards:
                live, done = open_intents(await shard_entries(client, s))
                if set(done) < live:
                    return False
            return True
        await until(all_done, 60, "every live intent of every shard has an outcome")

        last: list[tuple[bool, list[str]]] = []

        async def all_ready() -> bool:
            last[:] = [await readyz(http, port) for port in ports]
            return all(ok for ok, _ in last)
        try:
            await until(all_ready, 30, "every keeper ready again")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last}") from None
        watching.cancel()
        assert all(p.proc.returncode is None for p in procs), "every keeper process stayed up"
        for p in procs:
            await p.stop()
        async with http.get(f"{sim.url}/stats") as r:
            stats = await r.json()

        kparams = params(env)
        confirmed: set[str] = set()
        total_live = 0
        withheld = 0
        for s in shards:
            entries = await shard_entries(client, s)
            live, done = open_intents(entries)
            held = {e.decision.intent_id for _, e in entries if isinstance(e, ev.LiquidationIntended)
                    and e.decision.mode == WITHHELD}
            total_live += len(live)
            withheld += len(held)
            # a withheld intent (decided on prices the stall made old) has its expiry as outcome
            assert set(done) == live | held and set(done.values()) <= {1}, f"shard {s}: {done}"
            confirmed |= {e.intent_id for _, e in entries if isinstance(e, ev.LiquidationConfirmed)}
            report = verify(entries, kparams)
            assert report.ok, f"shard {s}: {report.first.describe() if report.first else ''}"
        accepted = stats["accepted_by_intent"]
        waiting = [r for _, ok, rs in samples if not ok for r in rs if "waiting for a replica" in r]
        waits = sum(p.count("shard_waiting_for_redis") + p.count("runner_waiting_for_redis")
                    for p in procs)
        killed = timeline["killed"]
        print(f"{fault}: live intents {total_live}, withheld {withheld}, venue accepted "
              f"{len(accepted)} (duplicates answered {stats['duplicates']}), node served shards "
              f"{hit}; writer retries {retries}; "
              f"promoted {timeline.get('promoted', killed) - killed:.1f}s, restarted "
              f"{timeline['restarted'] - killed:.1f}s after the kill; readyz samples not ready "
              f"{sum(1 for _, ok, _ in samples if not ok)}/{len(samples)}, of them waiting for a "
              f"replica {len(waiting)}; waits logged {waits}; test {time.monotonic() - t_start:.1f}s")
        assert total_live >= 20, "the burst must breach buckets"
        assert set(accepted) == confirmed and set(accepted.values()) == {1}
        assert retries > 0, "the writer met the fault"
        if fault == "primary_killed":
            assert waiting, "/readyz named a shard waiting for a replica while it had none"
    finally:
        for proc in procs:
            await proc.stop()
        await http.close()
        await writer.close()
        await client.aclose()
        await sim.stop()
        with contextlib.suppress(Exception):
            if not victim.running():
                redis_cluster.restart(victim)
