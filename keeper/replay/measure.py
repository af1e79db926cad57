"""The keeper against the perfect keeper, from a recorded run at the reference venue:
``keeper compare --log FILE``.

From an NDJSON export of a run's log (``keeper demo --export FILE``, ``keeper log export``):

- **the book**: the listings and account events the venue sent before its first liquidation
  (those without a ``causation_id``);
- **the path**: the market prices the keeper recorded (``PriceUpdated`` of a listed market), one
  tick per published instant (consecutive prices of one publish time, no market twice): the
  reference venue publishes each tick as one frame, so this is the path it played, as far as the
  keeper received it;
- **the keeper's figures**, as the venue booked them: a ``Venue`` holding the book is fed the log
  in order, prices moving its marks, and each liquidation's events (one ``causation_id``) applied
  as recorded. Bad debt is the insurance fund's part of them (a ``Deposit``; a ``Repay`` after a
  ``Withdraw``) at the marks; collateral lost is the bucket's value before less after (each
  floored at 0), the venue's ``collateral_lost``. The venue's own marks at the moment it applied a
  liquidation are not in the log: both are valued at the marks the log holds when the
  liquidation's events arrive (exact for bad debt in USDC, close for collateral lost);
- live intents, and those the venue rejected as healthy at its price ("price moved");
- **the perfect keeper** on that book and path (``keeper.sim.ideal.ideal_run``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from keeper.domain import events as ev
from keeper.errors import ConfigError
from keeper.sim.ideal import Ideal, bad_debt_ratio, ideal_run, share
from keeper.sim.prices import Tick
from keeper.sim.venue import Rejection, Venue
from keeper.store.ndjson import iter_ndjson_events

__all__ = ["CENT", "Measure", "book_and_path", "measure", "measure_log"]

_ACCOUNT = (ev.Deposit, ev.Withdraw, ev.Borrow, ev.Repay, ev.PositionChanged, ev.FundingApplied)
_LISTING = (ev.AssetListed, ev.AssetParamsChanged, ev.MarketListed, ev.MarketParamsChanged)
CENT = Decimal("0.01")


@dataclass
class Measure:
    """The keeper's figures beside the perfect keeper's on the same book and path (USD)."""

    source: str
    accounts: int = 0
    ticks: int = 0
    intents: int = 0
    """Live ``LiquidationIntended`` entries."""
    rejected_healthy: int = 0
    """Live intents the venue rejected as healthy at its price."""
    liquidations: int = 0
    """Liquidations the venue applied (distinct causation ids of account events)."""
    bad_debt: Decimal = Decimal(0)
    collateral_lost: Decimal = Decimal(0)
    ideal: Ideal = field(default_factory=Ideal)

    @property
    def bad_debt_ratio(self) -> float | None:
        return bad_debt_ratio(self.bad_debt, self.ideal.bad_debt)

    @property
    def price_moved_share(self) -> float:
        return share(self.rejected_healthy, self.intents)

    def table(self) -> str:
        """The comparison as text."""
        ratio = self.bad_debt_ratio
        rows = [
            ("", "keeper", "perfect keeper"),
            ("liquidations", f"{self.liquidations:,}", f"{self.ideal.liquidations:,}"),
            ("bad debt (USD)", f"{self.bad_debt.quantize(CENT):,}",
             f"{self.ideal.bad_debt.quantize(CENT):,}"),
            ("collateral lost (USD)", f"{self.collateral_lost.quantize(CENT):,}",
             f"{self.ideal.collateral_lost.quantize(CENT):,}"),
        ]
        lines = [f"log {self.source}: {self.accounts:,} accounts, {self.ticks:,} ticks",
                 *(f"{a:<24}{b:>18}{c:>18}" for a, b, c in rows),
                 f"bad debt, keeper / perfect: {'n/a' if ratio is None else f'{ratio:.2f}'}",
                 f"price moved: {self.rejected_healthy:,} of {self.intents:,} live intents rejected as "
                 f"healthy at the venue's price ({self.price_moved_share:.2%})"]
        if self.ideal.refused:
            lines.append(f"the perfect keeper's liquidation refused: {self.ideal.refused[0]}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "accounts": self.accounts, "ticks": self.ticks,
                "intents": self.intents, "rejected_healthy": self.rejected_healthy,
                "liquidations": self.liquidations, "bad_debt": str(self.bad_debt),
                "collateral_lost": str(self.collateral_lost),
                "ideal_liquidations": self.ideal.liquidations, "ideal_bad_debt": str(self.ideal.bad_debt),
                "ideal_collateral_lost": str(self.ideal.collateral_lost),
                "bad_debt_ratio": self.bad_debt_ratio, "price_moved_share": self.price_moved_share}


def book_and_path(events: Iterable[ev.Event]) -> tuple[list[ev.Event], list[Tick]]:
    """The venue's book (its events before the first liquidation) and the played path."""
    book: list[ev.Event] = []
    liquidated = False
    prices: list[ev.PriceUpdated] = []
    for e in events:
        if isinstance(e, (*_LISTING, *_ACCOUNT)) and not liquidated:
            if e.causation_id:
                liquidated = True
            else:
                book.append(e)
        elif isinstance(e, ev.PriceUpdated):
            prices.append(e)
    markets = {e.params.symbol for e in book if isinstance(e, ev.MarketListed | ev.MarketParamsChanged)}
    return book, _ticks(p for p in prices if p.symbol in markets)


def _ticks(prices: Iterable[ev.PriceUpdated]) -> list[Tick]:
    """One tick per published instant: consecutive prices of one publish time, no symbol twice."""
    out: list[Tick] = []
    for p in prices:
        last = out[-1] if out else None
        ts = p.publish_time or p.ts_event
        if last is None or last.ts_us != ts or p.symbol in last.prices:
            out.append(Tick(ts, {}))
        out[-1].prices[p.symbol] = p.price
    return out


class _Replay:
    """The keeper's liquidations at a venue holding the book, valued as the venue books them."""

    def __init__(self, book: list[ev.Event]) -> None:
        self.venue = Venue(lambda: 0)
        self.venue.load(book)
        self.bad_debt = Decimal(0)
        self.collateral_lost = Decimal(0)
        self.liquidations = 0
        self._group: str | None = None
        self._bucket: tuple[str, str] = ("", "")
        self._before = Decimal(0)
        self._withdrawn = False
        self._held: list[ev.PriceUpdated] = []

    def _value(self) -> Decimal:
        try:
            return self.venue.perp_health(*self._bucket)[0]  # Σ balance·P + Σ size·(mark − entry)
        except Rejection:
            return Decimal(0)

    def price(self, p: ev.PriceUpdated) -> None:
        if self._group is not None:
            self._held.append(p)  # one liquidation is valued at one set of marks
        else:
            self.venue.set_marks(p.ts_event, {p.symbol: p.price})

    def effect(self, e: ev.Deposit | ev.Withdraw | ev.Borrow | ev.Repay | ev.PositionChanged
               | ev.FundingApplied) -> None:
        assert e.causation_id is not None
        if e.causation_id != self._group:  # the keeper's own entries may come amid its events
            self.close()
            self._group, self._bucket = e.causation_id, (e.account, e.bucket)
            self._before, self._withdrawn = self._value(), False
            self.liquidations += 1
        if isinstance(e, ev.Withdraw):
            self._withdrawn = True
        elif isinstance(e, ev.Deposit) or (isinstance(e, ev.Repay) and self._withdrawn):
            self.bad_debt += e.amount * self.venue.price(e.asset)  # the insurance fund's cover
        self.venue.load([e])

    def close(self) -> None:
        """End the open liquidation: book what it took from the owner, then the held prices."""
        if self._group is None:
            return
        self.collateral_lost += max(self._before, Decimal(0)) - max(self._value(), Decimal(0))
        self._group = None
        held, self._held = self._held, []
        for p in held:
            self.price(p)


def measure(events: Iterable[ev.Event], source: str = "") -> Measure:
    """The keeper's figures and the perfect keeper's from one run's log (module docstring)."""
    log = list(events)
    book, path = book_and_path(log)
    m = Measure(source, ticks=len(path))
    m.accounts = len({e.account for e in book if isinstance(e, _ACCOUNT)})
    replay = _Replay(book)
    healthy: set[str] = set()
    live: set[str] = set()
    for e in log:
        if isinstance(e, ev.PriceUpdated):
            replay.price(e)
        elif isinstance(e, _ACCOUNT) and e.causation_id:
            replay.effect(e)
        elif isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live":
            live.add(e.decision.intent_id)
        elif isinstance(e, ev.LiquidationRejected) and e.reason.startswith("healthy"):
            healthy.add(e.intent_id)
    replay.close()
    m.intents, m.rejected_healthy = len(live), len(healthy & live)
    m.liquidations, m.bad_debt = replay.liquidations, replay.bad_debt
    m.collateral_lost = replay.collateral_lost
    m.ideal = ideal_run(book, path)
    return m


def measure_log(path: Path) -> Measure:
    """``measure`` of an NDJSON export; a ``ConfigError`` when it holds no reference-venue book."""
    m = measure((entry.event for entry in iter_ndjson_events(path)), str(path))
    if not m.accounts:
        raise ConfigError(f"--log: {path} holds no reference-venue book (no account events before its "
                          "first liquidation): export a run at the reference venue (keeper demo --export)")
    return m
