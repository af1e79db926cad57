"""Shards: accounts split by a stable hash, each shard a log of its own; a writer that routes
every event to the shards that need it.

- ``shard_of(account, shards)``: the first 8 bytes of the account id's BLAKE2b digest, modulo
  the shard count. Stable across processes, machines and Python versions (Python's own
  ``hash`` is salted per process). The shard count is fixed for a deployment: a different count
  puts most accounts elsewhere (changing it is an export and a re-import).
- ``route(event, shards)``: an event that names an account (deposits and the other amount
  events, positions, funding, intents, outcomes) goes to that account's shard only; every other
  event (prices, market and asset listings and parameters, feed staleness, pauses, chain blocks
  and logs) goes to every shard. Each shard's log therefore holds everything its accounts'
  decisions depend on, in the order the writer appended it, and one shard replays
  deterministically on its own. (Chain venues decode accounts from their logs later, in the
  core: they run as one shard.)
- ``ShardedLog.append(events)``: one append per shard concerned, all at once (each shard's own
  script, dedup and ``XADD`` in one call, on the primary serving the shard's slot, so shards on
  different primaries are written in parallel).

**What a fan-out guarantees.** Each shard's append is atomic and deduplicates by event id, so a
batch retried until it is accepted (``keeper.feeds.ingest.Ingest`` does) lands in every shard
exactly once. The fan-out itself is not atomic across shards: a writer that dies between two
shards' appends leaves a price in some shards only. For prices that is a missed tick in the other
shards, superseded by the next one (the same as a tick lost before it reached the log); account
events go to one shard and are not split. What a price costs at S shards: S appends of it
(``docs/scaling.md``, ``bench cluster_price_fanout_us``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from keeper.domain.events import Event
from keeper.store.redis_log import RedisEventLog
from keeper.store.slotconn import RedisClient

__all__ = ["ShardedLog", "route", "shard_of"]


def shard_of(account: str, shards: int) -> int:
    """The shard (``0 <= shard < shards``) of an account id; see the module docstring."""
    if shards <= 1:
        return 0
    digest = hashlib.blake2b(account.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def route(event: Event, shards: int) -> int | None:
    """The one shard an event goes to, or None: every shard."""
    account = getattr(event, "account", "")
    return shard_of(account, shards) if isinstance(account, str) and account else None


class ShardedLog:
    """A writer's view of ``shards`` logs ``{prefix}:{0}`` ... ``{prefix}:{S-1}`` on one client
    (a single Redis or a Redis Cluster): ``append`` routes (module docstring), ``dead_letter``
    goes to shard 0's dead-letter stream (a rejected input names no account)."""

    def __init__(self, client: RedisClient, shards: int, *, prefix: str = "keeper",
                 wait_replicas: int = 0) -> None:
        if shards < 1:
            raise ValueError(f"shards: {shards} is not a positive count")
        self.shards = shards
        self.logs = [RedisEventLog(client, shard=str(s), prefix=prefix, fast=True,
                                   wait_replicas=wait_replicas) for s in range(shards)]

    async def append(self, events: Sequence[Event]) -> list[str | None]:
        """Append each event to its shard, or to every shard; the ids returned are aligned with
        ``events``: the entry id in the event's shard, or for an event sent to every shard its
        id in the first shard that took it (None: every shard already held it)."""
        if not events:
            return []
        per: list[list[int]] = [[] for _ in range(self.shards)]
        for i, e in enumerate(events):
            s = route(e, self.shards)
            if s is None:
                for lst in per:
                    lst.append(i)
            else:
                per[s].append(i)
        busy = [s for s in range(self.shards) if per[s]]
        got = await asyncio.gather(*(self.logs[s].append([events[i] for i in per[s]]) for s in busy))
        out: list[str | None] = [None] * len(events)
        for s, ids in zip(busy, got, strict=True):
            for i, entry_id in zip(per[s], ids, strict=True):
                if out[i] is None:
                    out[i] = entry_id
        return out

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes) -> object:
        return await self.logs[0].dead_letter(source, reason, detail, payload)

    async def close(self) -> None:
        """Close the shards' own connections (the client is the caller's)."""
        for lg in self.logs:
            await lg.close()
