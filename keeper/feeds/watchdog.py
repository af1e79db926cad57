"""Staleness watchdog: a market without a fresh price within its limit is unsafe.

Pure and clock-free: the caller passes ``now_us`` from an injected ``keeper.ports.Clock`` (the
system clock live, the data's own time when a recording is played, a fake clock in tests).
``observe`` is called for each recorded price, ``check`` periodically; each returns the events
to record. A market is only watched once it has been observed (or ``watch``-ed explicitly, so
that a feed that never delivers anything is reported too).
"""

from __future__ import annotations

from collections.abc import Callable

from keeper.domain.events import Event, FeedRecovered, FeedStale

__all__ = ["StalenessWatchdog"]


class StalenessWatchdog:
    """Emits ``FeedStale(reason='stale')`` and ``FeedRecovered(reason='stale')``.

    ``limit_us(symbol)`` gives each market's limit. Each market goes stale at most once per
    silence: the first ``check`` after the limit passes reports it, later checks stay quiet, and
    the next ``observe`` reports the recovery.
    """

    def __init__(self, limit_us: Callable[[str], int]) -> None:
        self._limit = limit_us
        self._seen: dict[str, int] = {}
        self.stale: set[str] = set()

    def watch(self, symbol: str, now_us: int) -> None:
        """Start watching ``symbol`` as if a price had arrived at ``now_us``."""
        self._seen.setdefault(symbol, now_us)

    def observe(self, symbol: str, now_us: int) -> list[Event]:
        """A fresh price for ``symbol`` arrived at ``now_us``."""
        self._seen[symbol] = now_us
        if symbol not in self.stale:
            return []
        self.stale.discard(symbol)
        return [FeedRecovered(event_id=f"recovered-stale:{symbol}:{now_us}", ts_event=now_us,
                              ts_ingest=now_us, symbol=symbol, reason="stale")]

    def arrived_old(self, symbol: str, published_us: int, now_us: int) -> list[Event]:
        """A price of ``symbol`` published at ``published_us`` arrived at ``now_us``, already
        older than its limit: the market is stale (reported once; the next fresh ``observe``
        recovers it). The price does not count as heard from the market."""
        self._seen.setdefault(symbol, published_us)
        if symbol in self.stale:
            return []
        self.stale.add(symbol)
        limit = self._limit(symbol)
        return [FeedStale(event_id=f"stale-old:{symbol}:{published_us}", ts_event=now_us, ts_ingest=now_us,
                          symbol=symbol, reason="stale",
                          detail=f"price published {(now_us - published_us) // 1000} ms before it arrived "
                                 f"(limit {limit // 1000} ms)")]

    def check(self, now_us: int) -> list[Event]:
        """Markets that went silent for longer than their limit since the last check."""
        out: list[Event] = []
        for symbol in sorted(self._seen):
            if symbol in self.stale:
                continue
            silent = now_us - self._seen[symbol]
            limit = self._limit(symbol)
            if silent > limit:
                self.stale.add(symbol)
                out.append(FeedStale(event_id=f"stale:{symbol}:{now_us}", ts_event=now_us, ts_ingest=now_us,
                                     symbol=symbol, reason="stale",
                                     detail=f"no price for {silent // 1000} ms (limit {limit // 1000} ms)"))
        return out
