"""Small asyncio helpers the roles share."""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


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
