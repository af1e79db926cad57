"""The reference venue's state and rules: accounts, marks, and its own liquidation check.

This is a second opinion, written independently of the keeper: its accounts are its own
(``keeper.sim.model``) and its check is the plain formulas below; of the keeper it shares only
the wire format of events (``keeper.domain.events``, ``keeper.domain.codec``). The keeper
decides, the venue checks and either applies the liquidation (emitting account events) or
refuses it with a reason. No sockets and no clock: time comes from the injected
``now_us`` callable, so the rules are unit-tested without I/O (``keeper.sim.server`` is the shell).

Rules (per bucket; ``P`` is the venue's current mark of a market or price of an asset, USDC = 1):

- perp equity ``E = Σ balance_a · P_a + Σ size_m · (P_m − entry_m)``;
  maintenance ``MM = Σ |size_m| · P_m · mmf_m`` (``mmf`` from the market, else
  ``1 / (2 · max_leverage)``, else the tier bracket of the notional); liquidatable iff ``E < MM``.
- lending ``HF = Σ coll · P · LT / Σ debt · P`` (balances > 0 are collateral, < 0 debt);
  liquidatable iff ``HF < 1``. Close factor: 50% of the debt asset's debt while ``HF > 0.95``
  and both that debt and the seized collateral are worth at least $2,000 (Aave v3.3's rule for
  small positions), else 100%. Seize at most ``repay · P_debt · (1 + bonus) / P_coll`` plus one
  base unit of the collateral asset (``10^-decimals``), and never more than the bucket holds.
- a perp close fills at the mark: realised PnL ``size · (mark − entry)`` rounded down (towards
  −∞) to 1e-6 USDC, minus a fee ``|size| · mark · liquidation_fee`` (default 1%) rounded up to
  1e-6 USDC, paid to the insurance fund. A bucket whose collateral value is then negative is
  topped up to zero from the insurance fund (a ``Deposit``, booked as bad debt).
- a lending bucket left with debt and no collateral has its debt repaid by the insurance fund
  (a ``Repay``, booked as bad debt).
- **collateral lost** (``Stats.collateral_lost``): what each applied liquidation took from the
  bucket's owner, ``max(V_before, 0) − max(V_after, 0)`` with ``V = Σ balance · P + Σ size ·
  (mark − entry)`` at the marks of the liquidation: the fee or bonus the owner paid, up to what
  the bucket was still worth (the rest of it is the insurance fund's bad debt).

Every event the venue emits gets ``event_id = "sim-<seq>"`` with ``seq`` its own increasing
sequence; the encoded payloads are kept so a subscriber can resync from any ``seq``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import msgspec

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.sim.model import Account, Asset, Bucket, Market, Position
from keeper.sim.results import Rejection, Result, Stats, format_amount, format_hf, reason_category

__all__ = [
    "DEFAULT_LIQUIDATION_FEE",
    "FULL_CLOSE_BELOW_USD",
    "FULL_CLOSE_HF",
    "HALF",
    "ONE",
    "SETTLE_ASSET",
    "USD",
    "Rejection",
    "Result",
    "Stats",
    "Venue",
]

USD = Decimal("0.000001")
"""Settlement precision of USDC amounts the venue computes (realised PnL, fees, bad debt)."""

DEFAULT_LIQUIDATION_FEE = Decimal("0.01")
SETTLE_ASSET = "USDC"
ONE = Decimal(1)
HALF = Decimal("0.5")
FULL_CLOSE_HF = Decimal("0.95")
FULL_CLOSE_BELOW_USD = Decimal(2000)
"""Aave v3.3: the close factor is 100% when the debt or the seized collateral is worth less."""


class Venue:
    """A margin venue with cross and isolated buckets, perps and lending, and an event history.

    Not thread-safe; one asyncio loop owns it. ``now_us`` gives the ``ts_event`` of every event
    the venue emits.
    """

    def __init__(self, now_us: Callable[[], int], insurance_fund: Decimal = Decimal(1_000_000)) -> None:
        self._now_us = now_us
        self.markets: dict[str, Market] = {}
        self.assets: dict[str, Asset] = {}
        self.marks: dict[str, Decimal] = {SETTLE_ASSET: ONE}
        self.mark_time_us = 0
        self.accounts: dict[str, Account] = {}
        self.halted: set[str] = set()
        self.insurance_fund = insurance_fund
        self.stats = Stats()
        self._history: list[bytes] = []
        self._accepted: dict[str, Result] = {}
        self._listeners: list[Callable[[int], None]] = []

    # ------------------------------------------------------------------ event history

    @property
    def seq(self) -> int:
        """The sequence number of the last event emitted (0 before any)."""
        return len(self._history)

    def events_after(self, seq: int, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Encoded events with sequence > ``seq``, oldest first, at most ``limit``."""
        start = max(seq, 0)
        return [(start + i + 1, p) for i, p in enumerate(self._history[start:start + limit])]

    def on_event(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(seq)`` after every batch of events the venue emits."""
        self._listeners.append(listener)

    def load(self, events: Iterable[ev.Event]) -> int:
        """Emit a book's initial events (their ids and times are re-stamped); returns the count."""
        n = 0
        for e in events:
            self._emit(e)
            n += 1
        self._notify()
        return n

    def _emit(self, event: ev.Event) -> bytes:
        stamped = msgspec.structs.replace(event, event_id=f"sim-{len(self._history) + 1}",
                                          ts_event=self._now_us(), ts_ingest=0)
        self._apply(stamped)
        payload = codec.encode(stamped)
        self._history.append(payload)
        return payload

    def _notify(self) -> None:
        for fn in self._listeners:
            fn(self.seq)

    def _apply(self, e: ev.Event) -> None:
        if isinstance(e, ev.MarketListed | ev.MarketParamsChanged):
            self.markets[e.params.symbol] = Market.of(e)
        elif isinstance(e, ev.AssetListed | ev.AssetParamsChanged):
            self.assets[e.params.symbol] = Asset.of(e)
        elif isinstance(e, ev.Deposit | ev.Repay):
            self._bucket(e.account, e.bucket).credit(e.asset, e.amount)
        elif isinstance(e, ev.Withdraw | ev.Borrow):
            self._bucket(e.account, e.bucket).credit(e.asset, -e.amount)
        elif isinstance(e, ev.PositionChanged):
            b = self._bucket(e.account, e.bucket)
            if e.size:
                b.positions[e.market] = Position(e.market, e.size, e.entry_price, e.quote)
            else:
                b.positions.pop(e.market, None)
            if e.realized_pnl:
                b.credit(e.settle_asset, e.realized_pnl)
        elif isinstance(e, ev.FundingApplied):
            self._bucket(e.account, e.bucket).credit(e.asset, e.amount)

    def _bucket(self, account: str, bucket: str) -> Bucket:
        a = self.accounts.get(account)
        if a is None:
            a = self.accounts[account] = Account(account)
        return a.bucket(bucket)

    # ------------------------------------------------------------------ prices

    def set_marks(self, ts_us: int, prices: Mapping[str, Decimal]) -> None:
        """Update marks. Keys are market names (``BTC-USD``); the base asset (``BTC``) follows."""
        for symbol, price in prices.items():
            if not price.is_finite() or price <= 0:
                raise ValueError(f"mark of {symbol} must be finite and > 0, got {price}")
            self.marks[symbol] = price
            base, sep, _ = symbol.partition("-")
            if sep:
                self.marks[base] = price
        self.mark_time_us = ts_us

    def price(self, symbol: str) -> Decimal:
        p = self.marks.get(symbol)
        if p is None:
            raise Rejection(f"market halted: no price for {symbol}")
        return p

    # ------------------------------------------------------------------ the venue's own checks

    def perp_health(self, account: str, bucket: str) -> tuple[Decimal, Decimal]:
        """``(equity, maintenance requirement)`` of a bucket at the current marks."""
        b = self._find(account, bucket)
        equity = sum((amt * self.price(a) for a, amt in b.balances.items()), Decimal(0))
        mm = Decimal(0)
        for m, pos in b.positions.items():
            mark = self.price(m)
            entry = pos.entry_price if pos.entry_price is not None else mark
            equity += pos.size * (mark - entry)
            mm += self._maintenance(m, abs(pos.size) * mark)
        return equity, mm

    def _maintenance(self, market: str, notional: Decimal) -> Decimal:
        p = self.markets.get(market)
        if p is None:
            raise Rejection(f"market halted: {market} is not listed")
        if p.mmf is not None:
            return notional * p.mmf
        if p.max_leverage is not None:
            return notional / (2 * p.max_leverage)
        rate, deduction, prev_rate = Decimal(0), Decimal(0), Decimal(0)
        for t in p.mmf_tiers:
            if notional < t.notional_floor:
                break
            deduction = t.deduction if t.deduction is not None else (
                deduction + t.notional_floor * (t.rate - prev_rate))
            rate = prev_rate = t.rate
        return notional * rate - deduction

    def _value(self, b: Bucket) -> Decimal:
        """What a bucket is worth to its owner at the marks: ``Σ balance · P + Σ size · (mark − entry)``."""
        value = sum((amt * self.price(a) for a, amt in b.balances.items()), Decimal(0))
        for m, pos in b.positions.items():
            if pos.entry_price is not None:
                value += pos.size * (self.price(m) - pos.entry_price)
        return value

    def owner_value(self, account: str, bucket: str) -> Decimal:
        """What a bucket is worth to its owner at the current marks (``_value``; below zero: a
        deficit the insurance fund would cover were the bucket liquidated now)."""
        return self._value(self._find(account, bucket))

    def _count_loss(self, before: Decimal, b: Bucket) -> None:
        """Book what an applied liquidation took from the owner (``before``: ``_value`` before it)."""
        self.stats.collateral_lost += max(before, Decimal(0)) - max(self._value(b), Decimal(0))

    def health_factor(self, account: str, bucket: str) -> Decimal | None:
        """Lending ``HF`` of a bucket (None when it has no debt)."""
        b = self._find(account, bucket)
        weighted, debt = Decimal(0), Decimal(0)
        for a, amt in b.balances.items():
            if amt > 0:
                lt = self.assets[a].liquidation_threshold if a in self.assets else None
                weighted += amt * self.price(a) * (lt if lt is not None else Decimal(0))
            elif amt < 0:
                debt += -amt * self.price(a)
        return None if debt == 0 else weighted / debt

    def _find(self, account: str, bucket: str) -> Bucket:
        a = self.accounts.get(account)
        if a is None:
            raise Rejection("unknown account")
        b = a.buckets.get(bucket)
        if b is None:
            raise Rejection(f"unknown bucket {bucket}")
        return b

    # ------------------------------------------------------------------ liquidations

    def liquidate(self, decision: ev.Decision, key: str | None = None) -> Result:
        """Check and apply one liquidation, idempotently under ``key`` (default: its intent id).

        A key already accepted answers ``duplicate`` with the original ref and events, and
        changes nothing. A rejected key is not remembered: a later request is re-evaluated.
        """
        key = key or decision.intent_id
        st = self.stats
        prior = self._accepted.get(key)
        if prior is not None:
            st.duplicates += 1
            return Result("duplicate", 409, prior.ref, prior.events)
        try:
            produced = self._check_and_apply(decision)
        except Rejection as exc:
            reason = str(exc)
            st.rejected += 1
            category = reason_category(reason)
            st.rejected_by_reason[category] = st.rejected_by_reason.get(category, 0) + 1
            return Result("rejected", 422, reason=reason)
        st.accepted += 1
        st.accepted_by_intent[key] = st.accepted_by_intent.get(key, 0) + 1
        result = Result("accepted", 200, f"sim-liq-{st.accepted}", tuple(produced))
        self._accepted[key] = result
        self._notify()
        return result

    def status(self, key: str) -> Result | None:
        """What the venue holds under ``key``: the accepted liquidation (its ref and the same
        events a duplicate is answered with), or None when it never accepted that key (a
        rejected key is not remembered). Changes nothing."""
        self.stats.status_queries += 1
        prior = self._accepted.get(key)
        return None if prior is None else Result("accepted", 200, prior.ref, prior.events)

    def market_view(self) -> dict[str, Any]:
        """The JSON view of ``GET /markets``: each listed market's mark and whether its
        liquidations are refused as halted (halted by a fault, or no mark yet)."""
        markets = {m: {"mark": None if m not in self.marks else str(self.marks[m]),
                       "halted": m in self.halted or m not in self.marks}
                   for m in sorted(self.markets)}
        return {"markets": markets, "halted": sorted(self.halted)}

    def count_request(self, key: str) -> None:
        """Record that a request for ``key`` arrived (whatever became of it)."""
        r = self.stats.requests_by_intent
        r[key] = r.get(key, 0) + 1

    def _check_and_apply(self, d: ev.Decision) -> list[bytes]:
        if d.account not in self.accounts:
            raise Rejection("unknown account")
        b = self._find(d.account, d.bucket)
        if d.action == "close_position":
            return self._close(d, b, bad_debt=False)
        if d.action == "repay_seize":
            return self._repay_seize(d, b)
        if d.action == "bad_debt":
            if b.positions:
                return self._close(d, b, bad_debt=True)
            return self._lending_bad_debt(d, b)
        raise Rejection(f"unknown action {d.action}")

    def _close(self, d: ev.Decision, b: Bucket, *, bad_debt: bool) -> list[bytes]:
        markets = [d.market] if d.market is not None else sorted(b.positions) if bad_debt else []
        if not markets:
            raise Rejection("no such position: no market given")
        for m in markets:
            if m in self.halted:
                raise Rejection(f"market halted: {m}")
            if m not in b.positions:
                raise Rejection(f"no such position in {m}")
        sizes = {m: b.positions[m].size for m in markets}
        if d.size is not None and len(markets) == 1:
            pos = sizes[markets[0]]
            if d.size == 0 or (d.size > 0) != (pos > 0):
                raise Rejection(f"size exceeds position: {d.size} against {pos} (wrong sign)")
            if abs(d.size) > abs(pos):
                raise Rejection(f"size exceeds position: {d.size} > {pos}")
            sizes[markets[0]] = d.size
        equity, mm = self.perp_health(d.account, d.bucket)
        if equity >= mm:
            raise Rejection(f"healthy at venue price {self.price(markets[0])} "
                            f"(equity {format_amount(equity)} >= MM {format_amount(mm)})")
        out: list[bytes] = []
        for m in markets:
            held = b.positions[m]
            mark = self.price(m)
            entry = held.entry_price if held.entry_price is not None else mark
            size = sizes[m]
            notional = abs(size) * mark
            pnl = (size * (mark - entry)).quantize(USD, rounding=ROUND_FLOOR)
            rate = self.markets[m].liquidation_fee
            fee = (notional * (rate if rate is not None else DEFAULT_LIQUIDATION_FEE)).quantize(
                USD, rounding=ROUND_CEILING)
            self.insurance_fund += fee
            self.stats.fees += fee
            self.stats.liquidated_notional += notional
            out.append(self._emit(ev.PositionChanged(
                event_id="", ts_event=0, causation_id=d.intent_id, account=d.account, bucket=d.bucket,
                market=m, size=held.size - size, entry_price=held.entry_price, quote=held.quote,
                realized_pnl=pnl - fee, settle_asset=SETTLE_ASSET)))
        collateral = sum((amt * self.price(a) for a, amt in b.balances.items()), Decimal(0))
        if collateral < 0:
            cover = (-collateral).quantize(USD, rounding=ROUND_CEILING)
            out.append(self._cover(d, SETTLE_ASSET, cover, ev.Deposit))
        self._count_loss(equity, b)
        return out

    def _cover(self, d: ev.Decision, asset: str, amount: Decimal, kind: type[ev._AmountEvent]) -> bytes:
        value = amount * self.price(asset)
        self.insurance_fund -= value
        self.stats.bad_debt += value
        return self._emit(kind(event_id="", ts_event=0, causation_id=d.intent_id, account=d.account,
                               bucket=d.bucket, asset=asset, amount=amount))

    def _repay_seize(self, d: ev.Decision, b: Bucket) -> list[bytes]:
        ra, rq, sa, sq = d.repay_asset, d.repay_amount, d.seize_asset, d.seize_amount
        if ra is None or rq is None or sa is None or sq is None:
            raise Rejection("repay_seize needs repay_asset, repay_amount, seize_asset, seize_amount")
        if rq <= 0 or sq <= 0:
            raise Rejection("repay and seize amounts must be > 0")
        for sym in (ra, sa):
            if sym in self.halted:
                raise Rejection(f"market halted: {sym}")
        debt = -b.balances.get(ra, Decimal(0))
        if debt <= 0:
            raise Rejection(f"no such position: no {ra} debt")
        held = b.balances.get(sa, Decimal(0))
        if held <= 0:
            raise Rejection(f"no such position: no {sa} collateral")
        hf = self.health_factor(d.account, d.bucket)
        assert hf is not None
        if hf >= 1:
            raise Rejection(f"healthy at venue price {self.price(sa)} (HF {format_hf(hf)} >= 1)")
        small = min(debt * self.price(ra), held * self.price(sa)) < FULL_CLOSE_BELOW_USD
        factor = HALF if hf > FULL_CLOSE_HF and not small else ONE
        if rq > debt * factor:
            raise Rejection(f"close factor exceeded: repay {rq} > {factor} x debt {debt} "
                            f"(HF {format_hf(hf)})")
        params = self.assets.get(sa)
        bonus = params.liquidation_bonus if params and params.liquidation_bonus is not None else Decimal(0)
        decimals = params.decimals if params and params.decimals is not None else 18
        allowed = rq * self.price(ra) * (1 + bonus) / self.price(sa) + Decimal(1).scaleb(-decimals)
        if sq > allowed:
            raise Rejection(f"seize exceeds bonus: {sq} > {format_amount(allowed)} {sa}")
        if sq > held:
            raise Rejection(f"seize exceeds collateral: {sq} > {held} {sa}")
        before = self._value(b)
        out = [
            self._emit(ev.Repay(event_id="", ts_event=0, causation_id=d.intent_id, account=d.account,
                                bucket=d.bucket, asset=ra, amount=rq)),
            self._emit(ev.Withdraw(event_id="", ts_event=0, causation_id=d.intent_id, account=d.account,
                                   bucket=d.bucket, asset=sa, amount=sq)),
        ]
        self.stats.liquidated_notional += rq * self.price(ra)
        out.extend(self._write_off(d, b))
        self._count_loss(before, b)
        return out

    def _write_off(self, d: ev.Decision, b: Bucket) -> list[bytes]:
        """Debt left in a bucket with no collateral is repaid by the insurance fund."""
        if any(amt > 0 for amt in b.balances.values()):
            return []
        return [self._cover(d, a, -amt, ev.Repay) for a, amt in sorted(b.balances.items()) if amt < 0]

    def _lending_bad_debt(self, d: ev.Decision, b: Bucket) -> list[bytes]:
        hf = self.health_factor(d.account, d.bucket)
        if hf is None or hf >= 1:
            raise Rejection(f"healthy at venue price (HF {'none' if hf is None else format_hf(hf)} >= 1)")
        before = self._value(b)
        out = [self._emit(ev.Withdraw(event_id="", ts_event=0, causation_id=d.intent_id, account=d.account,
                                      bucket=d.bucket, asset=a, amount=amt))
               for a, amt in sorted(b.balances.items()) if amt > 0]
        out.extend(self._write_off(d, b))
        self._count_loss(before, b)
        return out

    # ------------------------------------------------------------------ views

    def account_view(self, account: str) -> dict[str, Any]:
        """The JSON view of ``GET /accounts/{id}``: balances, positions and health per bucket."""
        a = self.accounts.get(account)
        if a is None:
            raise KeyError(account)
        out: dict[str, Any] = {"id": account, "buckets": {}}
        for name, b in sorted(a.buckets.items()):
            view: dict[str, Any] = {
                "balances": {k: str(v) for k, v in sorted(b.balances.items())},
                "positions": {m: {"size": str(p.size), "entry_price": str(p.entry_price)}
                              for m, p in sorted(b.positions.items())},
            }
            try:
                if b.positions:
                    e, mm = self.perp_health(account, name)
                    view.update(equity=str(e), mm=str(mm), liquidatable=e < mm)
                else:
                    hf = self.health_factor(account, name)
                    view.update(hf=None if hf is None else str(hf),
                                liquidatable=hf is not None and hf < 1)
            except Rejection as exc:
                view["error"] = str(exc)
            out["buckets"][name] = view
        return out

    def stats_view(self) -> dict[str, Any]:
        st = self.stats
        return {
            "accepted": st.accepted, "rejected": st.rejected, "duplicates": st.duplicates,
            "requests_by_intent": dict(st.requests_by_intent),
            "accepted_by_intent": dict(st.accepted_by_intent),
            "status_queries": st.status_queries,
            "rejected_by_reason": dict(st.rejected_by_reason),
            "bad_debt": str(st.bad_debt), "fees": str(st.fees),
            "insurance_fund": str(self.insurance_fund),
            "liquidated_notional": str(st.liquidated_notional),
            "collateral_lost": str(st.collateral_lost),
            "events": self.seq, "accounts": len(self.accounts),
            "mark_time_us": self.mark_time_us,
            "marks": {k: str(v) for k, v in sorted(self.marks.items())},
            "halted": sorted(self.halted),
        }

