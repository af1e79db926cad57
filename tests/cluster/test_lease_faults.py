"""Lease holders as real processes (``lease_proc.py``): one stopped with SIGSTOP past its TTL
and resumed records nothing more (its fenced appends and renewals are refused, it reports the
lost leases); one of three killed with SIGKILL has its shards taken by the survivors within
twice the TTL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from keeper.store.leases import ShardLeases
from keeper.store.membership import shard_names
from keeper.store.redis_log import RedisEventLog
from keeper.store.slotconn import RedisClient
from tests.cluster.lease_helpers import open_client, until

ROOT = Path(__file__).resolve().parents[2]
PROC = Path(__file__).with_name("lease_proc.py")


class Proc:
    """A ``lease_proc.py`` subprocess and the facts it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, holder: str) -> None:
        self.proc = proc
        self.holder = holder
        self.facts: list[dict[str, Any]] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.facts.append(json.loads(line))

    def seen(self, ev: str) -> Counter[str]:
        return Counter(f["shard"] for f in self.facts if f["ev"] == ev)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


async def spawn(url: str, holder: str, *args: str) -> Proc:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROC), "--url", url, "--holder", holder, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    return Proc(proc, holder)


@pytest_asyncio.fixture(loop_scope="function")
async def procs() -> AsyncIterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        await p.stop()


async def owners(client: RedisClient, shards: list[str]) -> dict[str, str]:
    leases = ShardLeases(client)
    out = {}
    for s in shards:
        held = await leases.holder_of(s)
        if held is not None:
            out[s] = held.holder
    return out


async def test_a_process_paused_past_its_ttl_records_nothing_once_resumed(
        store_url: str, procs: list[Proc]) -> None:
    shards = shard_names(4)
    ttl_ms = 1_000
    client = await open_client(store_url)
    logs = {s: RedisEventLog(client, shard=s) for s in shards}
    try:
        w = await spawn(store_url, "paused", "--ttl-ms", str(ttl_ms), "--shards", "4",
                        "--append-ms", "50")
        procs.append(w)

        async def appending() -> bool:
            return set(w.seen("appended")) == set(shards)
        await until(appending, 30, "the process holds every shard and appends to each")
        old = {f["shard"]: f["token"] for f in w.facts if f["ev"] == "acquired"}
        w.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(ttl_ms / 1000 * 1.5)  # past its TTL: its leases expire on Redis
        taker = ShardLeases(client, ttl_ms=60_000)
        for s in shards:
            lease = await taker.acquire(s, "taker")
            assert lease is not None and lease.token > old[s]
        lengths = {s: await logs[s].length() for s in shards}
        written = len(w.seen("appended"))
        w.proc.send_signal(signal.SIGCONT)

        async def fenced_out() -> bool:
            return set(w.seen("refused")) == set(shards) and set(w.seen("lost")) == set(shards)
        await until(fenced_out, 20, "every fenced append refused and every lease reported lost")
        await asyncio.sleep(0.3)  # a few more rounds of the process
        assert {s: await logs[s].length() for s in shards} == lengths  # nothing recorded
        assert len(w.seen("appended")) == written
        lost = {f["shard"]: f["token"] for f in w.facts if f["ev"] == "lost"}
        assert lost == old  # the grants it held before the pause
        assert await owners(client, shards) == dict.fromkeys(shards, "taker")
    finally:
        for lg in logs.values():
            await lg.close()
        await client.aclose()


async def test_kill9_of_one_of_three_hands_its_shards_to_the_survivors_within_twice_the_ttl(
        cluster_url: str, procs: list[Proc]) -> None:
    shards = shard_names(16)
    ttl_ms = 2_000
    client = await open_client(cluster_url)
    try:
        for name in ("keeper-a", "keeper-b", "keeper-c"):
            procs.append(await spawn(cluster_url, name, "--ttl-ms", str(ttl_ms), "--shards", "16"))

        async def spread() -> bool:
            got = await owners(client, shards)
            return len(got) == 16 and sorted(Counter(got.values()).values()) == [5, 5, 6]
        await until(spread, 60, "16 shards spread 6/5/5 over three processes")
        before = await owners(client, shards)
        victim = procs[2]
        theirs = [s for s in shards if before[s] == victim.holder]
        victim.proc.kill()

        async def taken() -> bool:
            got = await owners(client, shards)
            return all(got.get(s) in ("keeper-a", "keeper-b") for s in theirs)
        took = await until(taken, 30, "the killed process's shards taken by the survivors")
        assert took <= 2 * ttl_ms / 1000, f"takeover took {took:.2f}s"
        print(f"takeover after kill -9: {took:.2f}s (ttl {ttl_ms} ms)")
        after = await owners(client, shards)
        assert sorted(Counter(after.values()).values()) == [8, 8]
        acquired = Counter(f["shard"] for p in procs[:2] for f in p.facts if f["ev"] == "acquired")
        assert all(acquired[s] >= 1 for s in theirs)
    finally:
        await client.aclose()
