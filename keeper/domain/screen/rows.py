"""The screen's rows and bands: widened linear forms in numpy columns, and settling a row.

A row is one bucket's linear form (``keeper.domain.screen.linear``) in floats, widened by a
relative band ``rel_tol``: its headroom is ``h = slack - rel_tol * (|const| + sum |coef_s| *
P_s) - abs_tol`` (prices are positive, so the band is folded into the stored numbers:
``const_lo = const - rel_tol * |const| - abs_tol`` and ``lo = coef - rel_tol * |coef|``), and the
row is flagged when ``h < 0`` or a price is above its entry's ceiling. ``h`` is always computed
afresh from a row's stored numbers at the current prices, so nothing drifts.

Settling a row splits its headroom between its symbols: each symbol gets a band of prices inside
which its term cannot use up more than its share, pushed as one edge per side into that symbol's
``BandEdges``. Shares go by the terms' values ``weight_s * |lo_s| * P_s`` (``weight``: 1, or
``QUIET_WEIGHT`` for a symbol that has not moved yet), so every moving symbol gets the same
relative band ``h / sum(weight * |lo| * P)``. While every symbol of a row stays inside its band
the row's headroom stays ``>= 0``. A flagged row gets an empty band: it is noted, with its
generation, in each of its symbols' ``_flagged_rows``, and every tick of those symbols takes it
(a note, not an edge: a burst flags thousands of rows at once, and a note costs a dict entry
where an edge would cost a sorted merge; a row noted again overwrites its note).

Storage. Row ``r`` holds ``const_lo`` in ``_const_lo[r]`` and up to ``_width`` entries ``(symbol id,
lo, price ceiling)`` in the 2-d arrays ``_entry_symbol``/``_entry_coef``/``_entry_ceiling``
(symbol id 0 is a placeholder with price 1 and coefficient 0; the ceilings are allocated with
the first finite one). One row's numbers are read and written through flat memoryviews of those
arrays (``*_view``), as Python ints and floats: several times cheaper than numpy scalar or row
indexing; the vectorised paths use the arrays. Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from keeper.domain.screen.edges import EMPTY_INTS, EMPTY_KEYS, BandEdges

__all__ = ["GEN_MASK", "QUIET_WEIGHT", "Entry", "RowTable", "checked_price"]

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
_A = TypeVar("_A", bound=np.ndarray)

Entry = tuple[int, float, float]
"""One entry of a row: ``(symbol id, lo, price ceiling)`` (``lo``: the widened coefficient)."""

QUIET_WEIGHT: Final = 1.0 / 1024
"""Budget weight of a symbol not ticked since first priced (a stablecoin): rarely worth a share."""
GEN_MASK: Final = 0x7FFFFFFF
"""Row generations (int32) wrap to 0 after 2**31 - 1 settles of one row: an edge that old was
compacted away long before."""
_SET_MEMBER_BYTES: Final = 60
"""A row number in a Python set: its int (28 B) and ~1.5 hash-table slots."""
_DICT_ITEM_BYTES: Final = 100
"""A row's note in a dict: two ints (56 B) and ~1.5 entries of a compact dict (hash, key, value)."""


class RowTable:
    """Symbols with their prices, rows of widened linear forms, and the band edges per symbol.

    The storage and the settling ``Screen`` is built on (it adds the updates and the ticks). Keys
    are bucket keys (``account/bucket``); rows are recycled through a free list.
    """

    def __init__(self, *, rel_tol: float, abs_tol: float) -> None:
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self._symbol_id: dict[str, int] = {}
        self._symbols: list[str] = [""]
        self._price: list[float] = [1.0]
        """Per symbol id its current price (NaN: none yet); id 0 is the placeholder."""
        self._price_array: F64 = np.ones(8)
        """``_price`` as an array, for gathers over many rows (copied from ``_price`` before each)."""
        self._moves: list[int] = [0]
        self._weight: list[float] = [0.0]
        """Budget weight per symbol: 1 once it has ticked twice, ``QUIET_WEIGHT`` before."""
        self._weight_array: F64 = np.zeros(8)
        self._row_count: list[int] = [0]
        """Live linear rows per symbol (how many edges a compact side should hold)."""
        self._always_rows: list[set[int]] = [set()]
        """Per symbol: the always-checked rows exposed to it."""
        self._unbanded: list[set[int]] = [set()]
        """Per quiet symbol: rows settled with no edge for it (see ``_settle_one``)."""
        self._flagged_rows: list[dict[int, int]] = [{}]
        """Per symbol: the rows flagged at their last settle (an empty band), each with its
        generation then (a stale note is skipped, as a stale edge is)."""
        self._floors: list[BandEdges] = [BandEdges()]
        self._ceilings: list[BandEdges] = [BandEdges()]
        self._keys: list[str | None] = []
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._width = 4
        self._const_lo: F64 = np.zeros(0)
        self._generation: I32 = np.zeros(0, np.int32)
        self._always = np.zeros(0, np.bool_)
        """Per row: no linear form, a candidate on every tick of its symbols."""
        self._flagged = np.zeros(0, np.bool_)
        """Per row: flagged at its last settle (its band is empty)."""
        self._always_symbols: dict[int, list[int]] = {}
        """Per always-checked row: the symbol ids it is exposed to."""
        self._entry_symbol: I32 = np.zeros((0, self._width), np.int32)
        self._entry_coef: F64 = np.zeros((0, self._width))
        self._entry_ceiling: F64 | None = None
        """Price ceilings per entry; allocated when the first finite one arrives (tiers)."""
        self._const_lo_view: memoryview[float] = _float_view(self._const_lo)
        self._generation_view: memoryview[int] = _int_view(self._generation)
        self._always_view: memoryview[bool] = _bool_view(self._always)
        self._flagged_view: memoryview[bool] = _bool_view(self._flagged)
        self._symbol_view: memoryview[int] = _int_view(self._entry_symbol)
        self._coef_view: memoryview[float] = _float_view(self._entry_coef)
        self._ceiling_view: memoryview[float] | None = None
        """Flat memoryviews of the row arrays above (``_views``)."""
        self._deferred_rows: set[int] = set()
        """Rows whose stored form lags behind their bucket by updates that only raised its slack
        (``Screen.defer``): still a valid lower bound, refreshed when a tick crosses their band."""
        self._shift_widening: dict[int, float] = {}
        """Per row shifted by ``Screen.shift`` since its last ``upsert``: the widening spent so far."""

    # ------------------------------------------------------------------ rows and symbols

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, key: object) -> bool:
        return key in self._row

    def _sid(self, symbol: str) -> int:
        """The symbol's id (a new one, with no price yet, for a symbol not seen before)."""
        sid = self._symbol_id.get(symbol)
        if sid is None:
            sid = self._symbol_id[symbol] = len(self._symbols)
            self._symbols.append(symbol)
            self._price.append(math.nan)
            self._moves.append(0)
            self._weight.append(QUIET_WEIGHT)
            self._row_count.append(0)
            self._always_rows.append(set())
            self._unbanded.append(set())
            self._flagged_rows.append({})
            self._floors.append(BandEdges())
            self._ceilings.append(BandEdges())
            if sid >= self._price_array.size:
                self._price_array = _sized(self._price_array, 2 * sid, math.nan)
                self._weight_array = _sized(self._weight_array, 2 * sid, QUIET_WEIGHT)
            self._price_array[sid] = math.nan
            self._weight_array[sid] = QUIET_WEIGHT
        return sid

    def _set_price(self, sid: int, price: float) -> None:
        self._price[sid] = price
        self._price_array[sid] = price

    def _reserve(self, cap: int, width: int) -> None:
        """Grow the row arrays to ``cap`` rows of ``width`` entries (never shrinks)."""
        old, old_width = self._const_lo.size, self._width
        if cap <= old and width <= old_width:
            return
        cap = max(cap, old)
        width = max(width, old_width)
        self._const_lo = _sized(self._const_lo, cap, math.inf)
        self._generation = _sized(self._generation, cap)
        self._always = _sized(self._always, cap)
        self._flagged = _sized(self._flagged, cap)
        symbols = np.zeros((cap, width), np.int32)
        symbols[:old, :old_width] = self._entry_symbol
        coefs = np.zeros((cap, width))
        coefs[:old, :old_width] = self._entry_coef
        self._entry_symbol, self._entry_coef, self._width = symbols, coefs, width
        if self._entry_ceiling is not None:
            ceilings = np.full((cap, width), math.inf)
            ceilings[:old, :old_width] = self._entry_ceiling
            self._entry_ceiling = ceilings
        self._views()

    def _views(self) -> None:
        """Point the flat memoryviews at the row arrays (after any of them is replaced)."""
        self._const_lo_view = _float_view(self._const_lo)
        self._generation_view = _int_view(self._generation)
        self._always_view = _bool_view(self._always)
        self._flagged_view = _bool_view(self._flagged)
        self._symbol_view = _int_view(self._entry_symbol)
        self._coef_view = _float_view(self._entry_coef)
        self._ceiling_view = None if self._entry_ceiling is None else _float_view(self._entry_ceiling)

    def _new_ceilings(self) -> None:
        """Allocate the price ceilings (the first tiered entry)."""
        self._entry_ceiling = np.full(self._entry_coef.shape, math.inf)
        self._views()

    def _alloc(self, key: str) -> int:
        if self._free:
            row = self._free.pop()
            self._keys[row] = key
        else:
            row = len(self._keys)
            if row >= self._const_lo.size:
                self._reserve(max(16, 2 * row), self._width)
            self._keys.append(key)
        self._row[key] = row
        return row

    def _detach(self, row: int) -> None:
        """Empty the row; its edges are stale from now on (its generation moves on)."""
        self._release(row)
        self._clear(row)

    def _clear(self, row: int) -> None:
        self._flagged_view[row] = False
        symbol_view, coef_view, ceiling_view = self._symbol_view, self._coef_view, self._ceiling_view
        width = self._width
        for j in range(row * width, row * width + width):
            symbol_view[j] = 0
            coef_view[j] = 0.0
            if ceiling_view is not None:
                ceiling_view[j] = math.inf
        self._const_lo_view[row] = math.inf

    def _release(self, row: int) -> int:
        """Make the row's edges stale and take it out of the per-symbol counts (arrays kept);
        returns how many entries the row holds (its slots past that are zero)."""
        generation_view = self._generation_view
        gen: int = generation_view[row]
        generation_view[row] = (gen + 1) & GEN_MASK
        if self._shift_widening:
            self._shift_widening.pop(row, None)
        if self._deferred_rows:
            self._deferred_rows.discard(row)
        if self._always_view[row]:
            self._always_view[row] = False
            for sid in self._always_symbols.pop(row, ()):
                self._always_rows[sid].discard(row)
            return 0
        width = self._width
        row_count = self._row_count
        symbol_view = self._symbol_view
        used = 0
        for j in range(row * width, row * width + width):
            slot_sid: int = symbol_view[j]
            if slot_sid:
                row_count[slot_sid] -= 1
                used += 1
        return used

    def _entries(self, row: int) -> list[Entry]:
        """The row's entries, item by item through the flat views (a row holds a few entries:
        three slices, three ``tolist`` calls and a zip cost ten times as much)."""
        width = self._width
        start = row * width
        symbol_view, coef_view, ceiling_view = self._symbol_view, self._coef_view, self._ceiling_view
        out: list[Entry] = []
        for j in range(start, start + width):
            sid: int = symbol_view[j]
            if sid:
                lo: float = coef_view[j]
                ceiling: float = math.inf if ceiling_view is None else ceiling_view[j]
                out.append((sid, lo, ceiling))
        return out

    def _fresh(self, row: int) -> tuple[float, bool]:
        """The row's headroom at the current prices, and whether a price is above its ceiling."""
        return self._headroom(self._entries(row), self._const_lo_view[row])

    def _headroom(self, entries: list[Entry], const_lo: float) -> tuple[float, bool]:
        """``const_lo + sum lo * P`` over a row's entries at the current prices, and whether a
        price is above its entry's ceiling."""
        price = self._price
        h = const_lo
        broken = False
        for sid, lo, ceiling in entries:
            p = price[sid]
            h += lo * p
            if p > ceiling:
                broken = True
        return h, broken

    def _headroom_of_rows(self, rows: I64) -> F64:
        """``_fresh(row)[0]`` of each of ``rows`` at once, the entries added in the same order
        (an empty slot adds 0.0); -inf for an always-checked row and for -1 (no row)."""
        known = rows >= 0
        at = np.where(known, rows, 0)
        self._price_array[:len(self._price)] = self._price
        price = self._price_array
        symbols, coefs = self._entry_symbol[at], self._entry_coef[at]
        h = self._const_lo[at].copy()
        for j in range(self._width):
            h += coefs[:, j] * price[symbols[:, j]]
        h[~known | self._always[at]] = -math.inf
        return h

    # ------------------------------------------------------------------ settling (bands)

    def _settle_one(self, row: int, entries: list[Entry], const_lo: float) -> bool:
        """Settle one row in Python: recompute it and push one band edge per symbol.

        The headroom ``h`` is split between the row's symbols by the weighted values of their terms
        (the same relative band for each moving symbol); while every symbol stays inside its band
        the row's headroom cannot go below zero. Returns whether it is flagged (then it gets an
        empty band: noted in ``_flagged_rows`` of its symbols, taken by every tick of them).
        """
        generation_view = self._generation_view
        old: int = generation_view[row]  # typed first: the arithmetic below is then native
        gen = (old + 1) & GEN_MASK
        generation_view[row] = gen
        price = self._price
        h, broken = self._headroom(entries, const_lo)
        floors, ceilings = self._floors, self._ceilings
        weight = self._weight
        mixed = False  # the row holds a symbol that moves: its quiet symbols get no edge
        for sid, _, _ in entries:
            if weight[sid] != QUIET_WEIGHT:
                mixed = True
                break
        if not h >= 0 or broken:  # NaN too
            self._flagged_view[row] = True
            for sid, _, _ in entries:
                if mixed and weight[sid] == QUIET_WEIGHT:
                    self._unbanded[sid].add(row)
                else:
                    self._flagged_rows[sid][row] = gen
            return True
        flagged_view = self._flagged_view
        if flagged_view[row]:
            flagged_view[row] = False
        weighted_sum = 0.0
        for sid, lo, _ in entries:
            if lo:
                weighted_sum += weight[sid] * abs(lo) * price[sid]
        rel = h / weighted_sum if weighted_sum else 0.0
        for sid, lo, tier_ceiling in entries:
            if mixed and weight[sid] == QUIET_WEIGHT:
                # its share is ~1/1024 of the headroom: an edge any move of it would cross.
                # Noted instead; a tick of the quiet symbol settles the rows noted for it
                self._unbanded[sid].add(row)
                continue
            p = price[sid]
            if lo > 0:
                floors[sid].push(p - weight[sid] * rel * p, row, gen)
                ceiling = tier_ceiling
            elif lo < 0:
                ceiling = min(tier_ceiling, p + weight[sid] * rel * p)
            else:
                ceiling = tier_ceiling
            if ceiling != math.inf:
                ceilings[sid].push(-ceiling, row, gen)
        return False

    def _judge(self, rows: I64) -> tuple[I32, F64, F64, F64 | None, F64, npt.NDArray[np.bool_]]:
        """``rows`` judged at the current prices, as ``_settle_many`` judges them: their symbol
        ids, coefficients, prices and ceilings (None: no tiers) gathered, their headrooms, and
        whether each is flagged (``h < 0``, NaN, or a price above an entry's ceiling)."""
        self._price_array[:len(self._price)] = self._price
        sids = self._entry_symbol[rows]
        lo = self._entry_coef[rows]
        px = self._price_array[sids]
        h = self._const_lo[rows] + (lo * px).sum(axis=1)
        bad = ~(h >= 0)
        tier_ceiling = None
        if self._entry_ceiling is not None:
            tier_ceiling = self._entry_ceiling[rows]
            bad |= (px > tier_ceiling).any(axis=1)
        return sids, lo, px, tier_ceiling, h, bad

    def _settle_many(self, rows: I64, *, rebuild: bool = False) -> I64:
        """Settle many linear rows at once (numpy), as ``_settle_one`` each; returns the flagged ones.

        ``rebuild``: these are all the linear rows, so every symbol's edges and notes are replaced
        (a full settle that also drops every stale edge). When most rows are flagged (a crash),
        the bands are worked out for the others only.
        """
        gen = (self._generation[rows] + 1) & GEN_MASK
        self._generation[rows] = gen
        sids, lo, px, tier_ceiling, h, bad = self._judge(rows)
        self._flagged[rows] = bad
        weight = self._weight_array[sids]
        row_of = np.broadcast_to(rows.astype(np.int32)[:, None], sids.shape)
        gen_of = np.broadcast_to(gen[:, None], sids.shape)
        held = sids != 0
        quiet = (weight == QUIET_WEIGHT) & held
        # as in _settle_one: a quiet symbol of a row holding a moving one gets no edge, but a note
        skip = quiet & (held & ~quiet).any(axis=1)[:, None]
        if rebuild:
            for noted in self._unbanded:
                noted.clear()
            for marked in self._flagged_rows:
                marked.clear()
        if skip.any():
            unbanded = self._unbanded
            for sid, row in zip(sids[skip].tolist(), row_of[skip].tolist(), strict=True):
                unbanded[sid].add(row)
            held &= ~skip
        flagged: I64 = rows[bad]
        good = ~bad
        if flagged.size:  # flagged rows: a note per symbol (an empty band), no edge
            mask = bad[:, None] & held
            flagged_rows = self._flagged_rows
            for sid, row, g in zip(sids[mask].tolist(), row_of[mask].tolist(), gen_of[mask].tolist(),
                                   strict=True):
                flagged_rows[sid][row] = g
            if 2 * flagged.size > rows.size and not rebuild:  # mostly flagged (a crash)
                keep = np.flatnonzero(good)
                sids, lo, px, weight, h = sids[keep], lo[keep], px[keep], weight[keep], h[keep]
                held, row_of, gen_of = held[keep], row_of[keep], gen_of[keep]
                good = good[keep]
                if tier_ceiling is not None:
                    tier_ceiling = tier_ceiling[keep]
        weighted = np.where(lo != 0, weight * np.abs(lo) * px, 0.0)
        weighted_sum = weighted.sum(axis=1)
        rel = np.divide(h, weighted_sum, out=np.zeros_like(h), where=(weighted_sum > 0) & good)
        edge = px - np.sign(lo) * weight * rel[:, None] * px
        held &= good[:, None]
        floor_mask = (lo > 0) & held
        floor_key = edge[floor_mask]
        ceiling_key = np.where(lo < 0, edge, math.inf)
        if tier_ceiling is not None:
            ceiling_key = np.minimum(ceiling_key, tier_ceiling)
        ceiling_mask = held & (ceiling_key != math.inf)
        sides = ((self._floors, sids[floor_mask], floor_key, row_of[floor_mask], gen_of[floor_mask]),
                 (self._ceilings, sids[ceiling_mask], -ceiling_key[ceiling_mask], row_of[ceiling_mask],
                  gen_of[ceiling_mask]))
        for edges, side_sids, side_keys, side_rows, side_gens in sides:
            if rebuild:
                for per_symbol in edges:
                    per_symbol.set(EMPTY_KEYS, EMPTY_INTS, EMPTY_INTS)
            if not side_sids.size:
                continue
            order = np.argsort(side_sids, kind="stable")
            sid_sorted, keys = side_sids[order], side_keys[order]
            edge_rows, gens = side_rows[order], side_gens[order]
            starts = np.concatenate(([0], np.flatnonzero(np.diff(sid_sorted)) + 1))
            bounds = [*starts.tolist(), sid_sorted.size]
            symbols = sid_sorted[starts].tolist()
            if rebuild:
                for i, sid in enumerate(symbols):
                    a, b = bounds[i], bounds[i + 1]
                    edges[sid].set(keys[a:b], edge_rows[a:b], gens[a:b])
                continue
            tops = np.maximum.reduceat(keys, starts).tolist()
            for i, sid in enumerate(symbols):
                a, b = bounds[i], bounds[i + 1]
                edges[sid].push_many(keys[a:b], edge_rows[a:b], gens[a:b], tops[i])
        return flagged

    def _maybe_compact(self, sid: int, factor: int = 2, spare: int = 1024) -> int:
        """Drop the symbol's stale edges once a side holds more than ``factor`` times its live
        rows + ``spare``; returns how many were dropped."""
        live = self._row_count[sid] + len(self._always_rows[sid])
        dropped = 0
        for edges in (self._floors[sid], self._ceilings[sid]):
            if len(edges) > factor * live + spare:
                before = len(edges)
                edges.compact(self._generation)
                dropped += before - len(edges)
        return dropped

    # ------------------------------------------------------------------ sizes

    def nbytes(self) -> int:
        """Bytes held by the row arrays, the band edges and the row sets (stale rows, quiet
        symbols' notes: ~60 B a member; flagged rows' notes: ~100 B), not the key list and dict."""
        rows = (self._const_lo.nbytes + self._generation.nbytes + self._always.nbytes + self._flagged.nbytes
                + self._entry_symbol.nbytes + self._entry_coef.nbytes)
        if self._entry_ceiling is not None:
            rows += self._entry_ceiling.nbytes
        members = len(self._deferred_rows) + sum(len(s) for s in self._unbanded)
        notes = sum(len(d) for d in self._flagged_rows)
        return (rows + _SET_MEMBER_BYTES * members + _DICT_ITEM_BYTES * notes
                + sum(e.nbytes() for e in (*self._floors, *self._ceilings)))


def _float_view(a: F64) -> memoryview[float]:
    """A 1-d memoryview of the C-contiguous float64 array ``a``."""
    return a.data.cast("B").cast("d") if a.size else memoryview(b"").cast("d")


def _int_view(a: I32) -> memoryview[int]:
    """A 1-d memoryview of the C-contiguous int32 array ``a``."""
    return a.data.cast("B").cast("i") if a.size else memoryview(b"").cast("i")


def _bool_view(a: npt.NDArray[np.bool_]) -> memoryview[bool]:
    """A 1-d memoryview of the C-contiguous bool array ``a``."""
    return a.data.cast("B").cast("?") if a.size else memoryview(b"").cast("?")


def _sized(a: _A, cap: int, fill: float = 0) -> _A:
    """A copy of the 1-d array ``a`` with ``cap`` items (cut, or padded with ``fill``)."""
    out = np.full(cap, fill, a.dtype)
    k = min(cap, a.size)
    out[:k] = a[:k]
    return out  # type: ignore[return-value]


def checked_price(price: Decimal | float) -> float:
    """``price`` as a float; ValueError unless it is finite and > 0."""
    p = float(price)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"price must be finite and > 0, got {price}")
    return p
