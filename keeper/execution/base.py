"""What every executor shares: the submission result, the retry policy and the retry loop.

An executor submits one ``Decision`` to a venue under its intent id (the idempotency key) and
returns a ``Submission``; it raises ``TransientError`` when retrying under the same id may help
(5xx, timeout, connection reset), ``RetryLater`` (a ``TransientError``) when the venue said how
long to wait (429 or 503 with ``Retry-After``), and ``PermanentError`` with the venue's reason
when it will not. ``submit_with_retries`` drives one executor through a ``keeper.backoff.Backoff``
policy (tests pass ``no_delay`` and run at full speed); its ``sleep`` and ``clock`` are injected
too.

An executor may also answer ``status(intent_id)``: what the venue holds under that key
(``StatusExecutor``; ``status_of`` finds it). The runner asks it before it expires an intent
that may have reached the venue; an executor without it is never asked (its intents are
resubmitted instead: the venue's idempotency answers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import NamedTuple, Protocol, TypeVar

from keeper.backoff import Backoff
from keeper.domain.events import Decision, Event
from keeper.errors import TransientError

__all__ = ["RetryLater", "Sleep", "StatusExecutor", "StatusUnsupported", "Submission", "VenueExecutor",
           "status_of", "submit_with_retries"]

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


class StatusUnsupported(TransientError):
    """The venue has no status answer at all (no such endpoint): it cannot tell, now or on a
    retry. Not retried; the runner falls back to resubmitting under the same key."""


class RetryLater(TransientError):
    """A transient failure for which the venue said when to come back: ``retry_after`` seconds
    (from a 429's or 503's ``Retry-After``)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


class StatusExecutor(Protocol):
    """An executor that can ask its venue about an idempotency key (optional: see
    ``status_of``)."""

    async def status(self, intent_id: str) -> Submission | None:
        """The venue's liquidation under ``intent_id`` (``duplicate=True``: the earlier
        submission is the one that counts), or None when the venue says it never accepted it.
        ``TransientError`` when the venue cannot tell (unreachable, rate-limited, an answer that
        is not one of the two): never read that as "not there"; ``StatusUnsupported`` (one of
        them) when it has no status answer at all."""
        ...


def status_of(executor: object) -> Callable[[str], Awaitable[Submission | None]] | None:
    """The executor's ``status`` method, or None when it has none (it cannot be asked)."""
    fn = getattr(executor, "status", None)
    return fn if callable(fn) else None


async def submit_with_retries(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    max_attempts: int,
    on_retry: Callable[[int, TransientError], None] | None = None,
    *,
    retry_after_max_s: float = 5.0,
    deadline_s: float = 20.0,
    attempt_s: float = 0.0,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``call`` until it returns or raises ``PermanentError``, retrying transient failures
    under the same key; when it gives up, the last ``TransientError`` propagates.

    The rule:

    - a plain ``TransientError`` (5xx, timeout, reset) is one *attempt*; after ``max_attempts``
      of them it gives up; before the next try it waits ``backoff(n)``;
    - a ``RetryLater`` (the venue said "come back in R s") is **not** an attempt: the venue is
      answering, and a quick retry would only be refused again. It waits ``max(R,
      backoff(n))``, at least R; when R exceeds ``retry_after_max_s`` it gives up at once rather
      than retry early or hold the intent that long (the runner takes it up again later);
    - it never starts a wait whose next try (taking up to ``attempt_s``, a request's timeout)
      could end more than ``deadline_s`` after the first try began: it gives up instead. So a
      call ends within ``deadline_s`` (or the first try's ``attempt_s``, if longer), which the
      runner relies on: keep it below the claim's TTL.
    """
    start = clock()
    attempt = 1
    waits = 0
    while True:
        try:
            return await call()
        except TransientError as exc:
            delay = _next_delay(exc, attempt, max_attempts, backoff, retry_after_max_s)
            if delay is None or clock() + delay + attempt_s - start > deadline_s:
                raise
            if not isinstance(exc, RetryLater):
                attempt += 1
            waits += 1
            if on_retry is not None:
                on_retry(waits, exc)
        await sleep(delay)


def _next_delay(exc: TransientError, attempt: int, max_attempts: int, backoff: Backoff,
                retry_after_max_s: float) -> float | None:
    """The wait before the next try after ``exc`` on ``attempt`` (None: give up now)."""
    if isinstance(exc, StatusUnsupported):
        return None
    if isinstance(exc, RetryLater):
        return None if exc.retry_after > retry_after_max_s else max(exc.retry_after, backoff(attempt))
    return None if attempt >= max_attempts else backoff(attempt)
