"""The client side of the venue's loopback tests: signed liquidation requests, fault specs, and
a price fall that makes ``small_venue``'s ``alice/cross`` liquidatable."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import msgspec

from keeper.domain import events as ev
from keeper.domain.model import CROSS
from keeper.sim.server import SimServer
from keeper.sim.wire import sign
from tests.sim.helpers import decision

D = Decimal
SECRET = b"test-secret"
TIMEOUT = aiohttp.ClientTimeout(total=5)


async def post_liq(http: aiohttp.ClientSession, url: str, d: ev.Decision, secret: bytes | None = SECRET,
                   client_timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    body = msgspec.json.encode(d)
    headers = {"Idempotency-Key": d.intent_id, "Content-Type": "application/json"}
    if secret is not None:
        headers["X-Keeper-Signature"] = sign(secret, body)
    async with http.post(f"{url}/liquidations", data=body, headers=headers,
                         timeout=aiohttp.ClientTimeout(total=client_timeout)) as r:
        return r.status, await r.json()


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        return await r.json()


async def faults(http: aiohttp.ClientSession, sim: SimServer, **spec: Any) -> dict[str, Any]:
    async with http.post(f"{sim.url}/faults", json=spec) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


def crashed(sim: SimServer) -> ev.Decision:
    sim.set_prices(2, {"BTC-USD": D(50100)})
    return decision("intent-a", "alice", CROSS, market="BTC-USD", size=D("0.05"))
