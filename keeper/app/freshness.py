"""The live keeper's last look before it records a live intent: are its prices fresh by the
wall clock?

The core only knows log time, so a log whose prices are old by the wall clock (an old log
imported into a running daemon, a projector catching up on a backlog) looks fresh to it: it
decides live on prices minutes old. Feeds are guarded where they enter (``keeper.feeds``: a
price already older than ``[feeds] staleness_ms`` at ingest makes its market stale in the log
before it is recorded); what reaches the log any other way is guarded here, where the daemon
appends what its core decided (``keeper.app.stamping.StampingLog``).

A live decision that used a price (of a market, not a ``fixed_prices`` symbol) older than the
limit by the wall clock is recorded **withheld**: the same decision with ``mode = "withheld"``
(the runner submits only ``live`` ones), followed by ``LiquidationExpired`` (``reason``
``withheld: ...``, naming the prices and their ages) that frees the bucket in the core, live
and in replay alike. ``keeper replay --verify`` counts a recorded withheld decision equal to
the derived live one but for its mode as agreeing (``keeper.replay.verify``): the core decided
the same; the shell held it back.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import msgspec

from keeper.clock import wall_clock_us
from keeper.domain import events as ev

__all__ = ["WITHHELD", "FreshnessGuard"]

WITHHELD = "withheld"
"""The mode of a live decision recorded on prices older than the limit (never submitted)."""


class FreshnessGuard:
    """``screen(events)`` returns ``events`` with each live intent on a stale price withheld;
    ``recover(entries)`` the ``FeedRecovered`` of the markets a fresh price brought back.

    ``state()`` is the core's state (``None`` before it started): its newest price time per
    symbol (µs, ``State.price_time``) and its unsafe markets; ``limit_us`` is ``[feeds]
    staleness_ms``; symbols in ``fixed`` (priced by definition) are never stale.

    A withheld decision also makes its stale markets unsafe in the log (``FeedStale``, reason
    ``stale``): the expiry frees the bucket, and without it the core would decide again at once
    on the same prices. A market unsafe for staleness comes back (``FeedRecovered``) with the
    first price fresh by the wall clock the keeper reads for it.
    """

    def __init__(self, limit_us: int, state: Callable[[], Any], *, fixed: Collection[str] = (),
                 now_us: Callable[[], int] = wall_clock_us) -> None:
        self.limit_us = limit_us
        self.state = state
        self.fixed = frozenset(fixed)
        self.now_us = now_us
        self.withheld = 0

    def would_withhold(self, events: Sequence[ev.Event]) -> list[str]:
        """The event ids of the live intents in ``events`` that ``screen`` would withhold now."""
        now = self.now_us()
        return [e.event_id for e in events if type(e) is ev.LiquidationIntended
                and e.decision.mode == "live" and self.stale(e.decision, now)]

    def stale(self, d: ev.Decision, now: int) -> list[tuple[str, int]]:
        """(symbol, age µs) of the decision's prices older than the limit, sorted."""
        s = self.state()
        times: Mapping[str, int] = s.price_time if s is not None else {}
        out = []
        for sym in sorted(d.prices):
            if sym in self.fixed or sym not in times:
                continue
            age = now - times[sym]
            if age > self.limit_us:
                out.append((sym, age))
        return out

    def screen(self, events: Sequence[ev.Event], recorded: Collection[str] = ()) -> list[ev.Event]:
        """``events`` with each live intent on a stale price withheld (class docstring), except
        those whose ``event_id`` is in ``recorded``: intents the log already holds (re-derived
        after a restart or a takeover), passed unchanged: the append drops them as duplicates and
        their outcome is the recorded one's."""
        now = self.now_us()
        out: list[ev.Event] = []
        for e in events:
            if type(e) is not ev.LiquidationIntended or e.decision.mode != "live" \
                    or e.event_id in recorded:
                out.append(e)
                continue
            assert isinstance(e, ev.LiquidationIntended)
            old = self.stale(e.decision, now)
            if not old:
                out.append(e)
                continue
            d = e.decision
            ages = ", ".join(f"{sym} {age / 1e6:.1f} s old" for sym, age in old)
            why = f"prices older than {self.limit_us / 1e6:g} s by the wall clock ({ages})"
            out.append(msgspec.structs.replace(e, decision=msgspec.structs.replace(d, mode=WITHHELD)))
            limit = f"limit {self.limit_us / 1e6:g} s"
            out += [ev.FeedStale(event_id=f"stale-wall:{sym}:{d.trigger}", ts_event=e.ts_event,
                                 symbol=sym, reason="stale", detail=f"newest price {age / 1e6:.1f} s old "
                                 f"by the wall clock when a decision used it ({limit})")
                    for sym, age in old]
            out.append(ev.LiquidationExpired(event_id=f"withheld:{d.intent_id}", ts_event=e.ts_event,
                                             causation_id=d.intent_id, intent_id=d.intent_id,
                                             account=d.account, bucket=d.bucket, reason=f"withheld: {why}"))
            self.withheld += 1
        return out

    def recover(self, entries: Sequence[Any]) -> list[ev.Event]:
        """For each market unsafe for staleness (``FeedStale`` reason ``stale``), the first price
        in ``entries`` (log entries, applied) that is fresh by the wall clock brings it back."""
        s = self.state()
        if s is None or not s.unsafe:
            return []
        now = self.now_us()
        out: list[ev.Event] = []
        done: set[str] = set()
        for entry in entries:
            e = entry.event
            if type(e) is not ev.PriceUpdated or e.symbol in done or s.unsafe.get(e.symbol) != "stale":
                continue
            assert isinstance(e, ev.PriceUpdated)
            if now - (e.publish_time or e.ts_event) <= self.limit_us:
                done.add(e.symbol)
                out.append(ev.FeedRecovered(event_id=f"recovered-wall:{e.symbol}:{entry.id}",
                                            ts_event=e.ts_event, symbol=e.symbol, reason="stale"))
        return out
