"""Replay and verify throughput over a 1,000,000-event NDJSON export, decisions on.

The export is written by a "live run" in a temp dir: a ``KeeperCore`` (generic-perp, live mode)
handles every entry as the projector would, and each intent it decides is written right after
its trigger, followed by the venue's fill (position closed, loss and a 0.5% fee realised) and
its confirmation, as the live log holds them (entry ids ``<ms>-0`` for the venue's entries, the
same ms with seq 1, 2, ... for what follows from them). The venue's side: 10,000 accounts (70%
one cross bucket with 1-3 positions, 30% one or two isolated buckets) on 20 markets, then ~80%
price ticks (a random walk with a slow downward drift, so buckets keep breaching) and ~20%
account events (positions opened, deposits, withdrawals, funding).

Figures (``bench <name> <value> <unit>``):

- ``replay_events_per_s``: all 1M entries, NDJSON read + typed decode + ``KeeperCore.handle``
  (apply, exposure index, screen, exact confirmation, decide), GC paused, as ``keeper replay
  --jobs N`` runs it: N processes (one per CPU, at least 2), the accounts split between them
  (``keeper.replay.parallel``); asserted: the same decisions in the same order as one process;
- ``replay_1proc_events_per_s``: the same in one process (``keeper replay``, default ``--jobs 1``);
- ``replay_decisions``: decisions re-derived (all equal to the recorded ones: see verify);
- ``verify_events_per_s`` (N processes) and ``verify_1proc_events_per_s`` (one): the same plus
  collecting and comparing every decision byte for byte, over the first 500,000 entries (to
  stay well under two minutes; asserted: zero divergences), through ``Verifier.after_batch`` as
  ``keeper replay --verify`` does (whole batches into ``handle_batch``; the per-entry ``after``
  hook is for ``--explain``/``--plot``);
- ``decode_only_events_per_s``: the source alone, and ``replay_state_only_events_per_s``: the
  same replay through the plain ``ProjectionCore`` (apply only, no decisions), for reference:
  what the replay shell costs without the keeper's decision path.

``python bench/bench_replay.py --profile`` adds a cProfile of 100,000 steady-state entries.
``BENCH_REPLAY_EVENTS`` changes the size (default 1,000,000).
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import structlog

from keeper import _compiled
from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.projector import ProjectionCore
from keeper.replay.parallel import default_jobs, replay_parallel
from keeper.replay.replay import Replayer, gc_paused, replay_batches
from keeper.replay.source import ndjson_batches
from keeper.replay.verify import Verifier, decision_bytes

EVENTS = int(os.environ.get("BENCH_REPLAY_EVENTS", "1000000"))
RUNS = 3
"""Runs of each parallel figure (the median is printed: this machine's runs vary by +-10%)."""
ACCOUNTS = 10_000
MARKETS = 20
PARAMS = KeeperParams(profile="generic-perp", mode="live")
T0_MS = 1_760_000_000_000
D = Decimal


class _LiveRun:
    """Feeds the live core and writes each entry, then what follows from it, to the export."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("wb")
        self.core = KeeperCore(PARAMS)
        self.n = 0
        self.ms = T0_MS
        self.seq = 0
        self.intents = 0

    def _put(self, e: ev.Event) -> list[ev.Event]:
        self.n += 1
        entry_id = f"{self.ms}-{self.seq}"
        self.seq += 1
        self.f.write(b'{"id":"' + entry_id.encode() + b'","e":' + encode(e) + b"}\n")
        return list(self.core.handle(entry_id, e))

    def emit(self, e: ev.Event, ts: int) -> None:
        """Write a venue entry, then every intent decided, each with its fill and confirmation."""
        self.ms += 1
        self.seq = 0
        todo = self._put(e)
        while todo:
            out = todo.pop(0)
            assert isinstance(out, ev.LiquidationIntended)
            self.intents += 1
            todo += self._put(out)
            d = out.decision
            if d.mode != "live" or d.market is None:
                continue
            pos = self.core.state.accounts[d.account].buckets[d.bucket].positions.get(d.market)
            if pos is None:
                continue
            price = d.prices[d.market]
            pnl = (pos.size * (price - (pos.entry_price or price)) - abs(pos.size) * price * D("0.005")
                   ).quantize(D("0.01"))
            todo += self._put(ev.PositionChanged(
                event_id=f"fill-{d.intent_id}", ts_event=ts, causation_id=d.intent_id, account=d.account,
                bucket=d.bucket, market=d.market, size=D(0), realized_pnl=pnl))
            todo += self._put(ev.LiquidationConfirmed(
                event_id=f"ok-{d.intent_id}", ts_event=ts, intent_id=d.intent_id, account=d.account,
                bucket=d.bucket))

    def close(self) -> None:
        self.f.close()


def generate(path: Path, events: int = EVENTS, seed: int = 1) -> tuple[int, int]:
    """The live run: write the export; returns (entries, intents)."""
    rng = random.Random(seed)
    w = _LiveRun(path)
    ts = T0_MS * 1000
    markets = [f"M{i:02d}-USD" for i in range(MARKETS)]
    prices = {m: rng.uniform(1, 5000) for m in markets}
    w.emit(ev.AssetListed(event_id="a-USDC", ts_event=ts, params=AssetParams(symbol="USDC", decimals=6)), ts)
    w.emit(ev.PriceUpdated(event_id="p-USDC", ts_event=ts, symbol="USDC", price=D(1)), ts)
    for m in markets:
        mmf = D(rng.choice(["0.004", "0.005", "0.01", "0.0125"]))
        w.emit(ev.MarketListed(event_id=f"m-{m}", ts_event=ts, params=MarketParams(
            symbol=m, mmf=mmf, imf=mmf * 2, liquidation_fee=D("0.01"))), ts)
        w.emit(ev.PriceUpdated(event_id=f"p-{m}-0", ts_event=ts, symbol=m, price=_px(prices[m])), ts)
    nid = 0

    def open_bucket(acct: str, bucket: str, ms: list[str]) -> None:
        nonlocal nid
        notional = rng.lognormvariate(8.5, 1.0)
        nid += 1
        w.emit(ev.Deposit(event_id=f"d{nid}", ts_event=ts, account=acct, bucket=bucket, asset="USDC",
                          amount=D(f"{notional / rng.uniform(2, 30):.2f}")), ts)
        for m in ms:
            nid += 1
            size = notional / len(ms) / prices[m] * (1 if rng.random() < 0.7 else -1)
            w.emit(ev.PositionChanged(event_id=f"o{nid}", ts_event=ts, account=acct, bucket=bucket, market=m,
                                      size=D(f"{size:.6f}"), entry_price=_px(prices[m])), ts)

    accounts = [f"acct-{i:05d}" for i in range(ACCOUNTS)]
    for acct in accounts:
        if rng.random() < 0.7:
            open_bucket(acct, CROSS, rng.sample(markets, rng.randint(1, 3)))
        else:
            for m in rng.sample(markets, rng.randint(1, 2)):
                open_bucket(acct, f"iso-{m}", [m])
    tick = 0
    while w.n < events:
        ts += 1000
        r = rng.random()
        if r < 0.8:
            tick += 1
            m = markets[tick % MARKETS]
            prices[m] *= 1 + rng.gauss(-0.00001, 0.0006)
            w.emit(ev.PriceUpdated(event_id=f"p-{m}-{tick}", ts_event=ts, symbol=m, price=_px(prices[m])), ts)
            continue
        acct = rng.choice(accounts)
        a = w.core.state.accounts.get(acct)
        buckets = sorted(a.buckets) if a is not None else []
        nid += 1
        if not buckets or r < 0.83:
            m = rng.choice(markets)
            open_bucket(acct, CROSS if rng.random() < 0.7 else f"iso-{m}", [m])
        elif r < 0.90:
            w.emit(ev.Deposit(event_id=f"d{nid}", ts_event=ts, account=acct, bucket=rng.choice(buckets),
                              asset="USDC", amount=D(f"{rng.uniform(10, 500):.2f}")), ts)
        elif r < 0.94:
            b = rng.choice(buckets)
            bal = a.buckets[b].balances.get("USDC", D(0)) if a is not None else D(0)
            if bal > 20:
                w.emit(ev.Withdraw(event_id=f"w{nid}", ts_event=ts, account=acct, bucket=b, asset="USDC",
                                   amount=(bal * D("0.05")).quantize(D("0.01"))), ts)
        else:
            w.emit(ev.FundingApplied(event_id=f"f{nid}", ts_event=ts, account=acct,
                                     bucket=rng.choice(buckets), market="M00-USD", asset="USDC",
                                     amount=D(f"{rng.uniform(-5, 5):.2f}")), ts)
    w.close()
    return w.n, w.intents


def _px(x: float) -> Decimal:
    return D(f"{max(x, 0.01):.6g}") if x >= 1e5 else D(f"{max(x, 0.0001):.4f}")


def main() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    print(_compiled.describe())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.ndjson"
        t0 = time.perf_counter()
        with gc_paused():
            n, intents = generate(path)
        print(f"# live run: {n:,} entries ({intents:,} intents) in {time.perf_counter() - t0:.1f}s, "
              f"{path.stat().st_size / 1e6:.0f} MB")

        t0 = time.perf_counter()
        with gc_paused():
            decoded = sum(len(b) for b in ndjson_batches(path))
        assert decoded == n
        print(f"bench decode_only_events_per_s {decoded / (time.perf_counter() - t0):.0f} events/s")

        res = replay_batches(ProjectionCore(), ndjson_batches(path))
        assert res.entries == n
        print(f"bench replay_state_only_events_per_s {res.events_per_s:.0f} events/s")

        one = replay_batches(KeeperCore(PARAMS), ndjson_batches(path))
        assert one.entries == n
        assert len(one.derived) == one.recorded == intents
        print(f"bench replay_1proc_events_per_s {one.events_per_s:.0f} events/s")
        jobs = max(2, default_jobs())
        gc.collect()  # the live run's and the one-process replay's cores: not into the workers
        rates = []
        for _ in range(RUNS):
            par = replay_parallel([("perp", PARAMS)], path, jobs).result
            assert par.entries == n
            assert [(t, decision_bytes(e.decision)) for t, e in par.derived] == [
                (t, decision_bytes(e.decision)) for t, e in one.derived]
            rates.append(par.events_per_s)
        print(f"# --jobs {jobs}: the accounts split between {jobs} processes; the same decisions; "
              f"median of {RUNS} runs ({', '.join(f'{r:,.0f}' for r in rates)})")
        print(f"bench replay_events_per_s {statistics.median(rates):.0f} events/s")
        print(f"bench replay_decisions {len(par.derived)} decisions")

        half = _id_at(path, min(n, 500_000))
        v = Verifier()
        t0 = time.perf_counter()
        res = replay_batches(KeeperCore(PARAMS), ndjson_batches(path), to=half, after_batch=v.after_batch)
        report = v.finish()
        dt = time.perf_counter() - t0
        assert report.ok, report.first.describe() if report.first else ""
        assert report.decisions == res.recorded > 0
        print(f"# {report.summary()} (first {res.entries:,} entries)")
        print(f"bench verify_1proc_events_per_s {res.entries / dt:.0f} events/s")
        rates = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            pv = replay_parallel([("perp", PARAMS)], path, jobs, to=half, verify=True)
            assert pv.verifier is not None
            report = pv.verifier.finish()
            dt = time.perf_counter() - t0
            assert report.ok, report.first.describe() if report.first else ""
            assert report.decisions == pv.result.recorded == res.recorded
            rates.append(pv.result.entries / dt)
        print(f"# --jobs {jobs}, median of {RUNS} runs ({', '.join(f'{r:,.0f}' for r in rates)})")
        print(f"bench verify_events_per_s {statistics.median(rates):.0f} events/s")
        if "--profile" in sys.argv:
            profile(path)


def _id_at(path: Path, n: int) -> str:
    """The id of the last entry of the ``n``-th line's millisecond: a venue entry and what
    follows from it (its intents, fills, confirmations) share one, so a replay cut there never
    leaves a decision on one side and its recorded intent on the other."""
    last = None
    with path.open("rb") as f:
        for i, line in enumerate(f, 1):
            entry_id = line[7:line.index(b'"', 7)].decode()
            if i == n:
                last = entry_id
            elif last is not None:
                if entry_id.partition("-")[0] != last.partition("-")[0]:
                    return last
                last = entry_id
    if last is None:
        raise ValueError(f"{path} has fewer than {n} lines")
    return last


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
