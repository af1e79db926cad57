"""The HTTP executor against the reference venue on loopback: asking the venue by key
(``status``) and the retry rule (``Retry-After`` waited out, not counted as a quick attempt; one
deadline for the whole call)."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from keeper.backoff import no_delay
from keeper.errors import TransientError
from keeper.execution import (
    HttpExecutor,
    RetryLater,
    SimVenueExecutor,
    StatusUnsupported,
    parse_retry_after,
)
from keeper.sim.server import SimServer
from tests.execution.helpers import SECRET, decision


class FakeTime:
    """An injected monotonic clock that only ``sleep`` moves: waits are recorded, not slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def executor(sim: SimServer, fake: FakeTime | None = None, **kw: object) -> SimVenueExecutor:
    timing: dict[str, object] = {} if fake is None else {"sleep": fake.sleep, "clock": fake.clock}
    return SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=0.5, **timing, **kw)


async def test_status_answers_the_accepted_liquidation_with_its_events_and_none_when_unknown(
        sim: SimServer) -> None:
    ex = executor(sim)
    try:
        sub = await ex.execute(decision(1))
        found = await ex.status(decision(1).intent_id)
        missing = await ex.status(decision(2).intent_id)
    finally:
        await ex.close()
    assert found is not None and missing is None
    assert (found.ref, found.duplicate) == (sub.ref, True)
    assert found.events == sub.events and len(found.events) == 2
    assert sim.venue.stats.status_queries == 2 and ex.status_queries == 2


async def test_status_cannot_tell_without_the_right_secret_or_the_endpoint(sim: SimServer) -> None:
    wrong = SimVenueExecutor(sim.url, secret=b"other", backoff=no_delay, max_attempts=2)
    missing = executor(sim, status_url=f"{sim.url}/nothing/{{intent_id}}")
    try:
        with pytest.raises(TransientError, match="cannot tell: status 401"):
            await wrong.status(decision(1).intent_id)
        with pytest.raises(StatusUnsupported):
            await missing.status(decision(1).intent_id)
    finally:
        await wrong.close()
        await missing.close()
    assert wrong.status_queries == 2  # retried like a submission
    assert missing.status_queries == 1  # not retried: no answer is coming


def test_status_url_defaults_to_the_post_url_and_takes_a_placeholder() -> None:
    def url(post: str, status: str | None = None) -> str:
        return HttpExecutor(post, secret=SECRET, status_url=status).status_url

    assert url("http://v/liquidations") == "http://v/liquidations/{intent_id}"
    assert url("http://v/liquidations/") == "http://v/liquidations/{intent_id}"
    assert url("http://v/l", "http://s/status") == "http://s/status/{intent_id}"
    assert url("http://v/l", "http://s/q?key={intent_id}") == "http://s/q?key={intent_id}"


async def test_retry_after_is_waited_out_and_does_not_burn_the_attempts(sim: SimServer) -> None:
    sim.faults.rate_limit_next, sim.faults.retry_after = 3, 2
    fake = FakeTime()
    ex = executor(sim, fake, max_attempts=1)  # one quick attempt only: the 429s must not count
    try:
        sub = await ex.execute(decision(1))
    finally:
        await ex.close()
    assert not sub.duplicate
    assert fake.waits == [2.0, 2.0, 2.0]
    assert ex.attempts == 4 and sim.faults.injected_429 == 3


async def test_retry_after_waits_at_least_that_long_in_real_time(sim: SimServer) -> None:
    sim.faults.rate_limit_next, sim.faults.retry_after = 1, 1
    ex = executor(sim)
    t0 = time.monotonic()
    try:
        sub = await ex.execute(decision(1))
    finally:
        await ex.close()
    assert time.monotonic() - t0 >= 1.0
    assert sub.ref is not None and ex.attempts == 2


async def test_a_503_with_retry_after_is_waited_out_too(sim: SimServer) -> None:
    sim.faults.http_5xx, sim.faults.retry_after, sim.faults.retry_after_5xx = 2, 1, True
    fake = FakeTime()
    ex = executor(sim, fake, max_attempts=1)
    try:
        await ex.execute(decision(1))
    finally:
        await ex.close()
    assert fake.waits == [1.0, 1.0]


async def test_a_retry_after_longer_than_the_cap_gives_up_at_once(sim: SimServer) -> None:
    sim.faults.rate_limit_next, sim.faults.retry_after = 5, 30
    fake = FakeTime()
    ex = executor(sim, fake, retry_after_max_s=5.0)
    try:
        with pytest.raises(RetryLater) as info:
            await ex.execute(decision(1))
    finally:
        await ex.close()
    assert info.value.retry_after == 30.0
    assert fake.waits == [] and ex.attempts == 1
    assert sim.venue.stats.accepted == 0


async def test_the_deadline_bounds_the_whole_call(sim: SimServer) -> None:
    sim.faults.rate_limit_next, sim.faults.retry_after = 100, 1
    fake = FakeTime()
    ex = executor(sim, fake, deadline_s=3.5)
    try:
        with pytest.raises(RetryLater):
            await ex.execute(decision(1))
    finally:
        await ex.close()
    assert fake.waits == [1.0, 1.0, 1.0]  # a fifth try, at 4 s, would end past 3.5 s
    assert ex.attempts == 4


async def test_rate_limited_submissions_all_land_once_the_window_allows(sim: SimServer) -> None:
    sim.faults.rate_limit, sim.faults.retry_after = 4, 1
    ex = executor(sim, max_attempts=1)
    t0 = time.monotonic()
    try:
        subs = await asyncio.gather(*(ex.execute(decision(i)) for i in range(8)))
    finally:
        await ex.close()
    assert time.monotonic() - t0 >= 1.0
    assert all(not s.duplicate for s in subs) and sim.venue.stats.accepted == 8
    assert sim.faults.injected_429 >= 4


async def test_each_request_carries_its_deadline_so_a_late_one_is_never_applied(sim: SimServer) -> None:
    sim.faults.delay_ms = 400  # the venue takes longer than the client waits
    ex = SimVenueExecutor(sim.url, secret=SECRET, backoff=no_delay, timeout_s=0.2, max_attempts=1)
    try:
        with pytest.raises(TransientError, match="timeout"):
            await ex.execute(decision(1))
        await asyncio.sleep(0.3)  # the venue's turn comes after the deadline
        sim.faults.delay_ms = 0
        assert await ex.status(decision(1).intent_id) is None
    finally:
        await ex.close()
    assert sim.faults.late_refused == 1 and sim.venue.stats.accepted == 0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_760_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after(formatdate(now + 7, usegmt=True), now) == pytest.approx(7.0)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now) == 0.0
    for bad in (None, "", "-1", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now) is None
