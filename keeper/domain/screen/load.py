"""Bulk load: linear rows from columns of numbers into an empty ``RowTable`` (``Screen.load_columns``).

What a run of ``Screen.upsert`` calls would store, for buckets already linearised elsewhere
(a benchmark's generated book, a snapshot): the rows are filled, the caller settles them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final

import numpy as np
import numpy.typing as npt

from keeper.domain.screen.rows import RowTable, checked_price

__all__ = ["MAX_WIDTH", "fill_rows"]

MAX_WIDTH: Final = 16
"""Symbols a row can hold in the arrays; a bucket exposed to more is always a candidate."""


def fill_rows(  # noqa: PLR0917 - Screen.load_columns's arguments
    table: RowTable,
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
    """Store the rows ``Screen.load_columns`` describes (same arguments), unsettled; ValueError
    on bad input, before anything is stored but the symbols' prices."""
    if table._keys:
        raise ValueError("load_columns needs an empty screen")
    n_buckets = len(keys)
    consts = np.asarray(const, np.float64)
    rows = np.asarray(entry_row, np.int64)
    entry_symbols = np.asarray(entry_symbol, np.int64)
    coefs = np.asarray(coef, np.float64)
    ceilings = np.full(rows.shape, np.inf) if pmax is None else np.asarray(pmax, np.float64)
    if (consts.shape != (n_buckets,) or rows.shape != entry_symbols.shape or rows.shape != coefs.shape
            or rows.ndim != 1):
        raise ValueError("const must have one value per key; entries must be 1-d of one length")
    if ceilings.shape != rows.shape:
        raise ValueError("pmax must have one value per entry")
    if rows.size and (rows.min() < 0 or rows.max() >= n_buckets or entry_symbols.min() < 0
                      or entry_symbols.max() >= len(symbols)):
        raise ValueError("entry_row or entry_symbol out of range")
    if not (np.isfinite(consts).all() and np.isfinite(coefs).all()):
        raise ValueError("const and coef must be finite")
    if len(set(keys)) != n_buckets:
        raise ValueError("duplicate keys")
    sid_of = np.array([table._sid(s) for s in symbols], np.int64)
    for s in symbols:
        sid = table._symbol_id[s]
        if s in prices:
            table._set_price(sid, checked_price(prices[s]))
        elif math.isnan(table._price[sid]):
            raise ValueError(f"no price for {s!r}")
    entry_sids = sid_of[entry_symbols] if entry_symbols.size else entry_symbols
    order = np.lexsort((entry_sids, rows))
    rows_sorted, sids_sorted = rows[order], entry_sids[order]
    repeated = (sids_sorted[1:] == sids_sorted[:-1]) & (rows_sorted[1:] == rows_sorted[:-1])
    if order.size > 1 and repeated.any():
        raise ValueError("two entries for one bucket and symbol")
    rel = table.rel_tol
    per_row = np.bincount(rows_sorted, minlength=n_buckets)
    width = int(per_row.max()) if n_buckets else 0
    if width > MAX_WIDTH:
        raise ValueError(f"a bucket has more than {MAX_WIDTH} symbols")
    table._reserve(n_buckets, max(width, 1))
    starts = np.searchsorted(rows_sorted, np.arange(n_buckets))
    slot = np.arange(rows_sorted.size) - starts[rows_sorted]
    table._entry_symbol[rows_sorted, slot] = sids_sorted
    table._entry_coef[rows_sorted, slot] = (coefs - rel * np.abs(coefs))[order]
    if np.isfinite(ceilings).any():
        table._new_ceilings()
        assert table._entry_ceiling is not None
        ceilings_sorted = ceilings[order]
        table._entry_ceiling[rows_sorted, slot] = np.where(
            np.isfinite(ceilings_sorted), np.nextafter(ceilings_sorted, 0.0), math.inf)
    consts_lo = consts - rel * np.abs(consts) - table.abs_tol
    table._const_lo[:n_buckets] = np.where(per_row > 0, consts_lo, math.inf)
    table._keys = list(keys)
    table._row = dict(zip(keys, range(n_buckets), strict=True))
    for sid, n in enumerate(np.bincount(sids_sorted, minlength=len(table._symbols)).tolist()):
        table._row_count[sid] += n
