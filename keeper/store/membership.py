"""Live processes and which shards each should own: a heartbeat on Redis, a pure balance.

**Membership.** One sorted set per group, ``{prefix}:members:{group}`` (its own hash tag: a
single key, so any Redis Cluster slot will do), member -> the time its heartbeat expires (ms,
Redis' clock: ``TIME`` inside the script, so the processes' clocks do not matter). ``beat``
(one script) drops every expired member, sets this one's expiry to now + ``ttl_ms`` and returns
the live members; ``leave`` removes one at once; ``live`` reads them. A process that stops
beating (kill -9, a pause, a partition) is gone from everyone's view ``ttl_ms`` after its
last beat.

**Balance.** ``balance(members, shards)`` is a pure function: which shards each member should
own. Every shard gets exactly one member; the spread is even (each member ``floor(S/N)`` or
``ceil(S/N)`` shards, exactly ``S mod N`` of them the larger: 16 over 3 is 6/5/5); it depends only
on the sets given (same answer in every process, whatever the order); and it moves little when
a member joins or leaves: the assignment is rendezvous hashing (every (member, shard) pair has a
stable pseudo-random score) with those caps, taken greedily from the highest score down, so a
shard stays with its favourite member unless that member is full. Being stateless, it is not
always minimal: when a member leaves, its shards move, and where another member's cap rises
that member may take a shard it prefers from a third (16 shards over 3 members, one leaving:
no extra move in ~58% of draws of names, one in ~37%, at most 3; ``tests/store/test_balance.py``).
The lease keeps that safe: a shard moves by release and acquire, never held twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from keeper.errors import LogError
from keeper.store.redis_io import as_str, wrap_errors
from keeper.store.slotconn import RedisClient

__all__ = ["BEAT", "LIVE", "Membership", "balance", "score", "shard_names"]

BEAT = """
-- KEYS[1] = the group's sorted set; ARGV = member, ttl_ms (0: leave). Returns the live members.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

LIVE = """
-- KEYS[1] = the group's sorted set. The members whose heartbeat has not expired (no write).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


def shard_names(count: int) -> list[str]:
    """The shards ``"0"`` .. ``str(count - 1)`` (the log's default shard names)."""
    return [str(i) for i in range(count)]


def score(member: str, shard: str) -> int:
    """The pair's rendezvous score: stable across processes, runs and Python versions."""
    digest = hashlib.blake2b(f"{member}\0{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def balance(members: Iterable[str], shards: Sequence[str]) -> dict[str, list[str]]:
    """Which shards each member should own (module docstring): every member of ``members`` is a
    key (possibly with no shard), each list in the order of ``shards``; no member, no owner."""
    names = sorted(set(members))
    order = {s: i for i, s in enumerate(dict.fromkeys(shards))}
    out: dict[str, list[str]] = {m: [] for m in names}
    if not names:
        return out
    floor, extra = divmod(len(order), len(names))
    pairs = sorted(((score(m, s), s, m) for s in order for m in names), reverse=True)
    owner: dict[str, str] = {}
    for _, shard, member in pairs:
        if shard in owner:
            continue
        held = len(out[member])
        if held == floor and extra > 0:
            extra -= 1  # one of the S mod N members that own one more
        elif held >= floor:
            continue
        owner[shard] = member
        out[member].append(shard)
    for mine in out.values():
        mine.sort(key=order.__getitem__)
    return out


class Membership:
    """The live members of ``group`` (module docstring)."""

    def __init__(self, client: RedisClient, *, prefix: str = "keeper", group: str = "keepers",
                 ttl_ms: int = 10_000) -> None:
        if ttl_ms <= 0:
            raise LogError(f"a heartbeat needs a positive ttl_ms, not {ttl_ms}")
        self.client = client
        self.key = f"{prefix}:members:{{{group}}}"
        self.ttl_ms = ttl_ms
        self._beat = client.register_script(BEAT)
        self._live = client.register_script(LIVE)

    async def beat(self, member: str) -> list[str]:
        """``member`` is live for ``ttl_ms`` more; returns every live member, sorted."""
        async with wrap_errors("membership beat"):
            res: Any = await self._beat(keys=[self.key], args=[member, self.ttl_ms])
        return sorted(as_str(m) for m in res)

    async def leave(self, member: str) -> list[str]:
        """``member`` is gone at once (a clean stop); returns the members left."""
        async with wrap_errors("membership leave"):
            res: Any = await self._beat(keys=[self.key], args=[member, 0])
        return sorted(as_str(m) for m in res)

    async def live(self) -> list[str]:
        """Every live member, sorted."""
        async with wrap_errors("membership live"):
            res: Any = await self._live(keys=[self.key])
        return sorted(as_str(m) for m in res)
