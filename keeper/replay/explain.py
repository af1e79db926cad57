"""Explain: the chain of one decision about one account, rebuilt from the log.

A replay runs with two hooks. Before and after every entry that can move the account (a price of
a symbol its buckets hold, its own account events, its intents and their outcomes, market and
asset parameter changes it is exposed to) each of its buckets is evaluated with the same exact
margin engine the keeper uses, so each step shows the health *before and after* it.

The focus is one decision: with ``at``, the last decision about the account whose trigger is at
or before ``at``; without, the account's last decision in the log. Its chain is every step up to
and including its trigger, then its submission, fills and outcome. On an account the keeper never
decided about, the explanation says why: the lowest health each bucket reached, where, and the
margin (equity minus requirement) it still had there; and, if a bucket was liquidatable but no
decision was made, the guard that held it (unsafe price, bucket busy, paused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore
from keeper.domain.margin import Pricing, evaluate
from keeper.errors import KeeperError
from keeper.store.entries import parse_id

__all__ = ["INF", "BucketMark", "Explainer", "Explanation", "Lowest", "Step", "render_text", "to_json"]

INF = Decimal("Infinity")


@dataclass
class BucketMark:
    """One bucket's health at one moment."""

    health: Decimal | None
    equity: Decimal | None
    requirement: Decimal | None
    liquidatable: bool
    note: str = ""


@dataclass
class Step:
    """One log entry that touched the account, with its buckets' health before and after."""

    entry_id: str
    ts_event: int
    type: str
    summary: str
    before: dict[str, BucketMark]
    after: dict[str, BucketMark]
    decided: list[ev.Decision] = field(default_factory=list)
    ref: str | None = None
    """The intent this entry belongs to: an intent's or outcome's id, a fill's causation id."""
    late: bool = False
    """After ``at``: kept only to show what became of an intent decided before it."""


def _ref(event: ev.Event) -> str | None:
    if isinstance(event, ev.LiquidationIntended):
        return event.decision.intent_id
    if isinstance(event, ev._Outcome):
        return event.intent_id
    return event.causation_id


@dataclass
class Lowest:
    """The lowest health a bucket reached, and where."""

    health: Decimal
    entry_id: str
    margin_left: Decimal | None
    prices: dict[str, Decimal]


@dataclass
class Explanation:
    account: str
    profile: str
    at: str | None
    steps: list[Step] = field(default_factory=list)
    decision: ev.Decision | None = None
    outcomes: list[Step] = field(default_factory=list)
    lowest: dict[str, Lowest] = field(default_factory=dict)
    held: list[tuple[str, str, str]] = field(default_factory=list)
    """(entry id, bucket, guard) where a bucket was liquidatable but nothing was decided."""
    final: dict[str, BucketMark] = field(default_factory=dict)


def _summary(event: ev.Event) -> str:
    t = type(event)
    if t is ev.PriceUpdated:
        assert isinstance(event, ev.PriceUpdated)
        return f"price {event.symbol} = {event.price}"
    if isinstance(event, ev.Deposit | ev.Withdraw | ev.Borrow | ev.Repay):
        return f"{ev.event_type(event)} {event.amount} {event.asset} into {event.bucket}"
    if t is ev.PositionChanged:
        assert isinstance(event, ev.PositionChanged)
        pnl = f", realized {event.realized_pnl}" if event.realized_pnl else ""
        return f"position {event.bucket} {event.market} size {event.size}{pnl}"
    if t is ev.FundingApplied:
        assert isinstance(event, ev.FundingApplied)
        return f"funding {event.amount} {event.asset} in {event.bucket}"
    if t is ev.LiquidationIntended:
        assert isinstance(event, ev.LiquidationIntended)
        return f"intent recorded {event.decision.intent_id} ({event.decision.mode})"
    if isinstance(event, ev.LiquidationSubmitted):
        return f"submitted {event.intent_id} via {event.executor or '?'} (attempt {event.attempt})"
    if isinstance(event, ev.LiquidationConfirmed):
        return f"confirmed {event.intent_id} venue_ref={event.venue_ref}"
    if isinstance(event, ev.LiquidationRejected):
        return f"rejected {event.intent_id}: {event.reason}"
    if isinstance(event, ev.LiquidationExpired):
        return f"expired {event.intent_id}: {event.reason}"
    if isinstance(event, ev.MarketListed | ev.MarketParamsChanged | ev.AssetListed | ev.AssetParamsChanged):
        return f"{ev.event_type(event)} {event.params.symbol}"
    if isinstance(event, ev.FeedStale | ev.FeedRecovered):
        return f"{ev.event_type(event)} {event.symbol} ({event.reason})"
    return ev.event_type(event)


class Explainer:
    """Replay hooks that follow one account through a ``KeeperCore``."""

    def __init__(self, core: KeeperCore, account: str, at: str | None = None) -> None:
        self.core = core
        self.account = account
        self.at = parse_id(at) if at is not None else None
        self.at_text = at
        self.symbols: set[str] = set()
        self.steps: list[Step] = []
        self._before: dict[str, BucketMark] | None = None
        self.lowest: dict[str, Lowest] = {}
        self.held: list[tuple[str, str, str]] = []
        self._past = False
        self._final: dict[str, BucketMark] | None = None
        self.prices: dict[str, list[tuple[int, Decimal]]] = {}
        """Price series of the account's symbols (log time µs, price), for plots."""
        self._refresh_symbols()

    def _refresh_symbols(self) -> None:
        # Symbols only accumulate: a market the account left still explains (and plots) what
        # happened to it, and its later prices cost one cheap evaluation each.
        a = self.core.state.accounts.get(self.account)
        if a is not None:
            self.symbols |= {s for b in a.buckets.values() for s in b.symbols()}

    def _touches(self, event: ev.Event) -> bool:
        t = type(event)
        if t is ev.PriceUpdated:
            assert isinstance(event, ev.PriceUpdated)
            return event.symbol in self.symbols
        if isinstance(event, ev.ACCOUNT_EVENTS):
            return event.account == self.account
        if t is ev.LiquidationIntended:
            assert isinstance(event, ev.LiquidationIntended)
            return event.decision.account == self.account
        if isinstance(event, ev._Outcome):
            return event.account == self.account or event.intent_id.startswith(f"liq:{self.account}/")
        if isinstance(event, ev.MarketListed | ev.MarketParamsChanged | ev.AssetListed
                      | ev.AssetParamsChanged):
            return event.params.symbol in self.symbols
        if isinstance(event, ev.FeedStale | ev.FeedRecovered):
            return event.symbol in self.symbols
        return False

    def marks(self) -> dict[str, BucketMark]:
        """Every bucket of the account, evaluated now with the keeper's profile."""
        s = self.core.state
        a = s.accounts.get(self.account)
        out: dict[str, BucketMark] = {}
        if a is None:
            return out
        pricing = Pricing(self.core.profile, s.markets, s.assets, s.prices)
        for name in sorted(a.buckets):
            b = a.buckets[name]
            if not b.balances and not b.positions:
                continue
            try:
                h = evaluate(pricing, b)
            except KeeperError as exc:
                out[name] = BucketMark(None, None, None, False, note=f"not evaluable: {exc}")
                continue
            out[name] = BucketMark(h.health_factor, h.equity, h.requirement, h.liquidatable)
        return out

    def before(self, entry_id: str, event: ev.Event) -> None:
        if self.at is not None and not self._past and parse_id(entry_id) > self.at:
            self._past = True
            self._final = self.marks()  # the account as of ``at``
        if self._past:
            # Past ``at`` only the fate of the account's intents is followed (submission, fill,
            # outcome): the decision explained was made at or before ``at``.
            ref = _ref(event)
            linked = ref is not None and ref.startswith(f"liq:{self.account}/")
            self._before = self.marks() if linked and self._touches(event) else None
            return
        self._before = self.marks() if self._touches(event) else None

    def after(self, entry_id: str, event: ev.Event, derived: Any) -> None:
        if self._before is None:
            if self._past or not any(type(e) is ev.LiquidationIntended
                                     and e.decision.account == self.account for e in derived):
                return
            # the last price of a frame that did not move the account closed the instant in
            # which one of its prices did: the decision about the account is taken here
            self._before = self.marks()
        if self._past:
            self.steps.append(Step(entry_id, event.ts_event, ev.event_type(event), _summary(event),
                                   self._before, self.marks(), [], _ref(event), late=True))
            return
        if isinstance(event, ev.ACCOUNT_EVENTS):
            self._refresh_symbols()
        elif type(event) is ev.PriceUpdated:
            assert isinstance(event, ev.PriceUpdated)
            self.prices.setdefault(event.symbol, []).append((event.ts_event, event.price))
        after = self.marks()
        decided = [e.decision for e in derived
                   if type(e) is ev.LiquidationIntended and e.decision.account == self.account]
        self.steps.append(Step(entry_id, event.ts_event, ev.event_type(event), _summary(event),
                               self._before, after, decided, _ref(event)))
        decided_buckets = {d.bucket for d in decided}
        for name, m in after.items():
            if m.health is None:
                continue
            low = self.lowest.get(name)
            if low is None or m.health < low.health:
                margin = None if m.equity is None or m.requirement is None else m.equity - m.requirement
                bucket = self.core.state.accounts[self.account].buckets[name]
                prices = {sym: self.core.state.prices[sym] for sym in bucket.symbols()
                          if sym in self.core.state.prices}
                self.lowest[name] = Lowest(m.health, entry_id, margin, prices)
            if m.liquidatable and name not in decided_buckets:
                self.held.append((entry_id, name, self._guard(name)))

    def _guard(self, bucket: str) -> str:
        s = self.core.state
        key = f"{self.account}/{bucket}"
        if key in s.busy:
            return f"busy: intent {s.busy[key]} in flight"
        b = s.find_bucket(key)
        syms = b.symbols() if b is not None else []
        unsafe = [x for x in syms if x in s.unsafe]
        if unsafe:
            return f"unsafe price: {', '.join(f'{x} ({s.unsafe[x]})' for x in unsafe)}"
        if s.paused:
            return f"paused: {', '.join(sorted(s.paused))}"
        if key in self.core._frame:
            return "the rest of its price frame (one published instant) was still to come"
        return "already decided in this unhealthy episode (recorded once per episode) or no plan"

    def explanation(self) -> Explanation:
        """Pick the focus decision and split the steps into its chain and its outcome."""
        out = Explanation(self.account, self.core.profile.name, self.at_text, lowest=self.lowest,
                          held=self.held, final=self._final if self._final is not None else self.marks())
        focus: tuple[int, ev.Decision] | None = None
        for i, step in enumerate(self.steps):
            for d in step.decided:
                focus = (i, d)
        if focus is None:
            out.steps = [s for s in self.steps if not s.late]
            return out
        i, d = focus
        out.decision = d
        out.steps = self.steps[:i + 1]
        out.outcomes = [s for s in self.steps[i + 1:] if s.ref == d.intent_id]
        return out


# ---------------------------------------------------------------- rendering


def _fmt(x: Decimal | None, places: int = 4) -> str:
    if x is None:
        return "-"
    if x.is_infinite():
        return "inf"
    return f"{x:.{places}f}"


def _marks_line(before: dict[str, BucketMark], after: dict[str, BucketMark]) -> str:
    parts = []
    for name in sorted(before.keys() | after.keys()):
        b, a = before.get(name), after.get(name)
        hb = _fmt(b.health) if b else "-"
        ha = _fmt(a.health) if a else "-"
        flag = " LIQUIDATABLE" if a is not None and a.liquidatable else ""
        parts.append(f"{name}: {hb} -> {ha}{flag}")
    return "; ".join(parts)


def render_text(x: Explanation, context: int = 8) -> str:
    """Human-readable: account events always, the last ``context`` price steps before the
    decision, the decision with its rule, then submission and outcome."""
    lines = [f"account {x.account} (profile {x.profile})" + (f" as of {x.at}" if x.at else "")]
    steps = x.steps
    price_idx = [i for i, s in enumerate(steps) if s.type == "price_updated"]
    keep_prices = set(price_idx[-context:])
    omitted = 0
    for i, s in enumerate(steps):
        if s.type == "price_updated" and i not in keep_prices:
            omitted += 1
            continue
        if omitted:
            lines.append(f"  ... {omitted} earlier price updates")
            omitted = 0
        lines.append(f"  {s.entry_id}  {s.summary:<48} health {_marks_line(s.before, s.after)}")
    d = x.decision
    if d is not None:
        lines.append(f"decision {d.intent_id} ({d.mode}) after entry {d.trigger} [{d.trigger_event_id}]")
        lines.append(f"  rule: {d.rule}")
        lines.append(f"  action: {d.action} market={d.market} size={d.size} notional={d.notional}")
        lines.append(f"  health {_fmt(d.health_before)} -> {_fmt(d.health_after)}; equity {d.equity} "
                     f"requirement {d.requirement}; bankrupt={d.bankrupt}")
        lines.append("  prices: " + ", ".join(f"{k}={v}" for k, v in sorted(d.prices.items())))
        if x.outcomes:
            lines.append("then:")
            for s in x.outcomes:
                lines.append(f"  {s.entry_id}  {s.summary:<48} health {_marks_line(s.before, s.after)}")
        else:
            lines.append("then: no submission or outcome in the log")
        return "\n".join(lines)
    lines.append(f"not liquidated: no decision about {x.account} in the log"
                 + (f" up to {x.at}" if x.at else ""))
    for name, low in sorted(x.lowest.items()):
        fin = x.final.get(name)
        lines.append(f"  bucket {name}: lowest health {_fmt(low.health)} at {low.entry_id} "
                     f"(margin left {_fmt(low.margin_left, 2)} USD at "
                     + ", ".join(f"{k}={v}" for k, v in sorted(low.prices.items()))
                     + f"); now {_fmt(fin.health) if fin else '-'}")
    for entry_id, name, guard in x.held[:5]:
        lines.append(f"  liquidatable at {entry_id} in bucket {name}, held by: {guard}")
    if not x.held:
        lines.append("  its health never fell to the profile's liquidation threshold")
    return "\n".join(lines)


def to_json(x: Explanation) -> bytes:
    """The explanation as JSON (decimals as strings, infinities as ``"Infinity"``)."""
    def mark(m: BucketMark) -> dict[str, Any]:
        return {"health": m.health, "equity": m.equity, "requirement": m.requirement,
                "liquidatable": m.liquidatable, **({"note": m.note} if m.note else {})}

    def step(s: Step) -> dict[str, Any]:
        return {"entry_id": s.entry_id, "ts_event": s.ts_event, "type": s.type, "summary": s.summary,
                "before": {k: mark(v) for k, v in s.before.items()},
                "after": {k: mark(v) for k, v in s.after.items()},
                "decided": [d.intent_id for d in s.decided]}

    doc: dict[str, Any] = {
        "account": x.account, "profile": x.profile, "at": x.at,
        "liquidated": x.decision is not None,
        "decision": x.decision,
        "rule": x.decision.rule if x.decision is not None else None,
        "trigger": x.decision.trigger if x.decision is not None else None,
        "steps": [step(s) for s in x.steps],
        "outcomes": [step(s) for s in x.outcomes],
        "lowest": {k: {"health": v.health, "entry_id": v.entry_id, "margin_left": v.margin_left,
                       "prices": v.prices} for k, v in x.lowest.items()},
        "held": [{"entry_id": e, "bucket": b, "guard": g} for e, b, g in x.held],
        "final": {k: mark(v) for k, v in x.final.items()},
    }
    return msgspec.json.encode(doc)
