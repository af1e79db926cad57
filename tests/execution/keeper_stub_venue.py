"""A loopback venue for the keeper's executor tests: checks the HMAC, counts per idempotency key,
and injects faults from a plan.

``plan(key, n)`` (n = the how-many-th POST with this key) returns one of:
``ok`` (accept, or 409 if this key was accepted already), ``500`` (fail, accept nothing),
``timeout`` (hold the request longer than the client waits, accept nothing), ``lost`` (accept,
then fail with 503: the response is lost), ``reject`` (422 with a reason).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import web

from keeper.domain.codec import encode
from keeper.domain.events import PositionChanged

Plan = Callable[[str, int], str]
Effects = Callable[[dict[str, Any]], list[dict[str, Any]]]
"""What an accepted liquidation does to the account, as keeper event payloads (JSON objects)."""


def always_ok(key: str, n: int) -> str:
    return "ok"


class StubVenue:
    def __init__(self, secret: bytes, plan: Plan = always_ok, hold_s: float = 1.0,
                 effects: Effects | None = None) -> None:
        self.secret = secret
        self.effects = effects
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.plan = plan
        self.hold_s = hold_s
        self.delay_s = 0.0
        """How long each request waits before it is answered (a venue that takes its time)."""
        self.posts: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.bad_signatures = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _liquidations(self, request: web.Request) -> web.Response:
        body = await request.read()
        want = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, request.headers.get("X-Keeper-Signature", "")):
            self.bad_signatures += 1
            return web.json_response({"status": "rejected", "reason": "bad signature"}, status=401)
        key = request.headers["Idempotency-Key"]
        decision = msgspec.json.decode(body)
        assert decision["intent_id"] == key
        self.posts[key] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        action = self.plan(key, self.posts[key])
        if action == "500":
            return web.json_response({"status": "error", "reason": "injected"}, status=500)
        if action == "timeout":
            await asyncio.sleep(self.hold_s)
            return web.json_response({"status": "error", "reason": "late"}, status=503)
        if action == "reject":
            return web.json_response({"status": "rejected", "reason": f"healthy: {key}"}, status=422)
        if self.accepted[key]:
            return web.json_response({"status": "duplicate", "ref": f"ref-{key}",
                                      "events": self.events.get(key, [])}, status=409)
        self.accepted[key] += 1
        self.events[key] = self.effects(decision) if self.effects is not None else []
        if action == "lost":
            return web.json_response({"status": "error", "reason": "lost"}, status=503)
        return web.json_response({"status": "accepted", "ref": f"ref-{key}", "events": self.events[key]})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/liquidations", self._liquidations)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def close_whole_position(decision: dict[str, Any]) -> list[dict[str, Any]]:
    """A venue that closes the whole position at the decision's price (entry 20000, as seeded
    by the exactly-once tests), crediting the realised PnL in USDC."""
    market = decision["market"]
    size = Decimal(str(decision["size"]))
    pnl = size * (Decimal(str(decision["prices"][market])) - Decimal(20000))
    event = PositionChanged(event_id=f"venue-{decision['intent_id']}", ts_event=1,
                            causation_id=decision["intent_id"], account=decision["account"],
                            bucket=decision["bucket"], market=market, size=Decimal(0), realized_pnl=pnl)
    return [msgspec.json.decode(encode(event))]
