"""The cap window: live liquidations inside the cap interval, by log time.

``KeeperCore`` spends ``KeeperParams.cap_count`` / ``cap_notional`` against it; its items are in
the core's snapshot. Checking a cap costs O(expired), not O(window), per decision: the count and
the notional are kept up to date as liquidations enter and leave.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from decimal import Decimal

__all__ = ["CapWindow"]


class CapWindow:
    """Live liquidations ``(log time, notional)`` not yet expired, their count (``len``) and
    their total ``notional``: the same as re-filtering every liquidation at each check."""

    def __init__(self, items: Iterable[tuple[int, Decimal]] = ()) -> None:
        self._items: list[tuple[int, Decimal]] = sorted(items)
        self._start = 0
        self.notional = sum((n for _, n in self._items), Decimal(0))

    def __len__(self) -> int:
        return len(self._items) - self._start

    def add(self, ts: int, notional: Decimal) -> None:
        """Count a liquidation of ``notional`` at log time ``ts``."""
        bisect.insort(self._items, (ts, notional), lo=self._start)
        self.notional += notional

    def expire(self, horizon: int) -> None:
        """Forget every liquidation at or before ``horizon``."""
        items, i = self._items, self._start
        while i < len(items) and items[i][0] <= horizon:
            self.notional -= items[i][1]
            i += 1
        if i > 1024 and 2 * i > len(items):
            del items[:i]
            i = 0
        self._start = i

    def items(self) -> list[tuple[int, Decimal]]:
        """The liquidations in the window, oldest first (what a snapshot keeps)."""
        return self._items[self._start:]
