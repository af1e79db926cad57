"""The EventLog contract (``tests/contract/test_event_log.py``, every test of it) on one shard
of a real Redis Cluster: the same tests, with the ``h`` harness opening ``redis+cluster://``
logs (``RedisCluster`` for commands, the raw connection to the shard slot's primary for the
hot paths)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from keeper.store.redis_log import RedisEventLog
from keeper.store.slotconn import SlotConnection
from keeper.testing import FakeClock
from tests.contract import test_event_log as contract
from tests.contract.test_event_log import Harness

for _name in dir(contract):  # the contract's tests, collected here too (with this module's h)
    if _name.startswith("test_"):
        globals()[_name] = getattr(contract, _name)


@pytest_asyncio.fixture(loop_scope="function")
async def h(cluster_url: str) -> AsyncIterator[Harness]:
    log = await RedisEventLog.connect(cluster_url)
    assert isinstance(log._raw, SlotConnection)  # the cluster path, not a single Redis
    harness = Harness("redis", log, FakeClock(1_700_000_000_000_000), [log], cluster_url)
    try:
        yield harness
    finally:
        for lg in harness.opened:
            await lg.close()
