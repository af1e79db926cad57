"""Admin HTTP: health, readiness, Prometheus metrics, read-only views, pause/resume, status page.

``build_admin_app(provider, token)`` returns an ``aiohttp.web.Application``; ``AdminServer``
runs it on a loopback port. The daemon implements ``AdminProvider``; the app never touches
state itself, so an admin role in its own process can implement the provider over Redis.

Routes::

    GET  /healthz               200 {"ok": true} while the process is up (503 when not healthy)
    GET  /readyz                200 when caught up with the log and feeds are fresh, else 503;
                                the body carries the reasons either way
    GET  /summary               what the status page leads with: mode, readiness and why not,
                                log position and lag, pauses, feeds configured
    GET  /metrics               Prometheus exposition (text 0.0.4, or what ``Accept`` asks for)
    GET  /accounts/{id}         buckets, health, liquidation prices; 404 for an unknown account
    GET  /at-risk?limit=N       buckets by health, ascending (N in 1..1000, default 50)
    GET  /liquidations/recent?limit=N
    GET  /feeds                 per symbol: last price, age, state
    GET  /config                the effective config, secrets shown as ***
    POST /pause   {"scope": "*" | market, "reason": "..."}      bearer token required
    POST /resume  {"scope": "*" | market}                       bearer token required
    GET  /                      the status page (static HTML + JS polling the views each second)

Pausing must never be open: without a configured token ``/pause`` and ``/resume`` answer 403;
with one, a request without the right ``Authorization: Bearer <token>`` gets 401. Every
handler runs under ``request_timeout_s``; a provider that overruns it yields 503.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from importlib import resources
from typing import Any, Protocol

import structlog
from aiohttp import web

from keeper.app.config import Config, Secret
from keeper.app.metrics import Metrics

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_BODY",
    "MAX_LIMIT",
    "AdminProvider",
    "AdminServer",
    "Handler",
    "admin_server",
    "build_admin_app",
]

_log = structlog.get_logger()

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_BODY = 16 * 1024


class AdminProvider(Protocol):
    """What the daemon exposes to the admin server. Read methods return JSON-able data
    (``Decimal`` is rendered as a string); none of them may block the event loop.
    """

    def healthy(self) -> bool:
        """The process is up and its tasks are running."""
        ...

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): ready when caught up with the log and every feed is fresh;
        details say why not (e.g. ``{"log_lag": 1200, "stale_feeds": ["BTC-PERP"]}``)."""
        ...

    def metrics(self) -> Metrics:
        """The live metrics registry."""
        ...

    async def summary(self) -> dict[str, Any]:
        """``mode`` (paper/live), ``ready`` with ``reasons``, ``log_last``, ``log_position`` (the
        slowest projector's), ``lag`` (entries), ``paused`` scopes, ``feeds`` (sources
        configured), ``staleness_s``, ``profiles``, ``roles``, ``executor``."""
        ...

    async def account(self, account_id: str) -> dict[str, Any] | None:
        """An account's buckets (health, equity, requirement, liquidation prices); ``None`` if
        unknown."""
        ...

    async def at_risk(self, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` buckets ordered by health ascending; each has at least
        ``account``, ``bucket`` and ``health``."""
        ...

    async def recent_liquidations(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` liquidation intents and their outcomes, newest first."""
        ...

    async def feeds(self) -> list[dict[str, Any]]:
        """Per symbol: ``symbol``, ``price``, ``age_s``, ``state`` (``ok``/``stale``/...)."""
        ...

    async def chain(self) -> list[dict[str, Any]]:
        """A chain venue's rows (``what``, ``value``): blocks ingested and behind the head, the
        node's state, gas used, and every transaction signed and not yet mined with its nonce;
        empty without a chain venue."""
        ...

    async def pause(self, scope: str, reason: str) -> str | None:
        """Record ``KeeperPaused(scope, reason)`` in the log; return its entry id if known."""
        ...

    async def resume(self, scope: str) -> str | None:
        """Record ``KeeperResumed(scope)`` in the log; return its entry id if known."""
        ...


def _dumps(obj: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            return str(o)
        if isinstance(o, set | frozenset | tuple):
            return list(o)
        raise TypeError(f"not JSON-able: {type(o).__name__}")

    return json.dumps(obj, default=default, separators=(",", ":"))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_LIMIT:
        raise web.HTTPBadRequest(text=_dumps({"error": f"limit: expected 1..{MAX_LIMIT}, got {raw!r}"}),
                                 content_type="application/json")
    return n


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _timeout_middleware(timeout_s: float) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            async with asyncio.timeout(timeout_s):
                return await handler(request)
        except TimeoutError:
            _log.warning("admin_request_timed_out", path=request.path, timeout_s=timeout_s)
            return _json({"error": f"timed out after {timeout_s}s"}, status=503)
        except web.HTTPException:
            raise
        except Exception as exc:
            # a failing view must not take the admin server down; the daemon's own state is
            # untouched by a read, so answering 500 and carrying on is safe
            _log.exception("admin_request_failed", path=request.path)
            return _json({"error": f"{type(exc).__name__}: {exc}"}, status=500)

    return mw


def _static(name: str) -> bytes:
    return resources.files("keeper.app").joinpath("static", name).read_bytes()


_STATIC_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


class _Routes:
    def __init__(self, provider: AdminProvider, token: Secret | None, config: Config | None) -> None:
        self.p = provider
        self.token = token
        self.config = config

    async def healthz(self, _req: web.Request) -> web.Response:
        ok = self.p.healthy()
        return _json({"ok": ok}, status=200 if ok else 503)

    async def readyz(self, _req: web.Request) -> web.Response:
        ok, details = await self.p.ready()
        return _json({"ready": ok, **details}, status=200 if ok else 503)

    async def summary(self, _req: web.Request) -> web.Response:
        return _json(await self.p.summary())

    async def metrics(self, req: web.Request) -> web.Response:
        body, content_type = self.p.metrics().expose(req.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def account(self, req: web.Request) -> web.Response:
        account_id = req.match_info["id"]
        data = await self.p.account(account_id)
        if data is None:
            return _json({"error": f"unknown account {account_id!r}"}, status=404)
        return _json(data)

    async def at_risk(self, req: web.Request) -> web.Response:
        return _json(await self.p.at_risk(_limit(req)))

    async def liquidations(self, req: web.Request) -> web.Response:
        return _json(await self.p.recent_liquidations(_limit(req)))

    async def feeds(self, _req: web.Request) -> web.Response:
        return _json(await self.p.feeds())

    async def chain(self, _req: web.Request) -> web.Response:
        return _json(await self.p.chain())

    async def config_view(self, _req: web.Request) -> web.Response:
        if self.config is None:
            return _json({"error": "no config given to the admin app"}, status=404)
        return _json({"config": self.config.dump(), "config_hash": self.config.config_hash()})

    def _authorize(self, req: web.Request) -> None:
        if self.token is None:
            raise web.HTTPForbidden(text=_dumps({"error": "pause/resume are disabled: set "
                                                 "KEEPER_ADMIN_TOKEN to enable them"}),
                                    content_type="application/json")
        got = req.headers.get("Authorization", "")
        scheme, _, value = got.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                                self.token.reveal().encode())
        if not ok:
            _log.warning("admin_auth_refused", path=req.path, remote=req.remote)
            raise web.HTTPUnauthorized(text=_dumps({"error": "bearer token required"}),
                                       content_type="application/json",
                                       headers={"WWW-Authenticate": 'Bearer realm="keeper"'})

    async def _body(self, req: web.Request) -> dict[str, Any]:
        if not req.can_read_body:
            return {}
        try:
            data = await req.json()
        except (ValueError, RecursionError) as exc:  # 16 KiB of "[" nests past the parser's limit
            raise web.HTTPBadRequest(text=_dumps({"error": "body: expected a JSON object"}),
                                     content_type="application/json") from exc
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text=_dumps({"error": "body: expected a JSON object"}),
                                     content_type="application/json")
        for k in ("scope", "reason"):
            if k in data and not isinstance(data[k], str):
                raise web.HTTPBadRequest(text=_dumps({"error": f"{k}: expected a string"}),
                                         content_type="application/json")
        return data

    async def pause(self, req: web.Request) -> web.Response:
        self._authorize(req)
        body = await self._body(req)
        scope = body.get("scope") or "*"
        reason = body.get("reason", "")
        entry = await self.p.pause(scope, reason)
        _log.info("admin_paused", scope=scope, reason=reason, log_pos=entry)
        return _json({"paused": scope, "reason": reason, "log_pos": entry})

    async def resume(self, req: web.Request) -> web.Response:
        self._authorize(req)
        body = await self._body(req)
        scope = body.get("scope") or "*"
        entry = await self.p.resume(scope)
        _log.info("admin_resumed", scope=scope, log_pos=entry)
        return _json({"resumed": scope, "log_pos": entry})

    async def index(self, _req: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def static(self, req: web.Request) -> web.Response:
        name = req.match_info["name"]
        ctype = _STATIC_TYPES.get(name)
        if ctype is None:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=ctype, charset="utf-8")


def build_admin_app(provider: AdminProvider, token: Secret | None, *,
                    config: Config | None = None, request_timeout_s: float = 5.0) -> web.Application:
    """The admin application over ``provider``.

    ``token`` guards ``/pause`` and ``/resume`` (``None``: they answer 403). ``config``, when
    given, is served redacted at ``/config``. Every request is bounded by ``request_timeout_s``.
    """
    app = web.Application(middlewares=[_timeout_middleware(request_timeout_s)],
                          client_max_size=MAX_BODY)
    r = _Routes(provider, token, config)
    app.router.add_get("/", r.index)
    app.router.add_get("/static/{name}", r.static)
    app.router.add_get("/healthz", r.healthz)
    app.router.add_get("/readyz", r.readyz)
    app.router.add_get("/summary", r.summary)
    app.router.add_get("/metrics", r.metrics)
    app.router.add_get("/accounts/{id}", r.account)
    app.router.add_get("/at-risk", r.at_risk)
    app.router.add_get("/liquidations/recent", r.liquidations)
    app.router.add_get("/feeds", r.feeds)
    app.router.add_get("/chain", r.chain)
    app.router.add_get("/config", r.config_view)
    app.router.add_post("/pause", r.pause)
    app.router.add_post("/resume", r.resume)
    return app


def admin_server(provider: AdminProvider, config: Config) -> AdminServer:
    """The admin server as ``config`` says: ``[admin]`` host, port and request timeout, the
    token from ``KEEPER_ADMIN_TOKEN``, the redacted config at ``/config``. Start it with
    ``await server.start()`` or ``async with``.
    """
    app = build_admin_app(provider, config.secrets.admin_token, config=config,
                          request_timeout_s=config.admin.request_timeout_s)
    return AdminServer(app, config.admin.host, config.admin.port)


class AdminServer:
    """Runs an admin app on ``host:port`` (port 0 picks a free one); an async context manager.

    ``start()`` returns the bound port. ``stop()`` closes listeners and waits at most
    ``shutdown_timeout_s`` for requests in flight.
    """

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0, *,
                 shutdown_timeout_s: float = 2.0) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout_s
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False,
                               shutdown_timeout=self._shutdown_timeout, keepalive_timeout=15.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._port
        _log.info("admin_started", host=self._host, port=self.port)
        return self.port

    @property
    def url(self) -> str:
        """``http://host:port`` once started."""
        return f"http://{self._host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            _log.info("admin_stopped", port=self.port)

    async def __aenter__(self) -> AdminServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
