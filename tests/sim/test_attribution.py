"""Where a keeper's excess bad debt comes from (``keeper.sim.attribution``): the parts add up to
the excess, a keeper that does what the perfect keeper does has none, a late one's excess is all
lateness, and one that closes a hedged bucket a position at a time shows it as sizing."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

import pytest

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.scenarios.book import generate_book
from keeper.sim.attribution import PARTS, attribute
from keeper.sim.ideal import MAX_PER_TICK, ideal_run, liquidatable, perfect_decision
from keeper.sim.prices import Tick
from keeper.sim.venue import Venue
from tests.sim.test_ideal import _random_path

Policy = Callable[[Venue, str, str, str], ev.Decision | None]


def _recorded_run(book: list[ev.Event], path: list[Tick], delay: int, policy: Policy = perfect_decision
                  ) -> list[tuple[str, ev.Event]]:
    """A log as the demo records it, of a keeper that decides ``delay`` ticks after the venue
    first finds a bucket liquidatable (then at every tick it still is), with ``policy``."""
    venue = Venue(lambda: 0)
    venue.set_marks(path[0].ts_us, path[0].prices)
    venue.load(book)
    entries: list[tuple[str, ev.Event]] = []
    seen: dict[tuple[str, str], int] = {}
    marks: dict[str, Decimal] = {}
    for t, tick in enumerate(path):
        venue.set_marks(tick.ts_us, tick.prices)
        marks.update(tick.prices)
        for k, (sym, p) in enumerate(sorted(marks.items())):
            entries.append((f"{t}-{k}", ev.PriceUpdated(event_id=f"p{t}-{sym}", ts_event=tick.ts_us,
                                                        symbol=sym, price=p, frame_more=k < len(marks) - 1)))
        trigger = entries[-1][0]
        for a in sorted(venue.accounts):
            for b in sorted(venue.accounts[a].buckets):
                for n in range(MAX_PER_TICK):
                    if not liquidatable(venue, a, b):
                        break
                    seen.setdefault((a, b), t)
                    if t < seen[(a, b)] + delay:
                        break
                    d = policy(venue, a, b, f"liq:{a}/{b}@{trigger}#{n}")
                    if d is None:
                        break
                    d = ev.Decision(**{**{f: getattr(d, f) for f in d.__struct_fields__}, "trigger": trigger})
                    entries.append((f"{t}-i{len(entries)}", ev.LiquidationIntended(
                        event_id=d.intent_id, ts_event=0, decision=d)))
                    result = venue.liquidate(d)
                    assert result.status == "accepted", result.reason
                    entries += [(f"{t}-e{len(entries)}", codec.decode(payload)) for payload in result.events]
                    entries.append((f"{t}-o{len(entries)}", ev.LiquidationConfirmed(
                        event_id=f"out:{d.intent_id}", ts_event=0, intent_id=d.intent_id)))
    return entries


def _case(seed: int, sigma: float = 0.02, drift: float = -0.01) -> tuple[list[ev.Event], list[Tick]]:
    path = _random_path(random.Random(seed), 40, sigma, drift)
    return generate_book(60, seed, path[0].prices).events, path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_keeper_acting_as_the_perfect_keeper_has_no_excess(seed: int) -> None:
    book, path = _case(seed)
    ideal = ideal_run(book, path)
    a = attribute(book, path, _recorded_run(book, path, delay=0), ideal)
    assert ideal.bad_debt > 0
    assert a.keeper == a.ideal == ideal.bad_debt
    assert all(b.keeper == b.ideal for b in a.buckets)
    assert a.parts["sizing"] == a.parts["conflated"] == 0


@pytest.mark.parametrize(("seed", "delay"), [(1, 1), (2, 2), (3, 3)])
def test_the_parts_add_up_to_the_excess_and_a_late_keeper_s_is_lateness(seed: int, delay: int) -> None:
    book, path = _case(seed)
    a = attribute(book, path, _recorded_run(book, path, delay), ideal_run(book, path))
    assert sum(a.parts.values()) == a.keeper - a.ideal
    for b in a.buckets:
        assert sum(b.parts.get(p, Decimal(0)) for p in PARTS) == b.excess
        assert b.parts.get("sizing", 0) == 0
    assert a.parts["late"] > 0


def _one_position_at_a_time(venue: Venue, account: str, bucket: str, intent_id: str) -> ev.Decision | None:
    d = perfect_decision(venue, account, bucket, intent_id)
    positions = venue.accounts[account].buckets[bucket].positions
    if d is None or len(positions) < 2:
        return d
    market = max(positions, key=lambda m: (abs(positions[m].size) * venue.price(m), m))
    return ev.Decision(**{**{f: getattr(d, f) for f in d.__struct_fields__}, "action": "close_position",
                          "market": market, "size": positions[market].size})


def test_closing_a_position_at_a_time_shows_as_sizing() -> None:
    book, path = _case(4, sigma=0.04, drift=0.0)  # markets apart: hedged buckets lose on one side
    a = attribute(book, path, _recorded_run(book, path, 0, _one_position_at_a_time), ideal_run(book, path))
    assert sum(a.parts.values()) == a.keeper - a.ideal
    assert a.parts["sizing"] > 0
    assert a.parts["conflated"] == 0
