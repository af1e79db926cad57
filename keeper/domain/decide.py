"""The keeper's pure core: fold each log entry into state, re-check only what it can touch, decide.

``KeeperCore`` is the sans-I/O object the projector (``keeper.projector``) drives live and replay
drives offline: ``handle(entry_id, event)`` applies the entry and returns the
``LiquidationIntended`` entries to record (the outbox). No clock, no randomness, no I/O, and every
iteration is in sorted order: the same entries give byte-identical decisions.

Rules (``docs/keeper.md`` states each in full, and why):

- **What is re-checked.** A price: the exposed buckets the screen (conservative: it never misses
  a liquidatable bucket) flags. An account event, or an outcome that frees a bucket: that
  bucket. ``FeedRecovered``, ``KeeperResumed``: the flagged buckets exposed to that symbol (the
  kill switch: all). Market or asset parameter changes: every bucket exposed to it. Every
  candidate is confirmed with the margin engine's exact ``evaluate`` and ``plan_liquidation``.
- **Guards.** A bucket with any symbol in ``state.unsafe``, or a missing or non-positive price,
  gets no decision. A bucket with an open intent (``state.busy``), or *settling* (its
  liquidation confirmed, its account events not in the log yet, for at most ``intent_ttl_us``
  of log time), is skipped.
- **Restraint.** A bucket whose liquidation the venue rejected is not decided again for
  ``reject_backoff_us * 2**(n-1)`` of log time (n rejections in a row, at most
  ``reject_backoff_max_us``); a confirmation, or the bucket seen healthy, resets the count.
- **One instant, one judgement.** After a price marked ``frame_more`` nothing is decided until
  the frame's last price (or any other entry) is applied.
- **Which buckets.** Lending: buckets without positions; perp: with (``ExposureIndex.decidable``).
- **Priority.** Lowest health first, ties by bucket key; caps are spent in that order. A burst of
  more than ``DECIDE_CHUNK`` candidates is checked in chunks, least screen headroom first (the
  first of ``KeeperParams.first_chunk``, the others of ``DECIDE_CHUNK``); a ``streaming`` caller records each
  chunk's intents before the next chunk is checked.
- **Modes** (``intents.mode_of``). Only ``live`` marks the bucket busy; ``paper``, ``paused``,
  ``skip:profit`` and ``skip:cap`` are recorded once per bucket per unhealthy episode. An
  intent's id (``intents.intent_of``) names the bucket and the trigger entry.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final

import msgspec

from keeper.domain import events as ev
from keeper.domain import guards, keeper_batch
from keeper.domain import state as st
from keeper.domain.caps import CapWindow
from keeper.domain.events import (
    Event,
    FeedRecovered,
    KeeperResumed,
    LiquidationConfirmed,
    LiquidationExpired,
    LiquidationIntended,
    LiquidationRejected,
    PriceUpdated,
)
from keeper.domain.exposure import ExposureIndex, find_bucket
from keeper.domain.intents import bucket_of_intent, intent_id, intent_of, mode_of
from keeper.domain.margin import get_profile, with_policy
from keeper.domain.margin.health import health_of
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.sizing import plan_of
from keeper.domain.margin.types import ENGINE, BucketHealth, LiquidationPlan
from keeper.domain.model import Bucket, bucket_key
from keeper.domain.params import FIRST_CHUNK, CoreSnapshot, KeeperParams
from keeper.domain.screen import Screen
from keeper.domain.state import apply
from keeper.errors import KeeperError

__all__ = ["CORE_FORMAT", "DECIDE_CHUNK", "FIRST_CHUNK", "KeeperCore", "KeeperParams", "bucket_of_intent",
           "decide_log", "intent_id"]

_ENGINE_ERRORS: Final = (KeeperError, ArithmeticError, ValueError)
"""What the engine may raise on one bucket's data: counted and skipped (``quarantine``'s reason)."""
_LIQUIDATION_EFFECTS: Final = (ev.PositionChanged, ev.Repay, ev.Withdraw)
"""Account events of the kinds a liquidation produces (they end a bucket's settling wait)."""
_ACCOUNT_TYPES: Final[frozenset[type]] = frozenset(ev.ACCOUNT_EVENTS)
_BALANCE_SIGN: Final[dict[type, int]] = {ev.Deposit: 1, ev.Repay: 1, ev.FundingApplied: 1,
                                         ev.Withdraw: -1, ev.Borrow: -1}
"""Account events that only move one balance, and the sign of ``amount`` in that move."""
_PARAMS_CHANGES: Final = (ev.MarketListed, ev.MarketParamsChanged, ev.AssetListed, ev.AssetParamsChanged)
# names the per-entry path uses, as C statics, not module globals (docs/keeper.md has why)
_PRICE: Final = PriceUpdated
_INTENDED: Final = LiquidationIntended
_apply: Final = apply
DECIDE_CHUNK: Final = 64
"""Buckets checked exactly and planned at a time in a burst (the rules: *Priority*)."""
CORE_FORMAT = 1000 + st.STATE_FORMAT
"""Snapshot format of a keeper core (distinct from a plain projection's)."""

Candidate = tuple[str, Bucket, tuple[str, ...], tuple[int, int] | None]
"""A bucket the guards let through: ``(key, bucket, its symbols, its rejection backoff)``."""
Backlog = tuple[list[str], str, Event, str | None]
"""Candidates left to decide after a streamed chunk: ``(keys, entry id, trigger, cleared)``."""


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


_saved_encoder = msgspec.msgpack.Encoder()
_saved_decoder = msgspec.msgpack.Decoder(CoreSnapshot)


class KeeperCore:
    """State + exposure index + decide (the module docstring has the rules). ``handle`` is the
    reference: the entry applied (``state.apply``), the bookkeeping brought up to date
    (``_follow``), the candidates decided (``_decide``); ``handle_batch`` runs its fast twin."""

    FORMAT: ClassVar[int] = CORE_FORMAT

    def __init__(self, params: KeeperParams, state: st.State | None = None) -> None:
        self.params = params
        self._first_chunk = max(1, params.first_chunk)
        self.profile = with_policy(get_profile(params.profile), params.sizing)
        self.state = state if state is not None else st.State()
        self._episodes: dict[str, str] = {}
        """Bucket -> the mode recorded in its current unhealthy episode (non-live modes)."""
        self._settling: dict[str, tuple[str, int]] = {}
        """Bucket -> (confirmed intent, log time): confirmed, its account events not seen yet."""
        self._effects: dict[str, str] = {}
        """Bucket -> the last intent named as ``causation_id`` by an account event of it."""
        self._rejected: dict[str, tuple[int, int]] = {}
        """Bucket -> (rejections in a row, log time before which it is not decided again)."""
        self.streaming = False
        """Set by a caller that appends a burst's intents chunk by chunk (the daemon's projector):
        the rest of a burst waits in ``backlog`` (``continue_backlog``); the same decisions."""
        self.backlog: Backlog | None = None
        self._frame: list[str] = []
        """Buckets flagged by prices of a frame whose last price has not been applied yet
        (``PriceUpdated.frame_more``): decided together once it is."""
        self._window = CapWindow()
        self._pending: dict[str, LiquidationIntended] = {}
        self.index = ExposureIndex(self.state, self.profile)
        self.screen: Screen = self.index.screen
        self.rechecked_last = 0
        """Buckets confirmed with exact arithmetic after the last event (a metric)."""
        self.rechecked_total = 0
        self.skipped: dict[str, int] = {}
        """Why candidates were not decided, counted (a metric, not part of the snapshot)."""
        self.quarantined: list[tuple[str, Event, str]] = []
        """Entries that raised since ``take_quarantined`` was last called (``quarantine``)."""
        self.quarantined_total = 0

    # ------------------------------------------------------------------ the projector's interface

    @property
    def offset(self) -> str:
        return self.state.offset

    def exposed(self, symbol: str) -> set[str]:
        """Keys of the buckets whose health moves with ``symbol``."""
        return self.index.exposed(symbol)

    def tidy(self) -> int:
        """Maintenance for a moment without entries (the projector's empty read): the screen's
        stale edges and notes (``Screen.tidy``). Changes no decision, so replay needs none."""
        return self.screen.tidy()

    def handle(self, entry_id: str, event: Event) -> list[Event]:
        """Apply one log entry and return the intents decided after it (possibly none).

        An entry that raises while it is applied or decided on is quarantined (``quarantine``):
        the core moves past it and goes on, live and in replay alike.
        """
        try:
            return self._handle(entry_id, event)
        except Exception as exc:  # the boundary: one entry never stops the core
            self.quarantine(entry_id, event, exc)
            return []

    def handle_batch(self, entries: Sequence[tuple[str, Event]]) -> list[Event]:
        """``handle`` for each entry in order, the intents concatenated (``keeper_batch``: the same
        output and state); a streaming core stops after the entry that left a ``backlog``."""
        return keeper_batch.handle_batch(self, entries)

    def quarantine(self, entry_id: str, event: Event, exc: Exception) -> None:
        """Record that ``entry_id`` could not be applied and move the core's position past it.

        The last line behind the events' own checks (``keeper.domain.limits``): what the entry
        changed before it raised stays (replay runs this same code); it is listed in
        ``quarantined`` for the projector to dead-letter, and counted in ``quarantined_total``.
        """
        state = self.state
        if state.offset != entry_id:
            state.offset = entry_id
            state.applied += 1
        self.quarantined.append((entry_id, event, f"{type(exc).__name__}: {exc}"))
        self.quarantined_total += 1

    def take_quarantined(self) -> list[tuple[str, Event, str]]:
        """The entries quarantined since the last call: ``(entry id, event, error)``."""
        out, self.quarantined = self.quarantined, []
        return out

    def _handle(self, entry_id: str, event: Event) -> list[Event]:
        """``handle`` without the quarantine: apply, follow, decide."""
        if type(event) is _INTENDED:
            self._pending.pop(event.event_id, None)
        _apply(self.state, entry_id, event)
        self.rechecked_last = 0
        keys, cleared = self._follow(event)
        if type(event) is _PRICE:
            if event.frame_more:
                self._frame.extend(keys)  # decided with the frame's last price
                return []
            return self._decide_with_frame(keys, cleared, entry_id, event, tick=True)
        return self._decide_with_frame(keys, cleared, entry_id, event)

    def _decide_with_frame(self, keys: Sequence[str], cleared: str | None, entry_id: str,
                           trigger: Event, *, tick: bool = False) -> list[Event]:
        """Decide on ``keys`` and the buckets the current frame's earlier prices flagged, after
        ``entry_id`` (``cleared``: the one bucket among them the screen cleared, if any;
        ``tick``: ``keys`` are a tick's candidates, sorted and each once)."""
        if self._frame:
            keys = [*self._frame, *keys]
            self._frame = []
            tick = False
        if not keys:
            return []
        if (cleared is not None and not self.state.unsafe and cleared not in self._episodes
                and cleared not in self._settling and cleared not in self._rejected
                and len(keys) == 1):
            # the bucket the screen cleared, alone (the most frequent case): no guard would fire
            # (the screen flags a bucket lacking a price) and there is nothing to drop or decide
            return []
        return self._decide(keys, entry_id, trigger, cleared, ordered=tick)

    def pending(self) -> list[Event]:
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
        core._window = CapWindow(saved.window)
        core._pending = {p.event_id: p for p in saved.pending}
        return core

    # ------------------------------------------------------------------ following the log

    def _follow(self, event: Event) -> tuple[Sequence[str], str | None]:
        """Bring the core's bookkeeping up to date with ``event`` (applied to the state already):
        exposure index and screen rows, episodes and rejections the screen ends, settling
        buckets. Returns the buckets to decide on and, when that is one bucket the screen
        cleared (healthy for sure: no exact check), its key: ``((key,), key)``, else ``(keys, None)``."""
        t = type(event)
        if t is _PRICE:
            assert isinstance(event, PriceUpdated)
            flagged = self.screen.candidates(event.symbol, event.price)
            if self._episodes or self._rejected:
                self._end_episodes(event.symbol, flagged)
            return flagged, None
        if t in _ACCOUNT_TYPES:
            acct: Any = event  # an account event (a set lookup, not isinstance over six types)
            key = f"{acct.account}/{acct.bucket}"  # bucket_key, without the interpreted call
            sign = _BALANCE_SIGN.get(t)
            moved = (self.index.balance_moved(key, acct, sign) if sign is not None
                     else self.index.reindex(key))
            cause = event.causation_id
            if cause is not None and cause.startswith("liq:"):
                self._effects[key] = cause
            if key in self._settling and (cause == self._settling[key][0]
                                          or isinstance(event, _LIQUIDATION_EFFECTS)):
                # the venue's own events for the bucket: they name the intent, or (venues
                # that do not) are of the kinds a liquidation produces
                del self._settling[key]
            return (key,), (None if moved else key)
        if t is LiquidationConfirmed or t is LiquidationRejected or t is LiquidationExpired:
            assert isinstance(event, LiquidationConfirmed | LiquidationRejected | LiquidationExpired)
            key = (bucket_key(event.account, event.bucket) if event.account
                   else bucket_of_intent(event.intent_id))
            if t is LiquidationRejected:
                self._reject(key)
            elif t is LiquidationConfirmed:
                self._rejected.pop(key, None)
                if self._effects.get(key) != event.intent_id:
                    # the venue acted but its account events are not in the log yet: until
                    # they are, the state still shows the bucket as before the liquidation
                    self._settling[key] = (event.intent_id, self.state.log_time)
                    return (), None
                del self._effects[key]
            # freed; when the screen clears it, healthy: nothing to confirm exactly
            return (key,), (None if self.screen.check(key) else key)
        if t is FeedRecovered:
            assert isinstance(event, FeedRecovered)
            return self.index.flagged(self.exposed(event.symbol)), None
        if t is KeeperResumed:
            assert isinstance(event, KeeperResumed)
            keys = (self.index.symbols_of if event.scope == guards.KILL_SWITCH
                    else self.exposed(event.scope))
            return self.index.flagged(keys), None
        if isinstance(event, _PARAMS_CHANGES):
            exposed = sorted(self.exposed(event.params.symbol))
            for key in exposed:  # new parameters change the screen's coefficients
                self.index.reindex(key)
            return exposed, None
        return (), None

    def _end_episodes(self, symbol: str, flagged: list[str]) -> None:
        """After a tick of ``symbol``: the screen is conservative, so an exposed bucket it does
        not flag is healthy: its unhealthy episode is over, and so is its count of rejections
        once its backoff has passed (as ``_decide`` finds a bucket it checks exactly)."""
        hit = set(flagged)
        now = self.state.log_time
        symbols_of = self.index.symbols_of
        for key in [k for k in self._episodes if k not in hit and symbol in symbols_of.get(k, ())]:
            del self._episodes[key]
        for key in [k for k, (_n, until) in self._rejected.items()
                    if k not in hit and now >= until and symbol in symbols_of.get(k, ())]:
            del self._rejected[key]

    def _reject(self, key: str) -> None:
        """The venue rejected the bucket's liquidation: hold it back ``2**(n-1)`` times the base
        backoff (``KeeperParams.reject_backoff_us``) of log time, n rejections in a row."""
        p = self.params
        n = self._rejected[key][0] + 1 if key in self._rejected else 1
        wait = min(p.reject_backoff_us << min(n - 1, 40), p.reject_backoff_max_us)
        self._rejected[key] = (n, self.state.log_time + wait)

    # ------------------------------------------------------------------ decide

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def _decide(self, keys: Iterable[str], entry_id: str, trigger: Event, cleared: str | None = None,
                *, ordered: bool = False) -> list[Event]:
        """Decide on the candidates ``keys`` after ``entry_id``: the guards, then the exact
        check and plan in chunks of ``DECIDE_CHUNK`` (``_decide_from``); ``cleared``: a bucket the
        screen cleared (healthy for sure: its exact check is skipped); ``ordered``: ``keys`` is a
        list, sorted, each key once (a tick's candidates)."""
        # one decision per bucket, whatever the caller passed (linear for sorted keys)
        ordered_keys = keys if ordered and isinstance(keys, list) else sorted(dict.fromkeys(keys))
        if len(ordered_keys) <= DECIDE_CHUNK:
            return self._decide_from(ordered_keys, entry_id, trigger, cleared, DECIDE_CHUNK)
        # a burst: the screen's least headroom first (most at risk), so the first (smaller) chunk
        # is decided (and, streaming, submitted) before the rest is checked
        return self._decide_from(self.screen.by_headroom(ordered_keys), entry_id, trigger, cleared,
                                 self._first_chunk)

    def _decide_from(self, keys: list[str], entry_id: str, trigger: Event, cleared: str | None,
                     first: int) -> list[Event]:
        """Decide the candidates ``keys`` in order, ``first`` of them, then ``DECIDE_CHUNK`` at a
        time (the guards, the exact check, the plan); when ``streaming``, stop after the first
        chunk that decided something and keep the rest as ``backlog``."""
        out: list[Event] = []
        n = len(keys)
        i, size = 0, first
        while i < n:
            end = i + size
            chunk = self._eligible(keys[i:end], cleared)
            out.extend(self._decide_chunk(chunk, entry_id, trigger))
            if self.streaming and out and end < n:
                self.backlog = (keys[end:], entry_id, trigger, cleared)
                break
            i, size = end, DECIDE_CHUNK
        return out

    def continue_backlog(self) -> list[Event]:
        """Decide on (the next chunk of) ``backlog``: a streaming caller calls this until
        ``backlog`` is None before it hands the core another entry."""
        if self.backlog is None:
            return []
        self.screen.settle()  # what the burst's tick left for after its first decisions
        keys, entry_id, trigger, cleared = self.backlog
        self.backlog = None
        return self._decide_from(keys, entry_id, trigger, cleared, DECIDE_CHUNK)

    def _eligible(self, keys: list[str], cleared: str | None) -> list[Candidate]:
        """The candidates the guards let through, in order (``cleared``: see ``_decide``)."""
        s = self.state
        symbols_of = self.index.symbols_of
        out: list[Candidate] = []
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
            bucket = find_bucket(s, key)
            if bucket is None:
                continue
            symbols = symbols_of.get(key, ())
            if not symbols:
                self._episodes.pop(key, None)
                continue
            if not self.index.decidable(bucket):
                continue
            verdict = priced.get(symbols)
            if verdict is None:
                verdict = ("unsafe_market" if guards.unsafe_symbols(symbols, s.unsafe)
                           else "no_price" if guards.bad_prices(symbols, s.prices) else "")
                priced[symbols] = verdict
            if verdict:
                self._skip(verdict)
                continue
            if key == cleared:
                # the screen never misses a liquidatable bucket: this one is healthy
                self._episodes.pop(key, None)
                if held is not None:
                    del self._rejected[key]
                continue
            out.append((key, bucket, symbols, held))
        return out

    def _decide_chunk(self, chunk: list[Candidate], entry_id: str, trigger: Event) -> list[Event]:
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
        out: list[Event] = []
        for _, key, bucket, health, symbols in breaches:
            try:
                plan = _plan(self.profile, bucket, s, health)
            except _ENGINE_ERRORS:
                self._skip("engine_error")
                continue
            if plan is None:
                self._skip("no_plan")
                continue
            mode = mode_of(self.params, s, self._window, symbols, plan)
            if mode != "live" and self._episodes.get(key) == mode:
                continue
            intended = intent_of(key, entry_id, trigger, profile=self.profile.name, health=health,
                                 plan=plan, prices={sym: s.prices[sym] for sym in symbols}, mode=mode)
            iid = intended.event_id
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


def decide_log(entries: Iterable[tuple[str, Event]], params: KeeperParams) -> list[LiquidationIntended]:
    """Run a fresh core over recorded entries; every intent it decides, in order (replay/diff)."""
    core = KeeperCore(params)
    out: list[LiquidationIntended] = []
    for entry_id, event in entries:
        out.extend(e for e in core.handle(entry_id, event) if isinstance(e, LiquidationIntended))
    return out
