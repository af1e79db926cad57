"""Small asyncio helpers the roles share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

import structlog

__all__ = ["EventLoop", "run", "wait_event"]

T = TypeVar("T")
EventLoop = Literal["uvloop", "asyncio"]
"""``[keeper] event_loop``: the daemon's event loop."""


def run(main: Coroutine[Any, Any, T], loop: EventLoop = "uvloop") -> T:
    """``asyncio.run(main)`` on the event loop named: ``uvloop`` (libuv's loop: each of a
    liquidation's round trips to Redis and the venue costs less; ``docs/performance.md``) where
    it is installed, else, or for ``asyncio``, the standard library's."""
    if loop == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 - optional at run time
        except ImportError:
            structlog.get_logger().warning("uvloop_missing", fallback="asyncio")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


async def wait_event(event: asyncio.Event, limit_s: float | None) -> bool:
    """Wait until ``event`` is set or ``limit_s`` seconds pass; True when it is set.

    Not ``asyncio.wait_for(event.wait(), limit_s)``: on Python 3.11 that can swallow a
    cancellation arriving as the inner wait completes, and a loop around it then never ends
    (a shutdown that hangs). ``asyncio.wait`` never swallows the caller's cancellation.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=limit_s)
    finally:
        waiter.cancel()
    return event.is_set()
