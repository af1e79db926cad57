"""The one retry policy type (``keeper.backoff``): its envelope, its zero policy, its iterator."""

from __future__ import annotations

import itertools
import random

from keeper.backoff import delays, exponential_backoff, jittered_backoff, no_delay


def test_exponential_backoff_doubles_up_to_its_cap() -> None:
    policy = exponential_backoff(0.1, 5.0)
    assert [policy(n) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_jittered_backoff_is_reproducible_with_an_injected_rng() -> None:
    a = jittered_backoff(0.05, 2.0, random.Random(3))
    b = jittered_backoff(0.05, 2.0, random.Random(3))
    assert [a(n) for n in range(1, 20)] == [b(n) for n in range(1, 20)]


def test_a_long_outage_stays_at_the_cap_without_overflow() -> None:
    assert exponential_backoff(0.1, 5.0)(100_000) == 5.0
    assert 0.0 <= jittered_backoff(0.1, 5.0)(100_000) <= 5.0


def test_delays_walks_the_policy_from_the_first_retry() -> None:
    assert list(itertools.islice(delays(exponential_backoff(1.0, 100.0, factor=3.0)), 4)) == [1, 3, 9, 27]
    assert list(itertools.islice(delays(no_delay), 3)) == [0.0, 0.0, 0.0]
