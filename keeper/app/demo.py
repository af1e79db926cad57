"""``keeper demo``: the whole system against the reference venue through a real crash.

What runs (all on 127.0.0.1, nothing to configure):

1. an embedded Redis on the data folder's log (``.keeper/redis`` unless ``--data-dir``: the log
   ``keeper log`` and ``keeper replay`` read after the run), emptied first;
2. the reference venue (``keeper sim``) as a child process (``keeper.sim.process``), so that
   its price broadcasts and liquidations run on a core of their own, not on the keeper's loop;
   its book (default 10,000 accounts) is generated at the window's first prices;
3. the price window: the 2025-10-10 Bybit USDT-perp 5-minute bars of BTC, ETH and SOL from
   ``../shared/data/event_windows_tidy.csv.gz`` (rows with event ``2025-10-10`` and venue
   ``bybit``), each bar's open, the extreme on the way, the other extreme and close joined by
   straight legs in steps of at most ``step`` (0.1%) of any price (``load_window``); without the
   data folder the built-in ``keeper.sim.synthetic_crash`` (seed 1, its stated defaults: BTC
   -25%, ETH -35%, SOL -45% over 30 minutes with a 10% wick), every 10th second, joined the
   same way. The demo plays it (``POST /marks``), one tick every ``tick_s`` (25 ms). Why small
   steps: a whole bar in a few ticks moves a price so far in one tick that a crash tick decides
   most of the book's liquidations at once, the venue checks them after the next tick (the
   bounce) and refuses them as healthy; in small steps the liquidations of a crash arrive a few
   per tick, as they do on a live feed;
4. the daemon (every role; executor = the venue's client), in a process of its own
   (``keeper.app.demo_daemon``: the driver's requests and heap stay off its loop, and a daemon
   that falls behind cannot hold the prices back), with two keeper cores: profile
   ``generic-perp`` for perp buckets and ``aave-v3.3`` for the venue's lending buckets (a perp
   profile never finds a lending bucket liquidatable, and vice versa); assets are priced at their
   market's mark by a second price subscription that maps ``ETHUSDT`` to ``ETH`` (the venue's
   rule), and ``USDC`` at exactly 1 (``feeds.fixed_prices``).

The daemon runs without the per-window caps (``DemoDaemon``), in a process of its own
(``keeper.app.demo_daemon``; ``DemoOptions.daemon_process``). The summary
(``keeper.app.demo_summary``) is computed from the log and the venue's ``GET /stats``, with the
perfect keeper's figures on the same book and played path beside the keeper's
(``keeper.sim.ideal``), and says whether the run was sound.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import itertools
import json
import math
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import msgspec
import structlog

from keeper.app import datadir
from keeper.app.daemon import read_all
from keeper.app.demo_daemon import (
    LENDING_PROFILE,
    MARKETS,
    PERP_PROFILE,
    DaemonProcess,
    DemoDaemon,
    Handle,
    InlineDaemon,
    demo_config,
    settle,
    wait_book,
)
from keeper.app.demo_summary import Summary, judge, percentiles, summarise
from keeper.clock import wall_clock_us
from keeper.errors import ConfigError
from keeper.replay import manifest as mf
from keeper.scenarios.book import DEFAULT_MARKET, MARKET_TABLE, generate_book
from keeper.sim.ideal import ideal_run
from keeper.sim.prices import Tick, synthetic_crash
from keeper.sim.process import VenueProcess, write_path
from keeper.store.embedded import open_redis
from keeper.store.ndjson import export_log
from keeper.store.redis_log import RedisEventLog

__all__ = ["LENDING_PROFILE", "MARKETS", "PERP_PROFILE", "DemoDaemon", "DemoOptions", "Summary", "WindowData",
           "default_shared_data", "demo_config", "demo_path", "load_window", "run_demo", "window_data",
           "window_span", "window_ticks"]

_log = structlog.get_logger()

PROFILES = f"{PERP_PROFILE} (perp buckets) + {LENDING_PROFILE} (lending buckets)"
"""The demo's keeper cores, as its summary states them."""


@dataclass(frozen=True)
class DemoOptions:
    accounts: int = 10_000
    window: str = "2025-10-10"
    """An event of ``../shared/data`` (``keeper feed list``), or ``synthetic``."""
    start: str | None = None
    """``None``: the window's own span (``window_span``)."""
    end: str | None = None
    window_given: bool = False
    """``--window`` was given: a window whose data is absent is an error, not the synthetic crash."""
    tick_s: float = 0.025
    """Wall seconds between ticks (the pace: one price move of at most ``step`` per tick)."""
    step: Decimal = Decimal("0.001")
    """The largest move of any market's price from one tick to the next (see ``load_window``)."""
    bar_s: float | None = None
    """Deprecated (the pace before paths were filled in): when set, ``tick_s = bar_s / 4``."""
    data_dir: Path = datadir.DEFAULT
    """The data folder: the log in ``redis/`` (a demo's log there is replaced; another is kept
    and the demo refused), the venue's files in ``demo/``."""
    shared_data: Path | None = None
    export: Path | None = None
    summary_json: Path | None = None
    seed: int = 1
    progress: bool = True
    redis_url: str | None = None
    """An existing Redis to use instead of starting the embedded one (tests)."""
    sizing: str | None = None
    """The keeper's ``[keeper] sizing`` (``least`` or ``largest``); None: the configuration's default."""
    daemon_process: bool = True
    """The daemon in a child process of its own (``keeper.app.demo_daemon``), apart from this
    driver; False: in this process, on the driver's event loop (the measurement behind the
    default: ``docs/performance.md``, *The demo*)."""


def _us(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp() * 1_000_000)


SPAN_US = 6 * 3600 * 1_000_000
"""Without ``--start``/``--end``: the six hours of a window around its largest bar."""
DEFAULT_SPANS = {"2025-10-10": ("2025-10-10T18:00:00Z", "2025-10-11T00:00:00Z")}
"""Spans chosen by hand (the crash of 2025-10-10 fell at ~21:15 UTC)."""

Bars = dict[int, dict[str, tuple[Decimal, Decimal, Decimal, Decimal]]]


@dataclass(frozen=True)
class WindowData:
    """The bars of one event window for the demo: the recorded series that prices the most of
    ``MARKETS`` (``source``), each bar at its start time with (open, high, low, close) per market."""

    event: str
    source: str
    resolution_us: int
    bars: Bars


def _seconds(hms: str) -> int:
    h, m, sec = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + sec


def window_data(data: Path, event: str) -> WindowData:
    """The bars of ``event`` for the markets of the demo (``MARKETS``): of the tidy file's series
    of that event (venue, market, resolution), the one holding the most of them (then a perp
    market over spot, then the coarser bars: fewer ticks to play); ``ConfigError`` in one line
    when the event has none (naming the events there are)."""
    groups: dict[tuple[str, str, str], dict[str, dict[int, tuple[Decimal, Decimal, Decimal, Decimal]]]] = {}
    events: set[str] = set()
    with gzip.open(data / "event_windows_tidy.csv.gz", "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            events.add(row["event"])
            if row["event"] != event:
                continue
            base = row["symbol"].split("/")[0]
            if base not in MARKETS:
                continue
            series = groups.setdefault((row["venue"], row["market"], row["resolution"]), {})
            series.setdefault(f"{base}-USD", {})[_us(row["ts"])] = (
                Decimal(row["open"]), Decimal(row["high"]), Decimal(row["low"]), Decimal(row["close"]))
    if event not in events:
        raise ConfigError(f"--window: no window {event!r} in {data / 'event_windows_tidy.csv.gz'} "
                          f"(windows: {', '.join(sorted(events))}; see keeper feed list)")
    if not groups:
        raise ConfigError(f"--window {event}: no bars of {', '.join(MARKETS)} in that window "
                          "(see keeper feed list)")
    venue, market, res = max(groups, key=lambda g: (len(groups[g]), "perp" in g[1], _seconds(g[2]), g))
    series = groups[(venue, market, res)]
    common = set.intersection(*(set(v) for v in series.values()))
    bars: Bars = {ts: {m: v[ts] for m, v in series.items()} for ts in sorted(common)}
    names = ", ".join(m.split("-")[0] for m in sorted(series))
    return WindowData(event, f"{venue} {market} {res} bars of {names}", _seconds(res) * 1_000_000, bars)


def window_span(w: WindowData, start: str | None, end: str | None) -> tuple[int, int]:
    """``[start, end)`` in µs: as given, else the window's chosen span (``DEFAULT_SPANS``), else
    ``SPAN_US`` centred on its largest bar (high - low over open, any market), within its bars."""
    first, last = min(w.bars), max(w.bars) + w.resolution_us
    if start is None and end is None and w.event in DEFAULT_SPANS:
        start, end = DEFAULT_SPANS[w.event]
    if start is None and end is None:
        peak = max(w.bars, key=lambda ts: max((h - lo) / o for o, h, lo, _ in w.bars[ts].values()))
        t0 = max(first, min(peak - SPAN_US // 2, last - SPAN_US))
        return t0, min(last, t0 + SPAN_US)
    try:
        t0 = _us(start) if start is not None else first
        t1 = _us(end) if end is not None else (t0 + SPAN_US if start is not None else last)
    except ValueError:
        raise ConfigError(f"--start/--end: not ISO 8601 times: {start!r}, {end!r}") from None
    return t0, t1


def load_window(data: Path, event: str, start: str | None = None, end: str | None = None,
                step: Decimal | None = None) -> list[Tick]:
    """The bars of ``event`` (``window_data``) in [start, end) (``window_span``) as ticks: per
    bar open, then low and high (high first on an up bar), then close, a quarter bar apart.
    ``ConfigError`` in one line when the span holds no bar of the window.

    With ``step`` (a fraction, e.g. ``0.001``) the path between those points is filled in: each
    leg (point to next point, the last close to the next open included) is cut into the fewest
    equal steps that move no market by more than ``step`` of its price, rounded to the market's
    price tick, at evenly spaced times in the leg. The extremes are still reached exactly; the
    path in between is the straight line (a bar says nothing more about it)."""
    w = window_data(data, event)
    t0, t1 = window_span(w, start, end)
    return window_ticks(w, t0, t1, step)


def window_ticks(w: WindowData, t0: int, t1: int, step: Decimal | None = None) -> list[Tick]:
    """``load_window`` of the bars already read."""
    inside = [ts for ts in w.bars if t0 <= ts < t1]
    if not inside:
        raise ConfigError(f"--start/--end: no bar of the window {w.event} between {_iso(t0)} and "
                          f"{_iso(t1)} (its {w.source} run from {_iso(min(w.bars))} to {_iso(max(w.bars))})")
    quarter = w.resolution_us // 4
    points: list[Tick] = []
    for ts in inside:
        for k in range(4):
            prices = {}
            for m, (o, h, lo, c) in sorted(w.bars[ts].items()):
                seq = (o, h, lo, c) if c < o else (o, lo, h, c)
                prices[m] = seq[k]
            points.append(Tick(ts + k * quarter, prices))
    return points if step is None else _fill(points, step)


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fill(points: list[Tick], step: Decimal) -> list[Tick]:
    out = points[:1]
    for a, b in itertools.pairwise(points):
        if b.prices == a.prices:
            continue  # no move, no tick
        # measured against the lower end, a step is <= ``step`` of the price anywhere on the leg
        n = max(1, *(math.ceil(abs(b.prices[m] - p) / (min(p, b.prices[m]) * step))
                     for m, p in a.prices.items()))
        for k in range(1, n + 1):
            if k == n:
                out.append(b)
                continue
            prices = {m: (p + (b.prices[m] - p) * k / n).quantize(_price_tick(m), ROUND_HALF_EVEN)
                      for m, p in a.prices.items()}
            out.append(Tick(a.ts_us + (b.ts_us - a.ts_us) * k // n, prices))
    return out


def _price_tick(market: str) -> Decimal:
    return MARKET_TABLE.get(market.split("-", maxsplit=1)[0], DEFAULT_MARKET)[3]


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def show(self, done: int, total: int, stats: dict[str, Any], final: bool = False) -> None:
        if not self.enabled:
            return
        width = 30
        fill = int(width * done / max(total, 1))
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} ticks  "
                         f"liquidated {stats.get('accepted', 0)}  rejected {stats.get('rejected', 0)}   ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def _play(venue: VenueProcess, path: list[Tick], tick_s: float, progress: _Progress,
                daemon: Handle, *, sent: list[tuple[int, int]] | None = None,
                late_ms: list[float] | None = None) -> int:
    """Move the venue's marks along ``path[1:]`` (the book is priced at ``path[0]``), one tick
    every ``tick_s`` on a fixed schedule (a late tick is sent at once, never skipped); returns
    the ticks played (stops early if the daemon ended). ``sent`` gets (wall clock, tick time)
    of each tick sent: the run's clock."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    total = len(path)
    done = 1
    next_show = t0
    for k, tick in enumerate(path[1:], start=1):
        if not daemon.running:
            break
        await asyncio.sleep(max(t0 + k * tick_s - loop.time(), 0.0))
        if late_ms is not None:  # behind the schedule: this loop was held up (inline: by the daemon)
            late_ms.append((loop.time() - t0 - k * tick_s) * 1000)
        await venue.set_marks(tick.ts_us, tick.prices)
        if sent is not None:
            sent.append((wall_clock_us(), tick.ts_us))
        done += 1
        if progress.enabled and loop.time() >= next_show:  # the venue's /stats is not small
            progress.show(done, total, await venue.stats())
            next_show = loop.time() + 0.25
    return done


def demo_path(opts: DemoOptions) -> tuple[list[Tick], set[int], str]:
    """The path the demo plays (``opts``' window, span and step; the synthetic crash where the
    data is absent), the times of its recorded points (the run's clock keeps these) and its
    description for the summary. Deterministic: the same options give the same path."""
    shared = opts.shared_data
    path: list[Tick] = []
    source = ""
    if opts.window != "synthetic" and shared is not None and (shared / "event_windows_tidy.csv.gz").exists():
        w = window_data(shared, opts.window)
        span = window_span(w, opts.start, opts.end)
        path = window_ticks(w, *span)
        source = f"{w.source} {_iso(span[0])} .. {_iso(span[1])} ({opts.window})"
    elif opts.window_given and opts.window != "synthetic":
        raise ConfigError(f"--window {opts.window}: no recorded data (event_windows_tidy.csv.gz) in "
                          f"{shared or '../shared/data'}: give --shared-data DIR or KEEPER_DATA_DIR, "
                          "or --window synthetic")
    if not path:
        path = synthetic_crash(opts.seed)[::10]
        source = ("synthetic crash (seed 1: BTC -25%, ETH -35%, SOL -45% over 30 min, 10% wick), "
                  "every 10th second")
    points = {t.ts_us for t in path}  # the recorded points (the run's clock keeps these)
    path = _fill(path, opts.step)
    source += (f"; open, extremes, close joined in steps of <= {opts.step * 100}%, "
               f"one every {(opts.tick_s if opts.bar_s is None else opts.bar_s / 4) * 1000:g} ms")
    return path, points, source


async def run_demo(opts: DemoOptions) -> Summary:
    """Run the demo end to end; returns its summary (``summary.sound`` says whether to exit 0)."""
    path, points, source = demo_path(opts)
    # one data folder (keeper.app.datadir): the log in <data dir>/redis, where keeper log and
    # keeper replay look; the demo's own files in <data dir>/demo; both emptied first
    work = opts.data_dir / "demo"
    redis_dir = datadir.redis_dir(opts.data_dir).resolve()
    if opts.redis_url is None:
        datadir.fresh_demo_log(redis_dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    prices_file = work / "prices.ndjson"
    write_path(path[:1], prices_file)  # the book's prices; the demo plays the rest (``_play``)
    url, server = await open_redis(opts.redis_url, redis_dir, appendfsync="everysec")
    secret = secrets.token_hex(16)
    venue = VenueProcess(secret, prices_file, accounts=opts.accounts, seed=opts.seed, speed=0.0,
                         log_file=work / "venue.log")
    book = generate_book(opts.accounts, opts.seed, path[0].prices)  # deterministic: the venue's book
    try:
        await venue.start()
        daemon: Handle = (
            DaemonProcess(venue.url, url, secret, work / "daemon.log", sizing=opts.sizing)
            if opts.daemon_process else InlineDaemon(demo_config(venue.url, url, secret, opts.sizing)))
        await daemon.start()
        progress = _Progress(opts.progress)
        try:
            await wait_book(daemon, int((await venue.healthz())["seq"]))
            await daemon.freeze()
            if daemon.admin_port is not None:
                print(f"keeper demo: status page at http://127.0.0.1:{daemon.admin_port}/ while it "
                      f"runs; its log in {redis_dir if opts.redis_url is None else opts.redis_url}",
                      file=sys.stderr)
            t0 = time.monotonic()
            tick_s = opts.tick_s if opts.bar_s is None else opts.bar_s / 4
            sent: list[tuple[int, int]] = []
            late: list[float] = []
            played = await _play(venue, path, tick_s, progress, daemon, sent=sent, late_ms=late)
            seconds = time.monotonic() - t0
            if progress.enabled:
                progress.show(played, len(path), await venue.stats(), final=True)
            await settle(daemon)
        finally:
            last = await daemon.stop()
        skipped: dict[str, dict[str, int]] = last.get("skipped", {})
        stats = await venue.stats()
        log = await RedisEventLog.connect(url)
        try:
            entries = await read_all(log)
            # the run's clock in its manifest: replay --until and --plot read the crash's times
            live = await mf.read_redis(log.client)
            clock = [(w, d) for w, d in sent if d in points] + sent[-1:]
            if live is not None and clock:
                await mf.write_redis(log.client, msgspec.structs.replace(
                    live, clock=sorted(set(clock))))
            if opts.export is not None:
                await export_log(log, opts.export)
                # the run manifest beside the export, so `keeper replay --ndjson` replays every core
                live = await mf.read_redis(log.client)
                if live is not None:
                    mf.write_file(mf.manifest_path(opts.export), live)
        finally:
            await log.close()
        base = Summary(source=source, accounts=opts.accounts, ticks=played, profiles=PROFILES,
                       seconds=seconds)
        base.skipped = skipped
        base.tick_late_ms = percentiles(late)
        base.daemon = "its own process" if opts.daemon_process else "the driver's process"
        summary = summarise(entries, stats, set(book.healthy), book.kinds, base)
        judge(summary, ideal_run(book.events, path[:played]))
        if opts.summary_json is not None:
            opts.summary_json.write_text(json.dumps(msgspec.to_builtins(
                {**summary.__dict__, "sound": summary.sound}, enc_hook=str), indent=2))
        return summary
    finally:
        await venue.stop()
        if server is not None:
            server.stop()


def default_shared_data() -> Path | None:
    """``KEEPER_DATA_DIR``, else ``$KEEPER_SHARED_DIR/data``, else ``../shared/data``."""
    for cand in (os.environ.get("KEEPER_DATA_DIR"),
                 os.environ.get("KEEPER_SHARED_DIR") and f"{os.environ['KEEPER_SHARED_DIR']}/data",
                 "../shared/data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None
