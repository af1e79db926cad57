"""Riding out faults outside the process: a role that loses Redis waits and goes on.

A role of the daemon is a loop whose start is its recovery (crash-only): a projector re-reads
from its position and appends what it holds, the chain ingest resumes from the log, the runner
reconciles its pending intents. So when Redis goes away (connection lost, ``LOADING``, ``BUSY``,
a write refused at ``maxmemory``) the daemon does not end the process: ``ride_through`` waits
with a growing, jittered delay and runs the role again, while ``/healthz`` stays live and
``/readyz`` names the role that waits and the error (``keeper.store.health.REDIS``). Only the
keeper's own errors of the log (``LogError``) are waited out; anything else is a bug and ends
the role, and with it the daemon, loudly.

``bounded`` and ``cancel_all`` are the shutdown's steps: each waits a bounded time, so a stop
never hangs on Redis or on a task that ignores its cancellation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from keeper.aio import wait_event
from keeper.backoff import Backoff, jittered_backoff
from keeper.errors import LogError
from keeper.store import health

__all__ = ["HEALTHY_AFTER_S", "bounded", "cancel_all", "ride_through"]

_log = structlog.get_logger()

HEALTHY_AFTER_S = 30.0
"""A role that ran this long since its last failure starts its backoff from the beginning."""


async def ride_through(name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event, *,
                       backoff: Backoff | None = None,
                       monotonic: Callable[[], float] = time.monotonic) -> None:
    """Run ``run()`` until it returns; while it raises ``LogError``, wait and run it again.

    Returns at once (without running again) when ``stop`` is set after a failure: a shutdown
    never waits for Redis to come back.
    """
    delay = backoff or jittered_backoff(0.1, 5.0)
    attempt = 0
    failed_at = monotonic()
    while True:
        try:
            await run()
            health.REDIS.recovered(name)
            return
        except LogError as exc:
            now = monotonic()
            attempt = 1 if now - failed_at > HEALTHY_AFTER_S else attempt + 1
            failed_at = now
            health.REDIS.wait(name, str(exc))
            wait_s = delay(attempt)
            _log.warning("role_waiting_for_redis", role=name, attempt=attempt,
                         retry_in_s=round(wait_s, 3), error=str(exc)[:300])
            if await wait_event(stop, wait_s):
                _log.warning("role_stopped_while_waiting", role=name)
                return


async def bounded(aw: Awaitable[Any], limit_s: float, what: str) -> None:
    """Await ``aw`` for at most ``limit_s`` seconds; a failure or the timeout is logged, never
    raised (a shutdown step is done its best, then the next one runs)."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait([task], timeout=limit_s)
    if not done:
        task.cancel()
        _log.warning("shutdown_step_timed_out", step=what, timeout_s=limit_s)
    elif not task.cancelled() and task.exception() is not None:
        _log.warning("shutdown_step_failed", step=what, error=repr(task.exception())[:300])


async def cancel_all(tasks: Sequence[asyncio.Task[Any]], limit_s: float) -> None:
    """Cancel ``tasks`` and wait at most ``limit_s`` seconds for them to end; one that does not
    (it ignores its cancellation: a bug) is logged with where it is stuck."""
    for t in tasks:
        t.cancel()
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=limit_s)
    for t in pending:
        frames = [f"{f.f_code.co_filename}:{f.f_lineno}" for f in t.get_stack(limit=5)]
        # not ``stack=``: structlog's renderers take that key for a formatted traceback string
        _log.error("task_ignored_cancel", task=t.get_name(), where=frames)
