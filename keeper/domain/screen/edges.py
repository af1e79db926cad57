"""Band edges: per symbol and side, the price edges of the rows' bands, probed by each tick.

A settled row has, for each of its symbols, a band of prices inside which its headroom cannot
reach zero (``keeper.domain.screen.rows``). One ``BandEdges`` holds one symbol's edges on one
side as ``(key, row, generation)``, crossed when ``key > x``: floors are stored as
``key = floor`` and probed with ``x = P``, ceilings as ``key = -ceiling`` probed with ``x = -P``,
so both sides are one structure and what a tick crosses is always the top of the keys.

An edge whose generation is not its row's current one is stale (the row was settled again or
removed): the caller skips it when crossed, and ``compact`` drops it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import heapq
import math
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["EMPTY_INTS", "EMPTY_KEYS", "HEAP_EDGE_BYTES", "BandEdges", "EdgeArrays", "merged"]

I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
EdgeArrays = tuple[F64, I32, I32]
"""Edges as three arrays of one length: keys, rows, generations."""

_heappush: Final = heapq.heappush  # Final: a C static in the compiled module, not a lookup
_heappop: Final = heapq.heappop
EMPTY_KEYS: Final[F64] = np.zeros(0, np.float64)
EMPTY_INTS: Final[I32] = np.zeros(0, np.int32)
"""An empty key array and an empty row or generation array (shared, never written)."""
HEAP_EDGE_BYTES: Final = 64 + 24 + 2 * 28 + 8
"""A heap entry: its 3-tuple, the float key, the row and generation ints, the list's pointer."""
_TAIL = 1 << 12
"""Edges kept in the tail's heap before they go to the numpy levels as one batch: a side with
fewer edges keeps them all in the heap (pops and pushes O(log n), no array call at all); past a
few thousand, a tick that crosses many edges is cheaper as an array slice (docs/screen.md)."""
_POP_ONE_BY_ONE = 64
"""Edges a probe pops off the tail's heap one at a time; past that it moves the heap to the
pending batches (one array batch) and filters it there: a heap pop costs ~0.5 µs, so a tick that
crosses thousands of single pushes is an array's work, not a loop's."""
_SMALL = 4096
"""The least size at which the ``small`` level (and the pending batches) merge down a level."""


class BandEdges:
    """One symbol's band edges on one side; ``pop(x)`` removes and returns those with ``key > x``.

    Levels, like a small LSM tree, so pushes are cheap and a probe is O(log n + crossed +
    pending): the sorted ``main_*`` arrays; the sorted ``small_*`` ones that pending edges are
    merged into at a probe (merged into ``main`` when they outgrow ``main / 16``); ``pending``,
    unsorted batches from settles since the last probe; and ``tail``, a heap of single pushes
    (``(-key, row, generation)``: the largest key on top, so a probe pops exactly what it
    crosses, never scanning the rest; the rows settled one at a time are the ones near their
    edges, crossed again and again). ``top`` is an upper bound of every key, so a probe that
    cannot cross anything touches no array; ``tail_top`` and ``pending_top`` bound the tail's and
    the pending batches' keys, so a probe that crosses only sorted edges leaves those two levels
    alone.
    """

    __slots__ = ("main_gens", "main_keys", "main_rows", "pending", "pending_count", "pending_top",
                 "small_gens", "small_keys", "small_max", "small_rows", "tail", "tail_max", "tail_top", "top")

    def __init__(self) -> None:
        self.tail_max = _TAIL  # the level sizes, read once (a module global is a dict lookup)
        self.small_max = _SMALL
        self.main_keys: F64 = EMPTY_KEYS
        self.main_rows: I32 = EMPTY_INTS
        self.main_gens: I32 = EMPTY_INTS
        self.small_keys: F64 = EMPTY_KEYS
        self.small_rows: I32 = EMPTY_INTS
        self.small_gens: I32 = EMPTY_INTS
        self.pending: list[EdgeArrays] = []
        self.pending_count = 0
        self.tail: list[tuple[float, int, int]] = []
        """A heap of ``(-key, row, generation)``."""
        self.top = -math.inf
        self.tail_top = -math.inf
        self.pending_top = -math.inf

    def __len__(self) -> int:
        return self.main_keys.size + self.small_keys.size + self.pending_count + len(self.tail)

    def push(self, key: float, row: int, gen: int) -> None:
        """Add one edge (onto the tail's heap)."""
        _heappush(self.tail, (-key, row, gen))
        if key > self.tail_top:
            self.tail_top = key
            if key > self.top:  # noqa: PLR1730 (hot path: no call)
                self.top = key
        if len(self.tail) >= self.tail_max:
            self._flush_tail()
            if self.pending_count > max(self.small_max, self.main_keys.size >> 4):
                self._merge(*self._take_pending())

    def push_many(self, keys: F64, rows: I32, gens: I32, top: float) -> None:
        """Queue a batch of edges (``top``: their largest key); merged at the next probe, or
        into the heap while every edge fits there."""
        if not self._in_arrays() and len(self.tail) + keys.size <= self.tail_max:
            self._heap_many(keys, rows, gens)
            return
        self.pending.append((keys, rows, gens))
        self.pending_count += keys.size
        self.top = max(self.top, top)
        self.pending_top = max(self.pending_top, top)
        if self.pending_count > max(self.small_max, self.main_keys.size >> 4):
            self._merge(*self._take_pending())

    def _in_arrays(self) -> bool:
        """Whether any edge is in the numpy levels (if not, every edge is in the tail's heap:
        a symbol with few rows never touches numpy)."""
        return bool(self.main_keys.size or self.small_keys.size or self.pending_count)

    def _heap_many(self, keys: F64, rows: I32, gens: I32) -> None:
        heap = self.tail
        new = list(zip((-keys).tolist(), rows.tolist(), gens.tolist(), strict=True))
        if len(new) > len(heap) >> 3:
            heap.extend(new)
            heapq.heapify(heap)
        else:
            for edge in new:
                heapq.heappush(heap, edge)
        self._heap_top()

    def _heap_top(self) -> None:
        self.tail_top = -self.tail[0][0] if self.tail else -math.inf
        if not self._in_arrays() or self.tail_top > self.top:
            self.top = self.tail_top

    def _flush_tail(self) -> None:
        """Move the tail's heap to the pending batches, as one batch."""
        keys, rows, gens = zip(*self.tail, strict=True)
        self.tail = []
        self.pending_top = max(self.pending_top, self.tail_top)
        self.tail_top = -math.inf
        self.pending.append((-np.array(keys, np.float64), np.array(rows, np.int32), np.array(gens, np.int32)))
        self.pending_count += len(keys)

    def _take_pending(self, *, tail: bool = True) -> EdgeArrays:
        """Remove the pending batches (and the tail, with ``tail``) and return them as one."""
        if tail and self.tail:
            self._flush_tail()
        pending = self.pending
        self.pending = []
        self.pending_count = 0
        self.pending_top = -math.inf
        if len(pending) <= 1:
            return pending[0] if pending else (EMPTY_KEYS, EMPTY_INTS, EMPTY_INTS)
        keys, rows, gens = zip(*pending, strict=True)
        return np.concatenate(keys), np.concatenate(rows), np.concatenate(gens)

    def _merge(self, keys: F64, rows: I32, gens: I32) -> None:
        """Merge unsorted edges into ``small`` (and ``small`` into ``main`` when it is large)."""
        if not keys.size:
            return
        order = np.argsort(keys, kind="stable")
        self.small_keys, self.small_rows, self.small_gens = merged(
            (self.small_keys, self.small_rows, self.small_gens), (keys[order], rows[order], gens[order]))
        if self.small_keys.size > max(self.small_max, self.main_keys.size >> 4):
            self.main_keys, self.main_rows, self.main_gens = merged(
                (self.main_keys, self.main_rows, self.main_gens),
                (self.small_keys, self.small_rows, self.small_gens))
            self.small_keys, self.small_rows, self.small_gens = EMPTY_KEYS, EMPTY_INTS, EMPTY_INTS

    def set(self, keys: F64, rows: I32, gens: I32) -> None:
        """Replace every edge (a full settle): ``main`` is the batch sorted by key (or the heap,
        when the batch fits there)."""
        if keys.size <= self.tail_max >> 1:
            self.main_keys, self.main_rows, self.main_gens = EMPTY_KEYS, EMPTY_INTS, EMPTY_INTS
            self.small_keys, self.small_rows, self.small_gens = EMPTY_KEYS, EMPTY_INTS, EMPTY_INTS
            self.pending, self.pending_count, self.tail = [], 0, []
            self.pending_top = -math.inf
            self._heap_many(keys, rows, gens)
            return
        order = np.argsort(keys, kind="stable")
        self.main_keys, self.main_rows, self.main_gens = keys[order], rows[order], gens[order]
        self.small_keys, self.small_rows, self.small_gens = EMPTY_KEYS, EMPTY_INTS, EMPTY_INTS
        self.pending, self.pending_count, self.tail = [], 0, []
        self.top = float(self.main_keys[-1]) if self.main_keys.size else -math.inf
        self.tail_top = self.pending_top = -math.inf

    def pop(self, x: float, pairs: list[tuple[int, int]]) -> tuple[list[I32], list[I32]]:
        """Remove the edges with ``key > x``; returns their ``(rows, generations)`` as arrays and
        appends those of the tail (single pushes, popped off its heap) to ``pairs``."""
        rows: list[I32] = []
        gens: list[I32] = []
        if self.tail_top > x:
            heap = self.tail
            neg_x = -x
            pop = _heappop
            popped = 0
            while heap and heap[0][0] < neg_x:
                if popped == _POP_ONE_BY_ONE:
                    # a tick that crosses much of the heap (a crash through rows settled one by
                    # one): the rest goes to the pending batches, filtered below as an array
                    self._flush_tail()
                    break
                _, row, gen = pop(heap)
                pairs.append((row, gen))
                popped += 1
            else:
                self.tail_top = -heap[0][0] if heap else -math.inf
        if self.pending_top > x:
            keys, prows, pgens = self._take_pending(tail=False)
            hit = keys > x
            if hit.any():
                rows.append(prows[hit])
                gens.append(pgens[hit])
                keep = ~hit
                keys, prows, pgens = keys[keep], prows[keep], pgens[keep]
            self._merge(keys, prows, pgens)
        keys = self.main_keys
        if keys.size and keys[-1] > x:
            i = int(np.searchsorted(keys, x, side="right"))
            rows.append(self.main_rows[i:])
            gens.append(self.main_gens[i:])
            self.main_keys, self.main_rows, self.main_gens = keys[:i], self.main_rows[:i], self.main_gens[:i]
        keys = self.small_keys
        if keys.size and keys[-1] > x:
            i = int(np.searchsorted(keys, x, side="right"))
            rows.append(self.small_rows[i:])
            gens.append(self.small_gens[i:])
            self.small_keys, self.small_rows, self.small_gens = (
                keys[:i], self.small_rows[:i], self.small_gens[:i])
        self.top = x  # every key left is <= x
        return rows, gens

    def tidy(self) -> bool:
        """Sort a heap of more than ``_POP_ONE_BY_ONE`` single pushes, and the pending batches,
        into the arrays (for an idle moment: a probe then slices them instead of popping one by
        one); whether anything moved."""
        if len(self.tail) <= _POP_ONE_BY_ONE and not self.pending_count:
            return False
        self._merge(*self._take_pending(tail=len(self.tail) > _POP_ONE_BY_ONE))
        return True

    def compact(self, generation: I32) -> None:
        """Drop stale edges (``generation``: each row's current one); every level is merged into
        ``main``, or the heap filtered in place."""
        if not self._in_arrays():
            heap = self.tail
            rows = np.fromiter((e[1] for e in heap), np.int64, len(heap))
            gens = np.fromiter((e[2] for e in heap), np.int64, len(heap))
            live = (generation[rows] == gens).tolist()
            self.tail = [e for e, keep in zip(heap, live, strict=True) if keep]
            heapq.heapify(self.tail)
            self._heap_top()
            return
        pkeys, prows, pgens = self._take_pending()
        keys = np.concatenate((self.main_keys, self.small_keys, pkeys))
        rows = np.concatenate((self.main_rows, self.small_rows, prows))
        gens = np.concatenate((self.main_gens, self.small_gens, pgens))
        keep = generation[rows] == gens
        self.set(keys[keep], rows[keep], gens[keep])

    def stale(self, generation: I32) -> int:
        """How many edges are stale (``generation``: each row's current one)."""
        levels = [(self.main_rows, self.main_gens), (self.small_rows, self.small_gens),
                  *((rows, gens) for _, rows, gens in self.pending)]
        n = sum(int(np.count_nonzero(generation[rows] != gens)) for rows, gens in levels)
        return n + sum(1 for _, row, gen in self.tail if generation[row] != gen)

    def nbytes(self) -> int:
        """16 B per edge in the arrays; a heap entry at its Python size (``HEAP_EDGE_BYTES``)."""
        in_arrays = self.main_keys.size + self.small_keys.size + self.pending_count
        return 16 * in_arrays + HEAP_EDGE_BYTES * len(self.tail)


def merged(a: EdgeArrays, b: EdgeArrays) -> EdgeArrays:
    """Two key-sorted edge arrays merged into one, key-sorted (``b`` after equal keys of ``a``)."""
    a_keys, a_rows, a_gens = a
    b_keys, b_rows, b_gens = b
    if not a_keys.size:
        return b_keys, b_rows, b_gens
    n = a_keys.size + b_keys.size
    at = np.searchsorted(a_keys, b_keys, side="right") + np.arange(b_keys.size)
    from_a = np.ones(n, np.bool_)
    from_a[at] = False
    keys = np.empty(n)
    keys[at] = b_keys
    keys[from_a] = a_keys
    rows = np.empty(n, np.int32)
    rows[at] = b_rows
    rows[from_a] = a_rows
    gens = np.empty(n, np.int32)
    gens[at] = b_gens
    gens[from_a] = a_gens
    return keys, rows, gens
