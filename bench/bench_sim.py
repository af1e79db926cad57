"""Reference venue throughput on loopback: book generation, /accounts resync of a 10,000-account
book, and signed liquidation requests (accepted, one at a time and 16 in flight).

Prints ``bench sim_<figure> <value> <unit>`` lines; bounded to a few seconds.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
import structlog

from keeper.domain.events import Decision
from keeper.scenarios.book import generate_book
from keeper.sim.model import Account
from keeper.sim.prices import synthetic_crash
from keeper.sim.server import start_sim
from keeper.sim.wire import sign

SECRET = b"bench"


def _decisions(accounts: dict[str, Account]) -> list[Decision]:
    """A full close of every perp position (the venue accepts those it finds liquidatable)."""
    out = []
    for acct, a in accounts.items():
        for name, b in a.buckets.items():
            for m, p in b.positions.items():
                out.append(Decision(intent_id=f"b-{acct}-{name}-{m}", account=acct, bucket=name,
                                    trigger="1-0",
                                    trigger_event_id="x", profile="bench", rule="bench",
                                    action="close_position", market=m, size=p.size))
    return out


async def run() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    t0 = time.perf_counter()
    book = generate_book(10_000, 1)
    print(f"bench sim_book_10k_s {time.perf_counter() - t0:.3f} s ({len(book.events)} events)")
    path = synthetic_crash(1)
    sim = await start_sim(SECRET, accounts=10_000, seed=1, path=path, play=False)
    sim.set_prices(path[-1].ts_us, path[-1].prices)  # the crash low: many buckets liquidatable
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            n = sim.venue.seq
            t0 = time.perf_counter()
            async with http.ws_connect(f"{sim.url}/accounts?after=0") as ws:
                for _ in range(n):
                    await ws.receive()
            dt = time.perf_counter() - t0
            print(f"bench sim_accounts_resync {n / dt:.0f} events/s")
            decisions = _decisions(sim.venue.accounts)[:3000]

            async def post(d: Decision) -> int:
                body = msgspec.json.encode(d)
                async with http.post(f"{sim.url}/liquidations", data=body, headers={
                        "Idempotency-Key": d.intent_id, "X-Keeper-Signature": sign(SECRET, body)}) as r:
                    await r.read()
                    return r.status

            t0 = time.perf_counter()
            for d in decisions[:1000]:
                await post(d)
            print(f"bench sim_liquidations_serial {1000 / (time.perf_counter() - t0):.0f} req/s")
            sem = asyncio.Semaphore(16)

            async def bounded(d: Decision) -> int:
                async with sem:
                    return await post(d)

            t0 = time.perf_counter()
            await asyncio.gather(*(bounded(d) for d in decisions[1000:3000]))
            print(f"bench sim_liquidations_16_in_flight {2000 / (time.perf_counter() - t0):.0f} req/s")
            print(f"# accepted {sim.venue.stats.accepted} rejected {sim.venue.stats.rejected}")
    finally:
        await sim.stop()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
