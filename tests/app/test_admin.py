"""The admin HTTP app on a real loopback server against a fake provider: every route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from keeper.app.admin import AdminServer, admin_server, build_admin_app
from keeper.app.config import Secret, load_config
from tests.app.fakes import FakeProvider
from tests.app.test_metrics import parse

TOKEN = "admin-token-for-tests-0123"
TIMEOUT = aiohttp.ClientTimeout(total=5)


@asynccontextmanager
async def serve(provider: FakeProvider, token: str | None = TOKEN, **kw: object
                ) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    app = build_admin_app(provider, Secret(token) if token else None, **kw)  # type: ignore[arg-type]
    async with AdminServer(app, "127.0.0.1", 0) as server, \
            aiohttp.ClientSession(timeout=TIMEOUT) as http:
        assert server.port and server.port > 0
        yield http, server.url


async def test_healthz_and_readyz_report_reasons():
    p = FakeProvider()
    async with serve(p) as (http, url):
        async with http.get(f"{url}/healthz") as r:
            assert r.status == 200 and (await r.json()) == {"ok": True}
        async with http.get(f"{url}/readyz") as r:
            assert r.status == 200 and (await r.json())["ready"] is True
        p.is_ready = False
        async with http.get(f"{url}/readyz") as r:
            assert r.status == 503
            body = await r.json()
            assert body == {"ready": False, "log_lag": 1200, "stale_feeds": ["ETH-PERP"]}


async def test_metrics_are_prometheus_text_that_parses():
    async with serve(FakeProvider()) as (http, url), http.get(f"{url}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = parse(await r.text())
    assert samples['keeper_events_ingested_total{type="price_updated"}'] == 1200
    assert samples["keeper_log_lag_entries"] == 10
    assert samples['keeper_intents_total{outcome="rejected"}'] == 2
    assert samples['keeper_tick_to_intent_seconds_bucket{le="+Inf"}'] == 5
    assert samples['keeper_tick_to_intent_seconds_bucket{le="0.001"}'] == 2
    assert samples['keeper_feed_staleness_seconds{symbol="ETH \\"PERP\\"\\\\x"}'] == 12
    assert samples['keeper_dead_letters_total{reason="invalid_price"}'] == 3


async def test_views_return_the_providers_data_with_decimals_as_strings():
    async with serve(FakeProvider()) as (http, url):
        async with http.get(f"{url}/at-risk", params={"limit": "2"}) as r:
            rows = await r.json()
        assert [x["account"] for x in rows] == ["acct-7731", "acct-0042"]
        assert rows[0]["health"] == "0.9412"
        async with http.get(f"{url}/accounts/acct-0042") as r:
            assert r.status == 200
            acct = await r.json()
        assert acct["liquidation_prices"] == {"BTC-PERP": "98123.45"}
        async with http.get(f"{url}/accounts/nobody") as r:
            assert r.status == 404
        async with http.get(f"{url}/liquidations/recent") as r:
            assert (await r.json())[0]["outcome"] == "confirmed"
        async with http.get(f"{url}/feeds") as r:
            assert [f["state"] for f in await r.json()] == ["ok", "stale"]


@pytest.mark.parametrize("limit", ["0", "1001", "ten"])
async def test_bad_limit_is_a_400(limit):
    async with serve(FakeProvider()) as (http, url), \
            http.get(f"{url}/at-risk", params={"limit": limit}) as r:
        assert r.status == 400
        assert "limit" in (await r.json())["error"]


async def test_pause_and_resume_need_the_bearer_token():
    p = FakeProvider()
    async with serve(p) as (http, url):
        async with http.post(f"{url}/pause", json={"scope": "*"}) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.post(f"{url}/pause", json={"scope": "*"},
                             headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with http.post(f"{url}/resume", headers={"Authorization": f"Basic {TOKEN}"}) as r:
            assert r.status == 401
        assert p.paused == [] and p.resumed == []
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(f"{url}/pause", json={"scope": "BTC-PERP", "reason": "oracle drift"},
                             headers=auth) as r:
            assert r.status == 200
            assert await r.json() == {"paused": "BTC-PERP", "reason": "oracle drift",
                                      "log_pos": "1760054400001-0"}
        async with http.post(f"{url}/pause", headers=auth) as r:  # no body: the kill switch
            assert r.status == 200
        async with http.post(f"{url}/resume", json={"scope": "BTC-PERP"}, headers=auth) as r:
            assert r.status == 200
        async with http.post(f"{url}/pause", data=b"not json", headers=auth) as r:
            assert r.status == 400
        async with http.post(f"{url}/pause", json={"scope": 5}, headers=auth) as r:
            assert r.status == 400
    assert p.paused == [("BTC-PERP", "oracle drift"), ("*", "")]
    assert p.resumed == ["BTC-PERP"]


async def test_pause_is_forbidden_when_no_token_is_configured():
    p = FakeProvider()
    async with serve(p, token=None) as (http, url):
        for path in ("/pause", "/resume"):
            async with http.post(f"{url}{path}", json={},
                                 headers={"Authorization": "Bearer anything"}) as r:
                assert r.status == 403
                assert "KEEPER_ADMIN_TOKEN" in (await r.json())["error"]
    assert p.paused == [] and p.resumed == []


async def test_a_slow_provider_times_out_with_503():
    p = FakeProvider()
    p.slow_s = 2.0
    async with serve(p, request_timeout_s=0.2) as (http, url):
        t0 = asyncio.get_running_loop().time()
        async with http.get(f"{url}/at-risk") as r:
            assert r.status == 503
        assert asyncio.get_running_loop().time() - t0 < 1.5


async def test_config_view_is_redacted():
    cfg = load_config(None, env={"KEEPER_ADMIN_TOKEN": TOKEN}, register_secrets=False)
    async with serve(FakeProvider(), config=cfg) as (http, url), http.get(f"{url}/config") as r:
        text = await r.text()
    assert TOKEN not in text
    body = json.loads(text)
    assert body["config"]["secrets"]["admin_token"] == "***"
    assert body["config_hash"] == cfg.config_hash()


async def test_status_page_and_its_assets_are_served():
    async with serve(FakeProvider()) as (http, url):
        async with http.get(f"{url}/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            html = await r.text()
        assert 'id="at-risk"' in html and "/static/app.js" in html
        async with http.get(f"{url}/static/app.js") as r:
            assert r.status == 200 and "/at-risk" in await r.text()
        async with http.get(f"{url}/static/style.css") as r:
            assert r.status == 200
        async with http.get(f"{url}/static/../config.py") as r:
            assert r.status == 404


async def test_admin_binds_loopback_and_rejects_a_taken_port():
    p = FakeProvider()
    app = build_admin_app(p, None)
    async with AdminServer(app, "127.0.0.1", 0) as first:
        assert first.url.startswith("http://127.0.0.1:")
        second = AdminServer(build_admin_app(p, None), "127.0.0.1", first.port or 0)
        with pytest.raises(OSError):
            await second.start()



class BrokenProvider(FakeProvider):
    async def feeds(self):
        raise RuntimeError("feed table is being rebuilt")


async def test_a_failing_view_answers_500_and_the_server_keeps_serving():
    async with serve(BrokenProvider()) as (http, url):
        async with http.get(f"{url}/feeds") as r:
            assert r.status == 500
            assert (await r.json())["error"] == "RuntimeError: feed table is being rebuilt"
        async with http.get(f"{url}/healthz") as r:
            assert r.status == 200


async def test_admin_server_from_config_uses_its_host_port_and_token():
    cfg = load_config(None, env={"KEEPER_ADMIN__PORT": "0", "KEEPER_ADMIN_TOKEN": TOKEN},
                      register_secrets=False)
    p = FakeProvider()
    async with admin_server(p, cfg) as server, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        assert server.url.startswith("http://127.0.0.1:")
        async with http.post(f"{server.url}/pause", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        async with http.get(f"{server.url}/config") as r:
            assert (await r.json())["config"]["admin"]["port"] == 0
    assert p.paused == [("*", "")]
