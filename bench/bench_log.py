"""Event-log figures (issue 2): append throughput, rebuild from Redis and from NDJSON, peak RSS.

Starts its own EmbeddedRedis (appendfsync everysec) in a temporary folder. Events: 1,000,000
over 10,000 accounts and 20 markets (prices 30%, deposits 25%, withdrawals 10%, position
changes 35%), pre-encoded with ``keeper.domain.codec.encode``.

- ``append_events_per_s``: ``RedisEventLog.append_encoded`` (one Lua script per batch does the
  SMISMEMBER/SADD dedup check and the XADDs, atomically), batches of 2,000, four batches in
  flight on the log's raw pipelined connection (EVALSHA packed with hiredis); median of 3 runs
  of the full million (the log is flushed between runs).
- ``rebuild_redis_events_per_s`` / ``rebuild_ndjson_events_per_s``: a fresh child process reads
  the whole log (``read_batch`` of 1,000 = XREAD on the raw connection + ``codec.decode``) or
  the NDJSON export (``iter_ndjson_batches``: 64 KiB chunks of lines, ids and events in one
  typed msgspec ``decode_lines`` call, folded while still in cache) and folds the events with
  ``keeper.domain.state.apply`` (Redis) or its batch twin ``keeper.domain.state_batch.apply_many``
  (NDJSON: one call per chunk).
  GC levers: ``gc.freeze()`` after imports/setup and ``gc.disable()`` for the rebuild (state
  records are ``gc=False`` msgspec Structs, so nothing cyclic is left uncollected). Median of 3.
- ``rebuild_peak_rss_mb``: the largest peak RSS (VmHWM) of the rebuild child processes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

# runnable as a plain script from a checkout where the project is not pip-installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

N_EVENTS = 1_000_000
N_ACCOUNTS = 10_000
N_MARKETS = 20
BATCH = 2_000
IN_FLIGHT = 4
RUNS = 3


def make_payloads(n: int = N_EVENTS) -> list[tuple[str, bytes]]:
    """A deterministic, realistic mix, pre-encoded (event_id, payload)."""
    from keeper.domain.codec import encode
    from keeper.domain.events import Deposit, PositionChanged, PriceUpdated, Withdraw

    markets = [f"M{m:02d}-PERP" for m in range(N_MARKETS)]
    base = [Decimal(10 + 37 * m) for m in range(N_MARKETS)]
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        x = (i * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFF  # deterministic hash
        x ^= x >> 29
        r = x % 100
        acct = f"acct-{(x >> 7) % N_ACCOUNTS:05d}"
        m = (x >> 21) % N_MARKETS
        ts = 1_700_000_000_000_000 + i * 1000
        ev: object
        if r < 30:
            ev = PriceUpdated(event_id=f"e{i}", ts_event=ts, symbol=markets[m],
                              price=base[m] + Decimal((x >> 4) % 1000) / 100, source="bench")
        elif r < 55:
            ev = Deposit(event_id=f"e{i}", ts_event=ts, account=acct, bucket="cross", asset="USDC",
                         amount=Decimal((x >> 3) % 100_000) / 100 + 1)
        elif r < 65:
            ev = Withdraw(event_id=f"e{i}", ts_event=ts, account=acct, bucket="cross", asset="USDC",
                          amount=Decimal((x >> 3) % 10_000) / 100 + 1)
        else:
            size = Decimal((x >> 5) % 2001 - 1000) / 10
            ev = PositionChanged(event_id=f"e{i}", ts_event=ts, account=acct,
                                 bucket="cross" if r < 90 else f"iso-{markets[m]}", market=markets[m],
                                 size=size, entry_price=base[m] + 1,
                                 realized_pnl=Decimal((x >> 6) % 2001 - 1000) / 100)
        out.append((f"e{i}", encode(ev)))  # type: ignore[arg-type]
    return out


async def append_run(url: str, payloads: list[tuple[str, bytes]]) -> float:
    from keeper.store.redis_log import RedisEventLog

    log = await RedisEventLog.connect(url)
    try:
        await log.client.flushall()
        batches = [payloads[i:i + BATCH] for i in range(0, len(payloads), BATCH)]
        sem = asyncio.Semaphore(IN_FLIGHT)

        async def one(b: list[tuple[str, bytes]]) -> None:
            async with sem:
                res = await log.append_encoded(b)
                assert res[-1] is not None

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in batches))
        dt = time.perf_counter() - t0
        assert await log.length() == len(payloads)
        dup = await log.append_encoded(payloads[:BATCH])  # the dedup really is on
        assert dup == [None] * BATCH
        return len(payloads) / dt
    finally:
        await log.close()


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_rebuild(kind: str, src: str) -> None:
    """Run in a fresh process: rebuild the state, print JSON {rate, n, rss_mb, accounts}."""
    from keeper.domain.state import State, apply

    gc.collect()
    gc.freeze()
    state = State()
    n = 0
    gc.disable()
    t0 = time.perf_counter()
    if kind == "redis":
        from keeper.store.redis_log import RedisEventLog

        async def run() -> int:
            log = await RedisEventLog.connect(src)
            k = 0
            try:
                after = "0-0"
                while True:
                    entries, pos = await log.read_batch(after, 1000)
                    if pos == after:
                        return k
                    for entry_id, event in entries:
                        apply(state, entry_id, event)
                    k += len(entries)
                    after = pos
            finally:
                await log.close()

        n = asyncio.run(run())
    else:
        from keeper.domain.state_batch import apply_many
        from keeper.store.ndjson import iter_ndjson_batches

        for batch in iter_ndjson_batches(Path(src)):
            apply_many(state, batch)
            n += len(batch)
    dt = time.perf_counter() - t0
    gc.enable()
    rss = peak_rss_mb()
    print(json.dumps({"rate": n / dt, "n": n, "rss_mb": rss, "accounts": len(state.accounts)}))


def rebuild(kind: str, src: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, src], capture_output=True,
                         text=True, check=True, timeout=300)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_rebuild(sys.argv[2], sys.argv[3])
        return
    import structlog

    from keeper.store.embedded import EmbeddedRedis
    from keeper.store.ndjson import export_log
    from keeper.store.redis_log import RedisEventLog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory(prefix="bench_log_") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendfsync="everysec")
        url = server.start()
        try:
            t0 = time.perf_counter()
            payloads = make_payloads()
            print(f"# generated {len(payloads)} events in {time.perf_counter() - t0:.1f}s", flush=True)
            gc.freeze()
            rates = []
            for _ in range(RUNS):
                rates.append(asyncio.run(append_run(url, payloads)))
                print(f"# append run {rates[-1]:,.0f}/s", flush=True)
            print(f"bench append_events_per_s {statistics.median(rates):.0f} events/s")
            del payloads
            gc.unfreeze()
            gc.collect()

            ndjson = Path(tmp) / "log.ndjson"

            async def export() -> int:
                log = await RedisEventLog.connect(url)
                try:
                    return await export_log(log, ndjson)
                finally:
                    await log.close()

            t0 = time.perf_counter()
            n = asyncio.run(export())
            print(f"# exported {n} entries in {time.perf_counter() - t0:.1f}s "
                  f"({ndjson.stat().st_size / 1e6:.0f} MB)", flush=True)
            rss = []
            for kind, src in (("redis", url), ("ndjson", str(ndjson))):
                runs = []
                for _ in range(RUNS):
                    r = rebuild(kind, src)
                    assert r["n"] == N_EVENTS, r
                    runs.append(r["rate"])
                    rss.append(r["rss_mb"])
                    print(f"# rebuild {kind} {r['rate']:,.0f}/s rss {r['rss_mb']:.0f} MB "
                          f"accounts {r['accounts']:.0f}", flush=True)
                print(f"bench rebuild_{kind}_events_per_s {statistics.median(runs):.0f} events/s")
            print(f"bench rebuild_peak_rss_mb {max(rss):.0f} MB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
