"""Retry delays as an injected policy: a function returning a fresh iterator of delays (s).

The websocket client (reconnects) and the ingest writer (log unavailable) both take one, so
tests pass ``no_delay`` and production keeps the jittered exponential default.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator

Backoff = Callable[[], Iterator[float]]


def jittered_exponential(initial: float = 0.25, factor: float = 2.0, maximum: float = 30.0,
                         rng: random.Random | None = None) -> Backoff:
    """Full-jitter exponential backoff: the n-th delay is uniform in ``[0, min(max, initial*f^n)]``.

    Jitter keeps a fleet of clients from reconnecting in lockstep after a venue restarts.
    """
    r = rng or random.Random()

    def delays() -> Iterator[float]:
        ceiling = initial
        while True:
            yield r.uniform(0, ceiling)
            ceiling = min(maximum, ceiling * factor)

    return delays


def no_delay() -> Iterator[float]:
    """Retry at once, forever (tests)."""
    return itertools.repeat(0.0)
