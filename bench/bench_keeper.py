"""Tick-to-intent and tick-to-submit latency of the keeper loop, 100,000 accounts loaded.

One asyncio process, as the daemon runs the keeper and executor roles together: a private
redis-server (EmbeddedRedis, temp dir, AOF everysec); the projector driving a ``KeeperCore``
(generic-perp profile, live mode) over the log; the runner with the reference-venue client
(which also appends the venue's resulting account events) posting to a local aiohttp venue in
its own process, which closes the position; a producer appending one ``PriceUpdated`` every
2 ms. 100,000 cross buckets, one long position each in one of 20 markets (~5,000 exposed per
market), liquidation prices spread over 0-20% below the start on ``LEVELS`` distinct levels;
every market slides down in 0.001% steps, so about one tick in four breaches a bucket.

- ``tick_to_intent``: from just before the tick's append to Redis to the return of the append
  that recorded its intent(s) (ticks that produced an intent);
- ``tick_to_submit``: from the same start to the venue receiving the POST of an intent it caused
  (CLOCK_MONOTONIC in both processes);
- ``rechecked_per_tick``: buckets confirmed with exact arithmetic per tick (the screen's
  candidates that are not busy), against ``exposed_per_tick``.

``BENCH_NO_RUNNER=1``: the keeper role alone. ``BENCH_LOOP=asyncio``: the stock event loop (else
uvloop). ``BENCH_GRID=coarse``: bursts of 2-3 breaches on one tick. ``BENCH_HANDOFF=0``: the
runner takes intents only through its consumer group (no in-process hand-off).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import structlog
from aiohttp import web

from keeper.app.stamping import StampingLog
from keeper.domain import events as ev
from keeper.domain import state as st
from keeper.domain.codec import encode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import Account, Bucket, MarketParams, Position
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.execution.simvenue import SimVenueExecutor
from keeper.ports import LogEntry
from keeper.projector import Projector
from keeper.store.embedded import EmbeddedRedis
from keeper.store.redis_log import RedisEventLog
from keeper.testing import MemorySnapshotStore

ACCOUNTS = 100_000
MARKETS = 20
TICKS = 2_000
TICK_EVERY_S = 0.002
STEP = Decimal("0.99999")
SECRET = b"bench"
LEVELS = 2_000 if os.environ.get("BENCH_GRID") == "coarse" else 200_000
"""Distinct liquidation price levels per market (0 to 20% down). ``BENCH_GRID=coarse``: 2,000
levels for 5,000 buckets, so 2-3 buckets breach on the same tick (bursts)."""
D = Decimal


def clock() -> float:
    """CLOCK_MONOTONIC: one system-wide clock, so the venue process's times compare with ours."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


async def venue_main() -> None:
    """The venue, in its own process (as a real one would be): accepts every liquidation, closes
    the position at the decision's price, and remembers when each request arrived."""
    received: list[tuple[str, float]] = []

    async def liquidations(request: web.Request) -> web.Response:
        now = clock()
        d = msgspec.json.decode(await request.read())
        received.append((d["trigger_event_id"], now))
        market = d["market"]
        closed = ev.PositionChanged(
            event_id=f"venue-{d['intent_id']}", ts_event=0, causation_id=d["intent_id"],
            account=d["account"], bucket=d["bucket"], market=market, size=D(0),
            realized_pnl=D(d["size"]) * (D(d["prices"][market]) - D(1000)))
        return web.json_response({"status": "accepted", "ref": d["intent_id"],
                                  "events": [msgspec.json.decode(encode(closed))]})

    async def times(request: web.Request) -> web.Response:
        return web.json_response(received)

    app = web.Application()
    app.router.add_post("/liquidations", liquidations)
    app.router.add_get("/times", times)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await runner.cleanup()


def build_state(rng: random.Random) -> st.State:
    s = st.State()
    s.prices["USDC"] = D(1)
    for m in range(MARKETS):
        sym = f"M{m:02d}"
        s.markets[sym] = MarketParams(symbol=sym, mmf=D("0.05"))
        s.prices[sym] = D(1000)
    for i in range(ACCOUNTS):
        sym = f"M{i % MARKETS:02d}"
        size = D(rng.randint(1, 50))
        # long `size` @1000 with collateral c: liquidatable below L = (1000 size - c) / (0.95 size)
        liq = D(1000) * (D(1) - D(rng.randint(1, LEVELS)) / D(LEVELS * 5))
        collateral = (D(1000) * size - D("0.95") * size * liq).quantize(D("0.01"))
        b = Bucket("cross", {"USDC": collateral}, {sym: Position(sym, size, D(1000))})
        s.accounts[f"a{i:06d}"] = Account(f"a{i:06d}", {"cross": b})
    return s


class TimedLog:
    """The projector's log, timing the appends that record intents."""

    def __init__(self, log: RedisEventLog, started: dict[str, float], out: list[float]) -> None:
        self.log, self.started, self.out = log, started, out
        self.recorded: dict[str, float] = {}

    async def read(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                   ) -> list[LogEntry]:
        return await self.log.read(after, count, block_ms)

    async def read_batch(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                         ) -> tuple[list[LogEntry], str]:
        return await self.log.read_batch(after, count, block_ms)

    async def append(self, events: Sequence[ev.Event]) -> list[str | None]:
        ids = await self.log.append(events)
        now = clock()
        for trigger in {e.causation_id for e in events if isinstance(e, ev.LiquidationIntended)}:
            t0 = self.started.get(trigger or "")
            if t0 is not None:
                self.out.append(now - t0)
                self.recorded[trigger or ""] = now
        return ids


class CountingCore:
    """A ``KeeperCore`` that counts, per tick, the buckets re-checked and exposed (a wrapper:
    ``KeeperCore`` may be compiled, and compiled classes take no Python subclasses)."""

    FORMAT = KeeperCore.FORMAT

    def __init__(self, params: KeeperParams, state: st.State, rechecked: list[int],
                 exposed: list[int]) -> None:
        self.core = KeeperCore(params, state)
        self._rechecked, self._exposed_n = rechecked, exposed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def handle_batch(self, entries: Sequence[tuple[str, ev.Event]]) -> list[ev.Event]:
        # the projector's path (handle_batch), one entry at a time so each tick is counted
        out: list[ev.Event] = []
        for entry in entries:
            out.extend(self.core.handle_batch([entry]))
            event = entry[1]
            if type(event) is ev.PriceUpdated:
                self._rechecked.append(self.core.rechecked_last)
                self._exposed_n.append(len(self.core.exposed(event.symbol)))
        return out


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


async def run(redis_url: str) -> None:
    rng = random.Random(42)
    t = time.perf_counter()
    state = build_state(rng)
    rechecked: list[int] = []
    exposed: list[int] = []
    core = CountingCore(KeeperParams(profile="generic-perp", mode="live", intent_ttl_us=10**12),
                        state, rechecked, exposed)
    gc.collect()
    gc.freeze()
    print(f"# loaded {ACCOUNTS} accounts in {time.perf_counter() - t:.1f}s", flush=True)

    started: dict[str, float] = {}
    intent_lat: list[float] = []
    submit_lat: list[float] = []
    by_tick: list[tuple[int, float]] = []

    venue = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--venue", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert venue.stdout is not None
    assert venue.stdin is not None
    port = int((await venue.stdout.readline()).decode())

    prod_log = await RedisEventLog.connect(redis_url)
    proj_log = await RedisEventLog.connect(redis_url)
    run_log = await RedisEventLog.connect(redis_url)
    executor = SimVenueExecutor(f"http://127.0.0.1:{port}", secret=SECRET, timeout_s=2.0)
    stop = asyncio.Event()
    timed = TimedLog(proj_log, started, intent_lat)
    # the daemon's keeper log (it hands recorded intents to the runner), over the timing
    stamping = StampingLog(timed)  # type: ignore[arg-type]
    handoff: list[float] = []
    projector = Projector(stamping, MemorySnapshotStore(),  # type: ignore[arg-type]
                          lambda _data: core, name="bench", snapshot_every=10**9,
                          snapshot_interval_s=10**9)
    runner = Runner(run_log, Claims(run_log.client), executor, consumer="bench",
                    intent_ttl_us=None)
    if os.environ.get("BENCH_HANDOFF", "1") == "1":
        stamping.handoff = runner.offer
    tasks = [asyncio.create_task(projector.run(stop, block_ms=100))]
    if not os.environ.get("BENCH_NO_RUNNER"):
        tasks.append(asyncio.create_task(runner.run(stop, block_ms=100)))
    await asyncio.sleep(0.3)
    prices = {f"M{m:02d}": D(1000) for m in range(MARKETS)}
    ts = time.time_ns() // 1000
    try:
        for k in range(TICKS):
            sym = f"M{k % MARKETS:02d}"
            prices[sym] = (prices[sym] * STEP).quantize(D("0.000001"))
            e = ev.PriceUpdated(event_id=f"tick-{k}", ts_event=ts + k, symbol=sym, price=prices[sym])
            started[e.event_id] = clock()
            await prod_log.append([e])
            await asyncio.sleep(TICK_EVERY_S)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and core.state.open_intents:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await executor.close()
        for lg in (prod_log, proj_log, run_log):
            await lg.close()
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/times") as r:
            for trigger, t1 in await r.json():
                t0 = started.get(trigger)
                if t0 is not None:
                    submit_lat.append(t1 - t0)
                    by_tick.append((int(trigger.removeprefix("tick-")), t1 - t0))
                if trigger in timed.recorded:
                    handoff.append(t1 - timed.recorded[trigger])
        venue.stdin.close()
        await venue.wait()

    ticks_with_intent = len(intent_lat)
    print(f"# ticks {TICKS}, with an intent {ticks_with_intent}, intents submitted {len(submit_lat)}, "
          f"handed off {runner.counts.get('handed_off', 0)}, load average {os.getloadavg()[0]:.2f}")
    print(f"bench tick_to_intent_p50_ms {pct(intent_lat, 0.50):.3f} ms")
    print(f"bench tick_to_intent_p99_ms {pct(intent_lat, 0.99):.3f} ms")
    print(f"bench tick_to_submit_p50_ms {pct(submit_lat, 0.50):.3f} ms")
    print(f"bench tick_to_submit_p99_ms {pct(submit_lat, 0.99):.3f} ms")
    later = [x for k, x in by_tick if k >= TICKS // 10]
    print(f"# tick_to_submit without the first tenth of the ticks (warm-up): p50 {pct(later, 0.5):.3f} ms, "
          f"p99 {pct(later, 0.99):.3f} ms; the worst five: "
          f"{', '.join(f'tick {k} {1000 * x:.1f} ms' for k, x in sorted(by_tick, key=lambda t: -t[1])[:5])}")
    print(f"# intent recorded -> venue received: p50 {pct(handoff, 0.5):.3f} ms, "
          f"p99 {pct(handoff, 0.99):.3f} ms")
    print(f"bench rechecked_per_tick_mean {statistics.fmean(rechecked):.2f} buckets")
    print(f"bench rechecked_per_tick_max {max(rechecked)} buckets")
    print(f"bench exposed_per_tick_mean {statistics.fmean(exposed):.0f} buckets")
    print(f"bench accounts {ACCOUNTS} accounts")


def main() -> None:
    if sys.argv[1:] == ["--venue"]:
        asyncio.run(venue_main())
        return
    # one log line per intent is right for a daemon, noise for a benchmark
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="bench-keeper-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        server.start()
        try:
            try:
                if os.environ.get("BENCH_LOOP") == "asyncio":
                    raise ImportError
                import uvloop
            except ImportError:
                print("# loop: asyncio")
                asyncio.run(run(server.url))
            else:
                print("# loop: uvloop")
                uvloop.run(run(server.url))
        finally:
            server.stop()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
