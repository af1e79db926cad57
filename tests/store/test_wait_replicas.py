"""``RawRedis.pipeline`` and ``append(wait_replicas=n)`` on one Redis (no replicas: the WAIT
cannot be met). On a cluster, with replicas: ``tests/cluster/test_cluster_log.py``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from keeper.domain.events import Deposit
from keeper.errors import LogNotReplicated, LogUnavailable
from keeper.store.fastpath import RawRedis, ReplyError
from keeper.store.redis_log import RedisEventLog, make_client


def dep(i: int) -> Deposit:
    return Deposit(event_id=f"w{i}", ts_event=i, account="a", bucket="cross", asset="USDC",
                   amount=Decimal(i + 1))


async def test_pipeline_returns_every_reply_in_order_errors_unraised(redis_url: str) -> None:
    raw = RawRedis.from_url(redis_url)
    assert raw is not None
    try:
        res = await raw.pipeline([("SET", "pl:k", "1"), ("LPUSH", "pl:k", "x"), ("INCR", "pl:k"),
                                  ("WAIT", 0, 0)])
        assert res[0] == b"OK" and isinstance(res[1], ReplyError) and "WRONGTYPE" in str(res[1])
        assert res[2] == 2 and res[3] == 0
        assert await raw.call("GET", "pl:k") == b"2"  # the connection is still in step
    finally:
        await raw.close()


@pytest.mark.parametrize("fast", [True, False])
async def test_unmet_wait_raises_not_replicated_and_the_retry_is_a_duplicate(
        redis_url: str, fast: bool) -> None:
    log = RedisEventLog(make_client(redis_url), owns_client=True, fast=fast, url=redis_url,
                        wait_replicas=1, wait_timeout_ms=50)
    try:
        assert (log._raw is not None) is fast
        with pytest.raises(LogNotReplicated, match="0 of 1 replicas") as exc:
            await log.append([dep(1), dep(2)])
        assert isinstance(exc.value, LogUnavailable)  # waited out like any unavailability
        assert [e.event.event_id for e in await log.read()] == ["w1", "w2"]  # on the primary
        assert await log.append([dep(1), dep(3)], wait_replicas=0) == [None, await log.last_id()]
        assert int(await log.client.get(log.repl_key)) >= 1  # (twice after a NOSCRIPT retry)
        assert log.stats["not_replicated"] == 1
    finally:
        await log.close()
