"""The admin app's request bodies: bounded in size (``MAX_BODY``), and a body nested past the
JSON parser's recursion limit is a 400 like any other bad body, not a 500 with a traceback."""

from __future__ import annotations

import aiohttp

from keeper.app.admin import MAX_BODY
from tests.app.fakes import FakeProvider
from tests.app.test_admin import TOKEN, serve


async def test_a_deeply_nested_pause_body_is_a_bad_request() -> None:
    p = FakeProvider()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    deep = b"[" * (MAX_BODY - 1)
    async with serve(p) as (http, url), http.post(f"{url}/pause", data=deep, headers=auth) as r:
        assert r.status == 400
        assert await r.json() == {"error": "body: expected a JSON object"}
    assert p.paused == []


async def test_a_body_over_max_body_is_refused_by_aiohttp() -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(FakeProvider()) as (http, url), \
            http.post(f"{url}/pause", data=b" " * (MAX_BODY + 1), headers=auth) as r:
        assert r.status == 413
    assert isinstance(http, aiohttp.ClientSession)
