"""This process's record of its Redis: the faults its clients met, for ``/readyz`` and
``/metrics``.

Every Redis call of the keeper goes through ``keeper.store.redis_log.wrap_errors`` (the log, the
claims, the snapshots), which turns redis-py's errors into the keeper's and records them here:
how many writes Redis refused (``OOM``, ``READONLY``, ``MISCONF``), how many calls failed, and the
last failure. The daemon's sampler adds what it measures itself (reachability by ``PING``,
memory by ``INFO``); roles that wait a fault out say so with ``waiting``/``recovered``.
One record per process: a keeper process talks to one Redis.
"""

from __future__ import annotations

import time

from keeper.errors import LogError, LogRefused

__all__ = ["REDIS", "RedisHealth"]


class RedisHealth:
    """Counters and the last failure (wall-clock seconds, for operators only: never a decision)."""

    def __init__(self) -> None:
        self.failures = 0
        self.refused_writes = 0
        self.last_error = ""
        self.last_error_at = 0.0
        self.waiting: dict[str, tuple[str, float]] = {}
        """Roles waiting for Redis -> (the error they wait out, when it last failed, monotonic).
        A role that makes progress again says ``recovered``; one that cannot tell is cleared by
        ``settle`` once Redis answers and the role has not failed for a while."""

    def failed(self, exc: LogError) -> LogError:
        """Record ``exc`` (returned, to be raised)."""
        self.failures += 1
        if isinstance(exc, LogRefused):
            self.refused_writes += 1
        self.last_error = str(exc)[:300]
        self.last_error_at = time.time()
        return exc

    def wait(self, role: str, error: str) -> None:
        self.waiting[role] = (error[:300], time.monotonic())

    def recovered(self, role: str) -> None:
        if self.waiting:
            self.waiting.pop(role, None)

    def settle(self, quiet_s: float) -> None:
        """Redis answers: forget roles that have not failed for ``quiet_s`` seconds."""
        now = time.monotonic()
        for role, (_error, at) in list(self.waiting.items()):
            if now - at >= quiet_s:
                del self.waiting[role]


REDIS = RedisHealth()
"""The process's record (``keeper.store.redis_log.wrap_errors`` writes it)."""
