"""A parallel replay worker's filter (``keeper.replay.parallel``): which entries of a batch are its
own, and where the log time must move before one of them. Compiled (``keeper/_compiled.py``):
every worker runs it over every entry of the log.
"""

from __future__ import annotations

import zlib
from typing import Any, cast

from keeper.domain import events as ev
from keeper.domain.decide import bucket_of_intent

Entry = tuple[str, ev.Event]

_GLOBAL: frozenset[type] = frozenset({
    ev.PriceUpdated, ev.MarketListed, ev.MarketParamsChanged, ev.AssetListed, ev.AssetParamsChanged,
    ev.FeedStale, ev.FeedRecovered, ev.KeeperPaused, ev.KeeperResumed})
"""Entries every account sees: every worker keeps them."""
_ACCOUNT: frozenset[type] = frozenset(ev.ACCOUNT_EVENTS)
_OUTCOME: frozenset[type] = frozenset(ev.OUTCOME_EVENTS)
assert _GLOBAL | _ACCOUNT | _OUTCOME | {ev.LiquidationIntended} == set(ev.EVENT_TYPES.values()), \
    "every event type must be routed: global, or to one account"


def account_of(event: ev.Event) -> str | None:
    """The account an entry belongs to, or None for an entry every account sees."""
    t = type(event)
    if t in _ACCOUNT:
        acct: str = cast(Any, event).account  # an account event (ACCOUNT_EVENTS): all have it
        return acct
    if t is ev.LiquidationIntended:
        assert isinstance(event, ev.LiquidationIntended)
        return event.decision.account
    if t in _OUTCOME:
        assert isinstance(event, ev._Outcome)
        return event.account or bucket_of_intent(event.intent_id).partition("/")[0]
    return None


def shard_of(account: str, jobs: int) -> int:
    """The worker (``0 .. jobs-1``) that replays ``account``: stable across runs and machines."""
    return zlib.crc32(account.encode()) % jobs


class Router:
    """Splits batches for worker ``shard`` of ``jobs``, keeping the log time of the whole log."""

    def __init__(self, jobs: int, shard: int) -> None:
        self.jobs = jobs
        self.shard = shard
        self._mine: dict[str, bool] = {}
        self.log_time = 0
        """The log time over every entry so far (what one core would have)."""
        self.fed = 0
        """The log time the worker's cores have once its kept entries so far are handled."""

    def split(self, batch: list[Entry]) -> list[tuple[int, list[Entry]]]:
        """The batch's own and global entries, in order, as runs ``(log time, entries)``: before
        a run whose log time is not 0 the cores' log time must be raised to it (another worker's
        entry moved it past what this worker has seen, and one core would have seen that)."""
        mine, jobs, shard = self._mine, self.jobs, self.shard
        price_t = ev.PriceUpdated
        lt, fed = self.log_time, self.fed
        runs: list[tuple[int, list[Entry]]] = []
        own: list[Entry] = []
        at = 0
        for item in batch:
            e = item[1]
            ts = e.ts_event
            if type(e) is not price_t:
                account = account_of(e)
                if account is not None:
                    m = mine.get(account)
                    if m is None:
                        m = zlib.crc32(account.encode()) % jobs == shard
                        mine[account] = m
                    if not m:
                        if ts > lt:  # noqa: PLR1730 (compiled hot loop: no call)
                            lt = ts
                        continue
            if lt > fed and lt > ts:
                if own:
                    runs.append((at, own))
                own = []
                at = lt
                fed = lt
            own.append(item)
            if ts > fed:  # noqa: PLR1730
                fed = ts
            if ts > lt:  # noqa: PLR1730
                lt = ts
        if own:
            runs.append((at, own))
        self.log_time, self.fed = lt, fed
        return runs
