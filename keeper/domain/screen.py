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
its share. Shares go by the terms' values ``weight_s * |coef_s| * P_s`` (``weight``: 1, or
``_QUIET`` for a symbol that has not moved yet), so every moving symbol gets the same relative
band ``h / sum(weight * |coef| * P)``: with equal shares a bucket's largest position had the
narrowest band and was crossed first (7% more settles on the replay bench). Per symbol two
sorted numpy arrays of band edges (floors, ceilings; see ``_Edges``) hold its rows' bands; a
tick takes only the rows whose band it left (a suffix of each sorted array: O(log n +
crossed)), settles them again (vectorised when there are many) and flags
those with ``h < 0``; every other row is provably unflagged. A flagged row has an empty band:
it is looked at on every tick of its symbols until it is healthy or upserted. ``resync``
settles every row again (and drops stale edges); it runs by itself every ``resync_every``
ticks (a count, not a clock). Rows live in numpy columns (~115 B per 1-5-position bucket).

Pure: no I/O, no clock, no randomness. Results are sorted, so they are the same on every run.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from keeper.domain.margin.health import quote_of
from keeper.domain.margin.tiers import derive_deductions, maintenance
from keeper.domain.model import AssetParams, Bucket, MarketParams

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]

_V = TypeVar("_V")
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_TIER_HEADROOM: Final = Decimal(2)
_QUIET: Final = 1.0 / 1024
"""Budget weight of a symbol not ticked since first priced (a stablecoin): rarely worth a share."""


class Linear(NamedTuple):
    """A bucket's slack as ``const + sum coefs[s] * P_s``, valid while ``P_s <= ceilings[s]``
    (what ``linearise`` returns; ``upsert`` reads ``_linearise``'s plain tuple)."""

    const: Decimal
    coefs: dict[str, Decimal]
    ceilings: dict[str, Decimal]


def tier_bound(market: MarketParams, notional: Decimal) -> tuple[Decimal, Decimal | None] | None:
    """``(rate, ceiling)`` with ``notional' * rate >= MM(notional')`` for all ``0 < notional' <= ceiling``.

    ``ceiling`` is the first tier floor above twice ``notional`` (None: no ceiling). Returns None
    when no such rate exists (a first tier with a negative deduction). On each linear piece
    ``MM(N)/N = rate - deduction/N`` is monotone, so its supremum is at a piece's end.
    """
    br = [(b.floor, b.rate, b.deduction) for b in derive_deductions(market.mmf_tiers)]
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
    lin = _linearise(bucket, _as_dict(markets), _as_dict(assets), _as_dict(prices), lending, mm_at_entry)
    return None if lin is None else Linear(*lin)


def _as_dict(m: Mapping[str, _V]) -> dict[str, _V]:
    """``m`` as a dict (itself when it is one: a dict's ``get`` is a direct call when compiled,
    any other mapping's a method lookup)."""
    return m if isinstance(m, dict) else dict(m)


def _linearise(  # noqa: PLR0917 - linearise's arguments
    bucket: Bucket,
    markets: dict[str, MarketParams],
    assets: dict[str, AssetParams],
    prices: dict[str, Decimal],
    lending: bool,
    mm_at_entry: bool,
) -> tuple[Decimal, dict[str, Decimal], dict[str, Decimal]] | None:
    """``linearise`` as a plain tuple (what ``upsert`` reads: no record built per upsert)."""
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
        quote = quote_of(pos)
        const += quote
        if mm_at_entry:
            entry = pos.entry_price if pos.entry_price is not None else -quote / size
            if mk.mmf_tiers:
                const -= maintenance(derive_deductions(mk.mmf_tiers), absz * entry)
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
        coefs[sym] = coefs.get(sym, _ZERO) + bal * balance_weight(assets.get(sym), bal > 0, lending)
    return const, coefs, ceilings


def balance_weight(ap: AssetParams | None, collateral: bool, lending: bool) -> Decimal:
    """The weight ``linearise`` gives a balance of an asset with parameters ``ap`` (None: not
    listed): a collateral (``> 0``) balance's asset weight (capped at 1; for ``lending``, the
    liquidation threshold, 0 when missing), a debt's ``max(1, liability weight)``."""
    if collateral:
        if lending:
            lt = None if ap is None else ap.liquidation_threshold
            return _ZERO if lt is None else lt
        aw = None if ap is None else ap.asset_weight
        return _ONE if aw is None else min(_ONE, aw)
    lw = ap.liability_weight if ap is not None and ap.liability_weight is not None else _ONE
    return max(_ONE, lw)


_NONLINEAR_MODELS: Final = frozenset({"drift", "gmx", "mango", "morpho", "marginfi", "vertex", "aevo"})


def screen_mode(kind: str, model: str, mm_at: str) -> tuple[bool, bool, bool]:
    """``(lending, mm_at_entry, always_check)`` for ``upsert`` from a margin profile's fields.

    Drift (strict TWAP guards, liability weights on spot borrows), GMX (minimum collateral in
    USD) and Mango (weights applied after netting perps into the settle token) are not linear
    in prices the way the screen models them, nor is Morpho Blue's rule (collateral, price
    product and LLTV product each floored in token units: a few units off the linear slack, past
    the screen's tolerance on small positions): their buckets are always candidates. So are
    MarginFi's (prices biased by an oracle confidence the screen does not see, capped at a share
    of the price), Vertex's (explicit long/short weights and spread rebates beside ``mmf``) and
    Aevo's (options' standard margin on their underlying's price).
    """
    return kind == "lending", mm_at == "entry", model in _NONLINEAR_MODELS


class _Edges:
    """One symbol's band edges on one side, each ``(key, row, generation)``; crossed when ``key > x``.

    Floors are stored as ``key = floor`` and probed with ``x = P``; ceilings as ``key = -ceiling``
    probed with ``x = -P``, so both sides are one structure and what a tick crosses is always the
    top of the keys. Levels, like a small LSM tree, so pushes are cheap and a probe is
    O(log n + crossed + pending): a sorted ``main`` array; a sorted ``small`` one that pending
    edges are merged into at a probe (merged into ``main`` when it outgrows ``main / 16``);
    ``pend``, unsorted batches from settles since the last probe; and ``tail``, a heap of single
    pushes (``(-key, row, generation)``: the largest key on top, so a probe pops exactly what it
    crosses, never scanning the rest; the rows settled one at a time are the ones near their
    edges, crossed again and again). An edge whose generation is not its row's current one is stale (the
    row was settled again or removed): skipped when crossed, dropped when compacted. ``top`` is
    an upper bound of every key, so a probe that cannot cross anything touches no array;
    ``tail_top`` and ``pend_top`` bound the tail's and the pending batches' keys, so a probe that
    crosses only sorted edges leaves those two levels alone.
    """

    __slots__ = ("g", "k", "npend", "pend", "pend_top", "r", "sg", "sk", "small", "sr", "tail", "tail_max",
                 "tail_top", "top")

    def __init__(self) -> None:
        self.tail_max = _TAIL  # the level sizes, read once (a module global is a dict lookup)
        self.small = _SMALL
        self.k: F64 = _EF
        self.r: I32 = _EI
        self.g: I32 = _EI
        self.sk: F64 = _EF
        self.sr: I32 = _EI
        self.sg: I32 = _EI
        self.pend: list[tuple[F64, I32, I32]] = []
        self.npend = 0
        self.tail: list[tuple[float, int, int]] = []
        """A heap of ``(-key, row, generation)``."""
        self.top = -math.inf
        self.tail_top = -math.inf
        self.pend_top = -math.inf

    def __len__(self) -> int:
        return self.k.size + self.sk.size + self.npend + len(self.tail)

    def push(self, key: float, row: int, gen: int) -> None:
        _heappush(self.tail, (-key, row, gen))
        if key > self.tail_top:
            self.tail_top = key
            if key > self.top:  # noqa: PLR1730 (hot path: no call)
                self.top = key
        if len(self.tail) >= self.tail_max:
            self._flush_tail()
            if self.npend > max(self.small, self.k.size >> 4):
                self._merge(*self._take_pending())

    def push_many(self, keys: F64, rows: I32, gens: I32, top: float) -> None:
        """Queue a batch of edges (``top``: their largest key); merged at the next probe, or
        into the heap while every edge fits there."""
        if not self._in_arrays() and len(self.tail) + keys.size <= self.tail_max:
            self._heap_many(keys, rows, gens)
            return
        self.pend.append((keys, rows, gens))
        self.npend += keys.size
        self.top = max(self.top, top)
        self.pend_top = max(self.pend_top, top)
        if self.npend > max(self.small, self.k.size >> 4):
            self._merge(*self._take_pending())

    def _in_arrays(self) -> bool:
        """Whether any edge is in the numpy levels (if not, every edge is in the tail's heap:
        a symbol with few rows never touches numpy)."""
        return bool(self.k.size or self.sk.size or self.npend)

    def _heap_many(self, keys: F64, rows: I32, gens: I32) -> None:
        heap = self.tail
        new = list(zip((-keys).tolist(), rows.tolist(), gens.tolist(), strict=True))
        if len(new) > len(heap) >> 3:
            heap.extend(new)
            heapq.heapify(heap)
        else:
            for e in new:
                heapq.heappush(heap, e)
        self._heap_top()

    def _heap_top(self) -> None:
        self.tail_top = -self.tail[0][0] if self.tail else -math.inf
        if not self._in_arrays() or self.tail_top > self.top:
            self.top = self.tail_top

    def _flush_tail(self) -> None:
        k, r, g = zip(*self.tail, strict=True)
        self.tail = []
        self.pend_top = max(self.pend_top, self.tail_top)
        self.tail_top = -math.inf
        self.pend.append((-np.array(k, np.float64), np.array(r, np.int32), np.array(g, np.int32)))
        self.npend += len(k)

    def _take_pending(self, *, tail: bool = True) -> tuple[F64, I32, I32]:
        if tail and self.tail:
            self._flush_tail()
        pend = self.pend
        self.pend = []
        self.npend = 0
        self.pend_top = -math.inf
        if len(pend) <= 1:
            return pend[0] if pend else (_EF, _EI, _EI)
        k, r, g = zip(*pend, strict=True)
        return np.concatenate(k), np.concatenate(r), np.concatenate(g)

    def _merge(self, keys: F64, rows: I32, gens: I32) -> None:
        """Merge unsorted edges into ``small`` (and ``small`` into ``main`` when it is large)."""
        if not keys.size:
            return
        o = np.argsort(keys, kind="stable")
        self.sk, self.sr, self.sg = _merged((self.sk, self.sr, self.sg), (keys[o], rows[o], gens[o]))
        if self.sk.size > max(self.small, self.k.size >> 4):
            self.k, self.r, self.g = _merged((self.k, self.r, self.g), (self.sk, self.sr, self.sg))
            self.sk, self.sr, self.sg = _EF, _EI, _EI

    def set(self, keys: F64, rows: I32, gens: I32) -> None:
        """Replace every edge (a full settle): ``main`` is the batch sorted by key (or the heap,
        when the batch fits there)."""
        if keys.size <= self.tail_max >> 1:
            self.k, self.r, self.g = _EF, _EI, _EI
            self.sk, self.sr, self.sg = _EF, _EI, _EI
            self.pend, self.npend, self.tail = [], 0, []
            self.pend_top = -math.inf
            self._heap_many(keys, rows, gens)
            return
        o = np.argsort(keys, kind="stable")
        self.k, self.r, self.g = keys[o], rows[o], gens[o]
        self.sk, self.sr, self.sg = _EF, _EI, _EI
        self.pend, self.npend, self.tail = [], 0, []
        self.top = float(self.k[-1]) if self.k.size else -math.inf
        self.tail_top = self.pend_top = -math.inf

    def pop(self, x: float, pairs: list[tuple[int, int]]) -> tuple[list[I32], list[I32]]:
        """Remove the edges with ``key > x``; returns their ``(rows, generations)`` as arrays and
        appends those of the tail (single pushes, popped off its heap) to ``pairs``."""
        rows: list[I32] = []
        gens: list[I32] = []
        if self.tail_top > x:
            heap = self.tail
            nx = -x
            pop = _heappop
            while heap and heap[0][0] < nx:
                _, row, gen = pop(heap)
                pairs.append((row, gen))
            self.tail_top = -heap[0][0] if heap else -math.inf
        if self.pend_top > x:
            k, r, g = self._take_pending(tail=False)
            hit = k > x
            if hit.any():
                rows.append(r[hit])
                gens.append(g[hit])
                keep = ~hit
                k, r, g = k[keep], r[keep], g[keep]
            self._merge(k, r, g)
        k = self.k
        if k.size and k[-1] > x:
            i = int(np.searchsorted(k, x, side="right"))
            rows.append(self.r[i:])
            gens.append(self.g[i:])
            self.k, self.r, self.g = k[:i], self.r[:i], self.g[:i]
        k = self.sk
        if k.size and k[-1] > x:
            i = int(np.searchsorted(k, x, side="right"))
            rows.append(self.sr[i:])
            gens.append(self.sg[i:])
            self.sk, self.sr, self.sg = k[:i], self.sr[:i], self.sg[:i]
        self.top = x  # every key left is <= x
        return rows, gens

    def compact(self, ver: I32) -> None:
        """Drop stale edges (every level merged into ``main``, or the heap filtered in place)."""
        if not self._in_arrays():
            heap = self.tail
            r = np.fromiter((e[1] for e in heap), np.int64, len(heap))
            g = np.fromiter((e[2] for e in heap), np.int64, len(heap))
            keep = (ver[r] == g).tolist()
            self.tail = [e for e, k in zip(heap, keep, strict=True) if k]
            heapq.heapify(self.tail)
            self._heap_top()
            return
        pk, pr, pg = self._take_pending()
        k = np.concatenate((self.k, self.sk, pk))
        r = np.concatenate((self.r, self.sr, pr))
        g = np.concatenate((self.g, self.sg, pg))
        keep = ver[r] == g
        self.set(k[keep], r[keep], g[keep])

    def stale(self, ver: I32) -> int:
        levels = [(self.r, self.g), (self.sr, self.sg), *((r, g) for _, r, g in self.pend)]
        n = sum(int(np.count_nonzero(ver[r] != g)) for r, g in levels)
        return n + sum(1 for _, r, g in self.tail if ver[r] != g)

    def nbytes(self) -> int:
        """16 B per edge in the arrays; a heap entry is a tuple, a float and two ints (~150 B)."""
        return 16 * (self.k.size + self.sk.size + self.npend) + _HEAP_EDGE_BYTES * len(self.tail)


def _merged(a: tuple[F64, I32, I32], b: tuple[F64, I32, I32]) -> tuple[F64, I32, I32]:
    """Two key-sorted edge arrays merged into one, key-sorted (``b`` after equal keys of ``a``)."""
    ak, ar, ag = a
    bk, br, bg = b
    if not ak.size:
        return bk, br, bg
    n = ak.size + bk.size
    at = np.searchsorted(ak, bk, side="right") + np.arange(bk.size)
    mask = np.ones(n, np.bool_)
    mask[at] = False
    out_k = np.empty(n)
    out_k[at] = bk
    out_k[mask] = ak
    out_r = np.empty(n, np.int32)
    out_r[at] = br
    out_r[mask] = ar
    out_g = np.empty(n, np.int32)
    out_g[at] = bg
    out_g[mask] = ag
    return out_k, out_r, out_g


_heappush: Final = heapq.heappush  # Final: a C static in the compiled module, not a lookup
_heappop: Final = heapq.heappop
_EF: Final[F64] = np.zeros(0, np.float64)
_EI: Final[I32] = np.zeros(0, np.int32)
_TAIL = 1 << 12
"""Edges kept in the tail's heap before they go to the numpy levels as one batch: a symbol with
fewer rows keeps all its edges in the heap (pops and pushes O(log n), no array call at all). Past
a few thousand, a tick that crosses many edges is cheaper as an array slice (bench_recheck's
typical market, ~5,600 rows, ran 10-20% slower with every edge in a heap)."""
_SET_MEMBER_BYTES: Final = 60
"""A row number in a Python set: its int (28 B) and ~1.5 hash-table slots."""
_HEAP_EDGE_BYTES: Final = 64 + 24 + 2 * 28 + 8
"""A heap entry: its 3-tuple, the float key, the row and generation ints, the list's pointer."""
_SMALL = 4096
_GEN_MASK: Final = 0x7FFFFFFF
"""Row generations (int32) wrap to 0 after 2**31 - 1 settles of one row: an edge that old was
compacted away long before."""
_MAX_WIDTH: Final = 16
"""Symbols a row can hold in the arrays; a bucket exposed to more is always a candidate."""
_SHIFT_BUDGET: Final = 1024
"""How many times its own band (``rel_tol * |coef|``) a coefficient may widen through ``shift``
before the row must be re-linearised: extra false positives only within ~1e-6 of the boundary."""
_SMALL_SETTLE: Final = 16
"""Crossed rows settled one by one in Python below this count (numpy's call cost dominates)."""


class Screen:
    """Rows of linear forms in numpy arrays; per symbol two sorted arrays of band edges.

    Row ``r`` holds ``const`` in ``_c[r]`` and up to ``_width`` entries ``(symbol id, widened
    coefficient, price ceiling)`` in the 2-d arrays ``_es``/``_el``/``_ep`` (symbol id 0 is a
    placeholder with price 1 and coefficient 0). Keys are bucket keys (``account/bucket``); rows
    are recycled through a free list. Every method that returns buckets returns them sorted.
    """

    def __init__(self, *, rel_tol: float = 1e-9, abs_tol: float = 1e-6, resync_every: int = 200_000) -> None:
        if not (rel_tol > 0 and abs_tol >= 0 and resync_every >= 0):
            raise ValueError("rel_tol must be > 0, abs_tol >= 0 and resync_every >= 0")
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self.resync_every = resync_every
        self._sym: dict[str, int] = {}
        self._names: list[str] = [""]
        self._price: list[float] = [1.0]
        """Per symbol id its current price (NaN: none yet); id 0 is the placeholder."""
        self._px: F64 = np.ones(8)
        """``_price`` as an array, for gathers over many rows (copied from ``_price`` before each)."""
        self._moves: list[int] = [0]
        self._wt: list[float] = [0.0]
        """Budget weight per symbol: 1 once it has ticked twice, ``_QUIET`` before."""
        self._wa: F64 = np.zeros(8)
        self._count: list[int] = [0]
        """Live linear rows per symbol (how many edges a compact side should hold)."""
        self._always: list[set[int]] = [set()]
        self._unbanded: list[set[int]] = [set()]
        """Per quiet symbol: rows settled with no edge for it (see ``_settle1``)."""
        self._floors: list[_Edges] = [_Edges()]
        self._ceils: list[_Edges] = [_Edges()]
        self._keys: list[str | None] = []
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._width = 4
        self._c: F64 = np.zeros(0)
        self._ver: I32 = np.zeros(0, np.int32)
        self._alw = np.zeros(0, np.bool_)
        self._hot = np.zeros(0, np.bool_)
        """Per row: flagged at its last settle (its band is empty)."""
        self._alw_sids: dict[int, list[int]] = {}
        self._drift: dict[int, float] = {}
        """Per row shifted by ``shift`` since its last ``upsert``: the widening spent so far."""
        self._es: I32 = np.zeros((0, self._width), np.int32)
        self._el: F64 = np.zeros((0, self._width))
        self._ep: F64 | None = None
        """Price ceilings per entry; allocated when the first finite one arrives (tiers)."""
        self._cm: Any = None
        self._verm: Any = None
        self._alwm: Any = None
        self._hotm: Any = None
        self._esm: Any = None
        self._elm: Any = None
        self._epm: Any = None
        """Flat memoryviews of the row arrays above (``_views``)."""
        self._views()
        self._dirty: set[int] = set()
        """Rows whose stored form lags behind their bucket by updates that only raised its slack
        (``defer``): still a valid lower bound, refreshed when a tick crosses their band."""
        self.refresh: Callable[[str], bool] | None = None
        """Re-linearises a bucket from the exact state (``upsert``), returning whether it is flagged:
        set by the owner of the state; without it ``defer`` never defers."""
        self.ticks_since_resync = 0
        self.resyncs = 0
        self.upserts = 0
        self.shifts = 0
        self.deferred = 0
        """Counts of rows re-linearised, moved by one term, and left to lag (metrics)."""

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
            self._wt.append(_QUIET)
            self._count.append(0)
            self._always.append(set())
            self._unbanded.append(set())
            self._floors.append(_Edges())
            self._ceils.append(_Edges())
            if sid >= self._px.size:
                self._px = _sized(self._px, 2 * sid, math.nan)
                self._wa = _sized(self._wa, 2 * sid, _QUIET)
            self._px[sid] = math.nan
            self._wa[sid] = _QUIET
        return sid

    def _set_price(self, sid: int, p: float) -> None:
        self._price[sid] = p
        self._px[sid] = p

    def _reserve(self, cap: int, width: int) -> None:
        """Grow the row arrays to ``cap`` rows of ``width`` entries (never shrinks)."""
        old, w0 = self._c.size, self._width
        if cap <= old and width <= w0:
            return
        cap = max(cap, old)
        width = max(width, w0)
        self._c = _sized(self._c, cap, math.inf)
        self._ver = _sized(self._ver, cap)
        self._alw = _sized(self._alw, cap)
        self._hot = _sized(self._hot, cap)
        es = np.zeros((cap, width), np.int32)
        es[:old, :w0] = self._es
        el = np.zeros((cap, width))
        el[:old, :w0] = self._el
        self._es, self._el, self._width = es, el, width
        if self._ep is not None:
            ep = np.full((cap, width), math.inf)
            ep[:old, :w0] = self._ep
            self._ep = ep
        self._views()

    def _views(self) -> None:
        """Flat memoryviews over the row arrays (after any of them is replaced): one row's
        numbers are read and written through them as Python ints and floats, several times
        cheaper than numpy scalar or row indexing; the vectorised paths use the arrays."""
        self._cm = self._c.data
        self._verm = self._ver.data
        self._alwm = self._alw.data
        self._hotm = self._hot.data
        self._esm = _flat(self._es, "i")
        self._elm = _flat(self._el, "d")
        self._epm = None if self._ep is None else _flat(self._ep, "d")

    def _new_ceilings(self) -> None:
        """Allocate the price ceilings (the first tiered entry)."""
        self._ep = np.full(self._el.shape, math.inf)
        self._views()

    def _alloc(self, key: str) -> int:
        if self._free:
            row = self._free.pop()
            self._keys[row] = key
        else:
            row = len(self._keys)
            if row >= self._c.size:
                self._reserve(max(16, 2 * row), self._width)
            self._keys.append(key)
        self._row[key] = row
        return row

    def _detach(self, row: int) -> None:
        """Empty the row; its edges are stale from now on (its generation moves on)."""
        self._release(row)
        self._clear(row)

    def _clear(self, row: int) -> None:
        self._hotm[row] = False
        esm, elm, epm = self._esm, self._elm, self._epm
        w = self._width
        for j in range(row * w, row * w + w):
            esm[j] = 0
            elm[j] = 0.0
            if epm is not None:
                epm[j] = math.inf
        self._cm[row] = math.inf

    def _release(self, row: int) -> int:
        """Make the row's edges stale and take it out of the per-symbol counts (arrays kept);
        returns how many entries the row holds (its slots past that are zero)."""
        verm = self._verm
        ver: int = verm[row]
        verm[row] = (ver + 1) & _GEN_MASK
        if self._drift:
            self._drift.pop(row, None)
        if self._dirty:
            self._dirty.discard(row)
        if self._alwm[row]:
            self._alwm[row] = False
            for sid in self._alw_sids.pop(row, ()):
                self._always[sid].discard(row)
            return 0
        w = self._width
        count = self._count
        esm = self._esm
        used = 0
        for j in range(row * w, row * w + w):
            slot: int = esm[j]
            if slot:
                count[slot] -= 1
                used += 1
        return used

    def _entries(self, row: int) -> list[tuple[int, float, float]]:
        # item by item through the flat views (a row holds a few entries: three slices, three
        # tolist calls and a zip cost ten times as much)
        w = self._width
        a = row * w
        esm, elm, epm = self._esm, self._elm, self._epm
        out: list[tuple[int, float, float]] = []
        for j in range(a, a + w):
            sid: int = esm[j]
            if sid:
                lo: float = elm[j]
                pm: float = math.inf if epm is None else epm[j]
                out.append((sid, lo, pm))
        return out

    def _fresh(self, row: int) -> tuple[float, bool]:
        """The row's headroom at the current prices, and whether a price is above its ceiling."""
        return self._headroom(self._entries(row), self._cm[row])

    def _headroom(self, ent: list[tuple[int, float, float]], c: float) -> tuple[float, bool]:
        """``c + sum lo * P`` over a row's entries at the current prices, and whether a price is
        above its entry's ceiling."""
        price = self._price
        h = c
        broken = False
        for sid, lo, pmax in ent:
            p = price[sid]
            h += lo * p
            if p > pmax:
                broken = True
        return h, broken

    # ------------------------------------------------------------------ settling (bands)

    def _settle1(self, row: int, ent: list[tuple[int, float, float]], c: float) -> bool:
        """Settle one row in Python: recompute it and push one band edge per symbol.

        The headroom ``h`` is split between the row's symbols by the weighted values of their terms
        (the same relative band for each moving symbol); while every symbol stays
        inside its band the row's headroom cannot go below zero. Returns whether it is flagged
        (then it gets an empty band: a floor at +inf, crossed by every tick of its symbols).
        """
        verm = self._verm
        old: int = verm[row]  # typed first: the arithmetic below is then native
        gen = (old + 1) & _GEN_MASK
        verm[row] = gen
        price = self._price
        h, broken = self._headroom(ent, c)
        floors, ceils = self._floors, self._ceils
        wt = self._wt
        mixed = False  # the row holds a symbol that moves: its quiet symbols get no edge
        for sid, _, _ in ent:
            if wt[sid] != _QUIET:
                mixed = True
                break
        if not h >= 0 or broken:  # NaN too
            self._hotm[row] = True
            for sid, _, _ in ent:
                if mixed and wt[sid] == _QUIET:
                    self._unbanded[sid].add(row)
                else:
                    floors[sid].push(math.inf, row, gen)
            return True
        hotm = self._hotm
        if hotm[row]:
            hotm[row] = False
        wsum = 0.0
        for sid, lo, _ in ent:
            if lo:
                wsum += wt[sid] * abs(lo) * price[sid]
        rel = h / wsum if wsum else 0.0
        for sid, lo, pmax in ent:
            if mixed and wt[sid] == _QUIET:
                # its share is ~1/1024 of the headroom: an edge any move of it would cross.
                # Noted instead; a tick of the quiet symbol settles the rows noted for it
                self._unbanded[sid].add(row)
                continue
            p = price[sid]
            if lo > 0:
                floors[sid].push(p - wt[sid] * rel * p, row, gen)
                ceiling = pmax
            elif lo < 0:
                ceiling = min(pmax, p + wt[sid] * rel * p)
            else:
                ceiling = pmax
            if ceiling != math.inf:
                ceils[sid].push(-ceiling, row, gen)
        return False

    def _settle_many(self, rows: I64, *, rebuild: bool = False) -> I64:
        """Settle many linear rows at once (numpy); returns the flagged ones.

        ``rebuild``: these are all the linear rows, so every symbol's edges are replaced (a
        full settle that also drops every stale edge).
        """
        gen = (self._ver[rows] + 1) & _GEN_MASK
        self._ver[rows] = gen
        self._px[:len(self._price)] = self._price
        es = self._es[rows]
        el = self._el[rows]
        px = self._px[es]
        h = self._c[rows] + (el * px).sum(axis=1)
        bad = ~(h >= 0)
        ep = None
        if self._ep is not None:
            ep = self._ep[rows]
            bad |= (px > ep).any(axis=1)
        self._hot[rows] = bad
        wa = self._wa[es]
        w = np.where(el != 0, wa * np.abs(el) * px, 0.0)
        wsum = w.sum(axis=1)
        rel = np.divide(h, wsum, out=np.zeros_like(h), where=(wsum > 0) & ~bad)
        edge = px - np.sign(el) * wa * rel[:, None] * px
        good = ~bad[:, None]
        rr = np.broadcast_to(rows.astype(np.int32)[:, None], es.shape)
        gg = np.broadcast_to(gen[:, None], es.shape)
        held = es != 0
        quiet = (wa == _QUIET) & held
        # as in _settle1: a quiet symbol of a row holding a moving one gets no edge, but a note
        skip = quiet & (held & ~quiet).any(axis=1)[:, None]
        if rebuild:
            for noted in self._unbanded:
                noted.clear()
        if skip.any():
            unbanded = self._unbanded
            for sid, row in zip(es[skip].tolist(), rr[skip].tolist(), strict=True):
                unbanded[sid].add(row)
        held &= ~skip
        fmask = (good & (el > 0) & held) | (bad[:, None] & held)
        fkey = np.where(good, edge, math.inf)[fmask]
        ckey = np.where(el < 0, edge, math.inf)
        if ep is not None:
            ckey = np.minimum(ckey, ep)
        cmask = good & held & (ckey != math.inf)
        sides = ((self._floors, es[fmask], fkey, rr[fmask], gg[fmask]),
                 (self._ceils, es[cmask], -ckey[cmask], rr[cmask], gg[cmask]))
        for edges, sid0, key0, rw0, gn0 in sides:
            if rebuild:
                for e in edges:
                    e.set(_EF, _EI, _EI)
            if not sid0.size:
                continue
            o = np.argsort(sid0, kind="stable")
            sid, key, rw, gn = sid0[o], key0[o], rw0[o], gn0[o]
            cuts = np.flatnonzero(np.diff(sid)) + 1
            starts = np.concatenate(([0], cuts))
            bounds = [*starts.tolist(), sid.size]
            sids = sid[starts].tolist()
            if rebuild:
                for i, s in enumerate(sids):
                    a, b = bounds[i], bounds[i + 1]
                    edges[s].set(key[a:b], rw[a:b], gn[a:b])
                continue
            tops = np.maximum.reduceat(key, starts).tolist()
            for i, s in enumerate(sids):
                a, b = bounds[i], bounds[i + 1]
                edges[s].push_many(key[a:b], rw[a:b], gn[a:b], tops[i])
        flagged: I64 = rows[bad]
        return flagged

    def _maybe_compact(self, sid: int) -> None:
        live = self._count[sid] + len(self._always[sid])
        for edges in (self._floors[sid], self._ceils[sid]):
            if len(edges) > 2 * live + 1024:
                edges.compact(self._ver)

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
        symbols: Sequence[str] | None = None,
    ) -> bool:
        """Recompute the bucket's row from the exact state; returns whether it is flagged now.

        Not flagged means the exact engine calls the bucket healthy at the screen's prices.
        Call after any event that changes the bucket, or the parameters of a market or asset
        it holds. ``prices`` seeds the screen's price of a symbol it has not seen yet and
        chooses tier bands; the screen's own current prices are used for the slack, so they and
        the state's must agree (``on_price``/``resync`` keep them in step). ``symbols``: the
        bucket's ``symbols()``, when the caller has them.
        """
        self.upserts += 1
        row = self._row.get(key)
        used = self._width
        if row is None:
            row = self._alloc(key)
        else:
            used = self._release(row)
        syms = bucket.symbols() if symbols is None else symbols
        if not syms:
            self._clear(row)
            return False
        price = self._price
        priced = True
        sids: list[int] = []
        for s in syms:
            sid = self._sym.get(s)
            if sid is None:
                sid = self._sid(s)
            if math.isnan(price[sid]):
                if s in prices:
                    self._set_price(sid, _checked_price(prices[s]))
                else:
                    priced = False
            sids.append(sid)
        lin = None
        if priced and not always_check and len(sids) <= _MAX_WIDTH:
            lin = _linearise(bucket, _as_dict(markets), _as_dict(assets), _as_dict(prices), lending,
                             mm_at_entry)
        if lin is None:
            self._clear(row)
            self._alwm[row] = True
            self._alw_sids[row] = sids
            for sid in sids:
                self._always[sid].add(row)
            return True
        if len(sids) > self._width:
            self._reserve(self._c.size, len(sids))
        rel = self.rel_tol
        const, coefs, ceilings = lin
        c = float(const)
        c_lo = c - rel * abs(c) - self.abs_tol
        self._cm[row] = c_lo
        count = self._count
        ent = []
        los = []
        pms = []
        capped = False
        for s, sid in zip(syms, sids, strict=True):
            coef = float(coefs.get(s, _ZERO))
            lo = coef - rel * abs(coef)
            pmax = math.inf
            if ceilings:
                ceiling = ceilings.get(s)
                if ceiling is not None:
                    pmax = math.nextafter(float(ceiling), 0.0)
                    capped = True
            ent.append((sid, lo, pmax))
            los.append(lo)
            pms.append(pmax)
            count[sid] += 1
        if capped and self._epm is None:
            self._new_ceilings()
        esm, elm, epm = self._esm, self._elm, self._epm
        w = self._width
        a = row * w
        k = len(sids)
        for j in range(k):
            esm[a + j] = sids[j]
            elm[a + j] = los[j]
            if epm is not None:
                epm[a + j] = pms[j]
        for j in range(a + k, a + max(k, min(used, w))):  # slots past ``used`` are zero already
            esm[j] = 0
            elm[j] = 0.0
            if epm is not None:
                epm[j] = math.inf
        return self._settle1(row, ent, c_lo)

    def shift(self, key: str, symbol: str, delta: Decimal) -> bool | None:
        """Add ``delta`` (exact) to the bucket's coefficient of ``symbol``; whether it is flagged now.

        For an event that moves only a balance the row already holds, with its sign unchanged
        (``delta`` is the balance change times the weight ``linearise`` uses for that sign): the
        same promise as ``upsert`` at a fraction of the cost. The delta is widened by ``rel_tol``
        like a coefficient and the sum rounded down one ulp, so the row stays at least as wide as
        a fresh ``upsert`` would make it (``|c + d| <= |c| + |d|``). Returns None, changing
        nothing, when the caller must ``upsert`` instead: unknown key, an always-checked row, no
        entry for ``symbol``, or a row whose shifts have widened it by more than
        ``_SHIFT_BUDGET`` times its own band. A deferred row (``defer``) is shifted and stays
        stale (its form, lowered by ``delta``, is still a lower bound), but where that flags it,
        None again: its stale form may be the only reason, so ``upsert`` must answer.
        """
        row = self._row.get(key)
        sid = self._sym.get(symbol)
        if row is None or sid is None or self._alwm[row]:
            return None
        a = row * self._width
        esm = self._esm
        j = -1
        for i in range(self._width):
            if esm[a + i] == sid:
                j = i
                break
        if j < 0:
            return None
        d = float(delta)
        widen = self.rel_tol * abs(d)
        spent = self._drift.get(row, 0.0) + widen
        elm = self._elm
        lo: float = elm[a + j]
        if spent > _SHIFT_BUDGET * self.rel_tol * abs(lo) + self.abs_tol:
            return None  # re-linearise: the band would keep growing with repeated shifts
        new = math.nextafter(lo + (d - widen), -math.inf)
        self.shifts += 1
        elm[a + j] = new
        self._drift[row] = spent
        c: float = self._cm[row]
        ent = self._entries(row)  # with the new coefficient
        if new >= lo:
            # the row only gained (prices are positive): its headroom is at least the old one at
            # every price, so the bands it holds (or its empty band, if flagged) stay valid
            h, broken = self._headroom(ent, c)
            flagged = broken or not h >= 0
        else:
            flagged = self._settle1(row, ent, c)
        return None if flagged and row in self._dirty else flagged

    def defer(self, key: str) -> bool:
        """Let the bucket's row lag behind an update that can only raise its slack at every price
        (a balance grew, the bucket's symbols unchanged); whether it may, i.e. whether the row is
        linear and unflagged (then it is still unflagged: its stored form stays a lower bound of
        the slack, and its bands stay valid).

        The row is marked stale: a tick that crosses its band, ``check`` and ``headroom``
        re-linearise it through ``refresh`` first. Without ``refresh`` nothing is deferred.
        """
        if self.refresh is None:
            return False
        row = self._row.get(key)
        if row is None or self._alwm[row] or self._hotm[row]:
            return False
        self._dirty.add(row)
        self.deferred += 1
        return True

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
        new = float(price)  # _checked_price inlined (every tick)
        if not 0.0 < new < math.inf:
            raise ValueError(f"price must be finite and > 0, got {price}")
        if self.resync_every and self.ticks_since_resync >= self.resync_every:
            self.resync()
        self.ticks_since_resync += 1
        sid = self._sym.get(symbol)
        if sid is None:
            sid = self._sid(symbol)
        quiet = self._wt[sid] == _QUIET
        self._price[sid] = new  # _px is brought up to date where it is read (_settle_many)
        moves = self._moves[sid] = self._moves[sid] + 1
        if moves == 2:
            self._wt[sid] = 1.0
            self._wa[sid] = 1.0
        unbanded = self._unbanded[sid] if quiet else None
        floors, ceils = self._floors[sid], self._ceils[sid]
        if floors.top <= new and ceils.top <= -new and not unbanded:
            # no band left (most ticks): only the always-checked rows, no lists, no arrays
            always = self._always[sid]
            return sorted(always) if always else []
        rows: list[I32] = []
        gens: list[I32] = []
        pairs: list[tuple[int, int]] = []
        if floors.top > new:
            r, g = floors.pop(new, pairs)
            rows += r
            gens += g
        if ceils.top > -new:
            r, g = ceils.pop(-new, pairs)
            rows += r
            gens += g
        flagged: list[int] = []
        if rows or pairs or unbanded:
            verm = self._verm
            if rows:
                if pairs:
                    rows.append(np.array([p[0] for p in pairs], np.int32))
                    gens.append(np.array([p[1] for p in pairs], np.int32))
                rr = rows[0] if len(rows) == 1 else np.concatenate(rows)
                gg = gens[0] if len(gens) == 1 else np.concatenate(gens)
                if rr.size <= _SMALL_SETTLE:  # a few: Python beats numpy's per-call cost
                    hit = sorted({r for r, g in zip(rr.tolist(), gg.tolist(), strict=True) if verm[r] == g})
                else:
                    hit = np.unique(rr[self._ver[rr] == gg]).tolist()
            else:
                hit = sorted({r for r, g in pairs if verm[r] == g})
            if unbanded:
                # rows holding this quiet symbol with no edge for it (noted by _settle1): settled
                # on each of its ticks (and given edges on its second move, when it weighs 1)
                keys = self._keys
                hit = sorted({*hit, *(r for r in unbanded if keys[r] is not None)})
                unbanded.clear()
            flagged = self._settle_hit(sid, hit)
        if self._always[sid]:
            flagged.extend(self._always[sid])
            flagged.sort()
        return flagged

    def _settle_hit(self, sid: int, hit: list[int]) -> list[int]:
        """Settle the rows a tick of ``sid`` reached (ascending): the flagged ones, ascending."""
        refreshed: list[int] = []
        if self._dirty:
            hit, refreshed = self._refresh_dirty(hit)
        if len(hit) < _SMALL_SETTLE:
            cm = self._cm
            flagged = [row for row in hit if self._settle1(row, self._entries(row), cm[row])]
        else:
            flagged = self._settle_many(np.array(hit, np.int64)).tolist()
        if refreshed:
            flagged = sorted(flagged + refreshed)
        self._maybe_compact(sid)
        return flagged

    def _refresh_dirty(self, hit: list[int]) -> tuple[list[int], list[int]]:
        """Split crossed rows into those to settle and the ``defer``-red ones, which are re-linearised
        through ``refresh`` instead (their stored form is stale); returns ``(to settle, flagged
        among the refreshed)``."""
        dirty = self._dirty
        stale = [r for r in hit if r in dirty]
        if not stale:
            return hit, []
        rest = [r for r in hit if r not in dirty]
        refresh = self.refresh
        assert refresh is not None  # defer marks rows only when it is set
        keys = self._keys
        flagged = []
        for r in stale:
            key = keys[r]
            assert key is not None
            if refresh(key):  # upsert: the row is not stale any more
                flagged.append(self._row[key])
        return rest, flagged

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
        """Every bucket whose health moves with ``symbol``, sorted by key (a scan of the rows)."""
        sid = self._sym.get(symbol)
        if sid is None:
            return []
        n = len(self._keys)
        rows = np.flatnonzero((self._es[:n] == sid).any(axis=1)).tolist()
        keys = self._keys
        return sorted(keys[r] for r in {*rows, *self._always[sid]})  # type: ignore[misc]

    def check(self, key: str) -> bool:
        """Whether the bucket is flagged at the screen's current prices (unknown key: False)."""
        row = self._row.get(key)
        if row is None:
            return False
        if row in self._dirty and self.refresh is not None:
            return self.refresh(key)
        if self._alwm[row]:
            return True
        h, broken = self._fresh(row)
        return broken or not h >= 0

    def headroom(self, key: str) -> float:
        """The bucket's slack minus its tolerance band, in quote units (-inf: always checked)."""
        row = self._row[key]
        if row in self._dirty and self.refresh is not None:
            self.refresh(key)
        return -math.inf if self._alwm[row] else self._fresh(row)[0]

    def price(self, symbol: str) -> float | None:
        """The screen's current price of ``symbol`` (None if it has none)."""
        sid = self._sym.get(symbol)
        return None if sid is None or math.isnan(self._price[sid]) else self._price[sid]

    # ------------------------------------------------------------------ full rescans

    def resync(self, prices: Mapping[str, Decimal | float] | None = None) -> None:
        """Settle every row again at the current prices (a full numpy rescan).

        ``prices`` (optional) sets symbols' prices first. Headroom is always computed afresh
        from a row's coefficients, so nothing drifts; this drops every stale edge and re-splits
        each row's headroom between its symbols.
        """
        for s, p in (prices or {}).items():
            self._set_price(self._sid(s), _checked_price(p))
        n = len(self._keys)
        linear = np.flatnonzero((self._es[:n] != 0).any(axis=1) & ~self._alw[:n])
        self._settle_many(linear, rebuild=True)
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
                self._set_price(sid, _checked_price(prices[s]))
            elif math.isnan(self._price[sid]):
                raise ValueError(f"no price for {s!r}")
        sid_e = sid_map[es] if es.size else es
        order = np.lexsort((sid_e, er))
        r_sorted, s_sorted = er[order], sid_e[order]
        if order.size > 1 and ((s_sorted[1:] == s_sorted[:-1]) & (r_sorted[1:] == r_sorted[:-1])).any():
            raise ValueError("two entries for one bucket and symbol")
        rel = self.rel_tol
        per_row = np.bincount(r_sorted, minlength=nb)
        width = int(per_row.max()) if nb else 0
        if width > _MAX_WIDTH:
            raise ValueError(f"a bucket has more than {_MAX_WIDTH} symbols")
        self._reserve(nb, max(width, 1))
        starts = np.searchsorted(r_sorted, np.arange(nb))
        slot = np.arange(r_sorted.size) - starts[r_sorted]
        self._es[r_sorted, slot] = s_sorted
        self._el[r_sorted, slot] = (ec - rel * np.abs(ec))[order]
        if np.isfinite(ep).any():
            self._new_ceilings()
            assert self._ep is not None
            eo = ep[order]
            self._ep[r_sorted, slot] = np.where(np.isfinite(eo), np.nextafter(eo, 0.0), math.inf)
        self._c[:nb] = np.where(per_row > 0, c - rel * np.abs(c) - self.abs_tol, math.inf)
        self._keys = list(keys)
        self._row = dict(zip(keys, range(nb), strict=True))
        for sid, n in enumerate(np.bincount(s_sorted, minlength=len(self._names)).tolist()):
            self._count[sid] += n
        self.resync()
        self.resyncs -= 1  # loading is not a resync

    def nbytes(self) -> int:
        """Bytes held by the row arrays, the band edges and the row sets (stale rows, quiet
        symbols' notes: ~60 B a member), not the key list and dict."""
        rows = (self._c.nbytes + self._ver.nbytes + self._alw.nbytes + self._hot.nbytes + self._es.nbytes
                + self._el.nbytes)
        if self._ep is not None:
            rows += self._ep.nbytes
        members = len(self._dirty) + sum(len(s) for s in self._unbanded)
        return rows + _SET_MEMBER_BYTES * members + sum(e.nbytes() for e in (*self._floors, *self._ceils))

    def stats(self) -> dict[str, int]:
        """Counts for benchmarks and metrics: buckets, entries, stale edges, always-checked, bytes."""
        n = len(self._keys)
        return {
            "buckets": len(self._row),
            "symbols": len(self._names) - 1,
            "entries": int(np.count_nonzero(self._es[:n])),
            "edges": sum(len(e) for e in (*self._floors, *self._ceils)),
            "dead_entries": sum(e.stale(self._ver) for e in (*self._floors, *self._ceils)),
            "always_check": int(np.count_nonzero(self._alw[:n])),
            "bytes": self.nbytes(),
            "ticks_since_resync": self.ticks_since_resync,
            "resyncs": self.resyncs,
            "upserts": self.upserts,
            "shifts": self.shifts,
            "deferred": self.deferred,
            "stale_rows": len(self._dirty),
        }


def _flat(a: Any, fmt: Any) -> Any:
    """A 1-d memoryview of the C-contiguous array ``a`` (item format ``fmt``)."""
    return a.data.cast("B").cast(fmt) if a.size else memoryview(b"").cast(fmt)


def _sized(a: Any, cap: int, fill: float = 0) -> Any:
    out = np.full(cap, fill, a.dtype)
    k = min(cap, a.size)
    out[:k] = a[:k]
    return out


def _checked_price(price: Decimal | float) -> float:
    p = float(price)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"price must be finite and > 0, got {price}")
    return p
