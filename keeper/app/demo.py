"""``keeper demo``: the whole system against the reference venue through a real crash.

What runs (all on 127.0.0.1, nothing to configure):

1. an embedded Redis on the data folder's log (``.keeper/redis`` unless ``--data-dir``: the log
   ``keeper log`` and ``keeper replay`` read after the run), emptied first;
2. the reference venue (``keeper sim``) as a child process (``keeper.sim.process``), so it
   has its own core (sharing the keeper's loop, its price broadcasts and liquidations were half
   of the keeper's tick-to-intent); its book (default 10,000 accounts) is generated at the
   window's first prices;
3. the price window: the 2025-10-10 Bybit USDT-perp 5-minute bars of BTC, ETH and SOL from
   ``../shared/data/event_windows_tidy.csv.gz`` (rows with event ``2025-10-10`` and venue
   ``bybit``), each bar's open, the extreme on the way, the other extreme and close joined by
   straight legs in steps of at most ``step`` (0.1%) of any price (``load_window``); without the
   data folder the built-in ``keeper.sim.synthetic_crash`` (seed 1, its stated defaults: BTC
   -25%, ETH -35%, SOL -45% over 30 minutes with a 10% wick), every 10th second, joined the
   same way. The demo plays it (``POST /marks``), one tick every ``tick_s`` (25 ms). Why: a bar
   played as four ticks moved ETH 19% in one tick, so a crash tick decided ~800 liquidations at
   once and the venue checked most of them after the next tick (the bounce) and refused them as
   healthy, and each refusal was decided again; in steps of 0.1% the liquidations of a crash
   arrive a few per tick, as they do on a live feed, at a pace this 2-core machine follows;
4. the daemon (every role; executor = the venue's client) with two keeper cores: profile
   ``generic-perp`` for perp buckets and ``aave-v3.3`` for the venue's lending buckets (a perp
   profile never finds a lending bucket liquidatable, and vice versa); assets are priced at their
   market's mark by a second price subscription that maps ``ETHUSDT`` to ``ETH`` (the venue's
   rule), and ``USDC`` at exactly 1 (``feeds.fixed_prices``).

The daemon runs without the per-window caps (``_DemoDaemon``). The summary is computed from the
log and the venue's ``GET /stats``; beside the keeper's bad debt and collateral lost it sets the
perfect keeper's on the same book and played path (``keeper.sim.ideal``: each bucket liquidated
at the first tick the venue finds it liquidatable, at that tick's prices), the ratio of the two
bad debts, and the share of live intents the venue refused as healthy at its price. The run is
sound when every venue-accepted liquidation is an intent in the log, none was accepted twice, and
no account healthy by construction was liquidated. A submission refused as healthy is split by
whether a price the decision used had moved by the venue's reply (legitimate: the market moved) or
not (a keeper/venue disagreement).
"""

from __future__ import annotations

import asyncio
import bisect
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import msgspec
import structlog

from keeper.app import datadir
from keeper.app.config import FeedSource, load_config
from keeper.app.daemon import Daemon, read_all
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.domain.decide import KeeperParams
from keeper.errors import ConfigError
from keeper.replay import manifest as mf
from keeper.scenarios.book import DEFAULT_MARKET, MARKET_TABLE, generate_book
from keeper.sim.ideal import Ideal, bad_debt_ratio, ideal_run, share
from keeper.sim.prices import Tick, synthetic_crash
from keeper.sim.process import VenueProcess, write_path
from keeper.store.embedded import open_redis
from keeper.store.ndjson import export_log
from keeper.store.redis_log import RedisEventLog

_log = structlog.get_logger()

MARKETS = ("BTC", "ETH", "SOL")
LENDING_PROFILE = "aave-v3.3"
PERP_PROFILE = "generic-perp"


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


@dataclass
class Summary:
    source: str
    accounts: int
    ticks: int
    seconds: float
    liquidations: dict[str, int] = field(default_factory=dict)
    notional: Decimal = Decimal(0)
    bad_debt: Decimal = Decimal(0)
    collateral_lost: Decimal = Decimal(0)
    """What the liquidations took from the owners (the venue's ``collateral_lost``: the fee or bonus,
    up to what each bucket was still worth), USD."""
    ideal_bad_debt: Decimal = Decimal(0)
    """The perfect keeper's on the same book and path (``keeper.sim.ideal``): each bucket
    liquidated at the first tick the venue finds it liquidatable, at that tick's prices."""
    ideal_collateral_lost: Decimal = Decimal(0)
    ideal_liquidations: int = 0
    bad_debt_ratio: float | None = None
    """``bad_debt / ideal_bad_debt`` (1.0 when both are 0; None when only the ideal's is)."""
    price_moved_share: float = 0.0
    """Live intents the venue rejected as healthy at its price (``healthy at venue price``), over
    all live intents."""
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    healthy_moved: int = 0
    """Rejected as healthy, and a price the decision used had moved before the venue's reply
    (the venue's mark last published before the reply differs from the keeper's): legitimate."""
    healthy_same: int = 0
    """Rejected as healthy at the very prices the keeper decided on: keeper and venue disagree."""
    intents: int = 0
    accepted: int = 0
    """Liquidations the venue accepted (its ``/stats``)."""
    confirmed: int = 0
    """``LiquidationConfirmed`` outcomes in the log that were not duplicates."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    largest_recorded_step: float = 0.0
    """The largest relative move between two consecutive prices of a market in the log: the
    venue's marks move in steps of at most ``step``; ticks a busy keeper conflated show up here."""
    recorded_ticks: int = 0
    """Prices of the most-priced market in the log (of ``ticks`` played)."""
    log_entries: int = 0
    problems: list[str] = field(default_factory=list)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per keeper core: candidates not decided, by reason (unsafe market, no price, paper...)."""
    profiles: str = f"{PERP_PROFILE} (perp buckets) + {LENDING_PROFILE} (lending buckets)"

    @property
    def sound(self) -> bool:
        return not self.problems


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarise(entries: list[Any], stats: dict[str, Any], healthy: set[tuple[str, str]],
              kinds: dict[str, str], base: Summary) -> Summary:
    """The figures and the soundness checks, from the log and the venue's stats."""
    ingest_us: dict[str, int] = {}
    intents: dict[str, ev.Decision] = {}
    latencies: list[float] = []
    rejected = 0
    marks: dict[str, list[tuple[int, Decimal]]] = {}
    healthy_rejections: list[tuple[ev.LiquidationRejected, ev.Decision]] = []
    for entry in entries:
        e = entry.event
        ingest_us[entry.id] = e.ts_ingest
        if isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live":
            intents[e.decision.intent_id] = e.decision
            trig = ingest_us.get(e.decision.trigger, 0)
            if trig and e.ts_ingest:
                latencies.append((e.ts_ingest - trig) / 1000)
        elif isinstance(e, ev.PriceUpdated):
            marks.setdefault(e.symbol, []).append((e.ts_event, e.price))
        elif isinstance(e, ev.LiquidationRejected):
            rejected += 1
            if e.reason.startswith("healthy") and e.intent_id in intents:
                healthy_rejections.append((e, intents[e.intent_id]))
        elif isinstance(e, ev.LiquidationConfirmed) and not e.duplicate:
            base.confirmed += 1
    s = base
    s.intents = len(intents)
    s.log_entries = len(entries)
    s.latency_ms = {"p50": round(_pct(latencies, 0.5), 3), "p99": round(_pct(latencies, 0.99), 3),
                    "n": len(latencies)}
    s.rejected = rejected
    for series in marks.values():
        series.sort(key=lambda m: m[0])
    # the path as the log holds it: the venue moves in steps of <= ``step``, but a keeper that
    # falls behind conflates ticks (the ingest keeps a waiting frame's newest prices only), so
    # a recorded step can be larger: stated as it is
    steps = [abs(b - a) / min(a, b) for sym, series in marks.items() if "-" in sym
             for (_, a), (_, b) in itertools.pairwise(series) if a != b]
    s.largest_recorded_step = float(max(steps, default=0))
    s.recorded_ticks = max((len(v) for sym, v in marks.items() if "-" in sym), default=0)
    for rej, dec in healthy_rejections:
        if any(_mark_at(marks.get(sym, []), rej.ts_event) not in (None, price)
               for sym, price in dec.prices.items()):
            s.healthy_moved += 1
        else:
            s.healthy_same += 1
    s.accepted = int(stats.get("accepted", 0))
    s.rejected_by_reason = dict(stats.get("rejected_by_reason", {}))
    s.bad_debt = Decimal(str(stats.get("bad_debt", "0")))
    s.collateral_lost = Decimal(str(stats.get("collateral_lost", "0")))
    s.price_moved_share = share(int(s.rejected_by_reason.get("healthy", 0)), s.intents)
    counts = {"perp cross": 0, "perp isolated": 0, "lending cross": 0, "lending isolated": 0}
    for iid, n in sorted(stats.get("accepted_by_intent", {}).items()):
        if n != 1:
            s.problems.append(f"{iid} accepted {n} times")
        d = intents.get(iid)
        if d is None:
            s.problems.append(f"{iid} accepted by the venue but not an intent in the log")
            continue
        if (d.account, d.bucket) in healthy:
            s.problems.append(f"{iid}: healthy-by-construction {d.account}/{d.bucket} liquidated")
        lending = kinds.get(d.account, "").startswith("lending") or d.action == "repay_seize"
        key = f"{'lending' if lending else 'perp'} {'cross' if d.bucket == 'cross' else 'isolated'}"
        counts[key] += 1
        s.notional += d.notional
    s.liquidations = counts
    return s


def judge(s: Summary, ideal: Ideal) -> Summary:
    """Set the perfect keeper's figures beside the keeper's, and the ratio of the bad debts."""
    s.ideal_bad_debt, s.ideal_collateral_lost = ideal.bad_debt, ideal.collateral_lost
    s.ideal_liquidations = ideal.liquidations
    s.bad_debt_ratio = bad_debt_ratio(s.bad_debt, ideal.bad_debt)
    if ideal.refused:
        s.problems.append(f"the perfect keeper's liquidation refused: {ideal.refused[0]}")
    return s


def _mark_at(series: list[tuple[int, Decimal]], ts_us: int) -> Decimal | None:
    """The last price in ``series`` (sorted by time) published at or before ``ts_us``."""
    i = bisect.bisect_right(series, ts_us, key=lambda m: m[0])
    return series[i - 1][1] if i else None


def render(s: Summary) -> str:
    total = sum(s.liquidations.values())
    rows = [
        ("price source", s.source),
        ("accounts", f"{s.accounts:,}"),
        ("ticks played", f"{s.ticks:,} in {s.seconds:.1f} s"),
        ("  as recorded", f"{s.recorded_ticks:,} prices of the busiest market, largest step "
                          f"{s.largest_recorded_step:.2%} (ticks the keeper could not take one by one "
                          "are conflated: a frame's newest prices win)"),
        ("keeper cores", s.profiles),
        ("log entries", f"{s.log_entries:,}"),
        ("live intents", f"{s.intents:,}"),
        ("liquidations confirmed", f"{total:,}"),
        *((f"  {k}", f"{v:,}") for k, v in s.liquidations.items()),
        ("notional liquidated", f"${s.notional.quantize(Decimal('0.01')):,}"),
        ("bad debt left (venue)", f"${s.bad_debt.quantize(Decimal('0.01')):,}"),
        ("  perfect keeper", f"${s.ideal_bad_debt.quantize(Decimal('0.01')):,} "
                             f"({s.ideal_liquidations:,} liquidations at the first liquidatable tick); "
                             f"keeper / perfect {_ratio(s.bad_debt_ratio)}"),
        ("collateral lost", f"${s.collateral_lost.quantize(Decimal('0.01')):,} (perfect keeper: "
                            f"${s.ideal_collateral_lost.quantize(Decimal('0.01')):,}): the fee or bonus "
                            "the owners paid, up to what was left (a late one moves it to bad debt)"),
        ("rejected submissions", f"{s.rejected:,} {s.rejected_by_reason or ''}".strip()),
        ("  healthy, price moved", f"{s.healthy_moved:,} (the venue's mark had moved by its reply)"),
        ("  healthy, same price", f"{s.healthy_same:,} (keeper and venue disagree)"),
        ("price moved share", f"{s.price_moved_share:.2%} of live intents rejected as healthy at the "
                              "venue's price"),
        ("tick-to-intent p50 / p99", f"{s.latency_ms.get('p50')} ms / {s.latency_ms.get('p99')} ms "
                                     f"(n={s.latency_ms.get('n')}, ts_ingest trigger -> intent)"),
        ("not decided", "; ".join(f"{p}: {v}" for p, v in s.skipped.items() if v) or "-"),
        ("sound", "yes" if s.sound else "NO: " + "; ".join(s.problems[:5])),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 50)
    return "\n".join([line, *(f"{k:<{width}}  {v}" for k, v in rows), line])


def _ratio(r: float | None) -> str:
    return "n/a (the perfect keeper's is 0)" if r is None else f"{r:.2f}"


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
                task: asyncio.Task[None], *, sent: list[tuple[int, int]] | None = None) -> int:
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
        if task.done():
            break
        await asyncio.sleep(max(t0 + k * tick_s - loop.time(), 0.0))
        await venue.set_marks(tick.ts_us, tick.prices)
        if sent is not None:
            sent.append((wall_clock_us(), tick.ts_us))
        done += 1
        if loop.time() >= next_show:
            progress.show(done, total, await venue.stats())
            next_show = loop.time() + 0.25
    return done


async def run_demo(opts: DemoOptions) -> Summary:
    """Run the demo end to end; returns its summary (``summary.sound`` says whether to exit 0)."""
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
        cfg = demo_config(venue.url, url, secret)
        daemon = _DemoDaemon(cfg, consumer="demo-executor", extra_profiles=(LENDING_PROFILE,),
                             block_ms=50)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        progress = _Progress(opts.progress)
        try:
            await _wait_book(daemon, int((await venue.healthz())["seq"]), task)
            if daemon.admin_port is not None:
                print(f"keeper demo: status page at http://127.0.0.1:{daemon.admin_port}/ while it "
                      f"runs; its log in {redis_dir if opts.redis_url is None else opts.redis_url}",
                      file=sys.stderr)
            t0 = time.monotonic()
            tick_s = opts.tick_s if opts.bar_s is None else opts.bar_s / 4
            sent: list[tuple[int, int]] = []
            played = await _play(venue, path, tick_s, progress, task, sent=sent)
            seconds = time.monotonic() - t0
            progress.show(played, len(path), await venue.stats(), final=True)
            await _settle(daemon, task)
            skipped = {c.profile.name: dict(sorted(c.skipped.items())) for c in daemon.cores()}
        finally:
            stop.set()
            await task
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
        base = Summary(source=source, accounts=opts.accounts, ticks=played,
                       seconds=seconds)
        base.skipped = skipped
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


class _DemoDaemon(Daemon):
    """The daemon without the per-window liquidation caps (``[guards]`` has no "none"): the demo
    is there to show a crash liquidated in full, and the core's cap check costs time in
    proportion to the decisions in its window (a crash tick decides hundreds at once)."""

    def params(self, profile: str) -> KeeperParams:
        return msgspec.structs.replace(super().params(profile), cap_count=None, cap_notional=None)


def demo_config(venue_url: str, redis_url: str, secret: str) -> Any:
    """The daemon's config for the demo: live, the venue's feeds and executor, admin on any port."""
    env = {"KEEPER_HMAC_SECRET": secret}
    base = load_config(None, env=env, register_secrets=True)
    ws = venue_url.replace("http://", "ws://")
    prices = {f"{m}-USD": f"{m}USDT" for m in MARKETS}
    assets = {m: f"{m}USDT" for m in MARKETS}
    r = msgspec.structs.replace
    return r(base,
             keeper=r(base.keeper, profile=PERP_PROFILE, mode="live"),
             redis=r(base.redis, url=redis_url),
             snapshots=r(base.snapshots, interval_s=5.0),
             feeds=r(base.feeds, staleness_ms=10_000, max_jump=Decimal("0.5"),
                     sources=(FeedSource(kind="binance", name="venue", url=f"{ws}/prices", symbols=prices),
                              FeedSource(kind="binance", name="venue-assets", url=f"{ws}/prices",
                                         symbols=assets)),
                     accounts_url=f"{ws}/accounts", fixed_prices={"USDC": Decimal(1)}),
             execution=r(base.execution, executor="sim", url=venue_url, intent_ttl_s=30.0),
             guards=r(base.guards, max_liquidations=1_000_000, max_notional=Decimal(10) ** 12),
             admin=r(base.admin, port=0))


async def _wait_book(daemon: Daemon, want: int, task: asyncio.Task[None],
                     timeout_s: float = 90.0) -> None:
    """Until the keeper has applied the venue's whole book (``want`` events; and the first prices)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not task.done():
        cores = daemon.cores()
        if cores and all(c.state.applied >= want for c in cores):
            return
        await asyncio.sleep(0.1)
    if task.done():
        await task
    raise TimeoutError(f"the keeper did not load the venue's book ({want} events) in {timeout_s} s")


async def _settle(daemon: Daemon, task: asyncio.Task[None], timeout_s: float = 20.0) -> None:
    """Until no intent is open and the log has stopped growing for a moment."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    last = -1
    while time.monotonic() < deadline and not task.done() and quiet < 4:
        cores = daemon.cores()
        applied = sum(c.state.applied for c in cores)
        busy = sum(len(c.state.busy) for c in cores)
        quiet = quiet + 1 if (applied == last and busy == 0) else 0
        last = applied
        await asyncio.sleep(0.25)


def default_shared_data() -> Path | None:
    """``KEEPER_DATA_DIR``, else ``$KEEPER_SHARED_DIR/data``, else ``../shared/data``."""
    for cand in (os.environ.get("KEEPER_DATA_DIR"),
                 os.environ.get("KEEPER_SHARED_DIR") and f"{os.environ['KEEPER_SHARED_DIR']}/data",
                 "../shared/data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None
