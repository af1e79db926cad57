"""A conservative health screen: which buckets MAY be liquidatable after a price moves.

The screen is a filter in front of the exact (Decimal) margin engine, never a substitute for it.
Its one promise: **it never misses a bucket the exact engine would call liquidatable** (with the
linear models of ``linearise`` and the documented tolerances). False positives are fine: the
keeper confirms every candidate exactly before it decides anything. docs/screen.md describes it
whole; read the modules in this order:

- ``linear``: a bucket's slack as a linear function of prices (``linearise``, ``tier_bound``,
  ``balance_weight``), and which margin profiles are not linear (``screen_mode``);
- ``edges``: one symbol's band edges on one side (``BandEdges``), probed by each tick;
- ``rows``: the rows (widened linear forms in numpy columns), the symbols' prices, and settling
  a row into band edges (``RowTable``);
- ``screen``: ``Screen``, the updates from the state (``upsert``, ``shift``, ``defer``,
  ``remove``), the ticks (``candidates``, ``on_price``) and the full rescan (``resync``);
- ``load``: the bulk load of rows from columns (``Screen.load_columns``).

Pure: no I/O, no clock, no randomness. Results are sorted, so they are the same on every run.
"""

from __future__ import annotations

from keeper.domain.screen.linear import Linear, balance_weight, linearise, screen_mode, tier_bound
from keeper.domain.screen.screen import Screen

__all__ = ["Linear", "Screen", "balance_weight", "linearise", "screen_mode", "tier_bound"]
