"""The kill switch and market pauses as the executor role follows them in the log.

``Pauses.follow`` reads ``KeeperPaused``/``KeeperResumed`` in log order; ``Pauses.holds`` says
whether an intent is covered by a pause (the kill switch ``*``, a market it names, or a symbol
it was priced on): the runner then leaves it pending, unsent and unacked, and reconciles it on
the resume. What a pause state knows is what this process has read since it started.

A rejection whose reason says the venue halted the market (``HALTED_REASON``) becomes a pause of
that market (``Pauses.venue_halt``, reason prefixed ``VENUE_HALT``), recorded with the rejection;
``watch_venue_halts`` asks the venue until it trades the market again and records the
``KeeperResumed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from keeper.aio import wait_event
from keeper.domain import events as ev
from keeper.domain import guards
from keeper.errors import LogError

__all__ = ["HALTED_REASON", "VENUE_HALT", "Pauses", "watch_venue_halts"]

HALTED_REASON = "market halted"
"""How a venue's rejection says the market is halted (the reference venue's ``market halted:
<market>``): the runner pauses the market in the log (``KeeperPaused``) with the rejection."""
VENUE_HALT = "venue:"
"""The start of the reason of a pause the runner recorded for a venue's halt."""

_log = structlog.get_logger()


class Pauses:
    """Pause scopes read from the log (``*``: kill switch) -> their reason, and the markets
    paused because the venue halted them -> the pause's event id. ``count`` is told of each
    intent held (``held_paused``) and each halt recorded (``venue_halts``)."""

    def __init__(self, consumer: str, count: Callable[[str], None] = lambda _what: None) -> None:
        self.consumer = consumer
        self.count = count
        self.scopes: dict[str, str] = {}
        self.venue_halts: dict[str, str] = {}
        self.halting: set[str] = set()
        """Markets whose venue-halt pause this runner has recorded but not read back yet."""

    def follow(self, event: ev.Event) -> bool:
        """Track the kill switch and market pauses from the log; True on a resume."""
        if isinstance(event, ev.KeeperPaused | ev.KeeperResumed):
            self.halting.discard(event.scope)
        if isinstance(event, ev.KeeperPaused):
            self.scopes[event.scope] = event.reason
            if event.reason.startswith(VENUE_HALT):
                self.venue_halts[event.scope] = event.event_id
            _log.warning("submissions_paused", consumer=self.consumer, scope=event.scope)
        elif isinstance(event, ev.KeeperResumed) and event.scope in self.scopes:
            del self.scopes[event.scope]
            self.venue_halts.pop(event.scope, None)
            _log.info("submissions_resumed", consumer=self.consumer, scope=event.scope)
            return True
        return False

    def holds(self, intent: ev.Event) -> bool:
        """Whether a pause covers a ``LiquidationIntended`` (the kill switch, its market, the
        symbols it was priced on)."""
        if not self.scopes:
            return False
        assert isinstance(intent, ev.LiquidationIntended)
        if _scopes_of(intent.decision).isdisjoint(self.scopes):
            return False
        self.count("held_paused")
        return True

    def covers(self, intent: ev.Event) -> bool:
        """``holds``, counting nothing, and also true for a market whose venue-halt pause this
        runner recorded and has not read back yet (the runner's hand-off, ahead of the log)."""
        if not self.scopes and not self.halting:
            return False
        assert isinstance(intent, ev.LiquidationIntended)
        scopes = _scopes_of(intent.decision)
        return not (scopes.isdisjoint(self.scopes) and scopes.isdisjoint(self.halting))

    def venue_halt(self, d: ev.Decision, reason: str, now: int) -> list[ev.Event]:
        """A rejection because the venue halted the market: the ``KeeperPaused`` to record with it
        (none when the market is paused already, or the rejection is of another kind)."""
        if not reason.startswith(HALTED_REASON):
            return []
        market = reason.partition(":")[2].strip() or d.market
        if not market or market in self.scopes:
            return []
        self.count("venue_halts")
        self.halting.add(market)
        _log.warning("market_halted_by_venue", market=market, intent_id=d.intent_id)
        return [ev.KeeperPaused(event_id=f"halt:{market}@{d.intent_id}", ts_event=now,
                                causation_id=d.intent_id, scope=market, reason=f"{VENUE_HALT} {reason}")]


def _scopes_of(d: ev.Decision) -> set[str]:
    """The pause scopes that cover a decision: the kill switch, its market, its symbols."""
    return {guards.KILL_SWITCH, *d.prices, *([d.market] if d.market else [])}


async def watch_venue_halts(pauses: Pauses, markets: Callable[[], Awaitable[Mapping[str, Any]]] | None,
                            *, append: Callable[[Sequence[ev.Event]], Awaitable[object]],
                            now_us: Callable[[], int], stop: asyncio.Event, interval_s: float) -> None:
    """While a market is paused because the venue halted it, ask the venue (``markets``: the
    reference venue's ``GET /markets``) every ``interval_s`` and ``append`` a ``KeeperResumed``
    once it trades again, until ``stop`` is set. The venue's view is a hint: a failed answer or
    a failed append is tried again at the next interval. Without ``markets`` (an executor that
    cannot tell) it returns at once: the pause is the operator's to lift (``POST /resume`` of the
    admin API)."""
    if markets is None:
        return
    while not await wait_event(stop, interval_s):
        if not pauses.venue_halts:
            continue
        try:
            view = await markets()
            halted = set(view.get("halted", []))
            listed = view.get("markets", {})
            halted |= {m for m, v in listed.items() if isinstance(v, dict) and v.get("halted")}
        except Exception as exc:  # the venue's view is a hint: asked again next time
            _log.info("venue_markets_unavailable", error=repr(exc)[:200])
            continue
        resumed = [(m, pid) for m, pid in sorted(pauses.venue_halts.items()) if m not in halted]
        if not resumed:
            continue
        now = now_us()
        try:
            await append([ev.KeeperResumed(event_id=f"resume:{pid}", ts_event=now, causation_id=pid,
                                           scope=m) for m, pid in resumed])
        except LogError as exc:
            _log.warning("venue_resume_not_recorded", error=str(exc)[:200])
            continue
        for m, _ in resumed:
            pauses.venue_halts.pop(m, None)
            _log.info("market_resumed_by_venue", market=m)
