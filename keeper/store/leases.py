"""Shard leases with fencing tokens: which process acts for a shard, and proof of it on each write.

Keys of one shard, under the shard's hash tag (one Redis Cluster slot with its log)::

    {prefix}:{shard}:lease         "holder|token", with a TTL (PX, Redis' own clock)
    {prefix}:{shard}:lease:token   the shard's fencing counter (INCR; no TTL, never reset)

Contract (each operation is one Lua script, atomic on the shard's slot):

- ``acquire(shard, holder)``: when the lease is free (never taken, expired, released) or held by
  ``holder`` itself, INCRs the counter and sets the lease to ``holder|token`` for ``ttl_ms``;
  returns the ``Lease`` (its token higher than every token of the shard before). A holder that
  acquires again starts a new term with a new token: a restarted process under the same name
  fences out its paused former self. Held by another: returns None (``holder_of`` says who).
- ``renew(lease)``: extends the TTL only while the lease is exactly ``holder|token``; False once
  it expired (even if nobody took it: acquire again, for a new token), was released or re-granted.
- ``release(lease)``: deletes the lease only while it is that holder's, with that token.
- The counter outlives the lease, so tokens of a shard only increase (on one Redis; on a cluster
  see below).
- **Fencing**: ``Fence`` (``lease.fence``) is what a write carries. A fenced script (the log's
  ``scripts.FENCED_APPEND``) compares the shard's lease with ``holder|token`` first and, unless
  equal, writes nothing and fails with ``LEASELOST``, raised as ``keeper.errors.LeaseLost``. A
  process paused past its TTL (GC, SIGSTOP, a partition) therefore records nothing once it
  resumes: its lease is gone or carries another token.

What it guarantees: between two writes of one shard that succeed under different fences, the
later carries the later grant; a holder's writes stop being accepted at the moment its lease
expires on Redis' clock, whatever the holder's clock says. What it does not: fence effects
outside Redis (a venue request in flight when the lease is lost: the executor's claims and the
venue's idempotency key cover that); and, on a Redis Cluster, Redis replicates asynchronously:
a grant acknowledged just before its primary dies may be lost, so the promoted replica may hand
out the same token number again. The fence compares ``holder|token``, not the number alone, so
two holders never pass the same fence (holder names must be unique per process incarnation).

Errors are wrapped as the log's (``keeper.store.redis_io.wrap_errors``): ``LogUnavailable``
while Redis cannot answer (a lease's state is then unknown: its holder must stop acting once
``ttl_ms`` has passed since its last successful renew was sent).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from keeper.errors import LogError
from keeper.store.redis_io import as_str, wrap_errors
from keeper.store.slotconn import RedisClient

__all__ = ["ACQUIRE", "RELEASE", "RENEW", "Fence", "Lease", "LeaseHolder", "ShardLeases"]

ACQUIRE = """
-- KEYS[1] = lease, KEYS[2] = the shard's token counter; ARGV = holder, ttl_ms
-- Free or held by this holder: {token, previous value or ''}; held by another: {0, its value}
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(.*)|%d+$') ~= ARGV[1] then return {0, cur} end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return {token, cur or ''}
"""

RENEW = """
-- KEYS[1] = lease; ARGV = holder|token, ttl_ms. 1: extended; 0: not this grant's any more
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

RELEASE = """
-- KEYS[1] = lease; ARGV = holder|token. 1: released; 0: not this grant's
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class Fence(NamedTuple):
    """What a fenced write carries: the shard's lease key and the grant it must still be."""

    key: str
    token: int
    holder: str

    @property
    def value(self) -> str:
        """The lease's value while this grant holds it (``holder|token``)."""
        return f"{self.holder}|{self.token}"


class Lease(NamedTuple):
    """One grant of a shard's lease: ``token`` is unique to it and above every earlier one."""

    shard: str
    holder: str
    token: int
    key: str

    @property
    def fence(self) -> Fence:
        return Fence(self.key, self.token, self.holder)


class LeaseHolder(NamedTuple):
    """Who holds a shard's lease now, and for how much longer (ms, by Redis' clock)."""

    holder: str
    token: int
    ttl_ms: int


class ShardLeases:
    """The leases of every shard under ``prefix`` (one Redis or a Redis Cluster); see the
    module docstring. ``ttl_ms`` is every grant's and renewal's TTL."""

    def __init__(self, client: RedisClient, *, prefix: str = "keeper", ttl_ms: int = 10_000) -> None:
        if ttl_ms <= 0:
            raise LogError(f"a lease needs a positive ttl_ms, not {ttl_ms}")
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    def key(self, shard: str) -> str:
        """The shard's lease key (its ``Fence.key``)."""
        return f"{self.prefix}:{{{shard}}}:lease"

    def token_key(self, shard: str) -> str:
        """The shard's fencing counter."""
        return f"{self.prefix}:{{{shard}}}:lease:token"

    async def acquire(self, shard: str, holder: str) -> Lease | None:
        """A new grant for ``holder`` (free, expired, or its own), else None."""
        if not holder or "|" in holder:
            raise LogError(f"a lease holder is a non-empty name without '|': {holder!r}")
        async with wrap_errors(f"acquire lease {shard}"):
            res: Any = await self._acquire(keys=[self.key(shard), self.token_key(shard)],
                                           args=[holder, self.ttl_ms])
        token = int(res[0])
        return Lease(shard, holder, token, self.key(shard)) if token > 0 else None

    async def renew(self, lease: Lease) -> bool:
        """Extend ``lease`` by ``ttl_ms`` from now; False when it is not the shard's grant any
        more (expired, released, or taken over)."""
        async with wrap_errors(f"renew lease {lease.shard}"):
            res = await self._renew(keys=[lease.key], args=[lease.fence.value, self.ttl_ms])
        return int(res) == 1

    async def release(self, lease: Lease) -> bool:
        """Give the shard up (only while ``lease`` is its grant); the counter stays."""
        async with wrap_errors(f"release lease {lease.shard}"):
            res = await self._release(keys=[lease.key], args=[lease.fence.value])
        return int(res) == 1

    async def holder_of(self, shard: str) -> LeaseHolder | None:
        """The shard's current holder, token and remaining TTL; None when the lease is free."""
        async with wrap_errors(f"read lease {shard}"):
            raw: Any = await self.client.get(self.key(shard))
            ttl = int(await self.client.pttl(self.key(shard)))
        if raw is None:
            return None
        holder, _, token = as_str(raw).rpartition("|")
        return LeaseHolder(holder, int(token), max(ttl, 0))

    async def last_token(self, shard: str) -> int:
        """The highest token the shard has granted (0: never)."""
        async with wrap_errors(f"read lease token {shard}"):
            raw: Any = await self.client.get(self.token_key(shard))
        return 0 if raw is None else int(raw)
