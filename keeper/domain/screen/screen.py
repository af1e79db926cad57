"""The screen: which buckets MAY be liquidatable after a price moves (the package's contract).

``Screen`` keeps one row per bucket (``keeper.domain.screen.rows``): its linear form
(``keeper.domain.screen.linear``), widened, and per symbol a band of prices inside which the
row cannot reach zero headroom (``keeper.domain.screen.edges``). A tick takes only the rows
whose band it left, settles them again (one by one in Python when a few, vectorised when many;
a crash's thousands are only judged, their bands left to ``settle``) and flags those with
``h < 0``; every other row is provably unflagged. A flagged row has an empty band: it is looked
at on every tick of its symbols until it is healthy or upserted. ``resync`` settles every row
again (and drops stale edges); it runs by itself every ``resync_every`` ticks (a count, not a
clock); ``tidy`` is upkeep for an idle moment.

A bucket the screen cannot linearise (unknown market, no maintenance parameter, a missing price,
a profile with non-linear health: ``always_check=True``) is a candidate on every tick of any
symbol it is exposed to; so is a tiered bucket whose price has left its tier band, until it is
upserted again (a bucket that lacked a price is, through ``refresh``, at that price's first tick).

Pure: no I/O, no clock, no randomness. Results are sorted, so they are the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Final

import numpy as np
import numpy.typing as npt

from keeper.domain.model import AssetParams, Bucket, MarketParams
from keeper.domain.screen.linear import as_dict, linear_form
from keeper.domain.screen.load import MAX_WIDTH, fill_rows
from keeper.domain.screen.rows import QUIET_WEIGHT, Entry, RowTable, checked_price

__all__ = ["Screen"]

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

_ZERO: Final = Decimal(0)
_SHIFT_BUDGET: Final = 1024
"""How many times its own band (``rel_tol * |coef|``) a coefficient may widen through ``shift``
before the row must be re-linearised: extra false positives only within ~1e-6 of the boundary."""
_TICK_COMPACT: Final = (4, 4096)
"""A tick compacts the edges of its symbol only past 4 times its live rows + 4,096 (``tidy``
keeps them within 2 times + 1,024 in idle moments): the sort a compaction costs stays out of
a burst's first decisions while the keeper keeps up."""
_SMALL_SETTLE: Final = 16
"""Crossed rows settled one by one in Python below this count (numpy's call cost dominates)."""
_SETTLE_LATER: Final = 512
"""From this many crossed rows a tick only finds the flagged ones and leaves the bands to
``settle`` (the keeper's first decisions of a crash go first)."""


class Screen(RowTable):
    """A conservative health screen: it never misses a bucket the exact engine would call
    liquidatable (with the linear models of ``linearise`` and the tolerances ``rel_tol`` and
    ``abs_tol``); false positives are fine, the keeper confirms every candidate exactly.

    ``abs_tol`` must cover the profile's rounding in the bucket's quote units. Every method that
    returns buckets returns them sorted.
    """

    def __init__(self, *, rel_tol: float = 1e-9, abs_tol: float = 1e-6, resync_every: int = 200_000) -> None:
        if not (rel_tol > 0 and abs_tol >= 0 and resync_every >= 0):
            raise ValueError("rel_tol must be > 0, abs_tol >= 0 and resync_every >= 0")
        super().__init__(rel_tol=rel_tol, abs_tol=abs_tol)
        self.resync_every = resync_every
        self._one_by_one_below = _SMALL_SETTLE
        """Crossed rows are settled one by one (``_settle_one``, the reference) below this count,
        vectorised (``_settle_many``) from it: the same promise (tests set it to 0)."""
        self._settle_later_from = _SETTLE_LATER
        """From this many crossed rows, a tick leaves their settling to ``settle`` (tests vary it)."""
        self._unsettled: I64 | None = None
        """Rows a tick crossed and flagged without settling them (``settle``): their old edges
        are popped and their generations not moved on yet."""
        self.refresh: Callable[[str], bool] | None = None
        """Re-linearises a bucket from the exact state (``upsert``), returning whether it is flagged:
        set by the owner of the state; without it ``defer`` never defers."""
        self.ticks_since_resync = 0
        self.resyncs = 0
        self.upserts = 0
        self.shifts = 0
        self.deferred = 0
        """Counts of rows re-linearised, moved by one term, and left to lag (metrics)."""

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
        if self._unsettled is not None:
            self.settle()
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
            sid = self._symbol_id.get(s)
            if sid is None:
                sid = self._sid(s)
            if math.isnan(price[sid]):
                if s in prices:
                    self._set_price(sid, checked_price(prices[s]))
                else:
                    priced = False
            sids.append(sid)
        form = None
        if priced and not always_check and len(sids) <= MAX_WIDTH:
            form = linear_form(bucket, as_dict(markets), as_dict(assets), as_dict(prices), lending,
                               mm_at_entry)
        if form is None:
            self._clear(row)
            self._always_view[row] = True
            self._always_symbols[row] = sids
            for sid in sids:
                self._always_rows[sid].add(row)
            return True
        if len(sids) > self._width:
            self._reserve(self._const_lo.size, len(sids))
        rel = self.rel_tol
        const, coefs, tier_ceilings = form
        c = float(const)
        const_lo = c - rel * abs(c) - self.abs_tol
        self._const_lo_view[row] = const_lo
        row_count = self._row_count
        entries: list[Entry] = []
        los: list[float] = []
        ceilings: list[float] = []
        capped = False
        for s, sid in zip(syms, sids, strict=True):
            coef = float(coefs.get(s, _ZERO))
            lo = coef - rel * abs(coef)
            ceiling = math.inf
            if tier_ceilings:
                tier_ceiling = tier_ceilings.get(s)
                if tier_ceiling is not None:
                    ceiling = math.nextafter(float(tier_ceiling), 0.0)
                    capped = True
            entries.append((sid, lo, ceiling))
            los.append(lo)
            ceilings.append(ceiling)
            row_count[sid] += 1
        if capped and self._ceiling_view is None:
            self._new_ceilings()
        symbol_view, coef_view, ceiling_view = self._symbol_view, self._coef_view, self._ceiling_view
        width = self._width
        start = row * width
        n = len(sids)
        for j in range(n):
            symbol_view[start + j] = sids[j]
            coef_view[start + j] = los[j]
            if ceiling_view is not None:
                ceiling_view[start + j] = ceilings[j]
        for j in range(start + n, start + max(n, min(used, width))):  # slots past ``used`` are zero already
            symbol_view[j] = 0
            coef_view[j] = 0.0
            if ceiling_view is not None:
                ceiling_view[j] = math.inf
        return self._settle_one(row, entries, const_lo)

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
        if self._unsettled is not None:
            self.settle()
        row = self._row.get(key)
        sid = self._symbol_id.get(symbol)
        if row is None or sid is None or self._always_view[row]:
            return None
        start = row * self._width
        symbol_view = self._symbol_view
        slot = -1
        for i in range(self._width):
            if symbol_view[start + i] == sid:
                slot = i
                break
        if slot < 0:
            return None
        d = float(delta)
        widen = self.rel_tol * abs(d)
        spent = self._shift_widening.get(row, 0.0) + widen
        coef_view = self._coef_view
        lo: float = coef_view[start + slot]
        if spent > _SHIFT_BUDGET * self.rel_tol * abs(lo) + self.abs_tol:
            return None  # re-linearise: the band would keep growing with repeated shifts
        new = math.nextafter(lo + (d - widen), -math.inf)
        self.shifts += 1
        coef_view[start + slot] = new
        self._shift_widening[row] = spent
        const_lo: float = self._const_lo_view[row]
        entries = self._entries(row)  # with the new coefficient
        if new >= lo:
            # the row only gained (prices are positive): its headroom is at least the old one at
            # every price, so the bands it holds (or its empty band, if flagged) stay valid
            h, broken = self._headroom(entries, const_lo)
            flagged = broken or not h >= 0
        else:
            flagged = self._settle_one(row, entries, const_lo)
        return None if flagged and row in self._deferred_rows else flagged

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
        if self._unsettled is not None:
            self.settle()
        row = self._row.get(key)
        if row is None or self._always_view[row] or self._flagged_view[row]:
            return False
        self._deferred_rows.add(row)
        self.deferred += 1
        return True

    def remove(self, key: str) -> None:
        """Forget the bucket (closed account, emptied bucket); unknown keys are ignored."""
        if self._unsettled is not None:
            self.settle()
        row = self._row.pop(key, None)
        if row is None:
            return
        self._detach(row)
        self._keys[row] = None
        self._free.append(row)

    # ------------------------------------------------------------------ ticks

    def _tick(self, symbol: str, price: Decimal | float) -> list[int]:
        """Move ``symbol`` to ``price``; the flagged rows exposed to it, ascending."""
        new = float(price)  # checked_price inlined (every tick)
        if not 0.0 < new < math.inf:
            raise ValueError(f"price must be finite and > 0, got {price}")
        if self._unsettled is not None:
            self.settle()
        if self.resync_every and self.ticks_since_resync >= self.resync_every:
            self.resync()
        self.ticks_since_resync += 1
        sid = self._symbol_id.get(symbol)
        if sid is None:
            sid = self._sid(symbol)
        quiet = self._weight[sid] == QUIET_WEIGHT
        first = math.isnan(self._price[sid])
        self._price[sid] = new  # _price_array is brought up to date where it is read (_settle_many)
        if first and self._always_rows[sid] and self.refresh is not None:
            # rows checked on every tick only for want of this price get their linear form now
            keys = self._keys
            for key in [keys[r] for r in sorted(self._always_rows[sid])]:
                self.refresh(key)  # type: ignore[arg-type]
        moves = self._moves[sid] = self._moves[sid] + 1
        if moves == 2:
            self._weight[sid] = 1.0
            self._weight_array[sid] = 1.0
        unbanded = self._unbanded[sid] if quiet else None
        floors, ceilings = self._floors[sid], self._ceilings[sid]
        marked = self._flagged_rows[sid]
        if floors.top <= new and ceilings.top <= -new and not unbanded and not marked:
            # no band left (most ticks): only the always-checked rows, no lists, no arrays
            always = self._always_rows[sid]
            return sorted(always) if always else []
        rows: list[I32] = []
        gens: list[I32] = []
        pairs: list[tuple[int, int]] = []
        if marked:  # flagged rows (an empty band): every tick takes them
            if len(marked) <= _SMALL_SETTLE:
                pairs.extend(marked.items())
            else:
                rows.append(np.fromiter(marked.keys(), np.int32, len(marked)))
                gens.append(np.fromiter(marked.values(), np.int32, len(marked)))
            marked.clear()
        if floors.top > new:
            crossed_rows, crossed_gens = floors.pop(new, pairs)
            rows += crossed_rows
            gens += crossed_gens
        if ceilings.top > -new:
            crossed_rows, crossed_gens = ceilings.pop(-new, pairs)
            rows += crossed_rows
            gens += crossed_gens
        flagged: list[int] = []
        if rows or pairs or unbanded:
            generation_view = self._generation_view
            if rows:
                if pairs:
                    rows.append(np.array([p[0] for p in pairs], np.int32))
                    gens.append(np.array([p[1] for p in pairs], np.int32))
                all_rows = rows[0] if len(rows) == 1 else np.concatenate(rows)
                all_gens = gens[0] if len(gens) == 1 else np.concatenate(gens)
                if all_rows.size <= _SMALL_SETTLE:  # a few: Python beats numpy's per-call cost
                    hit = sorted({r for r, g in zip(all_rows.tolist(), all_gens.tolist(), strict=True)
                                  if generation_view[r] == g})
                else:
                    hit = _unique(all_rows[self._generation[all_rows] == all_gens]).tolist()
            else:
                hit = sorted({r for r, g in pairs if generation_view[r] == g})
            if unbanded:
                # rows holding this quiet symbol with no edge for it (noted by _settle_one): settled
                # on each of its ticks (and given edges on its second move, when it weighs 1)
                keys = self._keys
                hit = sorted({*hit, *(r for r in unbanded if keys[r] is not None)})
                unbanded.clear()
            flagged = self._settle_hit(sid, hit)
        if self._always_rows[sid]:
            flagged.extend(self._always_rows[sid])
            flagged.sort()
        return flagged

    def _settle_hit(self, sid: int, hit: list[int]) -> list[int]:
        """Settle the rows a tick of ``sid`` reached (ascending): the flagged ones, ascending.
        Many rows are only judged here (``_unsettled``): ``settle`` gives them their bands."""
        refreshed: list[int] = []
        if self._deferred_rows:
            hit, refreshed = self._refresh_deferred(hit)
        if len(hit) < self._one_by_one_below:
            const_view = self._const_lo_view
            flagged = [row for row in hit if self._settle_one(row, self._entries(row), const_view[row])]
        elif len(hit) < self._settle_later_from:
            flagged = self._settle_many(np.array(hit, np.int64)).tolist()
        else:
            rows = np.array(hit, np.int64)
            flagged = rows[self._judge(rows)[5]].tolist()
            self._unsettled = rows
        if refreshed:
            flagged = sorted(flagged + refreshed)
        if self._unsettled is None:
            self._maybe_compact(sid, *_TICK_COMPACT)
        return flagged

    def settle(self) -> None:
        """Give the rows the last tick only judged their bands (``_settle_many``: the same
        flags, the same edges and notes as if the tick had settled them). Every method that
        reads or changes rows or bands calls it first; the keeper calls it once a burst's first
        decisions are out (``KeeperCore.continue_backlog``)."""
        rows = self._unsettled
        if rows is None:
            return
        self._unsettled = None
        self._settle_many(rows)

    def _refresh_deferred(self, hit: list[int]) -> tuple[list[int], list[int]]:
        """Split crossed rows into those to settle and the ``defer``-red ones, which are re-linearised
        through ``refresh`` instead (their stored form is stale); returns ``(to settle, flagged
        among the refreshed)``."""
        deferred = self._deferred_rows
        stale = [r for r in hit if r in deferred]
        if not stale:
            return hit, []
        rest = [r for r in hit if r not in deferred]
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

    def tidy(self) -> int:
        """Drop the stale edges of every symbol past twice its live rows + 1,024 and sort edges
        pushed one by one into the arrays (``BandEdges.tidy``); returns how many were dropped.

        Maintenance for a moment without work (the projector calls it when a read finds nothing
        new): a tick does it only for its own symbol and at a looser bound, so a burst's first
        decisions do not pay for the stale edges of the one before. Changes no answer. (A stale
        note of a flagged row needs none: the next tick of its symbol takes every note.)
        """
        self.settle()
        dropped = 0
        floors, ceilings = self._floors, self._ceilings
        for sid in range(1, len(self._symbols)):
            dropped += self._maybe_compact(sid)
            floors[sid].tidy()
            ceilings[sid].tidy()
        return dropped

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
        sid = self._symbol_id.get(symbol)
        if sid is None:
            return []
        n = len(self._keys)
        rows = np.flatnonzero((self._entry_symbol[:n] == sid).any(axis=1)).tolist()
        keys = self._keys
        return sorted(keys[r] for r in {*rows, *self._always_rows[sid]})  # type: ignore[misc]

    def check(self, key: str) -> bool:
        """Whether the bucket is flagged at the screen's current prices (unknown key: False)."""
        if self._unsettled is not None:
            self.settle()
        row = self._row.get(key)
        if row is None:
            return False
        if row in self._deferred_rows and self.refresh is not None:
            return self.refresh(key)
        if self._always_view[row]:
            return True
        h, broken = self._fresh(row)
        return broken or not h >= 0

    def headroom(self, key: str) -> float:
        """The bucket's slack minus its tolerance band, in quote units (-inf: always checked)."""
        row = self._row[key]
        if row in self._deferred_rows and self.refresh is not None:
            self.refresh(key)
        return -math.inf if self._always_view[row] else self._fresh(row)[0]

    def headrooms(self, keys: Sequence[str]) -> list[float]:
        """``headroom`` of each of ``keys``, in order (-inf for a key the screen does not hold):
        the same numbers, summed in the same order, for many rows at once (a burst's ordering)."""
        out: list[float] = self._headroom_of_rows(self._rows_of(keys)).tolist()
        return out

    def by_headroom(self, keys: list[str]) -> list[str]:
        """``keys`` (sorted, unique) least ``headroom`` first, ties by key: ``sorted(keys,
        key=lambda k: (headroom(k), k))``, a key the screen does not hold first of all."""
        order = np.argsort(self._headroom_of_rows(self._rows_of(keys)), kind="stable").tolist()
        return [keys[i] for i in order]

    def _rows_of(self, keys: Sequence[str]) -> I64:
        """The rows of ``keys`` (-1 for a key the screen does not hold), a lagging row brought up
        to date first, as ``headroom`` does."""
        row_of = self._row
        rows = [row_of.get(key, -1) for key in keys]
        deferred = self._deferred_rows
        if deferred and self.refresh is not None:
            for i, row in enumerate(rows):
                if row >= 0 and row in deferred:
                    key = keys[i]
                    self.refresh(key)
                    rows[i] = row_of[key]
        return np.array(rows, np.int64)

    def price(self, symbol: str) -> float | None:
        """The screen's current price of ``symbol`` (None if it has none)."""
        sid = self._symbol_id.get(symbol)
        return None if sid is None or math.isnan(self._price[sid]) else self._price[sid]

    # ------------------------------------------------------------------ full rescans

    def resync(self, prices: Mapping[str, Decimal | float] | None = None) -> None:
        """Settle every row again at the current prices (a full numpy rescan).

        ``prices`` (optional) sets symbols' prices first. Headroom is always computed afresh
        from a row's coefficients, so nothing drifts; this drops every stale edge and re-splits
        each row's headroom between its symbols.
        """
        self.settle()
        for s, p in (prices or {}).items():
            self._set_price(self._sid(s), checked_price(p))
        n = len(self._keys)
        linear = np.flatnonzero((self._entry_symbol[:n] != 0).any(axis=1) & ~self._always[:n])
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
        fill_rows(self, keys, const, entry_row, entry_symbol, coef, symbols=symbols, prices=prices, pmax=pmax)
        self.resync()
        self.resyncs -= 1  # loading is not a resync

    def stats(self) -> dict[str, int]:
        """Counts for benchmarks and metrics: buckets, entries, stale edges, always-checked, bytes."""
        self.settle()
        n = len(self._keys)
        sides = (*self._floors, *self._ceilings)
        return {
            "buckets": len(self._row),
            "symbols": len(self._symbols) - 1,
            "entries": int(np.count_nonzero(self._entry_symbol[:n])),
            "edges": sum(len(e) for e in sides),
            "flagged_notes": sum(len(d) for d in self._flagged_rows),
            "dead_entries": sum(e.stale(self._generation) for e in sides),
            "always_check": int(np.count_nonzero(self._always[:n])),
            "bytes": self.nbytes(),
            "ticks_since_resync": self.ticks_since_resync,
            "resyncs": self.resyncs,
            "upserts": self.upserts,
            "shifts": self.shifts,
            "deferred": self.deferred,
            "stale_rows": len(self._deferred_rows),
        }


def _unique(rows: I32) -> I32:
    """``np.unique(rows)``: sorted, each once (a sort and a neighbour test: several times
    cheaper than ``np.unique``'s hashing for the few thousand rows of a burst)."""
    out = np.sort(rows)
    if out.size > 1:
        keep = np.empty(out.size, np.bool_)
        keep[0] = True
        np.not_equal(out[1:], out[:-1], out=keep[1:])
        out = out[keep]
    return out
