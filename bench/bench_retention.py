"""Retention figures: archive throughput, and a soak with retention on (a short hot window).

Starts its own EmbeddedRedis (AOF everysec) in a temporary folder.

- ``archive_events_per_s``: one ``keeper log archive`` pass (archive only) over a log of
  1,000,000 events (``bench_log``'s mix): XREAD, gzip NDJSON segments written, fsynced, renamed;
  ``retention_pass_events_per_s``: a whole pass over the same log (archive, expire the dedup
  ids, trim), median of 3.
- The soak, as the daemon runs it in one asyncio process: a writer appending at full speed
  (batches of 2,000, never held back by the keeper: a venue's and a feed's writers are not),
  the keeper's projector (a ``KeeperCore``, generic-perp, live mode: it appends its intents)
  reading through ``ArchivedLog`` and snapshotting to Redis, a consumer group reading and
  acknowledging every entry (the executor's), and ``run_retention`` with a
  ``BENCH_RETENTION_WINDOW_S`` hot and dedup window (default 20 s) and a hard cap of
  ``BENCH_RETENTION_CAP`` entries (default 300,000; 0: none): when the writer outruns the keeper,
  the cap trims past the keeper's snapshot and the keeper reads the rest from the archive. Events: 10,000
  accounts on 20 markets (1.5-10x), then 85% price ticks (each market swinging +-10% around its
  start, so the most levered buckets breach near the troughs, again and again) and 15% account
  events; the executor answers each live intent with ``LiquidationRejected`` (``out:<intent>``),
  as a runner does when the venue refuses. Everything appended is also written to a full copy
  (NDJSON). Figures:
  ``redis_bytes_per_event_steady``: Redis ``used_memory`` growth per event appended once the
  window is full (least-squares slope over the passes that trimmed once a whole window has
  passed since the first pass: the hot log and the dedup index both full; goal 0),
  ``soak_used_memory_first_window_mb`` (that first pass) / ``soak_used_memory_end_mb`` /
  ``..._max_mb`` and their ratio, ``soak_events_per_s``, ``soak_archive_bytes_per_event`` (on disk),
  ``soak_entries_lost`` (archive + hot log against the full copy, id by id: goal 0) and
  ``soak_replay_divergences``: the archive + hot log and the full copy each replayed through a
  fresh ``KeeperCore`` with ``Verifier`` (the recorded intents against the re-derived ones), and
  the two replays against each other (decisions and final state): goal 0.

``BENCH_RETENTION_EVENTS`` sets the soak's size (default 2,000,000; ``make soak`` runs 20,000,000),
``BENCH_RETENTION_RATE`` caps the writer (events/s; default none: full speed),
``BENCH_RETENTION_MAX_LAG`` holds the writer back while the keeper is that many entries behind
(default 0: never), ``BENCH_RETENTION_ACCOUNTS`` the accounts (10,000). The hot log holds the cap
(or the window, when smaller) plus what arrived during the last pass.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

# runnable as a plain script from a checkout where the project is not pip-installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from keeper.domain import events as ev
from keeper.domain.codec import decode, encode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.projector import Projector
from keeper.replay.replay import replay_async
from keeper.replay.source import Batch, archived_batches, ndjson_batches
from keeper.replay.verify import Verifier, decision_bytes
from keeper.store.archive import Archive, ArchivedLog
from keeper.store.embedded import EmbeddedRedis
from keeper.store.entries import parse_id
from keeper.store.redis_log import RedisEventLog
from keeper.store.retention import PassReport, Retention, RetentionPolicy, run_retention
from keeper.store.snapshots import RedisSnapshotStore

SOAK_EVENTS = int(os.environ.get("BENCH_RETENTION_EVENTS", "2000000"))
WINDOW_S = float(os.environ.get("BENCH_RETENTION_WINDOW_S", "20"))
RATE = float(os.environ.get("BENCH_RETENTION_RATE", "0"))
"""Events written per second at most (0: full speed)."""
CAP = int(os.environ.get("BENCH_RETENTION_CAP", "300000"))
OWN_PROCESS = os.environ.get("BENCH_RETENTION_PROCESS", "1") != "0"
"""Retention in its own process (``keeper log archive --follow``), as a high-rate deployment runs
it; ``0``: in the keeper's event loop (the daemon's default)."""
MAX_LAG = int(os.environ.get("BENCH_RETENTION_MAX_LAG", "0"))
"""Hold the writer back while the keeper is this many entries behind (0: never)."""
ARCHIVE_EVENTS = 1_000_000
BATCH = 2_000
ACCOUNTS = int(os.environ.get("BENCH_RETENTION_ACCOUNTS", "10000"))
MARKETS = 20
PARAMS = KeeperParams(profile="generic-perp", mode="live")
D = Decimal


def soak_events(n: int, seed: int = 7) -> Iterator[list[tuple[str, bytes]]]:
    """Batches of ``(event id, payload)``: the venue's setup, then ticks and account events."""
    rng = random.Random(seed)
    ts = 1_760_000_000_000_000
    markets = [f"M{i:02d}-USD" for i in range(MARKETS)]
    prices = {m: rng.uniform(10, 5000) for m in markets}
    start = dict(prices)
    setup: list[ev.Event] = [
        ev.AssetListed(event_id="a-USDC", ts_event=ts, params=AssetParams(symbol="USDC", decimals=6)),
        ev.PriceUpdated(event_id="p-USDC", ts_event=ts, symbol="USDC", price=D(1))]
    for m in markets:
        mmf = D(rng.choice(["0.004", "0.005", "0.01", "0.0125"]))
        setup.append(ev.MarketListed(event_id=f"m-{m}", ts_event=ts, params=MarketParams(
            symbol=m, mmf=mmf, imf=mmf * 2, liquidation_fee=D("0.01"))))
        setup.append(ev.PriceUpdated(event_id=f"p-{m}-0", ts_event=ts, symbol=m, price=_px(prices[m])))
    nid = 0
    for a in range(ACCOUNTS):
        acct = f"acct-{a:05d}"
        m = markets[a % MARKETS]
        notional = rng.lognormvariate(8.5, 1.0)
        nid += 1
        setup.append(ev.Deposit(event_id=f"d{nid}", ts_event=ts, account=acct, bucket=CROSS, asset="USDC",
                                amount=D(f"{notional / rng.uniform(1.5, 10):.2f}")))
        setup.append(ev.PositionChanged(event_id=f"o{nid}", ts_event=ts, account=acct, bucket=CROSS, market=m,
                                        size=D(f"{notional / prices[m]:.6f}"), entry_price=_px(prices[m])))
    out = [(e.event_id, encode(e)) for e in setup]
    sent = 0
    tick = 0
    while sent < n:
        batch: list[tuple[str, bytes]] = out[:BATCH]
        out = out[BATCH:]
        while len(batch) < BATCH and sent + len(batch) < n:
            ts += 1000
            nid += 1
            r = rng.random()
            e: ev.Event
            if r < 0.85:
                tick += 1
                m = markets[tick % MARKETS]
                # mean-reverting around the start, swinging +-10% every ~40,000 ticks a market:
                # the most levered buckets breach near the troughs, again and again
                swing = 0.10 * math.sin(tick / (MARKETS * 6_000) + markets.index(m))
                prices[m] = start[m] * math.exp(swing + rng.gauss(0, 0.002))
                e = ev.PriceUpdated(event_id=f"p{nid}", ts_event=ts, symbol=m, price=_px(prices[m]))
            elif r < 0.95:
                acct = f"acct-{rng.randrange(ACCOUNTS):05d}"
                e = ev.Deposit(event_id=f"d{nid}", ts_event=ts, account=acct, bucket=CROSS, asset="USDC",
                               amount=D(f"{rng.uniform(10, 5000):.2f}"))
            else:
                a = rng.randrange(ACCOUNTS)
                m = markets[a % MARKETS]
                e = ev.PositionChanged(event_id=f"o{nid}", ts_event=ts, account=f"acct-{a:05d}", bucket=CROSS,
                                       market=m, size=D(f"{rng.uniform(0.01, 3):.6f}"),
                                       entry_price=_px(prices[m]))
            batch.append((e.event_id, encode(e)))
        sent += len(batch)
        yield batch


def _px(x: float) -> Decimal:
    return D(f"{x:.6g}")


class Tee:
    """The full copy: what one appender appended, in its order (an NDJSON file in the export
    format; the payloads are ``encode``'s, one-line JSON)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = path.open("wb")
        self.n = 0

    def add(self, ids: list[str | None], items: list[tuple[str, bytes]]) -> None:
        self.f.writelines(b'{"id":"%s","e":%s}\n' % (i.encode(), p)
                          for i, (_, p) in zip(ids, items, strict=True) if i is not None)
        self.n += len(ids) - ids.count(None)

    def close(self) -> None:
        self.f.close()


class TeeLog:
    """The keeper's view of the log: its appends also go to its full copy."""

    def __init__(self, inner: Any, tee: Tee) -> None:
        self.inner = inner
        self.tee = tee

    async def append(self, events: list[ev.Event]) -> list[str | None]:
        items = [(e.event_id, encode(e)) for e in events]
        ids: list[str | None] = await self.inner.inner.append_encoded(items)
        self.tee.add(ids, items)
        return ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def full_copy(paths: list[Path]) -> Iterator[Batch]:
    """The appenders' copies merged in log order, as replay batches."""
    streams = [(b for batch in ndjson_batches(p) for b in batch) for p in paths]
    batch: Batch = []
    for item in heapq.merge(*streams, key=lambda e: parse_id(e[0])):
        batch.append(item)
        if len(batch) >= 1000:
            yield batch
            batch = []
    if batch:
        yield batch


async def _aiter(it: Iterator[Batch]) -> AsyncIterator[Batch]:
    for b in it:
        yield b


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def bench_archive(url: str, tmp: Path) -> None:
    from bench_log import make_payloads

    payloads = make_payloads(ARCHIVE_EVENTS)
    rates: dict[str, list[float]] = {"archive": [], "pass": []}
    for run in range(3):
        for kind in ("archive", "pass"):
            log = await RedisEventLog.connect(url, shard=f"arch-{kind}-{run}")
            try:
                for k in range(0, len(payloads), BATCH):
                    await log.append_encoded(payloads[k:k + BATCH])
                last = parse_id(await log.last_id())[0]
                policy = RetentionPolicy(archive_dir=tmp / f"a-{kind}-{run}", hot_window_s=1,
                                         dedup_window_s=1, min_segment_entries=1, trim=kind == "pass")
                t0 = time.perf_counter()
                r = await Retention(log, policy, now_ms=lambda: last + 10_000).run_pass()  # noqa: B023
                dt = time.perf_counter() - t0
                assert not r.error, r.summary()
                assert r.archived == ARCHIVE_EVENTS, r.summary()
                rates[kind].append(ARCHIVE_EVENTS / dt)
                print(f"# {kind} run {run}: {ARCHIVE_EVENTS / dt:,.0f}/s ({r.summary()[:120]})", flush=True)
                await log.client.flushall()
            finally:
                await log.close()
    size = sum(f.stat().st_size for f in (tmp / "a-archive-0").rglob("*.gz"))
    print(f"bench archive_events_per_s {statistics.median(rates['archive']):.0f} events/s")
    print(f"bench retention_pass_events_per_s {statistics.median(rates['pass']):.0f} events/s")
    print(f"bench archive_bytes_per_event {size / ARCHIVE_EVENTS:.1f} bytes")


async def soak(url: str, tmp: Path) -> None:
    log = await RedisEventLog.connect(url, shard="soak")
    reader_log = await RedisEventLog.connect(url, shard="soak")  # the projector's blocking reads
    group_log = await RedisEventLog.connect(url, shard="soak")
    policy = RetentionPolicy(archive_dir=tmp / "archive", hot_window_s=WINDOW_S, dedup_window_s=WINDOW_S,
                             interval_s=max(WINDOW_S / 10, 0.5), min_segment_entries=10_000,
                             cap_entries=CAP)
    archive = Archive.of(policy.archive_dir, log)
    writer_copy, keeper_copy = Tee(tmp / "writer.ndjson"), Tee(tmp / "keeper.ndjson")
    executor_copy = Tee(tmp / "executor.ndjson")
    copies = [writer_copy.path, keeper_copy.path, executor_copy.path]
    snaps = RedisSnapshotStore(log.client, shard="soak", format=KeeperCore.FORMAT)
    proj = Projector(TeeLog(ArchivedLog(reader_log, archive), keeper_copy), snaps,  # type: ignore[arg-type]
                     lambda b: KeeperCore(PARAMS) if b is None else KeeperCore.restore(b, PARAMS),
                     name="keeper-generic-perp", fmt=KeeperCore.FORMAT, batch=1000,
                     snapshot_every=200_000, snapshot_interval_s=5.0)
    stop = asyncio.Event()
    reports: list[tuple[int, PassReport]] = []
    appended = 0

    def on_pass(r: PassReport) -> None:
        reports.append((appended, r))
        if r.error:
            print(f"# pass error: {r.error}", flush=True)
        elif len(reports) % 10 == 0 or os.environ.get("BENCH_RETENTION_VERBOSE"):
            print(f"# {appended:,} appended, {proj.applied:,} applied: {r.summary()[:160]} ... "
                  f"{r.duration_s:.1f} s", flush=True)

    async def write() -> None:
        nonlocal appended
        loop = asyncio.get_running_loop()
        start = loop.time()
        for batch in soak_events(SOAK_EVENTS):
            if RATE and (ahead := start + appended / RATE - loop.time()) > 0:
                await asyncio.sleep(ahead)
            ids = await log.append_encoded(batch)
            writer_copy.add(ids, batch)
            appended += len(batch)
            while MAX_LAG and appended - proj.applied > MAX_LAG:
                await asyncio.sleep(0.005)

    async def follow() -> None:
        await proj.start()
        while not stop.is_set():
            await proj.step(block_ms=50)
        await proj.catch_up()
        await proj.snapshot()

    async def executor() -> None:
        """The runner's share: every entry read through the group and acknowledged, the live
        intents (only those are decoded) answered with a rejection."""
        await group_log.ensure_group("executor", "0")
        while not stop.is_set():
            got = await group_log.read_group_raw("executor", "bench", count=5_000)
            if not got:
                await asyncio.sleep(0.05)
                continue
            outcomes: list[tuple[str, bytes]] = []
            for _, payload in got:
                if b"liquidation_intended" not in payload:
                    continue
                e = decode(payload)
                if isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live":
                    d = e.decision
                    out = ev.LiquidationRejected(event_id=f"out:{d.intent_id}", ts_event=e.ts_event,
                                                 causation_id=d.intent_id, intent_id=d.intent_id,
                                                 account=d.account, bucket=d.bucket, reason="bench venue")
                    outcomes.append((out.event_id, encode(out)))
            if outcomes:
                executor_copy.add(await group_log.append_encoded(outcomes), outcomes)
            await group_log.ack("executor", [i for i, _ in got])

    gc.collect()
    gc.freeze()
    if OWN_PROCESS:
        retention = await _retention_process(url, policy, on_pass)
        tasks = [asyncio.create_task(follow()), asyncio.create_task(executor())]
    else:
        retention = None
        tasks = [asyncio.create_task(run_retention(log, policy, stop, on_pass)),
                 asyncio.create_task(follow()), asyncio.create_task(executor())]
    t0 = time.perf_counter()
    await write()
    write_dt = time.perf_counter() - t0
    behind = appended - proj.applied
    for _ in range(2):  # the keeper's intents, then the executor's outcomes, all applied
        await asyncio.sleep(0.5)
        while (proj.applied < appended + proj.appended + executor_copy.n
               and not any(t.done() for t in tasks)):
            await asyncio.sleep(0.05)
    dt = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*tasks)
    if retention is not None:
        await retention.stop()
    for copy in (writer_copy, keeper_copy, executor_copy):
        copy.close()
    total = writer_copy.n + keeper_copy.n + executor_copy.n
    # "after the first window": the first pass that trimmed once a whole hot (and dedup) window
    # has passed since the first pass, when both the hot log and the dedup index are full
    t_full = next((r.started_ms for _, r in reports if r.started_ms), 0) + int(WINDOW_S * 1000)
    steady = [(n, r) for n, r in reports if r.trimmed and not r.error and r.started_ms >= t_full]
    first, end = steady[0][1], steady[-1][1]
    bpe = slope([float(n) for n, _ in steady], [float(r.used_memory) for _, r in steady])
    print(f"# soak: {appended:,} events written, {keeper_copy.n:,} intents appended by the keeper, "
          f"{executor_copy.n:,} outcomes by the executor, "
          f"{dt:.0f} s, {len(reports)} passes ({sum(1 for _, r in reports if r.error)} failed); hot log "
          f"{end.hot_entries:,} entries, dedup index {end.ids_size:,} ids at the end", flush=True)
    print(f"bench soak_events {total} events")
    print(f"bench soak_events_per_s {appended / dt:.0f} events/s")
    print(f"bench soak_write_events_per_s {appended / write_dt:.0f} events/s")
    print(f"# the keeper was {behind:,} entries behind when the writer finished; "
          f"{sum(1 for _, r in reports if r.overrun)} passes trimmed past its snapshot (hard cap "
          f"{CAP:,})", flush=True)
    print(f"bench redis_bytes_per_event_steady {bpe:.3f} bytes")
    print(f"bench soak_used_memory_first_window_mb {first.used_memory / 1e6:.1f} MB")
    print(f"bench soak_used_memory_end_mb {end.used_memory / 1e6:.1f} MB")
    print(f"bench soak_used_memory_max_mb {max(r.used_memory for _, r in steady) / 1e6:.1f} MB")
    print(f"bench soak_used_memory_end_over_first {end.used_memory / first.used_memory:.3f} x")
    size = sum(s.path.stat().st_size for s in archive.segments())
    print(f"bench soak_archive_bytes_per_event {size / max(archive.entries(), 1):.1f} bytes")

    # no entry lost: archive + hot log against the full copy, id by id
    lost = 0
    hot = archived_batches(archive, log)
    merged = full_copy(copies)
    mine = (e for b in merged for e in b)
    seen = 0
    async for b in hot:
        for entry_id, _ in b:
            want = next(mine, None)
            seen += 1
            if want is None or want[0] != entry_id:
                lost += 1
    lost += sum(1 for _ in mine)
    print(f"# archive + hot log: {seen:,} entries, the full copy {total:,}", flush=True)
    print(f"bench soak_entries_lost {lost + abs(total - seen)} entries")

    # replay both through a fresh core, verified against what the keeper recorded
    async def replay(batches: AsyncIterator[Batch]) -> tuple[Any, Any, KeeperCore]:
        core = KeeperCore(PARAMS)
        v = Verifier()
        res = await replay_async(core, batches, after_batch=v.after_batch)
        return res, v.finish(), core

    t1 = time.perf_counter()
    res_a, rep_a, core_a = await replay(archived_batches(archive, log))
    print(f"# replay archive + hot log: {res_a.entries:,} entries, {rep_a.summary()} "
          f"({time.perf_counter() - t1:.0f} s)", flush=True)
    t1 = time.perf_counter()
    res_f, rep_f, core_f = await replay(_aiter(full_copy(copies)))
    print(f"# replay full copy: {res_f.entries:,} entries, {rep_f.summary()} "
          f"({time.perf_counter() - t1:.0f} s)", flush=True)
    same = ([decision_bytes(e.decision) for _, e in res_a.derived] == [decision_bytes(e.decision)
                                                                       for _, e in res_f.derived]
            and core_a.snapshot() == core_f.snapshot() and res_a.entries == res_f.entries)
    print(f"bench soak_replay_decisions {len(res_a.derived)} decisions")
    divergences = len(rep_a.divergences) + len(rep_f.divergences) + (0 if same else 1)
    print(f"bench soak_replay_divergences {divergences} divergences")
    for lg in (log, reader_log, group_log):
        await lg.close()


class _RetentionProcess:
    """``keeper log archive --follow --trim --json`` in its own process, its reports handed to
    ``on_pass`` as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.Task[None]) -> None:
        self.proc, self.reader = proc, reader

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()
        await self.reader
        if self.proc.returncode:
            raise SystemExit(f"the retention process exited with {self.proc.returncode}")


async def _retention_process(url: str, policy: RetentionPolicy,
                             on_pass: Any) -> _RetentionProcess:
    argv = [sys.executable, "-m", "keeper", "log", "--redis-url", url, "--shard", "soak", "archive",
            "--follow", "--trim", "--json", "--archive-dir", str(policy.archive_dir),
            "--hot-window-s", str(policy.hot_window_s), "--dedup-window-s", str(policy.dedup_window_s),
            "--cap-entries", str(policy.cap_entries), "--interval-s", str(policy.interval_s)]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                cwd=Path(__file__).resolve().parent.parent)

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            if line.startswith(b"{"):
                on_pass(PassReport(**json.loads(line)))

    return _RetentionProcess(proc, asyncio.create_task(read()))


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory(prefix="bench_retention_") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendfsync="everysec")
        url = server.start()
        try:
            if os.environ.get("BENCH_RETENTION_SOAK_ONLY") != "1":
                asyncio.run(bench_archive(url, Path(tmp)))
            asyncio.run(soak(url, Path(tmp)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
