"""The normaliser: raw frames or quotes in, events to record and rejects to dead-letter out.

Pure apart from logging: no I/O, no clock (``now_us`` is passed in). The order is
parse -> symbol mapping -> value guards -> out-of-order guard -> combine (median, deviation,
jump) -> staleness watchdog. Every rejection is counted in ``rejected[reason]``, logged once and
returned as a ``Reject`` so that the caller can dead-letter it with its payload.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec
import structlog

from keeper.domain.events import Event, PriceUpdated
from keeper.feeds.combine import MarketCombiner, MarketLimits
from keeper.feeds.guards import Check, OrderGuard, check_value, exponent_check
from keeper.feeds.parsers import ParseError, Parser, Quote
from keeper.feeds.watchdog import StalenessWatchdog

__all__ = ["Outcome", "PricePipeline", "Reject", "mark_frame"]

log = structlog.get_logger()


class Reject(NamedTuple):
    """One refused input: where it came from, why, and the bytes to keep in the dead letters."""

    source: str
    reason: str
    detail: str
    payload: bytes


class Outcome(NamedTuple):
    events: list[Event]
    rejects: list[Reject]


def _payload(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else bytes(raw)


def mark_frame(events: list[Event]) -> list[Event]:
    """Mark every ``PriceUpdated`` of one frame but its last ``frame_more`` (in place; returned)."""
    prices = [i for i, e in enumerate(events) if isinstance(e, PriceUpdated)]
    for i in prices[:-1]:
        e = events[i]
        assert isinstance(e, PriceUpdated)
        events[i] = msgspec.structs.replace(e, frame_more=True)
    return events


class PricePipeline:
    """Turns quotes into ``PriceUpdated``/``FeedStale``/``FeedRecovered`` events.

    ``limits`` gives per-market limits (``default`` for the others). ``symbol_map`` renames a
    source's symbols (``"BTCUSDT"`` or ``"binance:BTCUSDT"`` -> ``"BTC-USD"``); with ``only``,
    quotes for other (mapped) symbols are skipped silently (``ignored`` counts them): a
    Hyperliquid ``allMids`` frame lists every coin. With ``check_age`` (the daemon: ``now_us`` is
    the wall clock), a quote already older than its market's ``stale_after_us`` when it arrives
    makes the market stale in the log (``FeedStale`` before the price it brings): the keeper
    decides nothing on it until a fresh price recovers it.
    """

    def __init__(self, *, limits: Mapping[str, MarketLimits] | None = None,
                 default: MarketLimits | None = None, symbol_map: Mapping[str, str] | None = None,
                 only: Sequence[str] | None = None, checks: Sequence[Check] | None = None,
                 check_age: bool = False) -> None:
        self.limits = dict(limits or {})
        self.default = default or MarketLimits()
        self.symbol_map = dict(symbol_map or {})
        self.only = frozenset(only) if only is not None else None
        default_checks: tuple[Check, ...] = (check_value, exponent_check())
        self.checks = tuple(checks) if checks is not None else default_checks
        self.order = OrderGuard()
        self.markets: dict[str, MarketCombiner] = {}
        self.watchdog = StalenessWatchdog(self._stale_limit)
        self.check_age = check_age
        self.rejected: Counter[str] = Counter()
        self.ignored = 0
        self.accepted = 0

    def _stale_limit(self, symbol: str) -> int:
        return self.limits.get(symbol, self.default).stale_after_us

    def market(self, symbol: str) -> MarketCombiner:
        m = self.markets.get(symbol)
        if m is None:
            m = self.markets[symbol] = MarketCombiner(symbol, self.limits.get(symbol, self.default))
        return m

    def process_frame(self, source: str, parser: Parser, raw: bytes | str, now_us: int) -> Outcome:
        """Parse one frame and process its quotes; a parse failure is one reject."""
        try:
            quotes = parser(raw, now_us)
        except ParseError as exc:
            return Outcome([], [self._reject(source, exc.reason, exc.detail, raw)])
        return self.process_quotes(quotes, now_us, raw)

    def process_quotes(self, quotes: Sequence[Quote], now_us: int, raw: bytes | str = b"") -> Outcome:
        """The quotes of one frame (one published instant): every price but the frame's last is
        marked ``frame_more``, so the keeper decides on the frame as a whole."""
        events: list[Event] = []
        rejects: list[Reject] = []
        for q in quotes:
            self.process_quote(q, now_us, events, rejects, raw)
        return Outcome(mark_frame(events), rejects)

    def process_quote(self, q: Quote, now_us: int, events: list[Event], rejects: list[Reject],
                      raw: bytes | str = b"") -> None:
        """Append to ``events``/``rejects`` what one quote gives."""
        if self.symbol_map:
            mapped = self.symbol_map.get(f"{q.source}:{q.symbol}") or self.symbol_map.get(q.symbol)
            if mapped is not None:
                q = Quote(q.source, mapped, q.price, q.publish_time, q.conf)
        if self.only is not None and q.symbol not in self.only:
            self.ignored += 1
            return
        for check in self.checks:
            reason = check(q)
            if reason is not None:
                detail = f"{q.symbol} {q.price} at {q.publish_time}"
                rejects.append(self._reject(q.source, reason, detail, raw))
                return
        reason = self.order.check(q)
        if reason is not None:
            last = self.order.last(q.source, q.symbol)
            rejects.append(self._reject(q.source, reason, f"{q.symbol} at {q.publish_time} < {last}", raw))
            return
        self.order.accept(q)
        out, reason = self.market(q.symbol).offer(q, now_us)
        events.extend(out)
        if reason is not None:
            self.rejected[reason] += 1
            log.warning("price_not_recorded", source=q.source, symbol=q.symbol, price=str(q.price),
                        reason=reason)
            return
        self.accepted += 1
        if self.check_age and now_us - q.publish_time > self._stale_limit(q.symbol):
            at = len(events) - len(out)  # the market goes stale before the old price is recorded
            events[at:at] = self.watchdog.arrived_old(q.symbol, q.publish_time, now_us)
            return
        events.extend(self.watchdog.observe(q.symbol, now_us))

    def check_stale(self, now_us: int) -> list[Event]:
        """The watchdog's verdict at ``now_us`` (call periodically)."""
        return self.watchdog.check(now_us)

    def _reject(self, source: str, reason: str, detail: str, raw: bytes | str) -> Reject:
        self.rejected[reason] += 1
        log.warning("price_rejected", source=source, reason=reason, detail=detail[:200])
        return Reject(source, reason, detail, _payload(raw))


