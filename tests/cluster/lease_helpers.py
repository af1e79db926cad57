"""Helpers of the lease tests and of their subprocess (``lease_proc.py``): a client of either
kind of store, an outcome record to append, a wait with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from keeper.domain.events import LiquidationConfirmed
from keeper.store.redis_io import make_client
from keeper.store.slotconn import RedisClient, is_cluster_url, make_cluster_client


async def open_client(url: str) -> RedisClient:
    """A binary client for ``redis://`` or ``redis+cluster://`` (initialised): the caller closes it."""
    if is_cluster_url(url):
        cluster = make_cluster_client(url, socket_timeout=10.0)
        await cluster.initialize()
        return cluster
    return make_client(url, socket_timeout=10.0)


def outcome(name: str, ts: int = 1_000) -> LiquidationConfirmed:
    """An outcome record (what the runner appends), its event id ``out:<name>``."""
    return LiquidationConfirmed(event_id=f"out:{name}", ts_event=ts, intent_id=name, account="a1",
                                bucket="cross", venue_ref=name)


async def until(cond: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll ``cond`` every 20 ms until it holds; returns the seconds it took."""
    t0 = time.monotonic()
    while not await cond():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0
