"""The keeper core's exposure index: which buckets each symbol moves, and their screen rows.

``ExposureIndex`` follows the projected state (``keeper.domain.state``) bucket by bucket: after
an account event the core calls ``reindex`` (or ``balance_moved``, cheaper, when only one
balance moved) for that bucket; after a price it asks the screen (``screen.candidates``) which
exposed buckets may be liquidatable. Only buckets the core can decide on (``decidable``) are
indexed: a lending profile's core takes the buckets without positions, a perp profile's those
with, so cores of several profiles on one log never decide the same bucket.

Contract: after ``reindex(key)`` for every bucket an entry touched, ``exposed(symbol)`` is the
set of indexed buckets holding ``symbol`` and the screen's row of each indexed bucket is a
conservative bound of its health (the screen never misses a liquidatable bucket).
"""

from __future__ import annotations

from collections.abc import Iterable

from keeper.domain import events as ev
from keeper.domain import state as st
from keeper.domain.margin.profiles import Profile
from keeper.domain.model import Bucket, bucket_key
from keeper.domain.screen import Screen, balance_weight, screen_mode

__all__ = ["ExposureIndex", "find_bucket"]


def find_bucket(state: st.State, key: str) -> Bucket | None:
    """``state.find_bucket(key)``, compiled: the core looks a bucket up two or three times per
    account event, and a call into the interpreted ``State`` method costs more than the lookup
    (``docs/keeper.md``, *Reference and fast paths*)."""
    account, _, name = key.partition("/")
    a = state.accounts.get(account)
    return None if a is None else a.buckets.get(name)


class ExposureIndex:
    """The exposure of ``state``'s decidable buckets, by symbol, and their screen rows."""

    def __init__(self, state: st.State, profile: Profile) -> None:
        self.state = state
        self.screen = Screen()
        self.screen.refresh = self.reindex  # a row left lagging (``Screen.defer``) is rebuilt here
        self.screen_mode = screen_mode(profile.kind, profile.model, profile.mm_at)
        """``(lending, mm_at_entry, always_check)`` for ``Screen.upsert`` (``screen_mode``)."""
        self.lending = profile.kind == "lending"
        self.exposure: dict[str, set[str]] = {}
        """Symbol -> keys of the indexed buckets that hold it."""
        self.symbols_of: dict[str, tuple[str, ...]] = {}
        """Key of each indexed bucket -> its symbols, sorted (the buckets indexed are its keys)."""
        for account in sorted(state.accounts):
            for name in sorted(state.accounts[account].buckets):
                self.reindex(bucket_key(account, name))

    def exposed(self, symbol: str) -> set[str]:
        """Keys of the buckets whose health moves with ``symbol``."""
        return self.exposure.get(symbol, set())

    def decidable(self, bucket: Bucket) -> bool:
        """Whether the core decides on ``bucket``: a lending profile takes the buckets without
        positions, a perp profile those with."""
        return bool(bucket.positions) != self.lending

    def flagged(self, keys: Iterable[str]) -> list[str]:
        """The buckets of ``keys`` the screen flags at its current prices, sorted."""
        return [k for k in sorted(keys) if self.screen.check(k)]

    def reindex(self, key: str) -> bool:
        """Refresh the bucket's screen row and exposure from the state; whether the screen flags
        it. A bucket that is gone or not decidable leaves the index."""
        state = self.state
        bucket = find_bucket(state, key)
        syms: list[str] = []
        if bucket is not None and self.decidable(bucket):
            syms = sorted({*bucket.balances, *bucket.positions})  # Bucket.symbols()
        new = tuple(syms)
        flagged = False
        if bucket is not None and new:
            lending, at_entry, always = self.screen_mode
            flagged = self.screen.upsert(key, bucket, state.markets, state.assets, state.prices,
                                         lending, mm_at_entry=at_entry, always_check=always, symbols=syms)
        else:
            self.screen.remove(key)
        old = self.symbols_of.get(key, ())
        if new == old:
            return flagged
        for s in old:
            keys = self.exposure.get(s)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.exposure[s]
        for s in new:
            self.exposure.setdefault(s, set()).add(key)
        if new:
            self.symbols_of[key] = new
        else:
            self.symbols_of.pop(key, None)
        return flagged

    def balance_moved(self, key: str, event: ev._AmountEvent | ev.FundingApplied, sign: int) -> bool:
        """``reindex(key)`` after ``event`` moved one balance of the bucket by ``sign * amount``,
        the same flag for less work where the bucket's symbols (hence its exposure) are
        unchanged: a bucket this index does not hold stays out (a balance opens or closes no
        position); a balance that grew only raises the slack, so an unflagged row may lag
        behind (``Screen.defer``); one that shrank and kept its sign moves one term of the row
        (``Screen.shift``)."""
        state = self.state
        bucket = find_bucket(state, key)
        if bucket is None:
            return self.reindex(key)
        if not self.decidable(bucket) and key not in self.symbols_of:
            return False
        asset = event.asset
        new = bucket.balances.get(asset)
        if new is None:
            return self.reindex(key)  # the asset went
        delta = event.amount if sign > 0 else -event.amount
        old = new - delta
        if not old:
            return self.reindex(key)  # the asset came
        if delta > 0 and self.screen.defer(key):
            return False
        if (old > 0) != (new > 0):
            return self.reindex(key)  # the weight changes with the sign
        w = balance_weight(state.assets.get(asset), new > 0, self.screen_mode[0])
        moved = self.screen.shift(key, asset, delta * w)
        return self.reindex(key) if moved is None else moved
