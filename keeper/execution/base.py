"""What every executor shares: the submission result, the retry policy and the retry loop.

An executor submits one ``Decision`` to a venue under its intent id (the idempotency key) and
returns a ``Submission``; it raises ``TransientError`` when retrying under the same id may help
(5xx, timeout, connection reset) and ``PermanentError`` with the venue's reason when it will not.
``submit_with_retries`` drives one executor through a ``Backoff`` policy: a plain function from
the attempt number to a delay, so tests pass ``no_delay`` and run at full speed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import NamedTuple, Protocol

from keeper.domain.events import Decision, Event
from keeper.errors import TransientError

Backoff = Callable[[int], float]
"""Delay in seconds before retry number ``attempt`` (1 for the first retry)."""


class Submission(NamedTuple):
    """What the venue said: its reference, whether it had the intent already, and the account
    events it produced (the reference venue returns them; other venues return none). A chain
    venue also says what its contract did: the receipt's ``block`` and the amounts its event
    reports (``repaid``, ``seized``, in token units)."""

    ref: str | None
    duplicate: bool
    events: list[Event]
    block: int | None = None
    repaid: Decimal | None = None
    seized: Decimal | None = None


class VenueExecutor(Protocol):
    """An executor the runner drives. ``submit`` satisfies ``keeper.ports.Executor``."""

    name: str

    async def execute(self, decision: Decision) -> Submission: ...

    async def submit(self, decision: Decision) -> tuple[str | None, bool]: ...

    async def close(self) -> None: ...


def jittered_backoff(base: float = 0.05, cap: float = 2.0, rng: random.Random | None = None) -> Backoff:
    """Full-jitter exponential backoff: uniform in ``[0, min(cap, base * 2**(attempt-1))]``.

    Jitter only spreads retries in time; it never touches ids or decisions.
    """
    r = rng or random.Random()

    def delay(attempt: int) -> float:
        return r.uniform(0.0, min(cap, base * (2 ** max(0, attempt - 1))))

    return delay


def no_delay(attempt: int) -> float:
    """The zero-delay policy, for tests."""
    return 0.0


async def submit_with_retries(
    call: Callable[[], Awaitable[Submission]],
    backoff: Backoff,
    max_attempts: int,
    on_retry: Callable[[int, TransientError], None] | None = None,
) -> Submission:
    """Call ``call`` until it returns, raises ``PermanentError``, or ``max_attempts`` transient
    failures have happened (then the last ``TransientError`` propagates)."""
    attempt = 1
    while True:
        try:
            return await call()
        except TransientError as exc:
            if attempt >= max_attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            await asyncio.sleep(backoff(attempt))
            attempt += 1
