"""The summary of a ``keeper demo`` run: its figures, the soundness checks, the perfect
keeper's figures beside them, and the table ``keeper demo`` prints.

- ``summarise``: the figures and the soundness checks from the log (every entry, in order) and
  the venue's ``GET /stats``; the run is sound when every venue-accepted liquidation is an
  intent in the log, none was accepted twice and no account healthy by construction was
  liquidated; a submission refused as healthy is split by whether a price its decision used
  had moved by the venue's reply;
- ``judge``: the perfect keeper's bad debt and collateral lost (``keeper.sim.ideal``) set
  beside the keeper's, and the ratio of the two bad debts;
- ``render``: the table.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from keeper.domain import events as ev
from keeper.sim.ideal import Ideal, bad_debt_ratio, share

__all__ = ["Summary", "judge", "percentiles", "render", "summarise"]


@dataclass
class Summary:
    """One demo run's figures (from the log and the venue's ``GET /stats``) and the problems
    that make it unsound."""

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
    profiles: str = ""
    """The keeper cores that ran, for people."""
    tick_late_ms: dict[str, float] = field(default_factory=dict)
    """How late the driver sent the ticks against their schedule (p50, p99, max): with the daemon
    on the driver's loop, a daemon that holds the loop holds the prices back too (the market
    waits for the keeper), which flatters its figures; in its own process the ticks keep time."""
    daemon: str = ""
    """Where the daemon ran: its own process or the driver's."""

    @property
    def sound(self) -> bool:
        return not self.problems


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def percentiles(values: list[float]) -> dict[str, float]:
    """``p50``, ``p99`` and ``max`` of ``values`` (rounded to µs), NaN of nothing."""
    return {"p50": round(_pct(values, 0.5), 3), "p99": round(_pct(values, 0.99), 3),
            "max": round(max(values, default=float("nan")), 3)}


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
    """The summary as the table ``keeper demo`` prints."""
    total = sum(s.liquidations.values())
    rows = [
        ("price source", s.source),
        ("accounts", f"{s.accounts:,}"),
        ("ticks played", f"{s.ticks:,} in {s.seconds:.1f} s"),
        ("  as recorded", f"{s.recorded_ticks:,} prices of the busiest market, largest step "
                          f"{s.largest_recorded_step:.2%} (ticks the keeper could not take one by one "
                          "are conflated: a frame's newest prices win)"),
        ("keeper cores", f"{s.profiles}; the daemon in {s.daemon or '?'}"),
        ("ticks sent late", f"p50 {s.tick_late_ms.get('p50')} ms / p99 {s.tick_late_ms.get('p99')} ms / "
                            f"max {s.tick_late_ms.get('max')} ms behind the schedule"),
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
