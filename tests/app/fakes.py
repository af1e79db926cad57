"""A fake ``AdminProvider``: fixed accounts, buckets, liquidations and feeds, pause log kept."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from keeper.app.metrics import Metrics

AT_RISK = [
    {"account": "acct-7731", "bucket": "cross", "health": Decimal("0.9412"),
     "equity": Decimal("941.2"), "requirement": Decimal("1000"), "liquidatable": True},
    {"account": "acct-0042", "bucket": "iso:ETH-PERP", "health": Decimal("1.0377"),
     "equity": Decimal("518.85"), "requirement": Decimal("500"), "liquidatable": False},
    {"account": "acct-5150", "bucket": "cross", "health": Decimal("1.2001"),
     "equity": Decimal("12001"), "requirement": Decimal("10000"), "liquidatable": False},
]

LIQUIDATIONS = [
    {"intent_id": "liq:acct-9001/cross@1760054400000-7", "account": "acct-9001", "bucket": "cross",
     "market": "BTC-PERP", "size": Decimal("0.25"), "outcome": "confirmed",
     "health": Decimal("0.98765432109876543210987654321"), "log_pos": "1760054400123-0",
     "time": "2025-10-10T21:15:07.123Z"},
]

FEEDS = [
    {"symbol": "BTC-PERP", "price": Decimal("104250.5"), "age_s": 0.4, "state": "ok"},
    {"symbol": "ETH-PERP", "price": Decimal("3712.25"), "age_s": 12.0, "state": "stale"},
]


class FakeProvider:
    """What a daemon would expose; ``slow_s`` delays the read views (timeout tests)."""

    def __init__(self) -> None:
        self.is_ready = True
        self.mode = "paper"
        self.rows = AT_RISK
        self.feeds_configured = 2
        self.slow_s = 0.0
        self.paused: list[tuple[str, str]] = []
        self.resumed: list[str] = []
        self.m = Metrics()
        self.m.events_ingested.inc("price_updated", by=1200)
        self.m.events_ingested.inc("position_changed", by=35)
        self.m.events_applied.inc("price_updated", by=1190)
        self.m.log_lag.set(10)
        self.m.buckets_at_risk.set(len(AT_RISK))
        self.m.intents.inc("confirmed")
        self.m.intents.inc("rejected", by=2)
        for v in (0.0004, 0.0009, 0.003, 0.04, 3.0):
            self.m.tick_to_intent.observe(v)
        self.m.feed_staleness.set(0.4, "BTC-PERP")
        self.m.feed_staleness.set(12.0, 'ETH "PERP"\\x')  # escaping is exercised
        self.m.dead_letters.inc("invalid_price", by=3)

    def healthy(self) -> bool:
        return True

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        if self.is_ready:
            return True, {"log_lag": 0, "stale_feeds": []}
        return False, {"log_lag": 1200, "stale_feeds": ["ETH-PERP"]}

    def metrics(self) -> Metrics:
        return self.m

    async def summary(self) -> dict[str, Any]:
        ready, details = await self.ready()
        reasons = [] if ready else ["stale prices: ETH-PERP 12 s old (limit 5 s by the wall clock)"]
        return {"mode": self.mode, "executor": "paper" if self.mode == "paper" else "http",
                "ready": ready, "reasons": reasons, "log_last": "1760054400130-0",
                "log_position": "1760054400123-0", "lag": details["log_lag"] if not ready else 0,
                "paused": [], "profiles": ["generic-perp"], "roles": ["feeds", "keeper", "admin"],
                "feeds": self.feeds_configured, "staleness_s": 5.0}

    async def account(self, account_id: str) -> dict[str, Any] | None:
        await asyncio.sleep(self.slow_s)
        rows = [r for r in AT_RISK if r["account"] == account_id]
        if not rows:
            return None
        return {"account": account_id, "buckets": rows,
                "liquidation_prices": {"BTC-PERP": Decimal("98123.45")}}

    async def at_risk(self, limit: int) -> list[dict[str, Any]]:
        await asyncio.sleep(self.slow_s)
        return sorted(self.rows, key=lambda r: r["health"])[:limit]

    async def recent_liquidations(self, limit: int) -> list[dict[str, Any]]:
        return LIQUIDATIONS[:limit]

    async def feeds(self) -> list[dict[str, Any]]:
        return FEEDS

    async def chain(self) -> list[dict[str, Any]]:
        return []

    async def pause(self, scope: str, reason: str) -> str | None:
        self.paused.append((scope, reason))
        return f"1760054400{len(self.paused):03d}-0"

    async def resume(self, scope: str) -> str | None:
        self.resumed.append(scope)
        return None
