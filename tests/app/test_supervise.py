"""Shutdown helpers: a task that ignores its cancellation is reported, not waited on forever."""

from __future__ import annotations

import asyncio

import structlog
from structlog.testing import capture_logs

from keeper.app.supervise import cancel_all


async def test_a_task_that_ignores_its_cancellation_is_logged_with_where_it_is_stuck() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.ensure_future(stubborn())
    task.set_name("stubborn")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await cancel_all([task], 0.05)
    [entry] = [e for e in logs if e["event"] == "task_ignored_cancel"]
    assert entry["task"] == "stubborn" and any("test_supervise.py" in w for w in entry["where"])
    # the console renderer (development logs) renders it: ``stack`` would be taken as a traceback
    structlog.dev.ConsoleRenderer(colors=False)(None, "error", dict(entry))
    release.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
