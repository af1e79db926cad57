"""The executor role's pure parts: which intents a pause holds, the pause a venue's halt makes,
and the ids of the records it appends for an intent."""

from __future__ import annotations

from keeper.domain import events as ev
from keeper.execution import outcomes
from keeper.execution.base import Submission
from keeper.execution.pauses import VENUE_HALT, Pauses
from tests.execution.helpers import decision, intent


def test_a_pause_holds_the_intents_it_covers_and_counts_them() -> None:
    counted: list[str] = []
    pauses = Pauses("c1", count=counted.append)
    assert not pauses.holds(intent(1))
    pauses.follow(ev.KeeperPaused(event_id="p", ts_event=1, scope="*", reason="operator"))
    assert pauses.holds(intent(1)) and counted == ["held_paused"]
    assert pauses.follow(ev.KeeperResumed(event_id="r", ts_event=2, scope="*"))
    assert not pauses.holds(intent(1))


def test_a_venue_halt_pauses_its_market_once() -> None:
    counted: list[str] = []
    pauses = Pauses("c1", count=counted.append)
    d = decision(1)
    assert pauses.venue_halt(d, "healthy at venue price", 5) == []
    [pause] = pauses.venue_halt(d, "market halted: BTC-USD", 5)
    assert isinstance(pause, ev.KeeperPaused)
    assert pause.scope == "BTC-USD" and pause.reason.startswith(VENUE_HALT)
    assert pause.event_id == f"halt:BTC-USD@{d.intent_id}" and counted == ["venue_halts"]
    pauses.follow(pause)
    assert pauses.venue_halts == {"BTC-USD": pause.event_id}
    assert pauses.venue_halt(d, "market halted: BTC-USD", 6) == []  # paused already


def test_every_outcome_of_an_intent_shares_one_event_id() -> None:
    d = decision(1)
    sub = Submission("ref-1", duplicate=False, events=[])
    records = [outcomes.confirmed(d, sub, 1), outcomes.rejected(d, "no", 1), outcomes.expired(d, "ttl", 1)]
    assert {r.event_id for r in records} == {outcomes.outcome_id(d.intent_id)} == {f"out:{d.intent_id}"}
    assert all(r.causation_id == d.intent_id for r in records)
    assert outcomes.submitted(d, 3, "http", 1).event_id == f"sub:{d.intent_id}#3"
