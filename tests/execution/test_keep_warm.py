"""The HTTP executor keeps a connection to the venue open through a calm (``keep_warm``), so a
crash's first submission does not wait for a connect: a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio
from aiohttp import web

from keeper.backoff import no_delay
from keeper.execution import HttpExecutor
from tests.execution.test_keeper_http_executor import SECRET, decision


class Venue:
    """POST /liquidations accepts; every request notes the client port it came over (one port:
    one connection). A HEAD there is answered 405, as a venue without it would."""

    def __init__(self, batch: bool = False) -> None:
        self.batch = batch
        self.ports: list[tuple[str, int]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/liquidations", self._post)
        if self.batch:
            app.router.add_post("/liquidations/batch", self._post)
        app.middlewares.append(self._note)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    @web.middleware
    async def _note(self, request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        assert request.transport is not None
        self.ports.append((request.method, request.transport.get_extra_info("peername")[1]))
        return await handler(request)

    async def _post(self, request: web.Request) -> web.Response:
        return web.json_response({"ref": "r1"})

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture(loop_scope="function")
async def venue() -> AsyncIterator[Venue]:
    v = Venue()
    await v.start()
    yield v
    await v.close()


@contextlib.asynccontextmanager
async def kept_warm(venue: Venue, keep_warm_s: float, connections: int) -> AsyncIterator[HttpExecutor]:
    """An executor with its ``keep_warm`` running, stopped and closed on the way out."""
    ex = HttpExecutor(f"{venue.url}/liquidations", secret=SECRET, backoff=no_delay, keep_warm_s=keep_warm_s,
                      keep_warm_connections=connections)
    stop = asyncio.Event()
    warm = asyncio.create_task(ex.keep_warm(stop))
    try:
        yield ex
    finally:
        stop.set()
        await warm
        await ex.close()


async def test_the_first_submission_leaves_on_the_connection_warmed_before_it(venue: Venue) -> None:
    async with kept_warm(venue, 30, 3) as ex:
        for _ in range(100):
            if len(venue.ports) == 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.gather(*(ex.execute(decision(i)) for i in range(3)))  # three at once
    assert [m for m, _ in venue.ports] == ["HEAD"] * 3 + ["POST"] * 3
    warmed = {port for m, port in venue.ports if m == "HEAD"}
    assert len(warmed) == 3, "three connections, opened at once"
    assert {port for m, port in venue.ports if m == "POST"} <= warmed, "no connect on the way out"


async def test_a_calm_is_bridged_and_traffic_needs_no_warming(venue: Venue) -> None:
    async with kept_warm(venue, 0.1, 2) as ex:
        await asyncio.sleep(0.45)  # a calm: a HEAD at the start and about every 0.1 s
        calm = ex.warmups
        for i in range(8):  # traffic more often than every 0.1 s: no HEAD between
            await ex.execute(decision(i))
            await asyncio.sleep(0.03)
        busy = ex.warmups - calm
    assert 3 <= calm <= 6  # rounds, two HEADs each
    assert busy <= 1
    assert len({port for _, port in venue.ports}) == 2, "the same two connections throughout"


async def test_no_warming_when_turned_off_or_when_the_venue_is_down() -> None:
    off = HttpExecutor("http://127.0.0.1:9/liquidations", secret=SECRET, keep_warm_s=0)
    await off.keep_warm(asyncio.Event())  # returns at once
    assert off.warmups == 0
    down = HttpExecutor("http://127.0.0.1:9/liquidations", secret=SECRET, timeout_s=0.2)
    try:
        assert await down.warm() is False  # a refused connection is only noted
    finally:
        await down.close()
    assert down.warmups == 1


async def test_a_venue_without_a_batch_endpoint_is_found_out_before_the_first_liquidation() -> None:
    for has_batch in (False, True):
        v = Venue(batch=has_batch)
        await v.start()
        ex = HttpExecutor(f"{v.url}/liquidations", secret=SECRET, batch_url=f"{v.url}/liquidations/batch",
                          keep_warm_connections=1)
        try:
            assert await ex.warm() is True
            assert await ex.warm() is True  # asked once
        finally:
            await ex.close()
            await v.close()
        # aiohttp answers HEAD on a POST-only route 405 (it is there), on no route 404
        assert (ex.batch_url is not None) is has_batch
        assert [m for m, _ in v.ports] == ["HEAD", "HEAD", "HEAD"]
