"""A conservative, vectorised health screen: which buckets MAY be liquidatable after a price moves.

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
band (``P > C / |size|``) the bucket is flagged on every tick of that market until it is upserted
again. Anything else the screen cannot linearise (unknown market, no maintenance parameter, a
missing price, a profile with non-linear health: pass ``always_check=True``) is a candidate on
every tick of any symbol it is exposed to.

Floats and tolerance. Each stored coefficient is widened by a relative band ``rel_tol``: the
screen keeps ``h = slack - rel_tol * (|const| + sum |coef_s| * P_s) - abs_tol`` and flags
``h < 0``. Prices are positive, so the band is folded into the coefficients: ``lo = coef -
rel_tol*|coef|`` is used when the price rises and ``hi = coef + rel_tol*|coef|`` when it falls,
which keeps ``h`` at or below the freshly computed value whatever the path. ``abs_tol`` must
cover the profile's rounding in the bucket's quote units. Rounding error grows with the number
of incremental updates; ``resync`` (a full numpy rescan) resets it and runs by itself every
``resync_every`` ticks (a tick count, not a clock: replay stays exact).

Pure: no I/O, no clock, no randomness. Results are sorted, so they are the same on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from keeper.domain.model import AssetParams, Bucket, MarketParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_ZERO = Decimal(0)
_ONE = Decimal(1)
_TIER_HEADROOM = Decimal(2)
_ROW_WIDTH = 8  # symbols per row kept in the dense table; wider buckets overflow to a dict
_MIN_TAIL = 256


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


class _Column:
    """The entries of one symbol: rows sorted in ``[0, nb)``, appended unsorted in ``[nb, n)``.

    A removed entry stays in place as dead (coefficients 0, ``alive`` False) until the next
    compaction, so positions never shift under a caller; a row appears at most once.
    """

    __slots__ = ("alive", "hi", "lo", "n", "nb", "pmax", "rows", "tail")

    def __init__(self, cap: int = 16) -> None:
        self.rows = np.zeros(cap, np.int64)
        self.lo = np.zeros(cap, np.float64)
        self.hi = np.zeros(cap, np.float64)
        self.alive = np.zeros(cap, np.bool_)
        self.pmax: F64 | None = None
        self.n = self.nb = 0
        self.tail: dict[int, int] = {}

    def find(self, row: int) -> int:
        """The slot holding ``row`` (dead or alive), or -1."""
        i = int(np.searchsorted(self.rows[: self.nb], row))
        if i < self.nb and self.rows[i] == row:
            return i
        return self.tail.get(row, -1)

    def put(self, row: int, lo: float, hi: float, pmax: float) -> None:
        i = self.find(row)
        if i < 0:
            if self.n == self.rows.size:
                self._grow(2 * self.rows.size)
            i = self.n
            self.n += 1
            self.tail[row] = i
            self.rows[i] = row
        self.lo[i], self.hi[i], self.alive[i] = lo, hi, True
        if pmax != np.inf and self.pmax is None:
            self.pmax = np.full(self.rows.size, np.inf)
        if self.pmax is not None:
            self.pmax[i] = pmax
        if self.n - self.nb > max(_MIN_TAIL, self.nb // 8):
            self.compact()

    def kill(self, row: int) -> None:
        i = self.find(row)
        if i >= 0:
            self.lo[i] = self.hi[i] = 0.0
            self.alive[i] = False
            if self.pmax is not None:
                self.pmax[i] = np.inf
        if self.n - self.nb > max(_MIN_TAIL, self.nb // 8):
            self.compact()

    def compact(self) -> None:
        """Drop dead entries and sort by row; amortised over many updates."""
        keep = np.flatnonzero(self.alive[: self.n])
        order = keep[np.argsort(self.rows[keep], kind="stable")]
        cap = max(16, 2 * order.size)
        self.rows = _sized(self.rows[order], cap)
        self.lo = _sized(self.lo[order], cap)
        self.hi = _sized(self.hi[order], cap)
        self.alive = _sized(self.alive[order], cap)
        if self.pmax is not None:
            self.pmax = _sized(self.pmax[order], cap, np.inf)
        self.n = self.nb = order.size
        self.tail = {}

    def _grow(self, cap: int) -> None:
        self.rows = _sized(self.rows, cap)
        self.lo = _sized(self.lo, cap)
        self.hi = _sized(self.hi, cap)
        self.alive = _sized(self.alive, cap)
        if self.pmax is not None:
            self.pmax = _sized(self.pmax, cap, np.inf)

    def nbytes(self) -> int:
        extra = 0 if self.pmax is None else self.pmax.nbytes
        return self.rows.nbytes + self.lo.nbytes + self.hi.nbytes + self.alive.nbytes + extra


def _sized(a: Any, cap: int, fill: float = 0) -> Any:
    out = np.full(cap, fill, a.dtype)
    k = min(cap, a.size)
    out[:k] = a[:k]
    return out


class Screen:
    """The columnar index: per bucket row a headroom ``h``; per symbol a column of exposed rows.

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
        self._cols: list[_Column] = []
        self._always: list[set[int]] = []
        self._keys: list[str | None] = []
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._h: F64 = np.zeros(0)
        self._c: F64 = np.zeros(0)
        self._alw = np.zeros(0, np.bool_)
        self._syms = np.zeros((0, _ROW_WIDTH), np.int32)
        self._wide: dict[int, tuple[int, ...]] = {}
        self.ticks_since_resync = 0
        self.resyncs = 0
        self._scratch_h: F64 = np.empty(0)
        self._scratch_t: F64 = np.empty(0)
        self._scratch_b = np.empty(0, np.bool_)

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
            self._price.append(np.nan)
            self._cols.append(_Column())
            self._always.append(set())
        return sid

    def _reserve(self, cap: int) -> None:
        if cap <= self._h.size:
            return
        self._h = _sized(self._h, cap, np.inf)
        self._c = _sized(self._c, cap, np.inf)
        self._alw = _sized(self._alw, cap)
        syms = np.full((cap, _ROW_WIDTH), -1, np.int32)
        syms[: self._syms.shape[0]] = self._syms
        self._syms = syms

    def _alloc(self, key: str) -> int:
        if self._free:
            row = self._free.pop()
            self._keys[row] = key
        else:
            row = len(self._keys)
            self._reserve(max(16, 2 * row) if row >= self._h.size else row + 1)
            self._keys.append(key)
        self._row[key] = row
        return row

    def _row_sids(self, row: int) -> tuple[int, ...]:
        wide = self._wide.get(row)
        if wide is not None:
            return wide
        r = self._syms[row]
        return tuple(int(x) for x in r[r >= 0])

    def _set_row_sids(self, row: int, sids: Sequence[int]) -> None:
        self._syms[row] = -1
        self._wide.pop(row, None)
        if len(sids) > _ROW_WIDTH:
            self._wide[row] = tuple(sids)
        else:
            self._syms[row, : len(sids)] = sids

    def _detach(self, row: int) -> None:
        for sid in self._row_sids(row):
            self._cols[sid].kill(row)
            self._always[sid].discard(row)
        self._set_row_sids(row, ())
        self._h[row] = self._c[row] = np.inf
        self._alw[row] = False

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
        self._set_row_sids(row, sids)
        if not sids:
            return False
        for s, sid in zip(syms, sids, strict=True):
            if np.isnan(self._price[sid]) and s in prices:
                self._price[sid] = _checked_price(prices[s])
        lin = None
        if not always_check and all(not np.isnan(self._price[sid]) for sid in sids):
            lin = linearise(bucket, markets, assets, prices, lending, mm_at_entry=mm_at_entry)
        if lin is None:
            self._alw[row] = True
            self._h[row] = self._c[row] = -np.inf
            for sid in sids:
                self._always[sid].add(row)
            return True
        rel = self.rel_tol
        c = float(lin.const)
        h = c_lo = c - rel * abs(c) - self.abs_tol
        broken = False
        for s, sid in zip(syms, sids, strict=True):
            coef = float(lin.coefs.get(s, _ZERO))
            lo, hi = coef - rel * abs(coef), coef + rel * abs(coef)
            ceiling = lin.ceilings.get(s)
            pmax = np.inf if ceiling is None else float(np.nextafter(float(ceiling), 0.0))
            self._cols[sid].put(row, lo, hi, pmax)
            h += lo * self._price[sid]
            broken = broken or self._price[sid] > pmax
        self._c[row] = c_lo
        self._h[row] = h
        return broken or h < 0

    def remove(self, key: str) -> None:
        """Forget the bucket (closed account, emptied bucket); unknown keys are ignored."""
        row = self._row.pop(key, None)
        if row is None:
            return
        self._detach(row)
        self._keys[row] = None
        self._free.append(row)

    # ------------------------------------------------------------------ ticks

    def on_price(self, symbol: str, price: Decimal | float) -> I64:
        """Move ``symbol`` to ``price``; return the flagged rows exposed to it, ascending.

        Flagged: headroom below zero, a tier band left, or a bucket the screen cannot
        linearise. Raises ValueError for a price that is not finite and positive.
        """
        new = _checked_price(price)
        if self.resync_every and self.ticks_since_resync >= self.resync_every:
            self.resync()
        self.ticks_since_resync += 1
        sid = self._sid(symbol)
        old = self._price[sid]
        self._price[sid] = new
        d = 0.0 if np.isnan(old) else new - old
        col = self._cols[sid]
        n = col.n
        parts: list[I64] = []
        ordered = col.nb == n
        if n:
            if self._scratch_h.size < n:
                # reused buffers: fresh multi-megabyte temporaries would page-fault on every tick
                self._scratch_h = np.empty(2 * n)
                self._scratch_t = np.empty(2 * n)
                self._scratch_b = np.empty(2 * n, np.bool_)
            rows = col.rows[:n]
            hv = np.take(self._h, rows, out=self._scratch_h[:n])
            if d:
                tmp = np.multiply(col.lo[:n] if d > 0 else col.hi[:n], d, out=self._scratch_t[:n])
                np.add(hv, tmp, out=hv)
                self._h[rows] = hv
            hit = np.less(hv, 0.0, out=self._scratch_b[:n])
            if col.pmax is not None:
                hit |= col.pmax[:n] < new
            pos = np.flatnonzero(hit)
            if pos.size:
                parts.append(rows[pos[col.alive[pos]]])
        if self._always[sid]:
            parts.append(np.fromiter(self._always[sid], np.int64))
            ordered = False
        if not parts:
            return np.zeros(0, np.int64)
        if len(parts) == 1 and ordered:
            return parts[0]
        return np.unique(np.concatenate(parts))

    def candidates(self, symbol: str, price: Decimal | float) -> list[str]:
        """``on_price`` as bucket keys, sorted: the buckets to confirm with the exact engine."""
        keys = self._keys
        return sorted(keys[r] for r in self.on_price(symbol, price).tolist())

    def exposed(self, symbol: str) -> list[str]:
        """Every bucket whose health moves with ``symbol``, sorted by key."""
        sid = self._sym.get(symbol)
        if sid is None:
            return []
        col = self._cols[sid]
        rows = col.rows[: col.n][col.alive[: col.n]].tolist()
        return sorted(self._keys[r] for r in {*rows, *self._always[sid]})

    def check(self, key: str) -> bool:
        """Whether the bucket is flagged at the screen's current prices (unknown key: False)."""
        row = self._row.get(key)
        if row is None:
            return False
        if self._alw[row] or self._h[row] < 0:
            return True
        for sid in self._row_sids(row):
            col = self._cols[sid]
            if col.pmax is not None:
                i = col.find(row)
                if i >= 0 and col.pmax[i] < self._price[sid]:
                    return True
        return False

    def headroom(self, key: str) -> float:
        """The bucket's slack minus its tolerance band, in quote units (-inf: always checked)."""
        return float(self._h[self._row[key]])

    def price(self, symbol: str) -> float | None:
        """The screen's current price of ``symbol`` (None if it has none)."""
        sid = self._sym.get(symbol)
        return None if sid is None or np.isnan(self._price[sid]) else self._price[sid]

    # ------------------------------------------------------------------ full rescans

    def resync(self, prices: Mapping[str, Decimal | float] | None = None) -> None:
        """Recompute every headroom from the stored coefficients (a full numpy rescan).

        ``prices`` (optional) sets symbols' prices first. This discards the rounding and the
        widening that incremental ticks accumulate; run it periodically against drift.
        """
        for s, p in (prices or {}).items():
            self._price[self._sid(s)] = _checked_price(p)
        h = self._c.copy()
        for sid, col in enumerate(self._cols):
            if col.n:
                rows = col.rows[: col.n]
                h[rows] += col.lo[: col.n] * self._price[sid]
        self._h = h
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
        ep = None if pmax is None else np.asarray(pmax, np.float64)
        if c.shape != (nb,) or er.shape != es.shape or er.shape != ec.shape or er.ndim != 1:
            raise ValueError("const must have one value per key; entries must be 1-d of one length")
        if ep is not None and ep.shape != er.shape:
            raise ValueError("pmax must have one value per entry")
        if er.size and (er.min() < 0 or er.max() >= nb or es.min() < 0 or es.max() >= len(symbols)):
            raise ValueError("entry_row or entry_symbol out of range")
        if not (np.isfinite(c).all() and np.isfinite(ec).all()):
            raise ValueError("const and coef must be finite")
        row_of = dict(zip(keys, range(nb), strict=True))
        if len(row_of) != nb:
            raise ValueError("duplicate keys")
        sid_map = np.array([self._sid(s) for s in symbols], np.int64)
        for s in symbols:
            sid = self._sym[s]
            if s in prices:
                self._price[sid] = _checked_price(prices[s])
            elif np.isnan(self._price[sid]):
                raise ValueError(f"no price for {s!r}")
        sid_e = sid_map[es] if es.size else es
        order = np.lexsort((er, sid_e))
        s_sorted, r_sorted = sid_e[order], er[order]
        if order.size > 1 and ((s_sorted[1:] == s_sorted[:-1]) & (r_sorted[1:] == r_sorted[:-1])).any():
            raise ValueError("two entries for one bucket and symbol")
        self._reserve(max(16, nb))
        self._keys = list(keys)
        self._row = row_of
        rel = self.rel_tol
        has = np.zeros(nb, np.bool_)
        has[er] = True
        self._c[:nb] = np.where(has, c - rel * np.abs(c) - self.abs_tol, np.inf)
        lo_all = ec - rel * np.abs(ec)
        hi_all = ec + rel * np.abs(ec)
        bounds = np.searchsorted(s_sorted, np.arange(len(self._names) + 1))
        for sid in range(len(self._names)):
            a, b = int(bounds[sid]), int(bounds[sid + 1])
            if a == b:
                continue
            sel = order[a:b]
            col = self._cols[sid] = _Column(0)
            col.rows, col.lo, col.hi = r_sorted[a:b].copy(), lo_all[sel], hi_all[sel]
            col.alive = np.ones(b - a, np.bool_)
            if ep is not None and np.isfinite(ep[sel]).any():
                col.pmax = ep[sel]
            col.n = col.nb = b - a
        by_row = np.lexsort((sid_e, er))
        rr, ss = er[by_row], sid_e[by_row]
        rank = np.arange(rr.size) - np.searchsorted(rr, rr)
        narrow = rank < _ROW_WIDTH
        self._syms[rr[narrow], rank[narrow]] = ss[narrow]
        for row in np.unique(rr[~narrow]).tolist():
            self._wide[row] = tuple(ss[rr == row].tolist())
        self.resync()

    def nbytes(self) -> int:
        """Bytes held by the screen's numpy arrays (not the key dict and list)."""
        rows = self._h.nbytes + self._c.nbytes + self._alw.nbytes + self._syms.nbytes
        return rows + sum(col.nbytes() for col in self._cols)

    def stats(self) -> dict[str, int]:
        """Counts for benchmarks and metrics: buckets, live and dead entries, always-checked, bytes."""
        live = sum(int(col.alive[: col.n].sum()) for col in self._cols)
        total = sum(col.n for col in self._cols)
        return {
            "buckets": len(self._row),
            "symbols": len(self._names),
            "entries": live,
            "dead_entries": total - live,
            "always_check": int(self._alw.sum()),
            "bytes": self.nbytes(),
            "ticks_since_resync": self.ticks_since_resync,
            "resyncs": self.resyncs,
        }


def _checked_price(price: Decimal | float) -> float:
    p = float(price)
    if not (np.isfinite(p) and p > 0):
        raise ValueError(f"price must be finite and > 0, got {price}")
    return p
