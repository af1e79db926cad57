"""The system clock: the shell's only source of wall time (the pure core never reads it).

Live code passes ``SystemClock()`` (or ``wall_clock_us``) where a ``keeper.ports.Clock`` is
injected; tests pass ``keeper.testing.FakeClock``; replay uses the log's own times.
"""

from __future__ import annotations

import time

__all__ = ["SystemClock", "wall_clock_us"]


def wall_clock_us() -> int:
    """Microseconds since the Unix epoch."""
    return time.time_ns() // 1000


class SystemClock:
    """``keeper.ports.Clock`` on the wall clock."""

    def now_us(self) -> int:
        return wall_clock_us()

    def monotonic(self) -> float:
        return time.monotonic()
