"""The admin's view of the sharded mode (``keeper.app.sharded``): who owns which shard.

``ShardedStatus`` is the ``AdminProvider`` the admin server is given in that mode. Its
``summary`` leads with ``shards``: one row per shard, read from the shard's lease on Redis
(``holder``, ``token``, ``ttl_ms`` left) and, for the shards this process holds, from its worker
(``mine``, ``held_s``: the lease's age here, ``position``, ``log_last`` and ``lag_ms``: the time
between the newest entry of the shard's log and the keeper's position, by the stream ids).
``/readyz`` is ready while every task of the process runs, Redis answers and no shard held here
waits for a replica (``keeper.store.replicated``: the reason names the shard). The status page
(the admin's ``/``) shows the rows as a table when ``summary`` has them. The per-account
views (account, at-risk, recent liquidations, feeds, chain, pause) are the one-shard daemon's
only: here they answer empty (``None`` or ``[]``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from keeper.app.metrics import Metrics
from keeper.app.shard_worker import ShardHost
from keeper.errors import LogError
from keeper.store.entries import parse_id
from keeper.store.leases import ShardLeases
from keeper.store.membership import shard_names
from keeper.store.redis_io import as_str, wrap_errors
from keeper.store.slotconn import RedisClient

__all__ = ["ShardedStatus", "lag_ms"]

PROBE_S = 1.0
"""A lease read that takes longer than this reports Redis down."""


def lag_ms(position: str | None, last: str | None) -> int | None:
    """Milliseconds between the log's newest entry and a reader's position (stream ids carry
    their append time), 0 when caught up; None when either is unknown."""
    if position is None or last is None:
        return None
    if parse_id(position) >= parse_id(last):
        return 0
    return max(int(last.split("-")[0]) - int(position.split("-")[0]), 0)


class ShardedStatus:
    """``AdminProvider`` of the sharded mode (module docstring)."""

    def __init__(self, client: RedisClient, shards: int, metrics: Metrics, *,
                 host: ShardHost | None, running: Any, mode: str, roles: list[str],
                 feeds: int = 0, staleness_s: float = 0.0, prefix: str = "keeper") -> None:
        self.client = client
        self.names = shard_names(shards)
        self._metrics = metrics
        self.host = host
        self.running = running
        self.mode = mode
        self.roles = roles
        self.feeds_configured = feeds
        self.staleness_s = staleness_s
        self.prefix = prefix
        self.leases = ShardLeases(client, prefix=prefix)

    def healthy(self) -> bool:
        return True

    async def shards(self) -> list[dict[str, Any]]:
        """One row per shard (module docstring)."""
        mine = {r["shard"]: r for r in (self.host.status() if self.host is not None else [])}
        rows = []
        for s in self.names:
            held = await self.leases.holder_of(s)
            async with wrap_errors(f"read shard {s}"):
                raw: Any = await self.client.xrevrange(f"{self.prefix}:{{{s}}}:log", count=1)
            last = as_str(raw[0][0]) if raw else None
            row: dict[str, Any] = {"shard": s, "holder": held.holder if held else None,
                                   "token": held.token if held else None,
                                   "ttl_ms": held.ttl_ms if held else None,
                                   "mine": s in mine, "log_last": last}
            if s in mine:
                pos = mine[s]["position"]
                row.update(held_s=mine[s]["held_s"], position=pos, lag_ms=lag_ms(pos, last),
                           decisions=mine[s]["decisions"])
            rows.append(row)
        return rows

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        reasons = [] if self.running() else ["a task of the process ended"]
        for row in self.host.status() if self.host is not None else []:
            if row.get("unreplicated"):
                reasons.append(f"shard {row['shard']}: waiting for a replica: {row['unreplicated']}")
        try:
            await asyncio.wait_for(self.leases.holder_of(self.names[0]), PROBE_S)
        except (LogError, TimeoutError) as exc:
            reasons.append(f"redis unreachable: {exc}")
        return not reasons, {"reasons": reasons,
                             "shards_held": self.host.owned() if self.host is not None else []}

    def metrics(self) -> Metrics:
        return self._metrics

    async def summary(self) -> dict[str, Any]:
        ok, details = await self.ready()
        try:
            shards: list[dict[str, Any]] | str = await self.shards()
        except LogError as exc:
            shards = f"unavailable: {exc}"
        return {"mode": self.mode, "ready": ok, "reasons": details["reasons"],
                "roles": self.roles, "holder": self.host.holder if self.host else None,
                "feeds": self.feeds_configured, "staleness_s": self.staleness_s,
                "log_position": None, "lag": 0, "shards": shards}

    async def account(self, account_id: str) -> dict[str, Any] | None:
        return None

    async def at_risk(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def recent_liquidations(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def feeds(self) -> list[dict[str, Any]]:
        return []

    async def chain(self) -> list[dict[str, Any]]:
        return []

    async def pause(self, scope: str, reason: str) -> str | None:
        return None

    async def resume(self, scope: str) -> str | None:
        return None
