"""The HTTP executor against a real aiohttp server on loopback that injects faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio

from keeper.backoff import jittered_backoff, no_delay
from keeper.domain.events import Decision
from keeper.errors import ConfigError, PermanentError, TransientError
from keeper.execution import HttpExecutor
from tests.execution.keeper_stub_venue import StubVenue

SECRET = b"test-secret"


def decision(i: int) -> Decision:
    return Decision(intent_id=f"liq:a{i}/cross@1-{i}", account=f"a{i}", bucket="cross", trigger=f"1-{i}",
                    trigger_event_id=f"p{i}", profile="aave-v3", rule="test", action="repay_seize",
                    notional=Decimal("100.5"), mode="live")


@pytest_asyncio.fixture(loop_scope="function")
async def venue() -> AsyncIterator[StubVenue]:
    v = StubVenue(SECRET, hold_s=0.5)
    await v.start()
    yield v
    await v.close()


async def test_accepted_once_with_signed_body_and_key(venue: StubVenue) -> None:
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay)
    try:
        sub = await ex.execute(decision(1))
        again = await ex.execute(decision(1))
    finally:
        await ex.close()
    assert (sub.ref, sub.duplicate) == ("ref-liq:a1/cross@1-1", False)
    assert again.duplicate is True
    assert venue.accepted["liq:a1/cross@1-1"] == 1
    assert venue.bad_signatures == 0


async def test_wrong_secret_is_a_permanent_rejection(venue: StubVenue) -> None:
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=b"other", backoff=no_delay)
    try:
        with pytest.raises(PermanentError, match="bad signature"):
            await ex.execute(decision(1))
    finally:
        await ex.close()
    assert venue.bad_signatures == 1
    assert not venue.accepted


async def test_500s_and_timeouts_are_retried_under_the_same_key(venue: StubVenue) -> None:
    venue.plan = lambda key, n: {1: "500", 2: "timeout", 3: "500"}.get(n, "ok")
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay, timeout_s=0.2,
                      max_attempts=5)
    try:
        sub = await ex.execute(decision(2))
    finally:
        await ex.close()
    assert sub.duplicate is False
    assert ex.attempts == 4
    assert venue.posts["liq:a2/cross@1-2"] == 4
    assert venue.accepted["liq:a2/cross@1-2"] == 1


async def test_lost_response_is_confirmed_as_duplicate_on_retry(venue: StubVenue) -> None:
    venue.plan = lambda key, n: "lost" if n == 1 else "ok"
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay)
    try:
        sub = await ex.execute(decision(3))
    finally:
        await ex.close()
    assert sub.duplicate is True
    assert venue.accepted["liq:a3/cross@1-3"] == 1


async def test_422_carries_the_venue_reason(venue: StubVenue) -> None:
    venue.plan = lambda key, n: "reject"
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay)
    try:
        with pytest.raises(PermanentError) as info:
            await ex.execute(decision(4))
    finally:
        await ex.close()
    assert info.value.reason == "healthy: liq:a4/cross@1-4"
    assert venue.posts["liq:a4/cross@1-4"] == 1


async def test_persistent_5xx_gives_up_with_transient_error_after_max_attempts(venue: StubVenue) -> None:
    venue.plan = lambda key, n: "500"
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay, max_attempts=3)
    try:
        with pytest.raises(TransientError):
            await ex.execute(decision(5))
    finally:
        await ex.close()
    assert venue.posts["liq:a5/cross@1-5"] == 3


async def test_connection_refused_is_transient() -> None:
    ex = HttpExecutor("http://127.0.0.1:9/liquidations", secret=SECRET, backoff=no_delay, max_attempts=2)
    try:
        with pytest.raises(TransientError):
            await ex.execute(decision(6))
    finally:
        await ex.close()
    assert ex.attempts == 2


def test_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEPER_VENUE_SECRET", raising=False)
    with pytest.raises(ConfigError, match="KEEPER_VENUE_SECRET"):
        HttpExecutor("http://127.0.0.1:9/x")
    monkeypatch.setenv("KEEPER_VENUE_SECRET", "s3")
    assert HttpExecutor("http://127.0.0.1:9/x")._secret == b"s3"


def test_jittered_backoff_stays_within_its_exponential_envelope() -> None:
    import random
    policy = jittered_backoff(base=0.1, cap=1.0, rng=random.Random(7))
    for attempt in range(1, 10):
        d = policy(attempt)
        assert 0.0 <= d <= min(1.0, 0.1 * 2 ** (attempt - 1))
