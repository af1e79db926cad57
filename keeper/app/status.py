"""The daemon's ``AdminProvider``: views over the live keeper core(s), the log and the feeds.

Reads never block the loop for long: at-risk evaluates every bucket of every core with the
exact margin engine at the prices of one instant (``AT_RISK_CHUNK`` buckets at a time, yielding
to the loop in between) and keeps the ranking until the core applies another entry; recent
liquidations read the tail of the log (bounded); account views evaluate one account.

The daemon is read through ``DaemonView``: the daemon imports this module, never the reverse.
"""

from __future__ import annotations

import asyncio
import heapq
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import redis.exceptions
import structlog

from keeper.aio import wait_event
from keeper.app.config import Config
from keeper.app.metrics import Metrics
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore
from keeper.domain.margin import Pricing, evaluate, liquidation_price
from keeper.domain.model import bucket_key
from keeper.errors import KeeperError, LogError
from keeper.execution.runner import Runner
from keeper.feeds.pipeline import PricePipeline
from keeper.projector import Projector
from keeper.store import health
from keeper.store.entries import parse_id
from keeper.store.redis_log import RedisEventLog

if TYPE_CHECKING:
    from keeper.chain.ingest import ChainIngest

__all__ = ["AT_RISK_HEALTH", "DaemonView", "Sampler", "Status", "probe_redis", "resident_bytes",
           "sync_chain", "sync_local", "sync_runner"]

_log = structlog.get_logger()

AT_RISK_CHUNK = 500
"""Buckets evaluated exactly between two yields to the event loop (a few ms) by at-risk."""
TAIL = 5_000
"""Recent liquidations are looked for in the last this many log entries."""
LAG_CAP = 10_000
"""Log lag is counted up to this many entries per sample (a bounded read; more reads as this)."""
AT_RISK_HEALTH = Decimal("1.1")
"""``buckets_at_risk``: buckets whose health factor is below this (1 = liquidatable)."""
RISK_SCAN = 1_000
"""Per core, the buckets the screen rates closest to liquidation that are evaluated exactly."""
DEAD_BATCH = 1_000
REDIS_PROBE_S = 1.0
"""A Redis that does not answer PING (or the readiness check) within this is reported down."""
SETTLE_S = 10.0
"""A role that waited for Redis and has not failed for this long (Redis answering) is ready."""


class DaemonView(Protocol):
    """What the status and the sampler read of a running daemon (``keeper.app.daemon.Daemon``
    is one): its configuration and metrics; its roles' parts, each None or empty until that
    role has started or when it does not run here; ``cores()``, the live keeper cores (one per
    profile); ``keeper_projectors()``, the projectors driving a keeper core (a chain venue's
    too); ``roles_running()``, whether no role's task has ended."""

    @property
    def config(self) -> Config: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def profiles(self) -> Sequence[str]: ...
    @property
    def projectors(self) -> Sequence[Projector]: ...
    @property
    def runner(self) -> Runner | None: ...
    @property
    def chain_ingest(self) -> ChainIngest | None: ...
    @property
    def pipeline(self) -> PricePipeline | None: ...
    def cores(self) -> list[KeeperCore]: ...
    def keeper_projectors(self) -> list[Projector]: ...
    def roles_running(self) -> bool: ...


def _iso(us: int) -> str:
    """µs since the epoch as ISO 8601 UTC to the millisecond."""
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _health(core: KeeperCore, key: str, prices: Any = None) -> dict[str, Any] | None:
    s = core.state
    bucket = s.find_bucket(key)
    if bucket is None:
        return None
    pricing = Pricing(core.profile, s.markets, s.assets, s.prices if prices is None else prices)
    try:
        h = evaluate(pricing, bucket)
    except KeeperError:
        return None
    account, _, name = key.partition("/")
    health: Decimal | None = None if h.health_factor.is_infinite() else h.health_factor
    return {"account": account, "bucket": name, "health": health, "equity": h.equity,
            "requirement": h.requirement, "liquidatable": h.liquidatable, "bankrupt": h.bankrupt,
            "profile": core.profile.name, "busy": key in s.busy}


class Sampler:
    """Samples what the roles do not count themselves into the daemon's ``Metrics``: log lag
    (entries after the slowest projector's position, up to ``LAG_CAP``), buckets at risk (exact
    health below ``AT_RISK_HEALTH`` among each core's ``RISK_SCAN`` lowest-headroom buckets),
    dead letters by reason (new entries of the dead-letter stream since the last sample), and the
    runner's outcomes. ``sample()`` once; ``run(stop, interval_s)`` until ``stop``."""

    def __init__(self, daemon: DaemonView, log: RedisEventLog) -> None:
        self.daemon = daemon
        self.log = log
        self._dead_after = "0-0"
        self.samples = 0

    async def sample(self) -> None:
        """One sample. Redis first (PING and INFO within ``REDIS_PROBE_S``): when it does not
        answer, the gauges that need it keep their last value and the rest is still sampled."""
        m = self.daemon.metrics
        sync_local(self.daemon)
        if await probe_redis(self.log, m):
            health.REDIS.settle(SETTLE_S)
            await self._sample_log(m)
        sync_runner(self.daemon)
        sync_chain(self.daemon)
        self.samples += 1

    async def _sample_log(self, m: Metrics) -> None:
        client: Any = self.log.client
        positions = [p.position for p in self.daemon.projectors]
        if positions:
            slowest = min(positions, key=parse_id)
            last = await self.log.last_id()
            lag = 0
            if parse_id(last) > parse_id(slowest):
                lo = f"({slowest}" if slowest != "0-0" else "-"
                lag = len(await client.xrange(self.log.key, min=lo, max=last, count=LAG_CAP))
            m.log_lag.set(lag)
        m.buckets_at_risk.set(sum(self._at_risk(c) for c in self.daemon.cores()))
        while True:
            lo = f"({self._dead_after}" if self._dead_after != "0-0" else "-"
            raw: Any = await client.xrange(self.log.dead_key, min=lo, count=DEAD_BATCH)
            for entry_id, fields in raw:
                reason = fields.get(b"reason", b"").decode() or "unknown"
                m.dead_letters.inc(reason)
                self._dead_after = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            if len(raw) < DEAD_BATCH:
                break

    @staticmethod
    def _at_risk(core: KeeperCore) -> int:
        keys = heapq.nsmallest(RISK_SCAN, core.index.symbols_of, key=core.screen.headroom)
        n = 0
        for key in keys:
            row = _health(core, key)
            if row is not None and row["health"] is not None and row["health"] < AT_RISK_HEALTH:
                n += 1
        return n

    async def run(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                await self.sample()
            except Exception as exc:  # a sample is a screen: never let it take the admin down
                _log.warning("metrics_sample_failed", error=repr(exc))
            await wait_event(stop, interval_s)


async def probe_redis(log: RedisEventLog, m: Metrics) -> bool:
    """PING and ``INFO memory`` within ``REDIS_PROBE_S``; sets ``redis_up`` and the memory
    gauges; True when Redis answered."""
    client: Any = log.client
    try:
        async with asyncio.timeout(REDIS_PROBE_S):
            await client.ping()
            info: Any = await client.info("memory")
            last = await log.last_id()
    except (TimeoutError, LogError, redis.exceptions.RedisError, OSError):
        m.redis_up.set(0)
        return False
    m.redis_up.set(1)
    m.redis_used_memory.set(float(info.get("used_memory", 0)))
    m.redis_maxmemory.set(float(info.get("maxmemory", 0)))
    if last != "0-0":
        m.last_append_age.set(max(wall_clock_us() / 1000 - parse_id(last)[0], 0) / 1000)
    return True


def sync_local(daemon: DaemonView) -> None:
    """What the process knows without asking Redis: the failures its clients met, the roles
    waiting, entries quarantined, its own memory."""
    m = daemon.metrics
    rec = health.REDIS
    for metric, n in ((m.redis_refused, rec.refused_writes), (m.redis_errors, rec.failures)):
        if n > metric.value():
            metric.inc(by=n - metric.value())
    m.redis_waiting.set(len(rec.waiting))
    m.quarantined.set(sum(p.quarantined for p in daemon.projectors))
    m.process_rss.set(resident_bytes())


def resident_bytes() -> float:
    """This process's resident memory (Linux ``/proc``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return 0.0


def sync_runner(daemon: DaemonView) -> None:
    """Bring ``intents_total{outcome}`` up to the runner's own counts (they only grow)."""
    runner = daemon.runner
    if runner is None:
        return
    m = daemon.metrics
    for outcome, n in runner.counts.items():
        cur = m.intents.value(outcome)
        if n > cur:
            m.intents.inc(outcome, by=n - cur)


def sync_chain(daemon: DaemonView) -> None:
    """The chain venue's gauges: ingest position and head, connection, reorgs; the executor's
    pending transactions, next nonce and gas; accounts refused by the core."""
    m = daemon.metrics
    ingest = daemon.chain_ingest
    if ingest is not None:
        s = ingest.status
        m.chain_block.set(s.last_block, "ingested")
        m.chain_block.set(s.head, "head")
        m.chain_behind.set(s.behind)
        m.chain_connected.set(1 if s.connected else 0)
        m.chain_reorgs.set(s.reorgs)
    executor = daemon.runner.executor if daemon.runner is not None else None
    pending = getattr(executor, "pending", None)
    if callable(pending):
        m.chain_pending.set(len(pending()))
        m.chain_nonce.set(float(getattr(executor, "next_nonce", 0) or 0))
        m.chain_gas.set(float(getattr(executor, "gas_used", 0)))
    refused = sum(len(getattr(p.core, "refused", {})) for p in daemon.keeper_projectors())
    m.chain_refused.set(refused)


class Status:
    """``keeper.app.admin.AdminProvider`` over a running daemon (``DaemonView``)."""

    def __init__(self, daemon: DaemonView, log: RedisEventLog) -> None:
        self.daemon = daemon
        self.log = log
        self._ranked: dict[int, tuple[tuple[str, int], list[dict[str, Any]]]] = {}

    def healthy(self) -> bool:
        return self.daemon.roles_running()

    def stale_prices(self, now_us: int | None = None) -> dict[str, float]:
        """Markets whose newest price is older than ``[feeds] staleness_ms`` by the wall clock,
        with its age in seconds (``fixed_prices`` symbols are priced by definition: never)."""
        cfg = self.daemon.config
        now = wall_clock_us() if now_us is None else now_us
        limit = cfg.feeds.staleness_ms * 1000
        fixed = set(cfg.feeds.fixed_prices)
        out: dict[str, float] = {}
        for core in self.daemon.cores():
            for sym, t in core.state.price_time.items():
                if sym not in fixed and now - t > limit:
                    out[sym] = round((now - t) / 1e6, 1)
        return dict(sorted(out.items()))

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready: Redis answers and no role waits for it, every projector is at the log's end,
        no feed is stale, the chain node (if any) answers, no role has ended. ``reasons`` says
        in words why not."""
        reasons: list[str] = []
        rec = health.REDIS
        try:
            async with asyncio.timeout(REDIS_PROBE_S):
                last: str | None = await self.log.last_id()
        except (TimeoutError, LogError) as exc:
            last = None
            reasons.append(f"redis unreachable: {str(exc) or 'no answer within 1 s'}")
        reasons += [f"{role} waits for redis: {error}" for role, (error, _at) in
                    sorted(rec.waiting.items())]
        lag = {p.name: last is None or p.position != last for p in self.daemon.projectors}
        stale = sorted(self.daemon.pipeline.watchdog.stale) if self.daemon.pipeline else []
        old = self.stale_prices()
        unsafe = sorted({s for c in self.daemon.cores() for s in c.state.unsafe})
        behind = [n for n, b in lag.items() if b]
        chain: dict[str, Any] = {}
        ingest = self.daemon.chain_ingest
        if ingest is not None:
            s = ingest.status
            chain = {"last_block": s.last_block, "head": s.head, "blocks_behind": s.behind,
                     "connected": s.connected, "error": s.error}
        chain_ok = not chain or bool(chain["connected"])
        if behind and last is not None:
            reasons.append(f"behind the log: {', '.join(behind)}")
        if stale:
            reasons.append(f"stale feeds: {', '.join(stale)}")
        if old:
            ages = ", ".join(f"{sym} {age:g} s old" for sym, age in list(old.items())[:5])
            more = f" and {len(old) - 5} more" if len(old) > 5 else ""
            reasons.append(f"stale prices: {ages}{more} (limit "
                           f"{self.daemon.config.feeds.staleness_ms / 1000:g} s by the wall clock)")
        if not chain_ok:
            reasons.append(f"chain node: {chain['error'] or 'not connected'}")
        if not self.healthy():
            reasons.append("a role has ended (see /healthz and the log)")
        out: dict[str, Any] = {"behind": behind, "log_last": last, "stale_feeds": stale,
                               "stale_prices": old, "unsafe": unsafe,
                               "reasons": reasons,
                               "redis": {"waiting": sorted(rec.waiting), "last_error": rec.last_error,
                                         "refused_writes": rec.refused_writes}}
        if chain:
            out["chain"] = chain
        return not reasons, out

    def metrics(self) -> Metrics:
        m = self.daemon.metrics
        now = wall_clock_us()
        for core in self.daemon.cores():
            for sym, t in core.state.price_time.items():
                m.feed_staleness.set(max(now - t, 0) / 1e6, sym)
        sync_local(self.daemon)
        sync_runner(self.daemon)
        sync_chain(self.daemon)
        return m

    async def account(self, account_id: str) -> dict[str, Any] | None:
        for core in self.daemon.cores():
            acct = core.state.accounts.get(account_id)
            if acct is None:
                continue
            s = core.state
            rows = []
            for name in sorted(acct.buckets):
                row = _health(core, bucket_key(account_id, name))
                if row is None:
                    continue
                prices: dict[str, Decimal | None] = {}
                pricing = Pricing(core.profile, s.markets, s.assets, s.prices)
                for market in sorted(acct.buckets[name].positions):
                    try:
                        prices[market] = liquidation_price(pricing, acct.buckets[name], market)
                    except KeeperError:
                        prices[market] = None
                row["liquidation_prices"] = prices
                rows.append(row)
            return {"account": account_id, "buckets": rows}
        return None

    async def at_risk(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` buckets of lowest exact health over every core (ties by account and
        bucket; a bucket with nothing to maintain has no health and is left out)."""
        rows = [r for core in self.daemon.cores() for r in await self.ranking(core)]
        rows.sort(key=lambda r: (r["health"], r["account"], r["bucket"]))
        seen: set[tuple[str, str]] = set()
        out = []
        for r in rows:
            k = (r["account"], r["bucket"])
            if k not in seen:
                seen.add(k)
                out.append(r)
                if len(out) >= limit:
                    break
        return out

    async def ranking(self, core: KeeperCore) -> list[dict[str, Any]]:
        """Every bucket of ``core`` with a finite health, lowest first, each evaluated exactly
        at the prices the core held when the pass began; kept until the core applies another
        entry. The pass yields to the loop every ``AT_RISK_CHUNK`` buckets (the keeper goes on
        deciding meanwhile; a bucket its events changed in between is read as it is then)."""
        version = (core.state.offset, core.state.applied)
        cached = self._ranked.get(id(core))
        if cached is not None and cached[0] == version:
            return cached[1]
        prices = dict(core.state.prices)  # one instant's prices for the whole pass
        keys = sorted(core.index.symbols_of)
        rows: list[dict[str, Any]] = []
        for i in range(0, len(keys), AT_RISK_CHUNK):
            for key in keys[i:i + AT_RISK_CHUNK]:
                row = _health(core, key, prices)
                if row is not None and row["health"] is not None:
                    rows.append(row)
            if i + AT_RISK_CHUNK < len(keys):
                await asyncio.sleep(0)
        rows.sort(key=lambda r: (r["health"], r["account"], r["bucket"]))
        self._ranked[id(core)] = (version, rows)
        return rows

    async def recent_liquidations(self, limit: int) -> list[dict[str, Any]]:
        raw: Any = await self.log.client.xrevrange(self.log.key, count=TAIL)
        from keeper.domain.codec import decode

        intents: dict[str, dict[str, Any]] = {}
        outcomes: dict[str, str] = {}
        for entry_id, fields in raw:
            try:
                e = decode(fields[b"e"])
            except KeeperError:
                continue
            pos = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            if isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live":
                d = e.decision
                intents[d.intent_id] = {"intent_id": d.intent_id, "account": d.account,
                                        "bucket": d.bucket, "market": d.market or d.seize_asset,
                                        "size": d.size if d.size is not None else d.repay_amount,
                                        "health": d.health_before, "log_pos": pos,
                                        "time": _iso(e.ts_ingest or e.ts_event)}
            elif isinstance(e, ev.LiquidationConfirmed | ev.LiquidationRejected | ev.LiquidationExpired):
                outcomes.setdefault(e.intent_id, type(e).__name__.removeprefix("Liquidation").lower())
        out = []
        for iid, row in intents.items():  # newest first: xrevrange order
            row["outcome"] = outcomes.get(iid, "pending")
            out.append(row)
            if len(out) >= limit:
                break
        return out

    async def feeds(self) -> list[dict[str, Any]]:
        now = wall_clock_us()
        cores = self.daemon.cores()
        if not cores:
            return []
        s = cores[0].state
        stale = self.daemon.pipeline.watchdog.stale if self.daemon.pipeline else set()
        old = self.stale_prices(now)
        fixed = self.daemon.config.feeds.fixed_prices
        return [{"symbol": sym, "price": s.prices.get(sym),
                 "age_s": None if sym in fixed else round((now - s.price_time.get(sym, now)) / 1e6, 3),
                 "state": ("fixed" if sym in fixed else f"unsafe: {s.unsafe[sym]}" if sym in s.unsafe
                           else "stale" if sym in stale or sym in old else "ok")}
                for sym in sorted(s.prices)]

    async def summary(self) -> dict[str, Any]:
        """What the status page leads with: mode, readiness and why not, log position and lag,
        pauses, the cores, how many feeds are configured."""
        ok, details = await self.ready()
        cfg = self.daemon.config
        positions = [p.position for p in self.daemon.projectors]
        return {"mode": cfg.keeper.mode, "executor": cfg.execution.executor, "ready": ok,
                "reasons": details["reasons"], "log_last": details["log_last"],
                "log_position": min(positions, key=parse_id) if positions else None,
                "lag": int(self.daemon.metrics.log_lag.value()),
                "paused": sorted({s for c in self.daemon.cores() for s in c.state.paused}),
                "profiles": list(self.daemon.profiles), "roles": list(self.daemon.roles),
                "feeds": len(cfg.feeds.sources) + (1 if cfg.venue.kind == "evm" else 0),
                "staleness_s": cfg.feeds.staleness_ms / 1000}

    async def chain(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        ingest = self.daemon.chain_ingest
        if ingest is not None:
            s = ingest.status
            rows += [{"what": "last block ingested", "value": s.last_block},
                     {"what": "blocks behind the head", "value": s.behind},
                     {"what": "node", "value": "answers" if s.connected else f"unreachable: {s.error}"},
                     {"what": "reorganisations undone", "value": s.reorgs}]
        executor = self.daemon.runner.executor if self.daemon.runner is not None else None
        pending = getattr(executor, "pending", None)
        if callable(pending):
            rows += [{"what": "gas used", "value": getattr(executor, "gas_used", 0)},
                     {"what": "next nonce", "value": getattr(executor, "next_nonce", None)}]
            rows += [{"what": f"pending: nonce {t.nonce}", "value": f"{t.tx_hash} ({t.intent_id})"}
                     for t in sorted(pending(), key=lambda t: t.nonce)]
        refused = {k: v for p in self.daemon.keeper_projectors()
                   for k, v in getattr(p.core, "refused", {}).items()}
        rows += [{"what": f"refused: {k}", "value": v} for k, v in sorted(refused.items())[:20]]
        return rows

    async def pause(self, scope: str, reason: str) -> str | None:
        now = wall_clock_us()
        ids = await self.log.append([ev.KeeperPaused(event_id=f"pause:{scope}:{now}", ts_event=now,
                                                     ts_ingest=now, scope=scope, reason=reason)])
        _log.warning("keeper_paused", scope=scope, reason=reason, entry_id=ids[0])
        return ids[0]

    async def resume(self, scope: str) -> str | None:
        now = wall_clock_us()
        ids = await self.log.append([ev.KeeperResumed(event_id=f"resume:{scope}:{now}", ts_event=now,
                                                      ts_ingest=now, scope=scope)])
        _log.info("keeper_resumed", scope=scope, entry_id=ids[0])
        return ids[0]
