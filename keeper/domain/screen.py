"""A conservative health screen: which buckets MAY be liquidatable after a price moves.

The screen is a filter in front of the exact (Decimal) margin engine, never a substitute for it.
Its one promise: **it never misses a bucket the exact engine would call liquidatable** (with the
linear models below and the documented tolerances). False positives are fine: the keeper confirms
every candidate exactly before it decides anything.

Linearisation. For flat-rate models a bucket's slack ``equity - requirement`` is linear in each
price: ``slack = const + sum_s coef_s * P_s`` where

- a perp position (signed ``size``) in market m adds ``coef_m += size - |size| * mmf`` (the
  maintenance margin measured at the mark price) and ``const += quote_value`` (``-size * entry``);
  with ``mm_at_entry`` the margin is ``|size| * entry * rate`` and goes into ``const``;
- a collateral balance ``b > 0`` of asset a adds ``coef_a += b * w`` with ``w`` the asset weight
  (capped at 1) or, for lending, the liquidation threshold (0 when missing);
- a debt ``b < 0`` adds ``coef_a += b * max(1, liability weight)``.

Tiered schedules are not linear; the screen bounds them. With ``N0`` the position's notional at
the upsert price, the band is ``(0, C]`` where ``C`` is the first tier floor above ``2 * N0``
(infinite in the top tier), and the rate used is ``sup MM(N) / N`` over the band, so
``|size| * P * rate >= MM`` for every price in the band. When a tick takes the price above the
band (``P > C / |size|``) the bucket is flagged on every tick of its symbols until it is upserted
again. Anything else the screen cannot linearise (unknown market, no maintenance parameter, a
missing price, a profile with non-linear health: pass ``always_check=True``) is a candidate on
every tick of any symbol it is exposed to.

Floats and tolerance. Each stored coefficient is widened by a relative band ``rel_tol``: the
screen's headroom is ``h = slack - rel_tol * (|const| + sum |coef_s| * P_s) - abs_tol`` (prices
are positive, so the band is folded into the coefficients: ``lo = coef - rel_tol*|coef|``) and
it flags ``h < 0``. ``h`` is always computed afresh from a row's coefficients at the current
prices, so nothing drifts. ``abs_tol`` must cover the profile's rounding in the bucket's quote
units.

Price bands (why a tick is cheap). When a row is settled its headroom is split between its
symbols, and each symbol gets a band of prices inside which its term cannot use up more than
its share; per symbol two heaps (floors, ceilings) hold its rows' bands. A tick pops only the
rows whose band it left, settles them again and flags those with ``h < 0``; every other row is
provably unflagged. A flagged row has an empty band: it is looked at on every tick of its
symbols until it is healthy or upserted. ``resync`` settles every row again (and drops stale
heap entries); it runs by itself every ``resync_every`` ticks (a count, not a clock).

Pure: no I/O, no clock, no randomness. Results are sorted, so they are the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from heapq import heapify, heappop, heappush
from typing import Any

import numpy as np
import numpy.typing as npt

from keeper.domain.model import AssetParams, Bucket, MarketParams

I64 = npt.NDArray[np.int64]

_ZERO = Decimal(0)
_ONE = Decimal(1)
_TIER_HEADROOM = Decimal(2)
_QUIET = 1.0 / 1024
"""Budget weight of a symbol not ticked since first priced (a stablecoin): rarely worth a share."""


@dataclass(frozen=True, slots=True)
class Linear:
    """A bucket's slack as ``const + sum coefs[s] * P_s``, valid while ``P_s <= ceilings[s]``."""

    const: Decimal
    coefs: dict[str, Decimal]
    ceilings: dict[str, Decimal] = field(default_factory=dict)


def _brackets(tiers: Sequence[Any]) -> list[tuple[Decimal, Decimal, Decimal]]:
    """(floor, rate, deduction) sorted by floor; missing deductions keep the schedule continuous."""
    out: list[tuple[Decimal, Decimal, Decimal]] = []
    prev_rate = prev_ded = _ZERO
    for i, t in enumerate(sorted(tiers, key=lambda t: t.notional_floor)):
        if t.deduction is not None:
            ded = t.deduction
        elif i == 0:
            ded = t.notional_floor * t.rate
        else:
            ded = prev_ded + t.notional_floor * (t.rate - prev_rate)
        out.append((t.notional_floor, t.rate, ded))
        prev_rate, prev_ded = t.rate, ded
    return out


def _tier_mm(br: list[tuple[Decimal, Decimal, Decimal]], notional: Decimal) -> Decimal:
    """The exact maintenance margin at ``notional`` (below the first floor: the first tier)."""
    floor, rate, ded = br[0]
    for f, r, d in br:
        if notional >= f:
            floor, rate, ded = f, r, d
    del floor
    return notional * rate - ded


def tier_bound(market: MarketParams, notional: Decimal) -> tuple[Decimal, Decimal | None] | None:
    """``(rate, ceiling)`` with ``notional' * rate >= MM(notional')`` for all ``0 < notional' <= ceiling``.

    ``ceiling`` is the first tier floor above twice ``notional`` (None: no ceiling). Returns None
    when no such rate exists (a first tier with a negative deduction). On each linear piece
    ``MM(N)/N = rate - deduction/N`` is monotone, so its supremum is at a piece's end.
    """
    br = _brackets(market.mmf_tiers)
    target = notional * _TIER_HEADROOM
    ceiling = next((f for f, _, _ in br if f > target), None)
    best = _ZERO
    for i, (floor, rate, ded) in enumerate(br):
        lo = _ZERO if i == 0 else floor
        if ceiling is not None and lo >= ceiling:
            break
        hi = br[i + 1][0] if i + 1 < len(br) else None
        if ceiling is not None and (hi is None or hi > ceiling):
            hi = ceiling
        best = max(best, rate if hi is None else rate - ded / hi)
        if lo > 0:
            best = max(best, rate - ded / lo)
        elif ded < 0:
            return None
    return best, ceiling


def linearise(
    bucket: Bucket,
    markets: Mapping[str, MarketParams],
    assets: Mapping[str, AssetParams],
    prices: Mapping[str, Decimal],
    lending: bool,
    *,
    mm_at_entry: bool = False,
) -> Linear | None:
    """The bucket's slack as a linear function of prices (exact Decimal), or None if not linear.

    ``prices`` is read only to choose a tiered position's band. None means the screen must
    treat the bucket as always a candidate (unknown market, missing parameter or price).
    """
    const = _ZERO
    coefs: dict[str, Decimal] = {}
    ceilings: dict[str, Decimal] = {}
    for sym, pos in sorted(bucket.positions.items()):
        if not pos.size:
            continue
        mk = markets.get(sym)
        if mk is None:
            return None
        size, absz = pos.size, abs(pos.size)
        const += pos.quote_value()
        if mm_at_entry:
            entry = pos.entry_price if pos.entry_price is not None else -pos.quote_value() / size
            if mk.mmf_tiers:
                const -= max(_ZERO, _tier_mm(_brackets(mk.mmf_tiers), absz * entry))
            elif mk.mmf is not None:
                const -= absz * entry * mk.mmf
            elif mk.max_leverage is not None:
                const -= absz * entry / (2 * mk.max_leverage)
            else:
                return None
            coefs[sym] = coefs.get(sym, _ZERO) + size
            continue
        if mk.mmf_tiers:
            price = prices.get(sym)
            if price is None:
                return None
            bound = tier_bound(mk, absz * price)
            if bound is None:
                return None
            rate, ceiling = bound
            if ceiling is not None:
                ceilings[sym] = ceiling / absz
        elif mk.mmf is not None:
            rate = mk.mmf
        elif mk.max_leverage is not None:
            rate = 1 / (2 * mk.max_leverage)
        else:
            return None
        coefs[sym] = coefs.get(sym, _ZERO) + size - absz * rate
    for sym, bal in sorted(bucket.balances.items()):
        ap = assets.get(sym)
        if bal > 0:
            if lending:
                lt = None if ap is None else ap.liquidation_threshold
                w = _ZERO if lt is None else lt
            else:
                aw = None if ap is None else ap.asset_weight
                w = _ONE if aw is None else min(_ONE, aw)
        else:
            lw = ap.liability_weight if ap is not None and ap.liability_weight is not None else _ONE
            w = max(_ONE, lw)
        coefs[sym] = coefs.get(sym, _ZERO) + bal * w
    return Linear(const, coefs, ceilings)


_NONLINEAR_MODELS = frozenset({"drift", "gmx", "mango"})


def screen_mode(kind: str, model: str, mm_at: str) -> tuple[bool, bool, bool]:
    """``(lending, mm_at_entry, always_check)`` for ``upsert`` from a margin profile's fields.

    Drift (strict TWAP guards, liability weights on spot borrows), GMX (minimum collateral in
    USD) and Mango (weights applied after netting perps into the settle token) are not linear
    in prices the way the screen models them: their buckets are always candidates.
    """
    return kind == "lending", mm_at == "entry", model in _NONLINEAR_MODELS


class Screen:
    """Per bucket row its linear form; per symbol the rows exposed to it and two heaps of bounds.

    Keys are bucket keys (``account/bucket``). Rows are recycled through a free list. Every
    method that returns buckets returns them sorted (rows ascending, keys by ``sorted``).
    """

    def __init__(self, *, rel_tol: float = 1e-9, abs_tol: float = 1e-6, resync_every: int = 200_000) -> None:
        if not (rel_tol > 0 and abs_tol >= 0 and resync_every >= 0):
            raise ValueError("rel_tol must be > 0, abs_tol >= 0 and resync_every >= 0")
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self.resync_every = resync_every
        self._sym: dict[str, int] = {}
        self._names: list[str] = []
        self._price: list[float] = []
        self._moves: list[int] = []
        """Ticks seen per symbol: a symbol that has not moved gets a small share of a budget."""
        self._members: list[set[int]] = []
        """Per symbol: the linear rows exposed to it."""
        self._always: list[set[int]] = []
        self._floors: list[list[tuple[float, int, int]]] = []
        """Per symbol a heap of ``(-floor, row, version)``: the row must be settled below it."""
        self._ceils: list[list[tuple[float, int, int]]] = []
        """Per symbol a heap of ``(ceiling, row, version)``: the row must be settled above it."""
        self._keys: list[str | None] = []
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._c: list[float] = []
        self._ent: list[tuple[tuple[int, float, float], ...]] = []
        """Per row its linear entries ``(symbol id, widened coefficient, price ceiling)``."""
        self._sids: list[tuple[int, ...]] = []
        self._alw: list[bool] = []
        self._ver: list[int] = []
        self.ticks_since_resync = 0
        self.resyncs = 0

    # ------------------------------------------------------------------ rows and symbols

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, key: object) -> bool:
        return key in self._row

    def _sid(self, symbol: str) -> int:
        sid = self._sym.get(symbol)
        if sid is None:
            sid = self._sym[symbol] = len(self._names)
            self._names.append(symbol)
            self._price.append(math.nan)
            self._moves.append(0)
            self._members.append(set())
            self._always.append(set())
            self._floors.append([])
            self._ceils.append([])
        return sid

    def _alloc(self, key: str) -> int:
        if self._free:
            row = self._free.pop()
            self._keys[row] = key
        else:
            row = len(self._keys)
            self._keys.append(key)
            self._c.append(math.inf)
            self._ent.append(())
            self._sids.append(())
            self._alw.append(False)
            self._ver.append(0)
        self._row[key] = row
        return row

    def _detach(self, row: int) -> None:
        for sid in self._sids[row]:
            self._members[sid].discard(row)
            self._always[sid].discard(row)
        self._sids[row] = ()
        self._ent[row] = ()
        self._c[row] = math.inf
        self._alw[row] = False
        self._ver[row] += 1  # the row's heap entries are stale from now on

    def _fresh(self, row: int) -> tuple[float, bool]:
        """The row's headroom at the current prices, and whether a price is above its ceiling."""
        price = self._price
        h = self._c[row]
        broken = False
        for sid, lo, pmax in self._ent[row]:
            p = price[sid]
            h += lo * p
            if p > pmax:
                broken = True
        return h, broken

    def _settle(self, row: int) -> bool:
        """Recompute the row at the current prices and give each of its symbols a price band.

        The headroom ``h`` is split between the row's symbols (by weight); while every symbol
        stays inside its band the row's headroom cannot go below zero, so it is not looked at.
        Returns whether the row is flagged now (it is then re-examined on every tick).
        """
        ver = self._ver[row] + 1
        self._ver[row] = ver
        h, broken = self._fresh(row)
        ent = self._ent[row]
        if not h >= 0 or broken:  # NaN too
            for sid, _, _ in ent:
                heappush(self._floors[sid], (-math.inf, row, ver))
            return True
        moves = self._moves
        wsum = 0.0
        for sid, lo, _ in ent:
            if lo:
                wsum += 1.0 if moves[sid] > 1 else _QUIET
        share = h / wsum if wsum else 0.0
        price = self._price
        for sid, lo, pmax in ent:
            w = 1.0 if moves[sid] > 1 else _QUIET
            p = price[sid]
            if lo > 0:
                heappush(self._floors[sid], (-(p - w * share / lo), row, ver))
                ceiling = pmax
            elif lo < 0:
                ceiling = min(pmax, p - w * share / lo)
            else:
                ceiling = pmax
            if ceiling != math.inf:
                heappush(self._ceils[sid], (ceiling, row, ver))
        return False

    def _compact(self, heap: list[tuple[float, int, int]]) -> None:
        ver = self._ver
        heap[:] = [e for e in heap if ver[e[1]] == e[2]]
        heapify(heap)

    # ------------------------------------------------------------------ updates from the state

    def upsert(  # noqa: PLR0917 - the state's own argument order, shared with the margin engine
        self,
        key: str,
        bucket: Bucket,
        markets: Mapping[str, MarketParams],
        assets: Mapping[str, AssetParams],
        prices: Mapping[str, Decimal],
        lending: bool,
        *,
        mm_at_entry: bool = False,
        always_check: bool = False,
    ) -> bool:
        """Recompute the bucket's row from the exact state; returns whether it is flagged now.

        Not flagged means the exact engine calls the bucket healthy at the screen's prices.
        Call after any event that changes the bucket, or the parameters of a market or asset
        it holds. ``prices`` seeds the screen's price of a symbol it has not seen yet and
        chooses tier bands; the screen's own current prices are used for the slack, so they and
        the state's must agree (``on_price``/``resync`` keep them in step).
        """
        row = self._row.get(key)
        if row is None:
            row = self._alloc(key)
        else:
            self._detach(row)
        syms = bucket.symbols()
        sids = [self._sid(s) for s in syms]
        self._sids[row] = tuple(sids)
        if not sids:
            return False
        price = self._price
        for s, sid in zip(syms, sids, strict=True):
            if math.isnan(price[sid]) and s in prices:
                price[sid] = _checked_price(prices[s])
        lin = None
        if not always_check and all(not math.isnan(price[sid]) for sid in sids):
            lin = linearise(bucket, markets, assets, prices, lending, mm_at_entry=mm_at_entry)
        if lin is None:
            self._alw[row] = True
            for sid in sids:
                self._always[sid].add(row)
            return True
        rel = self.rel_tol
        c = float(lin.const)
        self._c[row] = c - rel * abs(c) - self.abs_tol
        ent = []
        coefs, ceilings, members = lin.coefs, lin.ceilings, self._members
        for s, sid in zip(syms, sids, strict=True):
            coef = float(coefs.get(s, _ZERO))
            ceiling = ceilings.get(s)
            pmax = math.inf if ceiling is None else math.nextafter(float(ceiling), 0.0)
            ent.append((sid, coef - rel * abs(coef), pmax))
            members[sid].add(row)
        self._ent[row] = tuple(ent)
        return self._settle(row)

    def remove(self, key: str) -> None:
        """Forget the bucket (closed account, emptied bucket); unknown keys are ignored."""
        row = self._row.pop(key, None)
        if row is None:
            return
        self._detach(row)
        self._keys[row] = None
        self._free.append(row)

    # ------------------------------------------------------------------ ticks

    def _tick(self, symbol: str, price: Decimal | float) -> list[int]:
        new = _checked_price(price)
        if self.resync_every and self.ticks_since_resync >= self.resync_every:
            self.resync()
        self.ticks_since_resync += 1
        sid = self._sid(symbol)
        self._price[sid] = new
        self._moves[sid] += 1
        ver = self._ver
        hit: list[int] = []
        floors = self._floors[sid]
        while floors and -floors[0][0] > new:
            _, row, v = heappop(floors)
            if ver[row] == v:
                hit.append(row)
        ceils = self._ceils[sid]
        while ceils and ceils[0][0] < new:
            _, row, v = heappop(ceils)
            if ver[row] == v:
                hit.append(row)
        flagged = [row for row in dict.fromkeys(hit) if self._settle(row)]
        if self._always[sid]:
            flagged.extend(self._always[sid])
        for heap in (floors, ceils):
            if len(heap) > 2 * len(self._members[sid]) + 64:
                self._compact(heap)
        flagged.sort()
        return flagged

    def on_price(self, symbol: str, price: Decimal | float) -> I64:
        """Move ``symbol`` to ``price``; return the flagged rows exposed to it, ascending.

        Flagged: headroom below zero, a tier band left, or a bucket the screen cannot
        linearise. Raises ValueError for a price that is not finite and positive.
        """
        return np.array(self._tick(symbol, price), np.int64)

    def candidates(self, symbol: str, price: Decimal | float) -> list[str]:
        """``on_price`` as bucket keys, sorted: the buckets to confirm with the exact engine."""
        rows = self._tick(symbol, price)
        if not rows:
            return []
        keys = self._keys
        return sorted([keys[r] for r in rows])  # type: ignore[misc]

    def exposed(self, symbol: str) -> list[str]:
        """Every bucket whose health moves with ``symbol``, sorted by key."""
        sid = self._sym.get(symbol)
        if sid is None:
            return []
        keys = self._keys
        return sorted(keys[r] for r in self._members[sid] | self._always[sid])  # type: ignore[misc]

    def check(self, key: str) -> bool:
        """Whether the bucket is flagged at the screen's current prices (unknown key: False)."""
        row = self._row.get(key)
        if row is None:
            return False
        if self._alw[row]:
            return True
        h, broken = self._fresh(row)
        return broken or h < 0

    def headroom(self, key: str) -> float:
        """The bucket's slack minus its tolerance band, in quote units (-inf: always checked)."""
        row = self._row[key]
        return -math.inf if self._alw[row] else self._fresh(row)[0]

    def price(self, symbol: str) -> float | None:
        """The screen's current price of ``symbol`` (None if it has none)."""
        sid = self._sym.get(symbol)
        return None if sid is None or math.isnan(self._price[sid]) else self._price[sid]

    # ------------------------------------------------------------------ full rescans

    def resync(self, prices: Mapping[str, Decimal | float] | None = None) -> None:
        """Recompute every row and its price bands at the current prices (a full rescan).

        ``prices`` (optional) sets symbols' prices first. Headroom is always computed afresh
        from a row's coefficients, so nothing drifts; this drops stale heap entries and
        re-splits each row's headroom between its symbols.
        """
        for s, p in (prices or {}).items():
            self._price[self._sid(s)] = _checked_price(p)
        for heap in (*self._floors, *self._ceils):
            heap.clear()
        for row, ent in enumerate(self._ent):
            if ent:
                self._settle(row)
        self.ticks_since_resync = 0
        self.resyncs += 1

    # ------------------------------------------------------------------ bulk load and sizes

    def load_columns(
        self,
        keys: Sequence[str],
        const: npt.ArrayLike,
        entry_row: npt.ArrayLike,
        entry_symbol: npt.ArrayLike,
        coef: npt.ArrayLike,
        *,
        symbols: Sequence[str],
        prices: Mapping[str, Decimal | float],
        pmax: npt.ArrayLike | None = None,
    ) -> None:
        """Load linear buckets from arrays into an empty screen, as many ``upsert`` calls would.

        Bucket ``i`` is ``keys[i]`` with slack ``const[i] + sum coef[e] * P[symbols[entry_symbol[e]]]``
        over its entries ``e`` (``entry_row[e] == i``; at most one entry per bucket and symbol).
        ``pmax[e]`` (optional, inf for none) is the price above which entry ``e``'s bound fails
        (``Linear.ceilings``). Every symbol needs a price. Raises ValueError on bad input.
        """
        if self._keys:
            raise ValueError("load_columns needs an empty screen")
        nb = len(keys)
        c = np.asarray(const, np.float64)
        er = np.asarray(entry_row, np.int64)
        es = np.asarray(entry_symbol, np.int64)
        ec = np.asarray(coef, np.float64)
        ep = np.full(er.shape, np.inf) if pmax is None else np.asarray(pmax, np.float64)
        if c.shape != (nb,) or er.shape != es.shape or er.shape != ec.shape or er.ndim != 1:
            raise ValueError("const must have one value per key; entries must be 1-d of one length")
        if ep.shape != er.shape:
            raise ValueError("pmax must have one value per entry")
        if er.size and (er.min() < 0 or er.max() >= nb or es.min() < 0 or es.max() >= len(symbols)):
            raise ValueError("entry_row or entry_symbol out of range")
        if not (np.isfinite(c).all() and np.isfinite(ec).all()):
            raise ValueError("const and coef must be finite")
        if len(set(keys)) != nb:
            raise ValueError("duplicate keys")
        sid_map = np.array([self._sid(s) for s in symbols], np.int64)
        for s in symbols:
            sid = self._sym[s]
            if s in prices:
                self._price[sid] = _checked_price(prices[s])
            elif math.isnan(self._price[sid]):
                raise ValueError(f"no price for {s!r}")
        sid_e = sid_map[es] if es.size else es
        order = np.lexsort((sid_e, er))
        r_sorted, s_sorted = er[order], sid_e[order]
        if order.size > 1 and ((s_sorted[1:] == s_sorted[:-1]) & (r_sorted[1:] == r_sorted[:-1])).any():
            raise ValueError("two entries for one bucket and symbol")
        rel = self.rel_tol
        lo_all = (ec - rel * np.abs(ec))[order].tolist()
        pm_all = ep[order].tolist()
        c_lo = (c - rel * np.abs(c) - self.abs_tol).tolist()
        bounds = np.searchsorted(r_sorted, np.arange(nb + 1)).tolist()
        sids_all = s_sorted.tolist()
        for i, key in enumerate(keys):
            row = self._alloc(key)
            a, b = bounds[i], bounds[i + 1]
            sids = sids_all[a:b]
            self._sids[row] = tuple(sids)
            if a == b:
                continue
            self._c[row] = c_lo[i]
            self._ent[row] = tuple(zip(sids, lo_all[a:b], pm_all[a:b], strict=True))
            for sid in sids:
                self._members[sid].add(row)
        self.resync()
        self.resyncs -= 1  # loading is not a resync

    def nbytes(self) -> int:
        """An estimate of the bytes held by the screen's rows, entries and heap entries."""
        entries = sum(len(e) for e in self._ent)
        heap = sum(len(h) for h in (*self._floors, *self._ceils))
        return 160 * len(self._keys) + 120 * entries + 100 * heap

    def stats(self) -> dict[str, int]:
        """Counts for benchmarks and metrics: buckets, entries, stale heap entries, always-checked, bytes."""
        live = sum(len(e) for e in self._ent)
        heap = sum(len(h) for h in (*self._floors, *self._ceils))
        ver = self._ver
        stale = sum(1 for h in (*self._floors, *self._ceils) for e in h if ver[e[1]] != e[2])
        del heap
        return {
            "buckets": len(self._row),
            "symbols": len(self._names),
            "entries": live,
            "dead_entries": stale,
            "always_check": sum(self._alw),
            "bytes": self.nbytes(),
            "ticks_since_resync": self.ticks_since_resync,
            "resyncs": self.resyncs,
        }


def _checked_price(price: Decimal | float) -> float:
    p = float(price)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"price must be finite and > 0, got {price}")
    return p
