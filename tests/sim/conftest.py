"""Fixtures of the venue's loopback tests: ``small_venue`` served on 127.0.0.1 (not playing a
path) and one client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from keeper.sim.server import SimServer
from tests.sim.client import SECRET, TIMEOUT
from tests.sim.helpers import small_venue


@pytest_asyncio.fixture(loop_scope="function")
async def sim() -> AsyncIterator[SimServer]:
    server = SimServer(SECRET, venue=small_venue())
    await server.start(play=False)
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        yield s
