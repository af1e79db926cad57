"""The claim's sent mark: once an intent is marked ``submitted``, that fact outlives the claim's
short expiry, until the outcome is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from keeper.execution.claim import Claims


@pytest_asyncio.fixture(loop_scope="function")
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_the_sent_mark_outlives_the_claim_and_goes_with_the_outcome(client: aioredis.Redis) -> None:
    claims = Claims(client, ttl_ms=100)
    first = await claims.take("i1", "A", "submit")
    assert (first.ok, first.phase, first.sent) == (True, "submitted", False)
    await asyncio.sleep(0.2)
    assert await claims.state("i1") is None  # the claim lapsed ...
    assert await claims.sent("i1")  # ... the mark did not
    again = await claims.take("i1", "B", "expire")
    assert (again.ok, again.previous, again.phase, again.sent) == (True, "", "submitted", True)
    await claims.finish("i1", "confirmed", again.token)
    assert not await claims.sent("i1")
    assert (await claims.take("i1", "C", "expire")).done


async def test_hold_then_mark_submitted_sets_the_mark_and_a_held_claim_never_marked_leaves_none(
        client: aioredis.Redis) -> None:
    claims = Claims(client, ttl_ms=100)
    held = await claims.take("held", "A")
    assert not await claims.sent("held")
    marked = await claims.take("marked", "A")
    assert await claims.mark_submitted("marked", "A", marked.token)
    await asyncio.sleep(0.2)
    never = await claims.take("held", "B", "expire")
    assert (never.ok, never.phase, never.sent) == (True, "claimed", False)
    assert held.token < never.token
    was = await claims.take("marked", "B", "expire")
    assert (was.ok, was.phase, was.sent) == (True, "submitted", True)


async def test_the_sent_mark_has_its_own_expiry(client: aioredis.Redis) -> None:
    claims = Claims(client, ttl_ms=50, sent_ttl_ms=150)
    await claims.take("i1", "A", "submit")
    await asyncio.sleep(0.1)
    assert await claims.state("i1") is None and await claims.sent("i1")
    await asyncio.sleep(0.1)
    assert not await claims.sent("i1")
