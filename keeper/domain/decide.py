"""The keeper's pure core: fold each log entry into state, re-check only what it can touch, decide.

``KeeperCore`` is the sans-I/O object the projector (``keeper.projector``) drives live and replay
drives offline: ``handle(entry_id, event)`` applies the entry and returns the
``LiquidationIntended`` entries to record (the outbox). No clock, no randomness, no I/O, and every
iteration is in sorted order: the same entries give byte-identical decisions.

Rules (``docs/keeper.md`` explains why):

- **What is re-checked.** A price: the buckets exposed to that symbol (the exposure index, kept
  up to date from account events) that the numpy screen (``keeper.domain.screen``, conservative:
  it never misses a liquidatable bucket) flags as candidates. An account event: that bucket. An
  outcome that frees a bucket (confirmed, rejected, expired): that bucket. ``FeedRecovered``,
  ``KeeperResumed``: the buckets exposed to that symbol that the screen flags (the kill switch:
  all flagged buckets). Market or asset parameter changes: every bucket exposed to it.
- **Confirmation.** Every candidate goes through the margin engine's exact ``evaluate`` and
  ``plan_liquidation`` before anything is decided.
- **Guards.** A bucket with any symbol in ``state.unsafe``, or a missing or non-positive price,
  gets no decision at all. A bucket with an open intent (``state.busy``) is skipped until the
  outcome is in the log or the intent expires. A bucket whose liquidation is confirmed but whose
  resulting account events are not in the log yet is *settling*: skipped until an account event
  naming the intent (``causation_id``), or a position change, repay or withdraw of the bucket,
  arrives, or for at most ``intent_ttl_us`` of log time.
- **Restraint.** A bucket whose liquidation the venue rejected is not decided again for
  ``reject_backoff_us * 2**(n-1)`` of log time (n rejections in a row, at most
  ``reject_backoff_max_us``): a market that refuses (halted, or the venue's price differs) is
  not hammered on every tick. A confirmation, or the bucket seen healthy, resets the count. A
  market the venue reports halted is paused in the log by the runner (``KeeperPaused``), so
  its buckets are decided in ``paused`` mode, once per episode, until it is resumed.
- **One instant, one judgement.** A price marked ``frame_more`` (more prices of the same
  source frame follow) is applied, its candidates kept, and nothing decided until the frame's
  last price (or any other entry) is applied: no decision on a state holding part of an instant.
- **Which buckets.** A lending profile decides on buckets without positions, a perp profile on
  buckets with positions, so cores of several profiles on one log never decide the same bucket.
- **Priority.** Several buckets breaching on one event are decided lowest health first, ties by
  bucket key; caps are spent in that order. A burst of more than ``DECIDE_CHUNK`` candidates is
  checked in chunks in the screen's order of least headroom (most at risk first), lowest
  health first within a chunk; a streaming caller (``streaming``) records each chunk's intents
  before the next chunk is checked.
- **Modes.** ``live`` (submitted by the runner); ``paper`` (the keeper is in paper mode);
  ``paused`` (kill switch or the market is paused); ``skip:profit`` (the bonus, net of the
  protocol fee, does not cover ``min_profit``); ``skip:cap`` (the count or notional cap of the
  interval, measured in log time, is spent). Only ``live`` marks the bucket busy; the others are
  recorded once per bucket per unhealthy episode (until the bucket is seen healthy again, or
  its mode changes), so a bucket that stays unhealthy for hours does not flood the log.
- **Ids.** ``intent_id = "liq:<account>/<bucket>@<trigger entry id>"``; the intent's
  ``ts_event`` is the trigger's ``ts_event`` and its ``causation_id`` the trigger's event id.
"""

from __future__ import annotations

import bisect
import decimal
import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Final

import msgspec

from keeper.domain import events as ev
from keeper.domain import guards
from keeper.domain import state as st
from keeper.domain.margin import get_profile
from keeper.domain.margin.health import health_of
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.sizing import plan_of
from keeper.domain.margin.types import ENGINE, BucketHealth, LiquidationPlan
from keeper.domain.model import Bucket, bucket_key
from keeper.domain.params import CoreSnapshot, KeeperParams
from keeper.domain.screen import Screen, balance_weight, screen_mode
from keeper.errors import KeeperError

__all__ = ["CORE_FORMAT", "KeeperCore", "KeeperParams", "bucket_of_intent", "decide_log", "intent_id"]

_ENGINE_ERRORS: Final = (KeeperError, ArithmeticError, ValueError)
"""What the engine may raise on one bucket's data: counted and skipped, never allowed to stop
the projector (a poison entry would otherwise stop it again on every restart)."""
_LIQUIDATION_EFFECTS: Final = (ev.PositionChanged, ev.Repay, ev.Withdraw)
"""Account events of the kinds a liquidation produces (they end a bucket's settling wait)."""
_ACCOUNT_TYPES: Final[frozenset[type]] = frozenset(ev.ACCOUNT_EVENTS)
_BALANCE_SIGN: Final[dict[type, int]] = {ev.Deposit: 1, ev.Repay: 1, ev.FundingApplied: 1,
                                  ev.Withdraw: -1, ev.Borrow: -1}
"""Account events that only move one balance, and the sign of ``amount`` in that move."""
# classes and functions of other modules the hot path names, as Final statics: a plain module
# global (or ``ev.X``) is a dict lookup, and an attribute lookup, at every use in compiled code
_PRICE: Final = ev.PriceUpdated
_INTENDED: Final = ev.LiquidationIntended
_CONFIRMED: Final = ev.LiquidationConfirmed
_REJECTED: Final = ev.LiquidationRejected
_EXPIRED: Final = ev.LiquidationExpired
_OUTCOME: Final = ev._Outcome
_RECOVERED: Final = ev.FeedRecovered
_RESUMED: Final = ev.KeeperResumed
_apply: Final = st.apply
_astuple: Final[Callable[[Any], tuple[Any, ...]]] = msgspec.structs.astuple
_TICK_SYMBOL: Final = ev.PriceUpdated.__struct_fields__.index("symbol")
_TICK_PRICE: Final = ev.PriceUpdated.__struct_fields__.index("price")
_TICK_PUBLISHED: Final = ev.PriceUpdated.__struct_fields__.index("publish_time")
_TICK_TS: Final = ev.PriceUpdated.__struct_fields__.index("ts_event")
_TICK_MORE: Final = ev.PriceUpdated.__struct_fields__.index("frame_more")
DECIDE_CHUNK: Final = 64
"""Buckets checked exactly and planned at a time when one entry breaches many (a burst): in
the screen's order of least headroom, lowest exact health first within a chunk."""
CORE_FORMAT = 1000 + st.STATE_FORMAT
"""Snapshot format of a keeper core (distinct from a plain projection's)."""


def _health(profile: Profile, bucket: Bucket, s: st.State) -> BucketHealth:
    """``evaluate`` (the engine's context installed here, as its ``exact`` wrapper would, and
    only around it: the keeper's own Decimal arithmetic stays in the caller's context)."""
    pricing = Pricing(profile, s.markets, s.assets, s.prices)
    caller = decimal.getcontext()
    if caller is ENGINE:
        return health_of(pricing, bucket)
    decimal.setcontext(ENGINE)
    try:
        return health_of(pricing, bucket)
    finally:
        decimal.setcontext(caller)


def _plan(profile: Profile, bucket: Bucket, s: st.State, health: BucketHealth) -> LiquidationPlan | None:
    """``plan_liquidation(..., health=health)``, in the engine's context as ``_health``."""
    pricing = Pricing(profile, s.markets, s.assets, s.prices)
    caller = decimal.getcontext()
    if caller is ENGINE:
        return plan_of(pricing, bucket, None, health)
    decimal.setcontext(ENGINE)
    try:
        return plan_of(pricing, bucket, None, health)
    finally:
        decimal.setcontext(caller)


def _find_bucket(state: st.State, key: str) -> Bucket | None:
    """``state.find_bucket``, compiled (every account event looks its bucket up twice)."""
    account, _, name = key.partition("/")
    a = state.accounts.get(account)
    return None if a is None else a.buckets.get(name)


def intent_id(account: str, bucket: str, trigger: str) -> str:
    """The intent id of a liquidation of ``account/bucket`` decided after log entry ``trigger``."""
    return f"liq:{account}/{bucket}@{trigger}"


def bucket_of_intent(intent: str) -> str:
    """``account/bucket`` from an intent id."""
    return intent.removeprefix("liq:").rpartition("@")[0]


_saved_encoder = msgspec.msgpack.Encoder()
_saved_decoder = msgspec.msgpack.Decoder(CoreSnapshot)


class _CapWindow:
    """Live liquidations inside the cap interval, by log time, with their count and notional kept
    as they come and go: checking a cap costs O(expired), not O(window), per decision."""

    def __init__(self, items: Iterable[tuple[int, Decimal]] = ()) -> None:
        self._items: list[tuple[int, Decimal]] = sorted(items)
        self._start = 0
        self.notional = sum((n for _, n in self._items), Decimal(0))

    def __len__(self) -> int:
        return len(self._items) - self._start

    def add(self, ts: int, notional: Decimal) -> None:
        bisect.insort(self._items, (ts, notional), lo=self._start)
        self.notional += notional

    def expire(self, horizon: int) -> None:
        """Forget every liquidation at or before ``horizon``."""
        items, i = self._items, self._start
        while i < len(items) and items[i][0] <= horizon:
            self.notional -= items[i][1]
            i += 1
        if i > 1024 and 2 * i > len(items):
            del items[:i]
            i = 0
        self._start = i

    def items(self) -> list[tuple[int, Decimal]]:
        return self._items[self._start:]


class KeeperCore:
    """State + exposure index + decide. See the module docstring for the rules."""

    FORMAT: ClassVar[int] = CORE_FORMAT

    def __init__(self, params: KeeperParams, state: st.State | None = None) -> None:
        self.params = params
        self.profile = get_profile(params.profile)
        self.state = state if state is not None else st.State()
        self._episodes: dict[str, str] = {}
        self._settling: dict[str, tuple[str, int]] = {}
        """Bucket -> (confirmed intent, log time): confirmed, its account events not seen yet."""
        self._effects: dict[str, str] = {}
        """Bucket -> the last intent named as ``causation_id`` by an account event of it."""
        self._rejected: dict[str, tuple[int, int]] = {}
        """Bucket -> (rejections in a row, log time before which it is not decided again)."""
        self.streaming = False
        """Set by a caller that appends a burst's intents chunk by chunk (the daemon's
        projector): ``_decide`` then stops after the first chunk that decided something and
        leaves the rest in ``backlog`` (``continue_backlog``); ``handle_batch`` stops after that
        entry. The decisions are the same as without it (replay does not stream)."""
        self.backlog: tuple[list[str], str, ev.Event] | None = None
        self._frame: list[str] = []
        """Buckets flagged by prices of a frame whose last price has not been applied yet
        (``PriceUpdated.frame_more``): decided together once it is."""
        self._window = _CapWindow()
        self._pending: dict[str, ev.LiquidationIntended] = {}
        self._exposure: dict[str, set[str]] = {}
        self._symbols_of: dict[str, tuple[str, ...]] = {}
        self.screen = Screen()
        self.screen.refresh = self._reindex
        self._screen_mode = screen_mode(self.profile.kind, self.profile.model, self.profile.mm_at)
        self._cleared: str | None = None
        """A bucket the last account event touched and the screen cleared: healthy for sure, so
        its exact check is skipped (the outcome of that check is known: not liquidatable)."""
        self._lending = self.profile.kind == "lending"
        self.rechecked_last = 0
        """Buckets confirmed with exact arithmetic after the last event (a metric)."""
        self.rechecked_total = 0
        self.skipped: dict[str, int] = {}
        """Why candidates were not decided, counted (a metric, not part of the snapshot)."""
        self.quarantined: list[tuple[str, ev.Event, str]] = []
        """Entries that raised since ``take_quarantined`` was last called (``quarantine``)."""
        self.quarantined_total = 0
        for account in sorted(self.state.accounts):
            for name in sorted(self.state.accounts[account].buckets):
                self._reindex(bucket_key(account, name))

    # ------------------------------------------------------------------ the projector's interface

    @property
    def offset(self) -> str:
        return self.state.offset

    def handle(self, entry_id: str, event: ev.Event) -> list[ev.Event]:
        """Apply one log entry and return the intents decided after it (possibly none).

        An entry that raises while it is applied or decided on is quarantined (``quarantine``):
        the core moves past it and goes on, live and in replay alike.
        """
        try:
            return self._handle(entry_id, event)
        except Exception as exc:  # the boundary: one entry never stops the core
            self.quarantine(entry_id, event, exc)
            return []

    def quarantine(self, entry_id: str, event: ev.Event, exc: Exception) -> None:
        """Record that ``entry_id`` could not be applied and move the core's position past it.

        The events' own checks (``keeper.domain.limits``) keep bad numbers out of the log, so
        this is the last line: whatever the entry had changed before it raised stays (the same
        in replay, which runs this same code), it is listed in ``quarantined`` for the projector
        to dead-letter with the error, and counted in ``quarantined_total``.
        """
        state = self.state
        if state.offset != entry_id:
            state.offset = entry_id
            state.applied += 1
        self._cleared = None
        self.quarantined.append((entry_id, event, f"{type(exc).__name__}: {exc}"))
        self.quarantined_total += 1

    def take_quarantined(self) -> list[tuple[str, ev.Event, str]]:
        """The entries quarantined since the last call: ``(entry id, event, error)``."""
        out, self.quarantined = self.quarantined, []
        return out

    def _handle(self, entry_id: str, event: ev.Event) -> list[ev.Event]:
        if type(event) is _INTENDED:
            self._pending.pop(event.event_id, None)
        _apply(self.state, entry_id, event)
        keys = self._touched(event)  # sets _cleared
        self.rechecked_last = 0
        if type(event) is _PRICE and event.frame_more:
            if keys:  # decided with the frame's last price
                self._frame.extend(keys)
            return []
        if self._frame:
            keys = [*self._frame, *keys]
            self._frame = []
        if not keys:
            return []
        cleared = self._cleared
        if (cleared is not None and not self.state.unsafe and cleared not in self._episodes
                and cleared not in self._settling and cleared not in self._rejected
                and keys == (cleared,)):
            # an account event of a bucket the screen cleared (the most frequent case): _decide
            # would change nothing. The screen flags a bucket with a symbol it has no price for,
            # and has a price only where the state does (positive), so no guard would fire;
            # with no episode or settling entry there is nothing to drop and nothing to decide
            return []
        return list(self._decide(keys, entry_id, event))

    def handle_batch(self, entries: Sequence[tuple[str, ev.Event]]) -> list[ev.Event]:
        """``handle`` for each entry in order, the intents concatenated: the same output and
        state as one call per entry (the projector and replay call this once per read batch)."""
        out: list[ev.Event] = []
        state = self.state
        screen = self.screen  # a direct C call below (a bound method in a local is a generic call)
        prices, price_time = state.prices, state.price_time
        price_type = _PRICE
        # a run of ticks keeps the state's position and log time in locals (msgspec attribute
        # writes are generic): written back before anything reads them (a decision, another
        # entry's handle), at the end, and if a tick raises
        offset, applied, log_time = state.offset, state.applied, state.log_time
        held = False
        try:
            for entry_id, event in entries:
                if type(event) is price_type and not self._episodes and not self._rejected:
                    # ``handle`` inlined for the most frequent entry (st.apply's _price and
                    # _touched's price branch with no unhealthy episode or rejection held): three
                    # calls fewer
                    # the tick's fields in one call (four attribute reads on a msgspec Struct
                    # are four generic lookups in compiled code)
                    f = _astuple(event)
                    symbol: str = f[_TICK_SYMBOL]
                    price: Decimal = f[_TICK_PRICE]
                    ts: int = f[_TICK_TS]
                    prices[symbol] = price
                    price_time[symbol] = f[_TICK_PUBLISHED] or ts
                    offset = entry_id
                    applied += 1
                    if ts > log_time:  # noqa: PLR1730 (the hot path)
                        log_time = ts
                    held = True
                    self._cleared = None
                    self.rechecked_last = 0
                    try:
                        keys = screen.candidates(symbol, price)
                        if f[_TICK_MORE]:  # more prices of this instant follow: decide with them
                            if keys:
                                self._frame.extend(keys)
                            continue
                        if self._frame:
                            keys = [*self._frame, *keys]
                            self._frame = []
                        if keys:
                            state.offset, state.applied, state.log_time = offset, applied, log_time
                            held = False
                            decided = self._decide(keys, entry_id, event)
                            if decided:
                                out.extend(decided)
                            if self.backlog is not None:
                                break  # streaming: the caller drains the backlog first
                    except Exception as exc:  # as ``handle``: quarantined
                        if held:
                            state.offset, state.applied, state.log_time = offset, applied, log_time
                            held = False
                        self.quarantine(entry_id, event, exc)
                        offset, applied, log_time = state.offset, state.applied, state.log_time
                    continue
                if held:
                    state.offset, state.applied, state.log_time = offset, applied, log_time
                    held = False
                decided = self.handle(entry_id, event)
                offset, applied, log_time = state.offset, state.applied, state.log_time
                if decided:
                    out.extend(decided)
                if self.backlog is not None:
                    break  # streaming: the caller drains the backlog first
        finally:
            if held:
                state.offset, state.applied, state.log_time = offset, applied, log_time
        return out

    def pending(self) -> list[ev.Event]:
        """Intents decided but not yet seen back in the log (re-appended on restart)."""
        return [self._pending[k] for k in sorted(self._pending)]

    def snapshot(self) -> bytes:
        """Everything that decides future output: state, episodes, cap window, pending."""
        return _saved_encoder.encode(CoreSnapshot(self.params.profile, self.state, dict(self._episodes),
                                            self._window.items(), self.pending(),  # type: ignore[arg-type]
                                            dict(self._settling), dict(self._effects),
                                            dict(self._rejected), list(self._frame)))

    @classmethod
    def restore(cls, data: bytes, params: KeeperParams) -> KeeperCore:
        """A core from ``snapshot()`` bytes; raises ``msgspec.ValidationError`` on damage and
        ``ValueError`` when the snapshot was taken under another profile."""
        saved = _saved_decoder.decode(data)
        if saved.profile != params.profile:
            raise ValueError(f"snapshot is of profile {saved.profile!r}, not {params.profile!r}")
        core = cls(params, saved.state)
        core._episodes = dict(saved.episodes)
        core._settling = dict(saved.settling)
        core._effects = dict(saved.effects)
        core._rejected = {k: (n, t) for k, (n, t) in saved.rejected.items()}
        core._frame = list(saved.frame)
        core._window = _CapWindow(saved.window)
        core._pending = {p.event_id: p for p in saved.pending}
        return core

    # ------------------------------------------------------------------ the exposure index

    def exposed(self, symbol: str) -> set[str]:
        """Keys of the buckets whose health moves with ``symbol``."""
        return self._exposure.get(symbol, set())

    def _decidable(self, bucket: Bucket) -> bool:
        """Whether this core decides on ``bucket``: a lending profile takes the buckets without
        positions, a perp profile those with, so cores of several profiles on one log never
        decide on the same bucket."""
        return bool(bucket.positions) != self._lending

    def _reindex(self, key: str) -> bool:
        """Refresh the bucket's screen row and exposure; returns whether the screen flags it.

        Only buckets this core can decide on (``_decidable``) are indexed; the others have no
        row and no exposure."""
        bucket = _find_bucket(self.state, key)
        syms: list[str] = []
        if bucket is not None and self._decidable(bucket):
            syms = sorted({*bucket.balances, *bucket.positions})  # Bucket.symbols(), compiled
        new = tuple(syms)
        flagged = False
        if bucket is not None and new:
            lending, at_entry, always = self._screen_mode
            state = self.state
            flagged = self.screen.upsert(key, bucket, state.markets, state.assets, state.prices,
                                         lending, mm_at_entry=at_entry, always_check=always, symbols=syms)
        else:
            self.screen.remove(key)
        old = self._symbols_of.get(key, ())
        if new == old:
            return flagged
        for s in old:
            keys = self._exposure.get(s)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._exposure[s]
        for s in new:
            self._exposure.setdefault(s, set()).add(key)
        if new:
            self._symbols_of[key] = new
        else:
            self._symbols_of.pop(key, None)
        return flagged

    def _balance_moved(self, key: str, event: ev._AmountEvent | ev.FundingApplied, sign: int) -> bool:
        """The screen after ``event`` moved one balance of the bucket by ``sign * amount``;
        whether it flags the bucket. Cheaper than ``_reindex`` where the bucket's symbols (hence
        its exposure) are unchanged: a bucket this core does not index stays so (a balance does
        not open or close positions); a balance that grew only raises the slack, so an unflagged
        row may lag behind (``Screen.defer``); one that shrank and kept its sign moves one term
        of the row (``Screen.shift``)."""
        bucket = _find_bucket(self.state, key)
        if bucket is None:
            return self._reindex(key)
        if not self._decidable(bucket) and key not in self._symbols_of:
            return False
        asset = event.asset
        new = bucket.balances.get(asset)
        if new is None:
            return self._reindex(key)  # the asset went
        delta = event.amount if sign > 0 else -event.amount
        old = new - delta
        if not old:
            return self._reindex(key)  # the asset came
        if delta > 0 and self.screen.defer(key):
            return False
        if (old > 0) != (new > 0):
            return self._reindex(key)  # the weight changes with the sign
        w = balance_weight(self.state.assets.get(asset), new > 0, self._screen_mode[0])
        moved = self.screen.shift(key, asset, delta * w)
        return self._reindex(key) if moved is None else moved

    def _touched(self, event: ev.Event) -> Iterable[str]:
        self._cleared = None
        t = type(event)
        if t is _PRICE:
            assert isinstance(event, _PRICE)
            flagged = self.screen.candidates(event.symbol, event.price)
            if self._episodes or self._rejected:
                # the screen is conservative: an exposed bucket it does not flag is healthy,
                # so its unhealthy episode is over, and so is its count of rejections once its
                # backoff has passed (as ``_decide`` finds a bucket it checks exactly)
                hit = set(flagged)
                symbol, now = event.symbol, self.state.log_time
                for key in [k for k in self._episodes
                            if k not in hit and symbol in self._symbols_of.get(k, ())]:
                    del self._episodes[key]
                for key in [k for k, (_n, until) in self._rejected.items()
                            if k not in hit and now >= until and symbol in self._symbols_of.get(k, ())]:
                    del self._rejected[key]
            return flagged
        if t in _ACCOUNT_TYPES:
            acct: Any = event  # an account event (a set lookup, not isinstance over six types)
            key = f"{acct.account}/{acct.bucket}"  # bucket_key, inlined
            sign = _BALANCE_SIGN.get(t)
            moved = self._balance_moved(key, acct, sign) if sign is not None else self._reindex(key)
            if not moved:
                self._cleared = key
            cause = event.causation_id
            if cause is not None and cause.startswith("liq:"):
                self._effects[key] = cause
            if key in self._settling and (cause == self._settling[key][0]
                                          or isinstance(event, _LIQUIDATION_EFFECTS)):
                # the venue's own events for the bucket: they name the intent, or (venues
                # that do not) are of the kinds a liquidation produces
                del self._settling[key]
            return (key,)
        if t is _CONFIRMED or t is _REJECTED or t is _EXPIRED:
            assert isinstance(event, _OUTCOME)
            key = (bucket_key(event.account, event.bucket) if event.account
                   else bucket_of_intent(event.intent_id))
            if t is _REJECTED:
                self._reject(key)
            elif t is _CONFIRMED:
                self._rejected.pop(key, None)
            if t is _CONFIRMED:
                if self._effects.get(key) != event.intent_id:
                    # the venue acted but its account events are not in the log yet: until
                    # they are, the state still shows the bucket as before the liquidation
                    self._settling[key] = (event.intent_id, self.state.log_time)
                    return ()
                del self._effects[key]
            if not self.screen.check(key):
                self._cleared = key  # freed and healthy: nothing to confirm exactly
            return (key,)
        if t is _RECOVERED:
            assert isinstance(event, _RECOVERED)
            return self._flagged(self.exposed(event.symbol))
        if t is _RESUMED:
            assert isinstance(event, _RESUMED)
            keys = self._symbols_of if event.scope == guards.KILL_SWITCH else self.exposed(event.scope)
            return self._flagged(keys)
        if isinstance(event, ev.MarketListed | ev.MarketParamsChanged | ev.AssetListed
                      | ev.AssetParamsChanged):
            exposed = sorted(self.exposed(event.params.symbol))
            for key in exposed:  # new parameters change the screen's coefficients
                self._reindex(key)
            return exposed
        return ()

    def _reject(self, key: str) -> None:
        """The venue rejected the bucket's liquidation: hold it back ``2**(n-1)`` times the base
        backoff (``KeeperParams.reject_backoff_us``) of log time, n rejections in a row."""
        p = self.params
        n = self._rejected[key][0] + 1 if key in self._rejected else 1
        wait = min(p.reject_backoff_us << min(n - 1, 40), p.reject_backoff_max_us)
        self._rejected[key] = (n, self.state.log_time + wait)

    def _flagged(self, keys: Iterable[str]) -> list[str]:
        return [k for k in sorted(keys) if self.screen.check(k)]

    # ------------------------------------------------------------------ decide

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def _decide(self, keys: Iterable[str], entry_id: str, trigger: ev.Event) -> Sequence[ev.Event]:
        """Decide on the candidates ``keys`` after ``entry_id``: the guards, then the exact
        check and plan in chunks of ``DECIDE_CHUNK`` (``_decide_from``)."""
        ordered = sorted(set(keys))  # one decision per bucket, whatever the caller passed
        if len(ordered) > DECIDE_CHUNK:
            # a burst: the screen's least headroom first (most at risk), so the first chunk is
            # decided (and, streaming, submitted) before the rest is checked
            headroom = self._headroom
            ordered.sort(key=lambda k: (headroom(k), k))
        return self._decide_from(ordered, entry_id, trigger)

    def _headroom(self, key: str) -> float:
        try:
            return self.screen.headroom(key)
        except KeyError:
            return -math.inf

    def _decide_from(self, keys: list[str], entry_id: str, trigger: ev.Event) -> list[ev.Event]:
        """Decide the candidates ``keys`` in order, ``DECIDE_CHUNK`` at a time (the guards, the
        exact check, the plan); when ``streaming``, stop after the first chunk that decided
        something and keep the rest as ``backlog``."""
        out: list[ev.Event] = []
        n = len(keys)
        for i in range(0, n, DECIDE_CHUNK):
            chunk = self._eligible(keys[i:i + DECIDE_CHUNK])
            out.extend(self._decide_chunk(chunk, entry_id, trigger))
            if self.streaming and out and i + DECIDE_CHUNK < n:
                self.backlog = (keys[i + DECIDE_CHUNK:], entry_id, trigger)
                break
        return out

    def continue_backlog(self) -> list[ev.Event]:
        """Decide on (the next chunk of) ``backlog``: a streaming caller calls this until
        ``backlog`` is None before it hands the core another entry."""
        if self.backlog is None:
            return []
        keys, entry_id, trigger = self.backlog
        self.backlog = None
        return self._decide_from(keys, entry_id, trigger)

    def _eligible(self, keys: list[str]
                  ) -> list[tuple[str, Bucket, tuple[str, ...], tuple[int, int] | None]]:
        """The candidates the guards let through, in order: ``(key, bucket, symbols, the
        bucket's rejection backoff)``."""
        s = self.state
        out: list[tuple[str, Bucket, tuple[str, ...], tuple[int, int] | None]] = []
        priced: dict[tuple[str, ...], str] = {}
        """The price guards' verdict per set of symbols (a burst's buckets share a few)."""
        for key in keys:
            if key in s.busy:
                continue
            settling = self._settling.get(key)
            if settling is not None:
                if s.log_time - settling[1] <= self.params.intent_ttl_us:
                    self._skip("settling")
                    continue
                del self._settling[key]  # the venue's events never came: decide afresh
            held = self._rejected.get(key)
            if held is not None and s.log_time < held[1]:
                self._skip("rejected_backoff")
                continue
            bucket = _find_bucket(s, key)
            if bucket is None:
                continue
            symbols = self._symbols_of.get(key, ())
            if not symbols:
                self._episodes.pop(key, None)
                continue
            if not self._decidable(bucket):
                continue
            verdict = priced.get(symbols)
            if verdict is None:
                verdict = ("unsafe_market" if guards.unsafe_symbols(symbols, s.unsafe)
                           else "no_price" if guards.bad_prices(symbols, s.prices) else "")
                priced[symbols] = verdict
            if verdict:
                self._skip(verdict)
                continue
            if key == self._cleared:
                # the screen never misses a liquidatable bucket: this one is healthy
                self._episodes.pop(key, None)
                if held is not None:
                    del self._rejected[key]
                continue
            out.append((key, bucket, symbols, held))
        return out

    def _decide_chunk(self, chunk: list[tuple[str, Bucket, tuple[str, ...], tuple[int, int] | None]],
                      entry_id: str, trigger: ev.Event) -> list[ev.Event]:
        """The exact check of ``chunk``, then the plan of its breaches, lowest health first."""
        s = self.state
        breaches = []
        for key, bucket, symbols, held in chunk:
            self.rechecked_last += 1
            self.rechecked_total += 1
            try:
                health = _health(self.profile, bucket, s)
            except _ENGINE_ERRORS:
                self._skip("engine_error")
                continue
            if not health.liquidatable:
                self._episodes.pop(key, None)
                if held is not None:
                    del self._rejected[key]  # healthy again: a new episode counts afresh
                continue
            breaches.append((health.health_factor, key, bucket, health, symbols))
        breaches.sort(key=lambda b: (b[0], b[1]))
        out: list[ev.Event] = []
        for _, key, bucket, health, symbols in breaches:
            try:
                plan = _plan(self.profile, bucket, s, health)
            except _ENGINE_ERRORS:
                self._skip("engine_error")
                continue
            if plan is None:
                self._skip("no_plan")
                continue
            mode = self._mode(symbols, plan.notional, plan.bonus, plan.protocol_fee, plan.seize_asset)
            if mode != "live" and self._episodes.get(key) == mode:
                continue
            account, _, name = key.partition("/")
            iid = intent_id(account, name, entry_id)
            decision = ev.Decision(
                intent_id=iid, account=account, bucket=name, trigger=entry_id,
                trigger_event_id=trigger.event_id, profile=self.profile.name, rule=plan.rule,
                action=plan.action, market=plan.market, size=plan.size,
                repay_asset=plan.repay_asset, repay_amount=plan.repay_amount,
                seize_asset=plan.seize_asset, seize_amount=plan.seize_amount,
                protocol_fee=plan.protocol_fee, close_factor=plan.close_factor, bonus=plan.bonus,
                notional=plan.notional, equity=health.equity, requirement=health.requirement,
                health_before=health.health_factor, health_after=plan.health_after,
                bankrupt=health.bankrupt, prices={sym: s.prices[sym] for sym in symbols}, mode=mode)
            intended = ev.LiquidationIntended(event_id=iid, ts_event=trigger.ts_event,
                                              causation_id=trigger.event_id, decision=decision)
            if mode == "live":
                self._episodes.pop(key, None)
                s.busy[key] = iid
                s.open_intents[iid] = st.OpenIntent(iid, key, "intended", trigger.ts_event, entry_id)
                if self.params.cap_count is not None or self.params.cap_notional is not None:
                    self._window.add(trigger.ts_event, plan.notional)
            else:
                self._episodes[key] = mode
                self._skip(mode)
            self._pending[iid] = intended
            out.append(intended)
        return out

    def _mode(self, symbols: Sequence[str], notional: Decimal, bonus: Decimal | None,
              fee: Decimal | None, seize_asset: str | None) -> str:
        p = self.params
        if p.mode == "paper":
            return "paper"
        if guards.paused_scope(symbols, self.state.paused) is not None:
            return "paused"
        if bonus is not None and p.min_profit > 0:
            fee_value = Decimal(0)
            if fee and seize_asset is not None and seize_asset in self.state.prices:
                fee_value = fee * self.state.prices[seize_asset]
            if notional * bonus - fee_value < p.min_profit:
                return "skip:profit"
        if p.cap_count is not None or p.cap_notional is not None:
            self._window.expire(self.state.log_time - p.cap_interval_us)
            if p.cap_count is not None and len(self._window) >= p.cap_count:
                return "skip:cap"
            if p.cap_notional is not None and self._window.notional + notional > p.cap_notional:
                return "skip:cap"
        return "live"


def decide_log(entries: Iterable[tuple[str, ev.Event]], params: KeeperParams) -> list[ev.LiquidationIntended]:
    """Run a fresh core over recorded entries; every intent it decides, in order (replay/diff)."""
    core = KeeperCore(params)
    out: list[ev.LiquidationIntended] = []
    for entry_id, event in entries:
        out.extend(e for e in core.handle(entry_id, event) if isinstance(e, ev.LiquidationIntended))
    return out
