"""Where a keeper's bad debt beyond the perfect keeper's comes from, bucket by bucket.

``attribute(book_events, path, entries, ideal)`` reads a recorded run at the reference venue (the
log's entries in order: prices, the keeper's live intents, the venue's account events and the
outcomes) and, for every bucket the keeper or the perfect keeper (``keeper.sim.ideal``) left bad
debt in, splits the keeper's excess ``keeper − ideal`` into four parts that add up to it, each
measured with the venue's own rules on a venue loaded with the same book:

- ``conflated``: the venue's first liquidatable tick for the bucket never reached the log (the
  keeper's intake conflated it away), and the keeper decided at the first recorded tick after it:
  ``max_at(T1) − ideal``, where ``T1`` is the tick the keeper's first decision saw and
  ``max_at(T)`` the bad debt of the perfect keeper's liquidation (the largest the venue accepts,
  ``keeper.sim.ideal.perfect_decision``) at tick ``T``'s marks;
- ``late``: the same difference when the keeper decided at a later tick for any other reason
  (the first liquidatable tick was in the log; the screen, a busy bucket, a queue);
- ``sizing``: ``plan_at(T1) − max_at(T1)``: the keeper's own sequence of accepted liquidations
  of the bucket (its markets and sizes, in order) applied at once at ``T1``'s marks, against the
  largest one: what its choice of sizes costs with no time passing (e.g. one position at a time,
  the venue covering a loss another position's profit would have paid);
- ``execution``: ``keeper − plan_at(T1)``: what the time between the decision and the venue's
  fills cost (the request in flight, the round trips between one partial liquidation and the
  next, rejections and re-decisions at later prices).

A bucket the perfect keeper liquidated and the keeper never did leaves no bad debt in the venue's
books (a liquidation books it); its deficit at the last tick (``max(0, −value)``) is counted in
``unliquidated_deficit`` beside the split.

Neutral ground like the rest of ``keeper.sim``: it reads the log's events (the wire format), never
the keeper's decision code.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from keeper.domain import events as ev
from keeper.sim.ideal import MAX_PER_TICK, Ideal, liquidatable, perfect_decision
from keeper.sim.model import Bucket
from keeper.sim.prices import Tick
from keeper.sim.venue import Venue

__all__ = ["PARTS", "Attribution", "BucketExcess", "attribute"]

PARTS = ("conflated", "late", "sizing", "execution")
"""The parts of the excess, in the order the module docstring defines them."""

ZERO = Decimal(0)


@dataclass
class BucketExcess:
    """One bucket's bad debt, the keeper's against the perfect keeper's, and the split."""

    account: str
    bucket: str
    keeper: Decimal
    ideal: Decimal
    ideal_tick: int | None
    """The venue's first liquidatable tick (the perfect keeper's), None if it never was."""
    keeper_tick: int | None
    """The tick the keeper's first live decision on the bucket saw (``T1``)."""
    intents: int = 0
    rejected: int = 0
    positions: int = 0
    parts: dict[str, Decimal] = field(default_factory=dict)

    @property
    def excess(self) -> Decimal:
        return self.keeper - self.ideal


@dataclass
class Attribution:
    """The split of a run's excess bad debt (module docstring), in USD, and the buckets behind it."""

    keeper: Decimal = ZERO
    ideal: Decimal = ZERO
    parts: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(PARTS, ZERO))
    buckets: list[BucketExcess] = field(default_factory=list)
    unliquidated: int = 0
    """Buckets the perfect keeper liquidated and the keeper never did."""
    unliquidated_deficit: Decimal = ZERO
    recorded_ticks: int = 0
    """Ticks of the path whose prices reached the log."""

    def table(self, top: int = 10) -> str:
        """The split and the ``top`` buckets by excess, as text."""
        lines = [f"bad debt: keeper ${self.keeper:,.2f}, perfect keeper ${self.ideal:,.2f}, "
                 f"excess ${self.keeper - self.ideal:,.2f}"]
        lines += [f"  {p:<10} ${v:>14,.2f}" for p, v in self.parts.items()]
        lines.append(f"  never liquidated by the keeper: {self.unliquidated} buckets, deficit at the "
                     f"last tick ${self.unliquidated_deficit:,.2f}; ticks in the log {self.recorded_ticks:,}")
        lines.append("  bucket                      excess    ideal_t keeper_t intents rejected positions "
                     + " ".join(f"{p:>10}" for p in PARTS))
        for b in sorted(self.buckets, key=lambda b: -b.excess)[:top]:
            lines.append(f"  {b.account + '/' + b.bucket:<24} {b.excess:>10,.2f} {b.ideal_tick!s:>8} "
                         f"{b.keeper_tick!s:>8} {b.intents:>7} {b.rejected:>8} {b.positions:>9} "
                         + " ".join(f"{b.parts.get(p, ZERO):>10,.2f}" for p in PARTS))
        return "\n".join(lines)


class _Ticks:
    """Which tick of the path a recorded frame of market prices is (paths may revisit prices:
    the first match at or after the last one found)."""

    def __init__(self, path: Sequence[Tick]) -> None:
        self.index: dict[tuple[tuple[str, Decimal], ...], list[int]] = {}
        state: dict[str, Decimal] = {}
        for k, t in enumerate(path):
            state.update(t.prices)
            self.index.setdefault(tuple(sorted(state.items())), []).append(k)
        self.last = 0

    def find(self, marks: dict[str, Decimal]) -> int | None:
        for k in self.index.get(tuple(sorted(marks.items())), ()):
            if k >= self.last:
                self.last = k
                return k
        return None


@dataclass
class _Seen:
    decisions: list[tuple[ev.Decision, int | None]] = field(default_factory=list)
    """Live decisions in log order, with the tick each saw."""
    accepted: list[ev.Decision] = field(default_factory=list)
    rejected: int = 0
    cover: Decimal = ZERO


def _read(entries: Iterable[tuple[str, ev.Event]], path: Sequence[Tick]
          ) -> tuple[dict[tuple[str, str], _Seen], set[int]]:
    ticks = _Ticks(path)
    marks: dict[str, Decimal] = {}
    tick: int | None = 0
    recorded: set[int] = set()
    tick_at: dict[str, int | None] = {}
    seen: dict[tuple[str, str], _Seen] = {}
    intent_bucket: dict[str, tuple[str, str]] = {}
    decisions: dict[str, ev.Decision] = {}
    withdrawn: set[str] = set()
    for entry_id, e in entries:
        if isinstance(e, ev.PriceUpdated):
            if "-" in e.symbol:
                marks[e.symbol] = e.price
                if not e.frame_more:
                    found = ticks.find(marks)
                    if found is not None:
                        tick = found
                        recorded.add(found)
            tick_at[entry_id] = tick
            continue
        tick_at[entry_id] = tick
        if isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live":
            d = e.decision
            key = (d.account, d.bucket)
            intent_bucket[d.intent_id] = key
            decisions[d.intent_id] = d
            seen.setdefault(key, _Seen()).decisions.append((d, tick_at.get(d.trigger)))
        elif isinstance(e, ev.LiquidationConfirmed) and not e.duplicate and e.intent_id in decisions:
            seen[intent_bucket[e.intent_id]].accepted.append(decisions[e.intent_id])
        elif isinstance(e, ev.LiquidationRejected) and e.intent_id in intent_bucket:
            seen[intent_bucket[e.intent_id]].rejected += 1
        elif isinstance(e, ev.Withdraw | ev.Deposit | ev.Repay) and e.causation_id in intent_bucket:
            cause = e.causation_id
            # the venue's cover: a Deposit after a close, a Repay after the collateral went
            if isinstance(e, ev.Withdraw):
                withdrawn.add(cause)
            elif isinstance(e, ev.Deposit) or cause in withdrawn:
                seen[intent_bucket[cause]].cover += e.amount * (marks.get(f"{e.asset}-USD", Decimal(1)))
    return seen, recorded


def _copy(b: Bucket) -> Bucket:
    return Bucket(b.name, dict(b.balances), dict(b.positions))


_ids = itertools.count(1)
"""Idempotency keys of the counterfactual liquidations (the venue answers a reused key as a duplicate)."""


def _bad_debt_of(venue: Venue, account: str, bucket: str, tick: Tick,
                 decisions: Sequence[ev.Decision] | None) -> Decimal:
    """The bad debt the venue books for the bucket (as booked) at ``tick``'s marks: the perfect
    keeper's liquidations (``decisions`` None) or ``decisions`` in order; the bucket is restored."""
    a = venue.accounts[account]
    saved = _copy(a.buckets[bucket])
    before = venue.stats.bad_debt
    venue.set_marks(tick.ts_us, tick.prices)
    try:
        if decisions is None:
            for _ in range(MAX_PER_TICK):
                if not liquidatable(venue, account, bucket):
                    break
                d = perfect_decision(venue, account, bucket, f"attr-{next(_ids)}")
                if d is None or venue.liquidate(d).status != "accepted":
                    break
        else:
            for d in decisions:
                venue.liquidate(msgspec.structs.replace(d, intent_id=f"attr-{next(_ids)}"))
        return venue.stats.bad_debt - before
    finally:
        a.buckets[bucket] = saved


def attribute(book_events: Iterable[ev.Event], path: Sequence[Tick],
              entries: Iterable[tuple[str, ev.Event]], ideal: Ideal) -> Attribution:
    """Split the keeper's bad debt beyond ``ideal``'s (``ideal_run`` of the same book and path)
    into the module docstring's parts; ``entries``: the run's log, ``(entry id, event)`` in order."""
    seen, recorded = _read(entries, path)
    states: list[Tick] = []
    now: dict[str, Decimal] = {}
    for t in path:
        now.update(t.prices)
        states.append(Tick(t.ts_us, dict(now)))
    venue = Venue(lambda: 0)
    if path:
        venue.set_marks(path[0].ts_us, path[0].prices)
    venue.load(book_events)
    out = Attribution(recorded_ticks=len(recorded))
    keys = {k for k, s in seen.items() if s.cover} | set(ideal.bad_debt_by_bucket)
    for account, bucket in sorted(keys):
        s = seen.get((account, bucket), _Seen())
        first = ideal.first.get((account, bucket))
        t0 = None if first is None else first.tick
        t1 = next((t for _, t in s.decisions if t is not None), None)
        row = BucketExcess(account, bucket, s.cover, ideal.bad_debt_by_bucket.get((account, bucket), ZERO),
                           t0, t1, len(s.decisions), s.rejected,
                           len(venue.accounts[account].buckets[bucket].positions))
        out.keeper += row.keeper
        out.ideal += row.ideal
        if t1 is None:  # never decided: nothing booked (see unliquidated_deficit)
            row.parts = {"late": -row.ideal}
        else:
            at_max = _bad_debt_of(venue, account, bucket, states[t1], None)
            at_plan = _bad_debt_of(venue, account, bucket, states[t1], s.accepted)
            conflated = t0 is not None and t0 not in recorded and not any(t0 < k < t1 for k in recorded)
            row.parts = {"conflated" if conflated else "late": at_max - row.ideal,
                         "sizing": at_plan - at_max, "execution": row.keeper - at_plan}
        for p, v in row.parts.items():
            out.parts[p] += v
        out.buckets.append(row)
    for (account, bucket) in ideal.first:
        if (account, bucket) in seen:
            continue
        out.unliquidated += 1
        venue.set_marks(states[-1].ts_us, states[-1].prices)
        value = venue.owner_value(account, bucket)
        out.unliquidated_deficit += max(-value, ZERO)
    return out
