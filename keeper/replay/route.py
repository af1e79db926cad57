"""Per-entry loops of a replay, compiled (``keeper/_compiled.py``): a parallel worker's filter
(``keeper.replay.parallel``: which entries of a batch are its own, and where the log time must
move before one of them) and the recorded intents of a batch (replay and verify count and
compare them). Every replay runs them over every entry of the log.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Final, cast

from keeper.domain import events as ev
from keeper.domain.decide import bucket_of_intent

__all__ = ["Entry", "Router", "account_of", "recorded", "shard_of"]

Entry = tuple[str, ev.Event]

_GLOBAL: Final[frozenset[type]] = frozenset({
    ev.PriceUpdated, ev.MarketListed, ev.MarketParamsChanged, ev.AssetListed, ev.AssetParamsChanged,
    ev.FeedStale, ev.FeedRecovered, ev.KeeperPaused, ev.KeeperResumed, *ev.CHAIN_EVENTS})
"""Entries every account sees: every worker keeps them."""
_ACCOUNT: Final[frozenset[type]] = frozenset(ev.ACCOUNT_EVENTS)
_OUTCOME: Final[frozenset[type]] = frozenset(ev.OUTCOME_EVENTS)
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


def recorded(batch: Sequence[Entry]) -> list[Entry]:
    """The batch's recorded intents (``LiquidationIntended`` entries), in order: one compiled pass
    where a replay would otherwise test every entry's type in Python."""
    intended = ev.LiquidationIntended
    return [item for item in batch if type(item[1]) is intended]


def shard_of(account: str, jobs: int) -> int:
    """The worker (``0 .. jobs-1``) that replays ``account``: stable across runs and machines."""
    return zlib.crc32(account.encode()) % jobs


class Router:
    """Splits batches for worker ``shard`` of ``jobs``, keeping the log time of the whole log."""

    def __init__(self, jobs: int, shard: int) -> None:
        self.jobs = jobs
        self.shard = shard
        self.log_time = 0
        """The highest ``ts_event`` read so far (every other worker's entry is read)."""
        self.fed = 0
        """A lower bound of the log time the worker's cores have once its kept entries so far
        are handled (their own times are read only while another worker's entry is ahead)."""
        self.recorded = 0
        """Recorded intents (``LiquidationIntended`` entries) among the entries kept so far."""

    def split(self, batch: list[Entry]) -> list[tuple[int, list[Entry]]]:
        """The batch's own and global entries, in order, as runs ``(log time, entries)``: before
        a run whose log time is not 0 the cores' log time must be raised to it (another worker's
        entry moved it past what this worker has seen, and one core would have seen that).
        ``recorded`` counts the recorded intents kept.

        A kept entry's time is read only while a dropped one is ahead of ``fed``: then either it
        catches up (``fed`` moves to it) or a run starts at the dropped one's time. ``fed`` being
        a lower bound can only start a run that changes nothing (raising to a time the cores
        have), never miss one. Runs are slices of the batch, not copies entry by entry.
        """
        jobs, shard = self.jobs, self.shard
        price_t = ev.PriceUpdated
        intended_t = ev.LiquidationIntended
        # the most frequent account events told by identity (held in locals: a module global
        # is a dict lookup, a set lookup hashes the type); account_of for the rest
        deposit_t, position_t, funding_t, withdraw_t = (
            ev.Deposit, ev.PositionChanged, ev.FundingApplied, ev.Withdraw)
        lt, fed = self.log_time, self.fed
        runs: list[tuple[int, list[Entry]]] = []
        own: list[Entry] = []
        at = 0
        start = 0  # the first entry of the batch not yet in ``own`` nor dropped
        kept_intents = 0
        n = len(batch)
        for i in range(n):
            e = batch[i][1]
            t = type(e)
            if t is not price_t:
                if t is deposit_t or t is position_t or t is funding_t or t is withdraw_t:
                    account: str | None = cast(Any, e).account
                else:
                    account = account_of(e)
                if account is not None:
                    # computed each time (a native call), not memoised: a dict of every account
                    # is cold in cache at each lookup (docs/performance.md)
                    if shard_of(account, jobs) != shard:
                        if start < i:
                            own.extend(batch[start:i])
                        start = i + 1
                        ts = e.ts_event
                        if ts > lt:  # noqa: PLR1730 (compiled hot loop: no call)
                            lt = ts
                        continue
                    if t is intended_t:
                        kept_intents += 1
            if lt > fed:
                ts = e.ts_event
                if lt > ts:
                    if start < i:
                        own.extend(batch[start:i])
                    if own:
                        runs.append((at, own))
                    own = []
                    start = i
                    at = lt
                    fed = lt
                else:
                    fed = lt = ts
        if start < n:
            own.extend(batch[start:n])
        if own:
            runs.append((at, own))
        self.log_time, self.fed = lt, fed
        self.recorded += kept_intents
        return runs
