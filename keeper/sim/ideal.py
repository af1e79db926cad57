"""The perfect keeper on the same run: what the reference venue would have booked had every bucket
been liquidated at the first price at which the venue itself finds it liquidatable, at that
price, with zero latency.

``ideal_run(book_events, path)`` loads the book into a fresh ``Venue`` (the venue's rules, never
the keeper's margin engine) and walks each bucket along the path:

- its **first liquidatable tick** is the first tick ``t`` at whose marks (``path[0..t]`` applied
  in order, as the venue applies its ticks) the venue's own check holds: perps ``E < MM``
  (``Venue.perp_health``), lending ``HF < 1`` (``Venue.health_factor``); a bucket the venue
  cannot price is never liquidatable;
- there the perfect keeper sends the largest liquidation the venue accepts, and the venue applies
  it with its own effects (``Venue.liquidate``):

  - a bucket with positions: every position closed in one request (the ``bad_debt`` action
    without a market: all closes, then one cover of a negative collateral value; closing them one
    request at a time could cover a loss that another position's profit would have paid);
  - a lending bucket: ``repay_seize`` of its largest debt against its largest collateral (by
    value, ties by symbol), the whole close factor (50% of the debt while ``HF > 0.95`` and both
    sides are worth $2,000 or more, else 100%, rounded down to the debt asset's decimals), seizing
    ``repay · P_debt · (1 + bonus) / P_coll`` rounded down to the collateral's decimals, or all
    of the collateral (and the repay that buys it, rounded up) when that is less; a bucket still
    liquidatable is liquidated again at the same tick, and a bucket left with debt is walked on;

- ``Ideal`` holds the venue's own figures after the walk: bad debt (booked by its insurance fund),
  collateral lost (``Stats.collateral_lost``: what the liquidations took from the owners, up to
  what their buckets were still worth), fees, and each bucket's first liquidatable tick.

Fast and exact: each bucket's liquidation margin is linear in the marks (perps: ``E − MM =
Σ balance·P_a + Σ (size − |size|·mmf)·P_m − Σ size·entry``; lending: ``Σ balance·w·P`` with
``w`` the liquidation threshold of collateral and 1 for debt), so one float matrix product over
the whole path screens every tick at once; a tick is a candidate when the float margin is below a
tolerance (1e-9 of the terms' size, far above float error), so the screen never misses one; only
candidates are checked with the venue's ``Decimal`` rules. Buckets the screen cannot express
(tiered maintenance) are checked exactly at every tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
import numpy.typing as npt

from keeper.domain import events as ev
from keeper.sim.model import Bucket
from keeper.sim.prices import Tick
from keeper.sim.venue import FULL_CLOSE_BELOW_USD, FULL_CLOSE_HF, HALF, ONE, SETTLE_ASSET, Rejection, Venue

__all__ = [
    "MAX_PER_TICK",
    "TOLERANCE",
    "FirstLiquidatable",
    "Ideal",
    "bad_debt_ratio",
    "ideal_run",
    "liquidatable",
    "perfect_decision",
    "share",
]

F64 = npt.NDArray[np.float64]
TOLERANCE = 1e-9
"""Relative to the sum of the margin's absolute terms: a float margin below it is checked exactly."""
MAX_PER_TICK = 8
"""Liquidations of one bucket at one tick (a 50% close factor can leave it liquidatable)."""


@dataclass(frozen=True)
class FirstLiquidatable:
    """Where the venue first finds a bucket liquidatable: the tick's index, time and marks."""

    account: str
    bucket: str
    tick: int
    ts_us: int
    prices: dict[str, Decimal]


@dataclass
class Ideal:
    """The perfect keeper's run at the reference venue (module docstring), in USD."""

    bad_debt: Decimal = Decimal(0)
    collateral_lost: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    liquidations: int = 0
    """Liquidations the venue applied."""
    accounts: int = 0
    """Accounts with at least one bucket liquidated."""
    ticks: int = 0
    first: dict[tuple[str, str], FirstLiquidatable] = field(default_factory=dict)
    """(account, bucket) -> where the venue first found it liquidatable."""
    refused: list[str] = field(default_factory=list)
    """Perfect liquidations the venue refused, with its reason (a mirror out of step: a bug)."""
    bad_debt_by_bucket: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    """(account, bucket) -> the bad debt its liquidations left (only buckets that left some)."""


def bad_debt_ratio(keeper: Decimal, ideal: Decimal) -> float | None:
    """``keeper / ideal`` bad debt: 1.0 when both are zero, None when only the ideal's is."""
    if ideal == 0:
        return 1.0 if keeper == 0 else None
    return float(keeper / ideal)


def share(part: int, whole: int) -> float:
    """``part / whole`` (0.0 of nothing)."""
    return part / whole if whole else 0.0


class _Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class _Marks:
    """The venue's marks after each tick: exact (for ``set_marks``) and as a float matrix."""

    def __init__(self, path: Sequence[Tick]) -> None:
        self.path = path
        cols: dict[str, int] = {SETTLE_ASSET: 0}
        for t in path:
            for sym in t.prices:
                base, sep, _ = sym.partition("-")
                for s in (sym, base) if sep else (sym,):
                    cols.setdefault(s, len(cols))
        self.cols = cols
        rows = np.full((len(path), len(cols)), np.nan)
        now = np.full(len(cols), np.nan)
        now[0] = 1.0
        self.states: list[dict[str, Decimal]] = []
        state: dict[str, Decimal] = {}
        for k, t in enumerate(path):
            for sym, p in t.prices.items():  # as Venue.set_marks: the base follows its market
                now[cols[sym]] = float(p)
                base, sep, _ = sym.partition("-")
                if sep:
                    now[cols[base]] = float(p)
                state[sym] = p
            rows[k] = now
            self.states.append(dict(state))
        self.known = ~np.isnan(rows)
        self.prices: F64 = np.where(self.known, rows, 0.0)
        self.top: F64 = self.prices.max(axis=0) if len(path) else np.zeros(len(cols))


@dataclass
class _Form:
    """A bucket's liquidation margin as ``c0 + coef · P``: liquidatable iff it is < 0."""

    coef: F64
    c0: float
    tol: float
    needs: npt.NDArray[np.bool_]
    """Columns the venue must have a price for (else it refuses: never liquidatable there)."""
    every_tick: bool = False
    """Not linear (tiered maintenance): no screen, the venue's check at every tick."""


def _form(venue: Venue, b: Bucket, marks: _Marks) -> _Form | None:
    """The bucket's linear margin, or None when the venue can never liquidate it on this path."""
    n = len(marks.cols)
    coef, needs = np.zeros(n), np.zeros(n, dtype=bool)
    c0, scale = 0.0, 0.0

    def col(symbol: str) -> int | None:
        i = marks.cols.get(symbol)
        if i is not None:
            needs[i] = True
        return i

    lending = not b.positions
    if lending and not any(amt < 0 for amt in b.balances.values()):
        return None  # no debt: no health factor
    for a, amt in b.balances.items():
        i = col(a)
        if i is None:
            return None  # never priced: the venue refuses to check the bucket
        w = 1.0
        if lending and amt > 0:
            lt = venue.assets[a].liquidation_threshold if a in venue.assets else None
            w = float(lt) if lt is not None else 0.0
        coef[i] += float(amt) * w
        scale += abs(float(amt)) * marks.top[i]
    for m, pos in b.positions.items():
        params = venue.markets.get(m)
        i = col(m)
        if params is None or i is None:
            return None
        if params.mmf is not None:
            rate = float(params.mmf)
        elif params.max_leverage is not None:
            rate = 1 / (2 * float(params.max_leverage))
        else:
            return _Form(coef, 0.0, 0.0, needs, every_tick=True)
        size = float(pos.size)
        if pos.entry_price is not None:  # without one the venue takes the mark: no PnL
            coef[i] += size
            c0 -= size * float(pos.entry_price)
            scale += abs(size * float(pos.entry_price))
        coef[i] -= abs(size) * rate
        scale += abs(size) * marks.top[i] * (1 + rate)
    return _Form(coef, c0, TOLERANCE * scale + 1e-12, needs)


def _next_candidate(form: _Form, marks: _Marks, start: int) -> int | None:
    """The first tick at or after ``start`` that the float screen cannot rule out."""
    if start >= len(marks.path):
        return None
    if form.every_tick:
        return start
    p = marks.prices[start:]
    margin = p @ form.coef + form.c0
    priced = marks.known[start:][:, form.needs].all(axis=1)
    hit = (margin < form.tol) & priced
    k = int(hit.argmax())
    return start + k if hit[k] else None


def liquidatable(venue: Venue, account: str, bucket: str) -> bool:
    """The venue's own check at its current marks (as ``GET /accounts`` shows it)."""
    b = venue.accounts[account].buckets[bucket]
    try:
        if b.positions:
            equity, mm = venue.perp_health(account, bucket)
            return equity < mm
        hf = venue.health_factor(account, bucket)
    except Rejection:
        return False
    return hf is not None and hf < 1


def _quantum(venue: Venue, asset: str, default: int | None) -> Decimal | None:
    p = venue.assets.get(asset)
    decimals = p.decimals if p is not None and p.decimals is not None else default
    return None if decimals is None else Decimal(1).scaleb(-decimals)


def _down(x: Decimal, q: Decimal | None) -> Decimal:
    return x if q is None else x.quantize(q, rounding=ROUND_FLOOR)


def perfect_decision(venue: Venue, account: str, bucket: str, intent_id: str) -> ev.Decision | None:
    """The largest liquidation of a liquidatable bucket that the venue accepts at its marks (module
    docstring); None when there is nothing left to take."""
    b = venue.accounts[account].buckets[bucket]

    def decision(action: str, **kw: object) -> ev.Decision:
        return ev.Decision(intent_id=intent_id, account=account, bucket=bucket, trigger="ideal",
                           trigger_event_id="ideal", profile="ideal", rule="first liquidatable price",
                           action=action, **kw)  # type: ignore[arg-type]

    if b.positions:
        return decision("bad_debt")
    debts = sorted(((-amt * venue.price(a), a) for a, amt in b.balances.items() if amt < 0), reverse=True)
    colls = sorted(((amt * venue.price(a), a) for a, amt in b.balances.items() if amt > 0), reverse=True)
    if not debts:
        return None
    if not colls:
        return decision("bad_debt")  # debt and nothing to seize: the venue writes it off
    (debt_value, ra), (coll_value, sa) = debts[0], colls[0]
    hf = venue.health_factor(account, bucket)
    assert hf is not None
    small = min(debt_value, coll_value) < FULL_CLOSE_BELOW_USD
    factor = HALF if hf > FULL_CLOSE_HF and not small else ONE
    debt, held = -b.balances[ra], b.balances[sa]
    p_ra, p_sa = venue.price(ra), venue.price(sa)
    params = venue.assets.get(sa)
    bonus = params.liquidation_bonus if params and params.liquidation_bonus is not None else Decimal(0)
    q_ra, q_sa = _quantum(venue, ra, None), _quantum(venue, sa, 18)
    repay_max = _down(debt * factor, q_ra)
    repay = repay_max
    seize = _down(repay * p_ra * (1 + bonus) / p_sa, q_sa)
    if seize > held:  # all of the collateral, and the repay that buys it
        seize = held
        need = held * p_sa / (p_ra * (1 + bonus))
        repay = min(repay_max, need if q_ra is None else need.quantize(q_ra, rounding=ROUND_CEILING))
    if repay <= 0 or seize <= 0:
        return None
    return decision("repay_seize", repay_asset=ra, repay_amount=repay, seize_asset=sa, seize_amount=seize)


def ideal_run(book_events: Iterable[ev.Event], path: Sequence[Tick]) -> Ideal:
    """The perfect keeper's run of ``book_events`` (a venue's initial events, as
    ``keeper.scenarios.book.generate_book`` makes them) along ``path`` (the book is loaded at
    ``path[0]``'s marks, and that tick is checked too); see the module docstring."""
    clock = _Clock()
    venue = Venue(clock)
    if path:
        clock.now = path[0].ts_us
        venue.set_marks(path[0].ts_us, path[0].prices)
    venue.load(book_events)
    walk = _Walk(venue, clock, _Marks(path))
    for account in sorted(venue.accounts):
        for bucket in sorted(venue.accounts[account].buckets):
            walk.bucket(account, bucket)
    st = venue.stats
    out = walk.out
    out.bad_debt, out.collateral_lost, out.fees = st.bad_debt, st.collateral_lost, st.fees
    out.liquidations = st.accepted
    out.accounts = len({a for a, _ in out.first})
    return out


class _Walk:
    """One bucket at a time along the path: candidates from the screen, the venue's check there."""

    def __init__(self, venue: Venue, clock: _Clock, marks: _Marks) -> None:
        self.venue, self.clock, self.marks = venue, clock, marks
        self.out = Ideal(ticks=len(marks.path))
        self.n = 0

    def bucket(self, account: str, bucket: str) -> None:
        venue = self.venue
        b = venue.accounts[account].buckets[bucket]
        before = venue.stats.bad_debt
        self._walk(account, bucket, b)
        if venue.stats.bad_debt != before:
            self.out.bad_debt_by_bucket[(account, bucket)] = venue.stats.bad_debt - before

    def _walk(self, account: str, bucket: str, b: Bucket) -> None:
        venue, marks = self.venue, self.marks
        form = _form(venue, b, marks)
        t = None if form is None else _next_candidate(form, marks, 0)
        while t is not None and form is not None:
            tick = marks.path[t]
            self.clock.now = tick.ts_us
            venue.set_marks(tick.ts_us, marks.states[t])
            applied = 0
            while applied < MAX_PER_TICK and liquidatable(venue, account, bucket):
                self.n += 1
                d = perfect_decision(venue, account, bucket, f"ideal-{self.n}")
                if d is None:
                    break
                r = venue.liquidate(d)
                if r.status != "accepted":
                    self.out.refused.append(f"{account}/{bucket} at tick {t}: {r.reason}")
                    return
                applied += 1
                self.out.first.setdefault((account, bucket), FirstLiquidatable(
                    account, bucket, t, tick.ts_us, dict(marks.states[t])))
            if applied:
                form = _form(venue, b, marks)  # the bucket changed: screen what is left of it
            t = None if form is None else _next_candidate(form, marks, t + 1)
