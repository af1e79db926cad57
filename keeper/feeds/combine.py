"""One market's price from several sources: median, spread, deviation and jump limits.

``MarketCombiner`` is pure (no I/O, no clock: times come in with the quotes). Fed one guarded
quote at a time, it answers with the events to record and, when the quote must not move the
market, the reason:

- The recorded price is the **median** of the fresh sources (a source is fresh while its last
  quote is within ``stale_after_us`` of the newest one); ``spread`` is ``(max - min) / median``
  rounded half-even to ``spread_places`` decimals. The median of an even count is the mean of
  the middle two, exact in ``Decimal`` for prices of up to 27 significant digits.
- **Deviation**: with three or more fresh sources, a quote farther than ``max_deviation`` from
  the median is an outlier: it is not recorded, its source leaves the median until it comes
  back within the limit (or goes stale), and the market becomes unsafe (``FeedStale`` reason
  ``deviation``). With two sources that disagree beyond the limit nobody can tell which one is
  wrong: nothing is recorded until they agree. ``FeedRecovered('deviation')`` follows when the
  sources agree again and no outlier is left.
- **Jump**: a combined price farther than ``max_jump`` from the last recorded one is not
  recorded (``FeedStale`` reason ``jump``) unless ``jump_confirmations`` consecutive candidates
  confirm the new level (each within ``max_jump`` of the first), which is then recorded with
  ``FeedRecovered('jump')``: a real crash is followed, a single bad print is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from keeper.domain.events import Event, FeedRecovered, FeedStale, PriceUpdated
from keeper.feeds.guards import exceeds
from keeper.feeds.parsers import Quote

__all__ = ["MarketCombiner", "MarketLimits", "median"]


@dataclass(frozen=True)
class MarketLimits:
    """Per-market guard limits (relative moves as fractions: ``0.1`` is 10%)."""

    max_jump: Decimal | None = None
    max_deviation: Decimal | None = None
    stale_after_us: int = 30_000_000
    jump_confirmations: int = 3
    spread_places: int = 8


def median(values: list[Decimal]) -> Decimal:
    """The median of a non-empty list (mean of the middle two for an even count)."""
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


class MarketCombiner:
    """The combined price of one market (see the module docstring for the rules)."""

    def __init__(self, symbol: str, limits: MarketLimits) -> None:
        self.symbol = symbol
        self.limits = limits
        self.last_price: Decimal | None = None
        self.unsafe: set[str] = set()
        self._latest: dict[str, Quote] = {}
        self._outliers: dict[str, int] = {}
        self._pending: Decimal | None = None
        self._confirmations = 0
        self._quantum = Decimal(1).scaleb(-limits.spread_places)

    def offer(self, q: Quote, ts_ingest: int = 0) -> tuple[list[Event], str | None]:
        """Take one guarded quote; return (events to record, rejection reason or None)."""
        lim = self.limits
        latest = self._latest
        alone = not latest or (len(latest) == 1 and q.source in latest)
        if (alone and not self._outliers and self._pending is None
                and (self.last_price is None or lim.max_jump is None
                     or not exceeds(self.last_price, q.price, lim.max_jump))):
            return self._single(q, ts_ingest), None
        horizon = q.publish_time - lim.stale_after_us
        fresh = {s: x for s, x in self._latest.items() if x.publish_time >= horizon and s != q.source}
        self._outliers = {s: t for s, t in self._outliers.items() if t >= horizon}
        events: list[Event] = []
        prices = [x.price for x in fresh.values()]
        if lim.max_deviation is not None and len(prices) >= 2:
            med = median([*prices, q.price])
            if exceeds(med, q.price, lim.max_deviation):
                self._latest.pop(q.source, None)
                self._outliers[q.source] = q.publish_time
                detail = f"{q.source} {q.price} vs median {med} of {len(prices) + 1} sources"
                self._enter("deviation", q, detail, ts_ingest, events)
                return events, "deviation"
        self._latest[q.source] = q
        self._outliers.pop(q.source, None)
        fresh[q.source] = q
        prices.append(q.price)
        cand = median(prices)
        if lim.max_deviation is not None and len(prices) == 2:
            worst = max(prices, key=lambda p: abs(p - cand))
            if exceeds(cand, worst, lim.max_deviation):
                lo, hi = min(prices), max(prices)
                self._enter("deviation", q, f"sources disagree: {lo} .. {hi}", ts_ingest, events)
                return events, "deviation"
        if self.last_price is not None and exceeds(self.last_price, cand, lim.max_jump):
            if self._pending is not None and not exceeds(self._pending, cand, lim.max_jump):
                self._confirmations += 1
            else:
                self._pending, self._confirmations = cand, 1
            if self._confirmations < lim.jump_confirmations:
                detail = f"{self.last_price} -> {cand} ({self._confirmations}/{lim.jump_confirmations})"
                self._enter("jump", q, detail, ts_ingest, events)
                return events, "jump"
        self._pending, self._confirmations = None, 0
        events.append(self._price(q, cand, fresh, ts_ingest))
        self.last_price = cand
        self._leave("jump", q, ts_ingest, events)
        if not self._outliers:
            self._leave("deviation", q, ts_ingest, events)
        return events, None

    def _single(self, q: Quote, ts_ingest: int) -> list[Event]:
        """The one-source fast path: same result as the general path, without the median."""
        self._latest[q.source] = q
        self.last_price = q.price
        event = PriceUpdated(event_id=f"{q.source}:{self.symbol}:{q.publish_time}", ts_event=q.publish_time,
                             ts_ingest=ts_ingest, symbol=self.symbol, price=q.price,
                             publish_time=q.publish_time, source=q.source, conf=q.conf)
        if not self.unsafe:
            return [event]
        events: list[Event] = [event]
        self._leave("jump", q, ts_ingest, events)
        self._leave("deviation", q, ts_ingest, events)
        return events

    def _price(self, q: Quote, price: Decimal, fresh: dict[str, Quote], ts_ingest: int) -> PriceUpdated:
        eid = f"{q.source}:{self.symbol}:{q.publish_time}"
        if len(fresh) == 1:
            return PriceUpdated(event_id=eid, ts_event=q.publish_time, ts_ingest=ts_ingest,
                                symbol=self.symbol, price=price, publish_time=q.publish_time,
                                source=q.source, conf=q.conf)
        ps = [x.price for x in fresh.values()]
        spread = ((max(ps) - min(ps)) / price).quantize(self._quantum, ROUND_HALF_EVEN)
        return PriceUpdated(event_id=eid, ts_event=q.publish_time, ts_ingest=ts_ingest,
                            symbol=self.symbol, price=price, publish_time=q.publish_time,
                            source=f"median({','.join(sorted(fresh))})", spread=spread)

    def _enter(self, reason: str, q: Quote, detail: str, ts_ingest: int, out: list[Event]) -> None:
        if reason in self.unsafe:
            return
        self.unsafe.add(reason)
        out.append(FeedStale(event_id=f"{reason}:{self.symbol}:{q.source}:{q.publish_time}",
                             ts_event=q.publish_time, ts_ingest=ts_ingest, symbol=self.symbol,
                             reason=reason, detail=detail))

    def _leave(self, reason: str, q: Quote, ts_ingest: int, out: list[Event]) -> None:
        if reason not in self.unsafe:
            return
        self.unsafe.discard(reason)
        out.append(FeedRecovered(event_id=f"recovered-{reason}:{self.symbol}:{q.source}:{q.publish_time}",
                                 ts_event=q.publish_time, ts_ingest=ts_ingest, symbol=self.symbol,
                                 reason=reason))
