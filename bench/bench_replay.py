"""Replay and verify throughput over a 1,000,000-event NDJSON export, decisions on.

Bounded to well under two minutes, so the "live run" and the timed replay are one pass:

1. the generator writes the venue's side of a log (``raw.ndjson``): 10,000 accounts (70% one
   cross bucket with 1-3 positions, 30% one or two isolated buckets) on 20 markets, then ~80%
   price ticks (a random walk with a slow downward drift, so buckets keep breaching) and ~20%
   account events (positions opened, deposits, withdrawals, funding);
2. **replay** (timed: ``replay_events_per_s``): a ``KeeperCore`` (generic-perp, paper mode, the
   keeper's default) replays ``raw.ndjson``: typed decode, apply, exposure index, screen, exact
   confirmation and decide for every entry, GC paused as in ``keeper replay``. Its decisions are
   then written back after their triggers (``log.ndjson``), as a live run records them (in paper
   mode a recorded intent does not change later decisions, so this is exactly what a live paper
   keeper would have logged);
3. **verify** (timed: ``verify_events_per_s``) over ``log.ndjson``: the same plus collecting and
   comparing every decision byte-for-byte (asserted: zero divergences).

Also printed: ``decode_only_events_per_s`` (the source alone) and the decision count.
``python bench/bench_replay.py --profile`` adds a cProfile of 100,000 steady-state entries.
``BENCH_REPLAY_EVENTS`` changes the size (default 1,000,000).
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import structlog

from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.replay.replay import Replayer, gc_paused, replay_batches
from keeper.replay.source import ndjson_batches
from keeper.replay.verify import Verifier

EVENTS = int(os.environ.get("BENCH_REPLAY_EVENTS", "1000000"))
ACCOUNTS = 10_000
MARKETS = 20
PARAMS = KeeperParams(profile="generic-perp", mode="paper")
T0_MS = 1_760_000_000_000
D = Decimal


def generate(path: Path, events: int = EVENTS, seed: int = 1) -> int:
    """Write the venue's side of the log (no decisions); returns the number of entries."""
    rng = random.Random(seed)
    f = path.open("wb")
    n = 0
    ts = T0_MS * 1000

    def put(e: ev.Event) -> None:
        nonlocal n
        n += 1
        # one ms per entry: the decisions recorded after an entry take its ms with seq 1, 2, ...
        f.write(b'{"id":"' + f"{T0_MS + n}-0".encode() + b'","e":' + encode(e) + b"}\n")

    markets = [f"M{i:02d}-USD" for i in range(MARKETS)]
    prices = {m: rng.uniform(1, 5000) for m in markets}
    put(ev.AssetListed(event_id="a-USDC", ts_event=ts, params=AssetParams(symbol="USDC", decimals=6)))
    put(ev.PriceUpdated(event_id="p-USDC", ts_event=ts, symbol="USDC", price=D(1)))
    for m in markets:
        mmf = D(rng.choice(["0.004", "0.005", "0.01", "0.0125"]))
        put(ev.MarketListed(event_id=f"m-{m}", ts_event=ts, params=MarketParams(
            symbol=m, mmf=mmf, imf=mmf * 2, liquidation_fee=D("0.01"))))
        put(ev.PriceUpdated(event_id=f"p-{m}-0", ts_event=ts, symbol=m, price=_px(prices[m])))
    balances: dict[tuple[str, str], float] = {}
    nid = 0

    def open_bucket(acct: str, bucket: str, ms: list[str]) -> None:
        nonlocal nid
        notional = rng.lognormvariate(8.5, 1.0)
        collateral = round(notional / rng.uniform(2, 30), 2)
        balances[acct, bucket] = balances.get((acct, bucket), 0.0) + collateral
        nid += 1
        put(ev.Deposit(event_id=f"d{nid}", ts_event=ts, account=acct, bucket=bucket, asset="USDC",
                       amount=D(f"{collateral:.2f}")))
        for m in ms:
            nid += 1
            size = notional / len(ms) / prices[m] * (1 if rng.random() < 0.7 else -1)
            put(ev.PositionChanged(event_id=f"o{nid}", ts_event=ts, account=acct, bucket=bucket, market=m,
                                   size=D(f"{size:.6f}"), entry_price=_px(prices[m])))

    accounts = [f"acct-{i:05d}" for i in range(ACCOUNTS)]
    owned: dict[str, list[str]] = {}
    for acct in accounts:
        if rng.random() < 0.7:
            open_bucket(acct, CROSS, rng.sample(markets, rng.randint(1, 3)))
            owned[acct] = [CROSS]
        else:
            owned[acct] = []
            for m in rng.sample(markets, rng.randint(1, 2)):
                open_bucket(acct, f"iso-{m}", [m])
                owned[acct].append(f"iso-{m}")
    tick = 0
    while n < events:
        ts += 1000
        r = rng.random()
        if r < 0.8:
            tick += 1
            m = markets[tick % MARKETS]
            prices[m] *= 1 + rng.gauss(-0.00001, 0.0006)
            put(ev.PriceUpdated(event_id=f"p-{m}-{tick}", ts_event=ts, symbol=m, price=_px(prices[m])))
            continue
        acct = rng.choice(accounts)
        buckets = owned[acct]
        nid += 1
        if r < 0.83:
            m = rng.choice(markets)
            b = CROSS if rng.random() < 0.7 else f"iso-{m}"
            open_bucket(acct, b, [m])
            if b not in buckets:
                buckets.append(b)
        elif r < 0.90:
            b = rng.choice(buckets)
            amount = round(rng.uniform(10, 500), 2)
            balances[acct, b] += amount
            put(ev.Deposit(event_id=f"d{nid}", ts_event=ts, account=acct, bucket=b, asset="USDC",
                           amount=D(f"{amount:.2f}")))
        elif r < 0.94:
            b = rng.choice(buckets)
            amount = round(balances[acct, b] * 0.05, 2)
            if amount > 1:
                balances[acct, b] -= amount
                put(ev.Withdraw(event_id=f"w{nid}", ts_event=ts, account=acct, bucket=b, asset="USDC",
                                amount=D(f"{amount:.2f}")))
        else:
            b = rng.choice(buckets)
            amount = round(rng.uniform(-5, 5), 2)
            balances[acct, b] += amount
            put(ev.FundingApplied(event_id=f"f{nid}", ts_event=ts, account=acct, bucket=b, market="M00-USD",
                                  asset="USDC", amount=D(f"{amount:.2f}")))
    f.close()
    return n


def record(raw: Path, out: Path, derived: list[tuple[str, ev.LiquidationIntended]]) -> int:
    """Write ``raw`` with each decision right after its trigger (entry ``<ms>-0``), as
    ``<ms>-1``, ``<ms>-2``...: what the live projector would have appended. Returns the count."""
    by_trigger: dict[bytes, list[ev.LiquidationIntended]] = {}
    for trigger, e in derived:
        by_trigger.setdefault(trigger.encode(), []).append(e)
    n = 0
    with raw.open("rb") as src, out.open("wb") as dst:
        for line in src:
            dst.write(line)
            n += 1
            entry_id = line[7:line.index(b'"', 7)]
            intents = by_trigger.get(entry_id)
            if intents:
                ms = entry_id.split(b"-")[0]
                for k, e in enumerate(intents, 1):
                    dst.write(b'{"id":"' + ms + b"-" + str(k).encode() + b'","e":' + encode(e) + b"}\n")
                    n += 1
    return n


def _px(x: float) -> Decimal:
    return D(f"{max(x, 0.01):.6g}") if x >= 1e5 else D(f"{max(x, 0.0001):.4f}")


def main() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    with tempfile.TemporaryDirectory() as tmp:
        raw, path = Path(tmp) / "raw.ndjson", Path(tmp) / "log.ndjson"
        t0 = time.perf_counter()
        n_raw = generate(raw)
        print(f"# generated {n_raw:,} venue entries in {time.perf_counter() - t0:.1f}s")

        t0 = time.perf_counter()
        with gc_paused():
            decoded = sum(len(b) for b in ndjson_batches(raw))
        assert decoded == n_raw
        print(f"bench decode_only_events_per_s {decoded / (time.perf_counter() - t0):.0f} events/s")

        res = replay_batches(KeeperCore(PARAMS), ndjson_batches(raw))
        assert res.entries == n_raw
        print(f"bench replay_events_per_s {res.events_per_s:.0f} events/s")
        print(f"bench replay_decisions {len(res.derived)} decisions")

        n = record(raw, path, res.derived)
        print(f"# recorded {n:,} entries ({n - n_raw:,} intents), {path.stat().st_size / 1e6:.0f} MB")
        v = Verifier()
        t0 = time.perf_counter()
        res = replay_batches(KeeperCore(PARAMS), ndjson_batches(path), after=v.after)
        report = v.finish()
        dt = time.perf_counter() - t0
        assert res.entries == n
        assert report.ok, report.first.describe() if report.first else ""
        assert report.decisions == n - n_raw
        print(f"# {report.summary()}")
        print(f"bench verify_events_per_s {n / dt:.0f} events/s")
        if "--profile" in sys.argv:
            profile(path)


def profile(path: Path, warm: int = 300_000, measured: int = 100_000) -> None:
    """cProfile of ``measured`` entries after ``warm`` (steady state), printed as # lines."""
    r = Replayer(KeeperCore(PARAMS))
    batches = ndjson_batches(path)
    prof = cProfile.Profile()
    with gc_paused():
        for batch in batches:
            r.feed(batch)
            if r.result.entries >= warm:
                break
        prof.enable()
        for batch in batches:
            r.feed(batch)
            if r.result.entries >= warm + measured:
                break
        prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(16)
    pstats.Stats(prof, stream=s).sort_stats("cumtime").print_stats(16)
    for line in s.getvalue().splitlines():
        if line.strip():
            print(f"# {line}")


if __name__ == "__main__":
    main()
