"""Retry delays as an injected policy: one type, one jittered default, one zero policy for tests.

A ``Backoff`` is a plain function from the retry number (1 for the first retry) to the delay in
seconds before that retry. Every loop that retries takes one (the websocket client's reconnects,
the ingest writer waiting out the log, an executor resubmitting under the same key, the runner
and a daemon role waiting out Redis), so tests pass ``no_delay`` and run at full speed while
production keeps a jittered exponential. A loop counts its own retries and starts again from 1
after a success, so the policy holds no state.

Randomness stays at this edge: ``jittered_backoff`` draws from the ``random.Random`` it is given
(a fresh one by default); jitter only spreads retries in time and never touches an id or a
decision. The domain's own restraint after a rejection (``KeeperParams.reject_backoff_us``) is
a deterministic function of log time, not a ``Backoff``.

``delays(backoff)`` turns a policy into the endless iterator of its delays, the shape
``websockets.asyncio.client.connect(reconnect_delays=...)`` asks for.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

__all__ = ["Backoff", "delays", "exponential_backoff", "jittered_backoff", "no_delay"]

Backoff = Callable[[int], float]
"""Delay in seconds before retry number ``attempt`` (1 for the first retry)."""


def _ceiling(base: float, cap: float, factor: float, attempt: int) -> float:
    try:
        return min(cap, base * factor ** max(0, attempt - 1))
    except OverflowError:  # a long outage: far past the cap
        return cap


def exponential_backoff(base: float = 0.1, cap: float = 5.0, factor: float = 2.0) -> Backoff:
    """Deterministic exponential backoff: ``min(cap, base * factor**(attempt-1))``."""

    def delay(attempt: int) -> float:
        return _ceiling(base, cap, factor, attempt)

    return delay


def jittered_backoff(base: float = 0.05, cap: float = 2.0, rng: random.Random | None = None, *,
                     factor: float = 2.0) -> Backoff:
    """Full-jitter exponential backoff: uniform in ``[0, min(cap, base * factor**(attempt-1))]``.

    Jitter keeps a fleet of clients from retrying in lockstep after a venue or Redis restarts.
    """
    r = rng or random.Random()

    def delay(attempt: int) -> float:
        return r.uniform(0.0, _ceiling(base, cap, factor, attempt))

    return delay


def no_delay(attempt: int) -> float:
    """Retry at once, every time (tests)."""
    return 0.0


def delays(backoff: Backoff) -> Iterator[float]:
    """The delays before retries 1, 2, 3, ... of ``backoff``, without end."""
    attempt = 0
    while True:
        attempt += 1
        yield backoff(attempt)
