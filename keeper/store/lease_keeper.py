"""One process's shards: heartbeat, renew, acquire, release and rebalance, every ``ttl/3``.

``LeaseKeeper.tick`` (``run`` calls it every ``interval_s``, by default a third of the TTL):

1. beats its heartbeat (``keeper.store.membership.Membership``) and reads the live members;
2. asks ``balance(live, shards)`` which shards this holder should own;
3. renews each lease it holds and should keep; a renewal refused (expired, taken over) is a
   **lost** lease: dropped and reported to ``on_lost``;
4. releases each lease it should no longer own (a member joined): ``on_released`` first (stop
   acting for the shard), then the release, so the new owner can take it at once;
5. acquires each shard it should own and does not hold, when it is free (its owner released it,
   or its lease expired: a dead process's shards are taken ``ttl`` after its last renewal at
   most, plus one interval); ``on_acquired`` then gets the new lease (start acting: the takeover).

Local validity. A lease is trusted locally until ``ttl`` after the moment its last successful
renewal (or acquisition) was *sent*, by the injected monotonic clock: Redis' expiry comes
later than that, so ``fence``/``owns`` stop answering before Redis can grant the shard to
someone else. While Redis cannot answer (``LogUnavailable``), leases are kept, not renewed; one
past its local validity is reported lost. The fence is what makes writes safe even when this
clock is wrong (a paused process): ``fence(shard)`` is what the shard's writes carry.

Callbacks may be plain functions or coroutines; an exception in one is logged, not raised.
``sleep`` and ``now`` are injectable (tests drive ticks by hand). ``close`` releases every lease
and leaves the group: the others take the shards over at their next tick, not at expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from keeper.aio import wait_event
from keeper.errors import LogUnavailable
from keeper.store.leases import Fence, Lease, ShardLeases
from keeper.store.membership import Membership, balance

__all__ = ["LeaseCallback", "LeaseKeeper", "Tick"]

LeaseCallback = Callable[[Lease], Awaitable[None] | None]
"""Told of one lease acquired, released or lost."""

_log = structlog.get_logger()


@dataclass
class Tick:
    """What one tick did (shard names); ``unavailable``: Redis failed some of it."""

    members: list[str] = field(default_factory=list)
    acquired: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    """Shards it should own that another holder still has."""
    unavailable: bool = False


class LeaseKeeper:
    """The shards ``holder`` owns among ``shards`` (module docstring)."""

    def __init__(self, leases: ShardLeases, membership: Membership, shards: Sequence[str],
                 holder: str, *, interval_s: float | None = None,
                 on_acquired: LeaseCallback | None = None, on_released: LeaseCallback | None = None,
                 on_lost: LeaseCallback | None = None, now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.leases = leases
        self.membership = membership
        self.shards = list(shards)
        self.holder = holder
        self.ttl_s = leases.ttl_ms / 1000
        self.interval_s = self.ttl_s / 3 if interval_s is None else interval_s
        self.on_acquired, self.on_released, self.on_lost = on_acquired, on_released, on_lost
        self.now = now
        self.sleep = sleep
        self.held: dict[str, Lease] = {}
        self._valid_until: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def owns(self, shard: str) -> bool:
        """Whether this process may act for ``shard`` now (held and locally valid)."""
        return shard in self.held and self.now() < self._valid_until[shard]

    def fence(self, shard: str) -> Fence | None:
        """The fence the shard's writes must carry; None when it is not (validly) held."""
        return self.held[shard].fence if self.owns(shard) else None

    async def tick(self) -> Tick:
        """One round (module docstring); never raises ``LogUnavailable`` (reported in the Tick)."""
        t = Tick()
        try:
            t.members = await self.membership.beat(self.holder)
        except LogUnavailable as exc:
            t.unavailable = True
            _log.warning("lease_membership_unavailable", holder=self.holder, error=str(exc))
        want = set(balance(t.members, self.shards).get(self.holder, [])) if t.members else None
        keep = [s for s in self.held if want is None or s in want]
        drop = [s for s in self.held if want is not None and s not in want]
        await asyncio.gather(*(self._renew(s, t) for s in keep))
        for shard in drop:
            await self._release(shard, t)
        if want is not None:
            todo = [s for s in self.shards if s in want and s not in self.held]
            await asyncio.gather(*(self._acquire(s, t) for s in todo))
        for shard in [s for s in self.held if self.now() >= self._valid_until[s]]:
            await self._lose(shard, t)  # not renewed in time (Redis unreachable)
        for what in ("acquired", "renewed", "released", "lost"):
            n = len(getattr(t, what))
            if n:
                self.counts[what] = self.counts.get(what, 0) + n
        return t

    async def _renew(self, shard: str, t: Tick) -> None:
        lease, sent = self.held[shard], self.now()
        try:
            ok = await self.leases.renew(lease)
        except LogUnavailable:
            t.unavailable = True
            return
        if ok:
            self._valid_until[shard] = sent + self.ttl_s
            t.renewed.append(shard)
        elif self.held.get(shard) == lease:
            await self._lose(shard, t)

    async def _acquire(self, shard: str, t: Tick) -> None:
        sent = self.now()
        try:
            lease = await self.leases.acquire(shard, self.holder)
        except LogUnavailable:
            t.unavailable = True
            return
        if lease is None:
            t.busy.append(shard)
            return
        self.held[shard] = lease
        self._valid_until[shard] = sent + self.ttl_s
        t.acquired.append(shard)
        _log.info("lease_acquired", shard=shard, holder=self.holder, token=lease.token)
        await self._tell(self.on_acquired, lease)

    async def _release(self, shard: str, t: Tick) -> None:
        lease = self.held.pop(shard)
        self._valid_until.pop(shard, None)
        await self._tell(self.on_released, lease)  # stop acting for it before giving it up
        try:
            await self.leases.release(lease)
        except LogUnavailable:
            t.unavailable = True  # it expires on its own
        t.released.append(shard)
        _log.info("lease_released", shard=shard, holder=self.holder, token=lease.token)

    async def _lose(self, shard: str, t: Tick) -> None:
        lease = self.held.pop(shard)
        self._valid_until.pop(shard, None)
        t.lost.append(shard)
        _log.warning("lease_lost", shard=shard, holder=self.holder, token=lease.token)
        await self._tell(self.on_lost, lease)

    async def _tell(self, callback: LeaseCallback | None, lease: Lease) -> None:
        if callback is None:
            return
        try:
            res = callback(lease)
            if inspect.isawaitable(res):
                await res
        except Exception:  # a callback's failure must not stop the leases being kept
            _log.exception("lease_callback_failed", shard=lease.shard, holder=self.holder)

    async def run(self, stop: asyncio.Event) -> None:
        """``tick`` every ``interval_s`` until ``stop`` is set, then ``close``."""
        try:
            while not stop.is_set():
                await self.tick()
                if self.sleep is not None:
                    await self.sleep(self.interval_s)
                else:
                    await wait_event(stop, self.interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        """Release every lease (``on_released`` each) and leave the group; Redis being
        unreachable is not an error here (the leases and the heartbeat then expire)."""
        t = Tick()
        for shard in list(self.held):
            await self._release(shard, t)
        with contextlib.suppress(LogUnavailable):
            await self.membership.leave(self.holder)
