"""A shard's log that acts only on what a replica holds: ``ReplicatedLog``.

Redis replicates asynchronously: an entry on a primary that dies before its replica received it
is lost when the replica is promoted. ``ReplicatedLog(client, shard=S, wait_replicas=n)`` is a
``RedisEventLog`` (a subclass: the same keys and scripts) with two rules, both no-ops at
``wait_replicas=0``:

- **appends are waited** (``RedisEventLog``'s own ``wait_replicas``): an append returns only
  once ``n`` replicas hold it, else ``LogNotReplicated`` (append again: the same ids are
  dropped as duplicates and the new ``WAIT`` covers them);
- **reads are barriered**: every read that returns entries (``read_batch``, hence ``read``;
  ``read_group``, ``read_pending``, ``claim_stale``) returns them only once ``n`` replicas hold
  everything the shard's primary held after the read (``barrier``: ``INCR :repl`` then
  ``WAIT n timeout`` on one connection, so the ``WAIT`` covers the primary's whole replication
  offset, the entries read included). Otherwise it raises ``LogNotReplicated`` and hands out
  nothing: a ``read_batch`` caller's position does not move; entries a group read took are this
  consumer's pending ones, handed out again by ``read_pending`` once a replica holds them.

So a reader (a keeper deciding, a runner submitting) never acts on an entry the promoted replica
could lose: an intent is not submitted before a replica holds it, and a decision never depends
on a price or account event that a failover could take back (its replay stays the same). The
cost: one round trip a non-empty read. With one replica a primary, the promoted replica has none
of its own: reads and appends raise ``LogNotReplicated`` until a replica is back (the killed node
restarted), and the callers wait it out.

``unreplicated``: the last replication failure (text), None once a barrier or a waited append
succeeds again; ``waiting()`` is it while that failure is recent (``RECENT_S``): a shard whose
last waited append failed and that then had nothing more to read or write is not reported as
waiting for ever. What ``/readyz`` reports.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from keeper.errors import LogNotReplicated
from keeper.ports import LogEntry
from keeper.store import health
from keeper.store.fastpath import ReplyError
from keeper.store.leases import Fence
from keeper.store.redis_io import wrap_errors
from keeper.store.redis_log import RedisEventLog
from keeper.store.slotconn import RedisClient

__all__ = ["RECENT_S", "ReplicatedLog"]

RECENT_S = 10.0
"""A replication failure older than this, with nothing tried since, is no longer reported."""


class ReplicatedLog(RedisEventLog):
    """``RedisEventLog`` whose appends wait for and whose reads barrier on ``wait_replicas``
    replicas (module docstring)."""

    def __init__(self, client: RedisClient, *, shard: str, prefix: str = "keeper",
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        super().__init__(client, shard=shard, prefix=prefix, wait_replicas=wait_replicas,
                         wait_timeout_ms=wait_timeout_ms)
        self.unreplicated: str | None = None
        self.unreplicated_at = 0.0

    def _failed(self, exc: LogNotReplicated) -> LogNotReplicated:
        self.unreplicated = str(exc)[:300]
        self.unreplicated_at = time.monotonic()
        return exc

    def waiting(self) -> str | None:
        """``unreplicated`` while the failure is recent (within ``RECENT_S``), else None."""
        if self.unreplicated is None or time.monotonic() - self.unreplicated_at > RECENT_S:
            return None
        return self.unreplicated

    async def barrier(self) -> int:
        """Return once ``wait_replicas`` replicas hold everything the shard's primary holds now
        (the number that acknowledged); ``LogNotReplicated`` if fewer did within
        ``wait_timeout_ms``. 0 at once when ``wait_replicas`` is 0."""
        want = self.wait_replicas
        if want <= 0:
            self.unreplicated = None
            return 0
        cmds: list[tuple[Any, ...]] = [("INCR", self.repl_key), ("WAIT", want, self.wait_timeout_ms)]
        async with wrap_errors("replica barrier"):
            if self._raw is not None:  # a cluster's log: the shard slot's primary
                replies = await self._raw.pipeline(cmds)
                for r in replies:
                    if isinstance(r, ReplyError):
                        raise r
            else:  # one connection of the pool for both
                async with self.client.pipeline(transaction=False) as pipe:
                    for c in cmds:
                        pipe.execute_command(*c)
                    replies = await pipe.execute()
        acked = int(replies[1])
        if acked < want:
            self.stats["not_replicated"] += 1
            raise health.REDIS.failed(self._failed(LogNotReplicated(
                f"shard {self.shard}: {acked} of {want} replicas hold the log after "
                f"{self.wait_timeout_ms} ms (waiting for a replica)")))
        self.unreplicated = None
        return acked

    async def append_encoded(self, items: Sequence[tuple[str, bytes]], *,
                             wait_replicas: int | None = None, fence: Fence | None = None
                             ) -> list[str | None]:
        try:
            out = await super().append_encoded(items, wait_replicas=wait_replicas, fence=fence)
        except LogNotReplicated as exc:
            raise self._failed(exc) from None
        if items and (self.wait_replicas if wait_replicas is None else wait_replicas) >= \
                self.wait_replicas:
            self.unreplicated = None
        return out

    async def read_batch(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                         ) -> tuple[list[LogEntry], str]:
        entries, last = await super().read_batch(after, count, block_ms)
        if entries:
            await self.barrier()
        return entries, last

    async def read_group(self, group: str, consumer: str, count: int = 100,
                         block_ms: int | None = None) -> list[LogEntry]:
        return await self._held(await super().read_group(group, consumer, count, block_ms))

    async def read_pending(self, group: str, consumer: str, count: int = 100) -> list[LogEntry]:
        return await self._held(await super().read_pending(group, consumer, count))

    async def claim_stale(self, group: str, consumer: str, min_idle_ms: int, count: int = 100
                          ) -> list[LogEntry]:
        return await self._held(await super().claim_stale(group, consumer, min_idle_ms, count))

    async def _held(self, entries: list[LogEntry]) -> list[LogEntry]:
        if entries:
            await self.barrier()
        return entries
