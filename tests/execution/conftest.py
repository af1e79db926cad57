"""Fixtures of the executor and runner tests: a Redis log and a reference venue on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from keeper.sim.server import SimServer
from keeper.store.redis_log import RedisEventLog
from tests.execution.helpers import SECRET, underwater_venue


@pytest_asyncio.fixture(loop_scope="function")
async def log(redis_url: str) -> AsyncIterator[RedisEventLog]:
    lg = await RedisEventLog.connect(redis_url)
    yield lg
    await lg.close()


@pytest_asyncio.fixture(loop_scope="function")
async def sim() -> AsyncIterator[SimServer]:
    """The reference venue with ten underwater accounts (``acct-0`` ... ``acct-9``)."""
    server = SimServer(SECRET, venue=underwater_venue(10))
    await server.start(play=False)
    try:
        yield server
    finally:
        await server.stop()
