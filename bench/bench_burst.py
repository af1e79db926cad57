"""A crash in one tick: ``BURST`` accounts breach at once; how fast does the keeper drain them?

One asyncio process (the daemon's event loop, the standard one) runs the keeper and executor roles together,
as the daemon does (a private redis-server; a ``Projector`` driving a live ``KeeperCore``,
``generic-perp``; the ``Runner`` with the reference-venue client); the reference venue
(``keeper.sim.server.SimServer``, its own checks and effects) runs in a child process over HTTP on
loopback, as a real venue would be elsewhere. The book: ``ROUNDS`` x ``BURST`` accounts, each long
1 BTC from 60,000 with just enough USDC that it becomes liquidatable below its round's level;
round r's tick moves BTC just below level r, so exactly ``BURST`` accounts breach on that one
tick.

- ``burst_intents_per_s``: intents of a round / (its last outcome recorded - its first intent
  recorded), both from the log (``ts_ingest`` of the intents, ``ts_event`` of the outcomes:
  wall clock µs); the median over the rounds;
- ``burst_first_submit_ms``: tick appended -> the first ``LiquidationSubmitted`` of the round
  (stamped as its request leaves), each round starting once the keeper has folded the
  previous round's outcomes; p50 and the worst round (reported as p99: with ``ROUNDS`` rounds
  the p99 is the maximum);
- ``burst_accepted``: liquidations the venue accepted, all rounds (must be ROUNDS x BURST).

``BENCH_BURST`` / ``BENCH_ROUNDS`` change the sizes (default 5,000 x 4); ``BENCH_FIRST_CHUNK`` the
first chunk (default: the daemon's, ``[keeper] first_chunk``); ``BENCH_HANDOFF=0`` leaves
the intents to the runner's consumer group (no in-process hand-off), ``BENCH_STREAM=0`` decides a
burst at once.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import aiohttp

from keeper.app.config.schema import KeeperSection
from keeper.app.heap import settle_heap
from keeper.app.stamping import StampingLog
from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.execution.simvenue import SimVenueExecutor
from keeper.projector import Projector
from keeper.store.embedded import EmbeddedRedis
from keeper.store.redis_log import RedisEventLog
from keeper.testing import MemorySnapshotStore

D = Decimal
OUTCOMES = ("confirmed", "confirmed_duplicate", "rejected", "expired")
"""The runner's counts of outcomes recorded."""
BURST = int(os.environ.get("BENCH_BURST", "5000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
SECRET = "bench-burst"
ENTRY = D(60000)
MMF = D("0.004")


def level(r: int) -> Decimal:
    """BTC price below which round r's accounts are liquidatable."""
    return D(59000) - 500 * r


def book() -> list[ev.Event]:
    """The venue's and the keeper's book: equity = C + (P - 60000) < MM = 0.004 P below level(r)."""
    out: list[ev.Event] = [
        ev.AssetListed(event_id="usdc", ts_event=1, params=AssetParams(symbol="USDC", decimals=6)),
        ev.MarketListed(event_id="btc", ts_event=1, params=MarketParams(
            symbol="BTC-USD", mmf=MMF, liquidation_fee=D("0.01"))),
    ]
    for r in range(ROUNDS):
        collateral = ENTRY - (1 - MMF) * level(r)
        for i in range(BURST):
            a = f"acct-{r}-{i:05d}"
            out.append(ev.Deposit(event_id=f"d-{a}", ts_event=1, account=a, bucket=CROSS,
                                  asset="USDC", amount=collateral))
            out.append(ev.PositionChanged(event_id=f"p-{a}", ts_event=1, account=a, bucket=CROSS,
                                          market="BTC-USD", size=D(1), entry_price=ENTRY))
    return out


def venue_main() -> None:
    """The child: the reference venue with the book, marks at 60,000, on a free port."""
    from keeper.sim.server import SimServer
    from keeper.sim.venue import Venue

    async def serve() -> None:
        v = Venue(lambda: time.time_ns() // 1000)
        v.set_marks(time.time_ns() // 1000, {"BTC-USD": ENTRY})
        v.load(book())
        server = SimServer(SECRET.encode(), venue=v)
        url = await server.start(play=False)
        print(url, flush=True)
        await asyncio.Event().wait()

    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(serve())


def now_us() -> int:
    return time.time_ns() // 1000


async def run() -> None:
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    server = EmbeddedRedis(tmp / "redis")
    url = server.start()
    child = subprocess.Popen([sys.executable, __file__, "--venue"], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "BENCH_BURST": str(BURST),
                                             "BENCH_ROUNDS": str(ROUNDS)})
    assert child.stdout is not None
    venue_url = child.stdout.readline().strip()
    log = await RedisEventLog.connect(url)
    runner_log = await RedisEventLog.connect(url)
    stop = asyncio.Event()
    ex = SimVenueExecutor(venue_url, secret=SECRET.encode(), timeout_s=10.0)
    try:
        t = now_us()
        events = book()
        for k in range(0, len(events), 5000):
            await log.append(events[k:k + 5000])
        # BTC has traded before the crash, as a market does (a symbol that has not moved since
        # its first price is screened as a quiet one, a stablecoin: docs/screen.md)
        await log.append([ev.PriceUpdated(event_id="usdc-1", ts_event=t, symbol="USDC", price=D(1)),
                          ev.PriceUpdated(event_id="btc-0", ts_event=t, symbol="BTC-USD", price=ENTRY),
                          ev.PriceUpdated(event_id="btc-0b", ts_event=t, symbol="BTC-USD",
                                          price=ENTRY - 10),
                          ev.PriceUpdated(event_id="btc-0c", ts_event=t, symbol="BTC-USD", price=ENTRY)])
        # the daemon's first chunk ([keeper] first_chunk), as its configuration makes the params
        first_chunk = int(os.environ.get("BENCH_FIRST_CHUNK", KeeperSection().first_chunk))
        params = KeeperParams(profile="generic-perp", mode="live", intent_ttl_us=600_000_000,
                              first_chunk=first_chunk)
        stamping = StampingLog(log)
        projector = Projector(stamping, MemorySnapshotStore(),
                              lambda data: KeeperCore(params), fmt=KeeperCore.FORMAT,
                              snapshot_every=10**9, snapshot_interval_s=10**9,
                              stream=os.environ.get("BENCH_STREAM", "1") == "1")
        await projector.start()
        await projector.catch_up()
        settle_heap("bench: the book loaded")  # as the daemon does once its projector caught up
        runner = Runner(runner_log, Claims(runner_log.client, ttl_ms=60_000), ex, consumer="bench",
                        intent_ttl_us=600_000_000, batch=1000)
        if os.environ.get("BENCH_HANDOFF", "1") == "1":  # as the daemon wires them
            stamping.handoff = runner.offer

        async def follow() -> None:
            while not stop.is_set():
                await projector.step(block_ms=20)

        tasks = [asyncio.create_task(follow()), asyncio.create_task(runner.run(stop, block_ms=20))]
        await asyncio.sleep(0.5)
        rates: list[float] = []
        firsts: list[float] = []
        after = await log.last_id()
        done = 0
        async with aiohttp.ClientSession() as http:
            for r in range(ROUNDS):
                # the keeper has folded the previous round's outcomes and fills: the burst is
                # measured from a calm start
                while True:
                    last = await log.last_id()
                    groups = await log.client.xinfo_groups(log.key)
                    delivered = groups[0]["last-delivered-id"].decode() if groups else ""
                    if projector.position == last and not projector.holding \
                            and delivered == last and not runner.busy():
                        break
                    await asyncio.sleep(0.01)
                price = level(r) - 100
                async with http.post(f"{venue_url}/marks", json={"ts_us": now_us(),
                                                                 "prices": {"BTC-USD": str(price)}}) as resp:
                    assert resp.status == 200
                t0 = now_us()
                await log.append([ev.PriceUpdated(event_id=f"btc-{r + 1}", ts_event=t0, ts_ingest=t0,
                                                  symbol="BTC-USD", price=price)])
                intents: list[int] = []
                submitted: list[int] = []
                outcomes: list[int] = []
                deadline = time.monotonic() + 300
                # the round is over when the runner has recorded BURST outcomes; the log is read
                # after it (a reader on this event loop during the burst would slow the keeper)
                while sum(runner.counts.get(k, 0) for k in OUTCOMES) - done < BURST:
                    assert time.monotonic() < deadline, f"round {r}: outcomes missing"
                    await asyncio.sleep(0.01)
                done = sum(runner.counts.get(k, 0) for k in OUTCOMES)
                while len(outcomes) < BURST:
                    assert time.monotonic() < deadline, f"round {r}: {len(outcomes)} outcomes"
                    entries, after = await log.read_batch(after, 5000, block_ms=50)
                    for e in entries:
                        x = e.event
                        if type(x) is ev.LiquidationIntended:
                            intents.append(x.ts_ingest)
                        elif type(x) is ev.LiquidationSubmitted:
                            submitted.append(x.ts_event)
                        elif isinstance(x, ev.LiquidationConfirmed | ev.LiquidationRejected
                                        | ev.LiquidationExpired):
                            outcomes.append(x.ts_event)
                rates.append(len(intents) / max((max(outcomes) - min(intents)) / 1e6, 1e-9))
                firsts.append((min(submitted) - t0) / 1000)
                print(f"round {r}: {len(intents)} intents, {rates[-1]:.0f}/s, first intent "
                      f"{(min(intents) - t0) / 1000:.2f} ms, first submit {firsts[-1]:.2f} ms, "
                      f"last intent {(max(intents) - t0) / 1000:.0f} ms", file=sys.stderr)
            async with http.get(f"{venue_url}/stats") as resp:
                stats = await resp.json()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(f"bench burst_intents_per_s {statistics.median(rates):.0f} intents/s")
        print(f"bench burst_first_submit_p50_ms {statistics.median(firsts):.2f} ms")
        print(f"bench burst_first_submit_p99_ms {max(firsts):.2f} ms")
        print(f"bench burst_accepted {stats['accepted']} liquidations")
        print(f"# handed off {runner.counts.get('handed_off', 0)}, load average "
              f"{os.getloadavg()[0]:.2f}")
    finally:
        stop.set()
        await ex.close()
        await log.close()
        await runner_log.close()
        child.terminate()
        child.wait(10)
        server.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["--venue"]:
        venue_main()
    else:
        asyncio.run(run())  # the daemon's loop (the standard one: docs/keeper.md, Known limits)
