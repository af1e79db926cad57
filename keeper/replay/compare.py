"""The isolated-versus-cross what-if: one recorded crash, one book, two margin models.

Same positions, same collateral, same venue profile; only how the collateral backs the positions
differs:

- **cross**: one bucket per account holding all its positions and all its collateral;
- **isolated**: one bucket per position; the account's collateral is split across them in
  proportion to their initial margin (``imf * |size| * entry``), exactly (cents, the remainder to
  the largest).

The book is ``keeper.scenarios.book.generate_book`` against the window's first prices; its perp
accounts are used (lending accounts are a different model and are left out, and counted).

**Liquidation model** (printed with every result, see ``MODEL``): each bar is walked as four
sub-ticks per market (open, then the low and the high in the order the bar implies: low first on
a down bar, then close); a bucket is liquidatable when equity < maintenance (``<=`` where the
profile is strict that way), maintenance being ``mmf * |size| * mark`` with the market's flat
mmf; the first time it is, the whole bucket is closed at that sub-tick's prices, the venue keeps a
liquidation fee of ``min(fee * notional, equity left)``, and equity below zero is bad debt.
A float screen (numpy) finds the candidate sub-tick; every liquidation is confirmed and accounted
with exact ``Decimal`` arithmetic at that sub-tick (if the exact check disagrees the bucket keeps
being walked exactly).

"Collateral needed" is reported two ways: the initial margin (``imf * notional`` at entry; the
same for both models with flat rates), and the collateral that would have survived the whole
window without any liquidation: per isolated bucket ``max_t (MM_t - PnL_t)``, summed; per cross
bucket ``max_t sum(MM_t - PnL_t)``; so cross never needs more, and the gap is what netting buys.
"""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from keeper.domain import events as ev
from keeper.domain.margin import get_profile
from keeper.feeds.parsers import iso_to_us
from keeper.scenarios.book import generate_book, market_params

__all__ = [
    "CENT",
    "CHUNK",
    "F64",
    "MODEL",
    "PANELS",
    "TIDY",
    "ZERO",
    "Acct",
    "BucketOutcome",
    "Comparison",
    "D",
    "ModelResult",
    "Pos",
    "Window",
    "compare",
    "comparison_figure",
    "human",
    "load_window",
    "perp_accounts",
    "plot_comparison",
    "split_isolated",
]

D = Decimal
CENT = D("0.01")
ZERO = D(0)
TIDY = "event_windows_tidy.csv.gz"
MODEL = ("liquidation model: bars walked as open, low/high (in the bar's order), close; a bucket is "
         "liquidated when equity < mmf x notional at mark (the profile's strictness); the whole "
         "bucket is closed at that sub-tick's prices; the venue keeps min(fee x notional, equity "
         "left); equity below zero is bad debt. Isolated: collateral split by initial margin.")
CHUNK = 2048
F64 = npt.NDArray[np.float64]


@dataclass
class Window:
    """Aligned OHLC bars of one crash window: ``ohlc[t][m]`` = (open, high, low, close) strings."""

    event: str
    source: str
    markets: list[str]
    times_us: list[int]
    ohlc: list[list[tuple[str, str, str, str]]]

    def path(self) -> tuple[F64, list[tuple[int, int]]]:
        """Sub-tick prices (ticks x markets, floats) and for each sub-tick its (bar, k)."""
        n, m = len(self.times_us), len(self.markets)
        arr = np.array([[[float(x) for x in bar] for bar in row] for row in self.ohlc]).reshape(n, m, 4)
        o, h, low, c = arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3]
        down = c < o
        first = np.where(down, low, h)
        second = np.where(down, h, low)
        ticks = np.stack([o, first, second, c], axis=1).reshape(n * 4, m)
        where = [(t, k) for t in range(n) for k in range(4)]
        return ticks, where

    def exact(self, bar: int, k: int) -> list[Decimal]:
        """The exact prices of sub-tick ``k`` of ``bar`` (same order as ``path``)."""
        out = []
        for o, h, low, c in self.ohlc[bar]:
            down = D(c) < D(o)
            out.append(D((o, low if down else h, h if down else low, c)[k]))
        return out


def _market_name(symbol: str) -> str:
    # "BTC/USDT:USDT", "ETH/USD", "BTCUSD_PERP" -> "BTC"
    base = symbol.split("/", maxsplit=1)[0] if "/" in symbol else symbol.split("USD", maxsplit=1)[0]
    return f"{base}-USD"


def load_window(data_dir: Path, event: str) -> Window:
    """The window of ``event`` from the tidy file: the (venue, market, resolution) group with the
    most symbols, on the timestamps every symbol has."""
    groups: dict[tuple[str, str, str], dict[str, dict[str, tuple[str, str, str, str]]]] = defaultdict(dict)
    sources: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    with gzip.open(data_dir / TIDY, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["event"] != event or "trades" in row["market"]:
                continue
            key = (row["venue"], row["market"], row["resolution"])
            groups[key].setdefault(row["symbol"], {})[row["ts"]] = (
                row["open"], row["high"], row["low"], row["close"])
            sources[key].add(row["source"])
    if not groups:
        raise ValueError(f"no window {event!r} in {data_dir / TIDY}")
    key = max(groups, key=lambda k: (len(groups[k]), sum(len(v) for v in groups[k].values()), k))
    by_symbol = groups[key]
    symbols = sorted(by_symbol)
    common = sorted(set.intersection(*(set(v) for v in by_symbol.values())))
    markets = [_market_name(s) for s in symbols]
    if len(set(markets)) != len(markets):
        raise ValueError(f"window {event}: symbols {symbols} map to clashing markets")
    ohlc = [[by_symbol[s][ts] for s in symbols] for ts in common]
    source = f"{'+'.join(sorted(sources[key]))} {key[0]} {key[1]} {key[2]}"
    return Window(event, source, markets, [iso_to_us(ts) for ts in common], ohlc)


# ---------------------------------------------------------------- the book, laid out two ways


@dataclass
class Pos:
    market: str
    size: Decimal
    entry: Decimal


@dataclass
class Acct:
    id: str
    collateral: Decimal
    positions: list[Pos]


def perp_accounts(window: Window, n_accounts: int, seed: int) -> tuple[list[Acct], int]:
    """The book's perp accounts (positions and total USDC collateral); also how many were left out."""
    first = dict(zip(window.markets, (D(bar[0]) for bar in window.ohlc[0]), strict=True))
    book = generate_book(n_accounts, seed=seed, prices=first)
    coll: dict[str, Decimal] = defaultdict(lambda: ZERO)
    pos: dict[str, list[Pos]] = defaultdict(list)
    other: set[str] = set()
    for e in book.events:
        if isinstance(e, ev.Deposit):
            if e.asset == "USDC":
                coll[e.account] += e.amount
            else:
                other.add(e.account)
        elif isinstance(e, ev.Borrow):
            other.add(e.account)
        elif isinstance(e, ev.PositionChanged) and e.size:
            assert e.entry_price is not None
            pos[e.account].append(Pos(e.market, e.size, e.entry_price))
    accts = [Acct(a, coll[a], sorted(pos[a], key=lambda p: p.market))
             for a in sorted(pos) if a not in other and coll[a] > 0]
    return accts, len(book.kinds) - len(accts)


def split_isolated(a: Acct) -> list[Decimal]:
    """The account's collateral split by initial margin, in cents, summing exactly to the total."""
    ims = [abs(p.size) * p.entry * (market_params(p.market).imf or D(1)) for p in a.positions]
    total = sum(ims, ZERO)
    shares = [(a.collateral * im / total).quantize(CENT, rounding=ROUND_DOWN) for im in ims]
    biggest = max(range(len(ims)), key=lambda i: (ims[i], -i))
    shares[biggest] += a.collateral - sum(shares, ZERO)
    return shares


# ---------------------------------------------------------------- the simulation


@dataclass
class BucketOutcome:
    account: str
    bucket: str
    collateral: Decimal
    liquidated: bool = False
    at_us: int | None = None
    returned: Decimal = ZERO
    """Collateral the owner still has: all of it if never liquidated, else what the close left."""
    lost: Decimal = ZERO
    bad_debt: Decimal = ZERO
    fee: Decimal = ZERO
    survive: Decimal = ZERO
    """Collateral that would have survived the window (see the module docstring)."""
    initial_margin: Decimal = ZERO


@dataclass
class ModelResult:
    model: str
    buckets: list[BucketOutcome] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        by_acct: dict[str, list[BucketOutcome]] = defaultdict(list)
        for b in self.buckets:
            by_acct[b.account].append(b)
        wiped = sum(1 for bs in by_acct.values()
                    if all(b.liquidated for b in bs) and sum((b.returned for b in bs), ZERO) == 0)
        return {
            "collateral_posted": sum((b.collateral for b in self.buckets), ZERO),
            "liquidations": sum(1 for b in self.buckets if b.liquidated),
            "accounts_liquidated": sum(1 for bs in by_acct.values() if any(b.liquidated for b in bs)),
            "accounts_wiped": wiped,
            "collateral_lost": sum((b.lost for b in self.buckets), ZERO),
            "bad_debt": sum((b.bad_debt for b in self.buckets), ZERO),
            "fees": sum((b.fee for b in self.buckets), ZERO),
            "initial_margin": sum((b.initial_margin for b in self.buckets), ZERO),
            "collateral_to_survive": sum((b.survive for b in self.buckets), ZERO),
        }


class _Layout:
    """Positions as columns: which market, size, entry; grouped into buckets (contiguous)."""

    def __init__(self, markets: list[str], buckets: list[tuple[str, str, Decimal, list[Pos]]]) -> None:
        self.buckets = buckets
        idx = {m: i for i, m in enumerate(markets)}
        cols = [(b, p) for b, (_, _, _, ps) in enumerate(buckets) for p in ps]
        self.owner = np.array([b for b, _ in cols], dtype=np.int64)
        self.mkt = np.array([idx[p.market] for _, p in cols], dtype=np.int64)
        self.size = np.array([float(p.size) for _, p in cols])
        self.entry = np.array([float(p.entry) for _, p in cols])
        self.mmf = np.array([float(market_params(p.market).mmf or 0) for _, p in cols])
        self.coll = np.array([float(c) for _, _, c, _ in buckets])
        self.starts = np.searchsorted(self.owner, np.arange(len(buckets)))


def _simulate(window: Window, layout: _Layout, strict_le: bool, model: str) -> ModelResult:
    ticks, where = window.path()
    nb = len(layout.buckets)
    first = np.full(nb, -1, dtype=np.int64)
    worst = np.full(nb, -np.inf)  # max over t of (MM - PnL), the collateral needed to survive
    worst_t = np.zeros(nb, dtype=np.int64)
    for t0 in range(0, len(ticks), CHUNK):
        p = ticks[t0:t0 + CHUNK][:, layout.mkt]  # (T, positions)
        pnl = layout.size * (p - layout.entry)
        mm = np.abs(layout.size) * p * layout.mmf
        need = np.add.reduceat(mm - pnl, layout.starts, axis=1)  # (T, buckets)
        top = need.argmax(axis=0)
        val = need[top, np.arange(nb)]
        better = val > worst
        worst[better] = val[better]
        worst_t[better] = t0 + top[better]
        slack = layout.coll - need
        tol = 1e-9 * (np.abs(layout.coll) + np.add.reduceat(mm + np.abs(pnl), layout.starts, axis=1)) + 1e-6
        hit = slack < tol
        anyhit = hit.any(axis=0) & (first < 0)
        first[anyhit] = t0 + hit[:, anyhit].argmax(axis=0)
    res = ModelResult(model)
    markets = window.markets
    for b, (acct, name, coll, ps) in enumerate(layout.buckets):
        out = BucketOutcome(acct, name, coll, returned=coll)
        out.initial_margin = sum((abs(p.size) * p.entry * (market_params(p.market).imf or D(1))
                                  for p in ps), ZERO)
        # Floats only pick the sub-tick; the figure itself is exact at that sub-tick.
        bar, k = where[int(worst_t[b])]
        at = dict(zip(markets, window.exact(bar, k), strict=True))
        need_exact = sum((abs(p.size) * at[p.market] * (market_params(p.market).mmf or ZERO)
                          - p.size * (at[p.market] - p.entry) for p in ps), ZERO)
        out.survive = max(need_exact, ZERO).quantize(CENT, rounding=ROUND_CEILING)  # needed: round up
        t = int(first[b])
        while 0 <= t < len(where):
            bar, k = where[t]
            prices = dict(zip(markets, window.exact(bar, k), strict=True))
            equity = coll + sum((p.size * (prices[p.market] - p.entry) for p in ps), ZERO)
            mm = sum((abs(p.size) * prices[p.market] * (market_params(p.market).mmf or ZERO)
                      for p in ps), ZERO)
            if equity < mm or (strict_le and equity == mm):
                notional = sum((abs(p.size) * prices[p.market] for p in ps), ZERO)
                fee_rate = market_params(ps[0].market).liquidation_fee or ZERO
                fee = min(notional * fee_rate, max(equity, ZERO))
                left = equity - fee
                out.liquidated = True
                out.at_us = window.times_us[bar]
                out.fee = fee.quantize(CENT)
                out.returned = max(left, ZERO).quantize(CENT, rounding=ROUND_DOWN)
                out.bad_debt = max(-left, ZERO).quantize(CENT)
                out.lost = coll - out.returned
                break
            t += 1  # the float screen flagged a near miss: keep walking this bucket exactly
        res.buckets.append(out)
    return res


@dataclass
class Comparison:
    window: Window
    profile: str
    accounts: int
    left_out: int
    isolated: ModelResult
    cross: ModelResult
    model: str = MODEL

    def table(self) -> str:
        iso, cross = self.isolated.totals(), self.cross.totals()
        w = self.window
        lines = [
            f"window {w.event}: {w.source}, {len(w.markets)} markets ({', '.join(w.markets)}), "
            f"{len(w.times_us)} bars",
            f"book: {self.accounts} perp accounts (left out: {self.left_out} lending accounts); "
            f"profile {self.profile}",
            self.model,
            f"{'':<30}{'isolated':>18}{'cross':>18}",
        ]
        rows = [("collateral posted (USD)", "collateral_posted"), ("liquidations (buckets)", "liquidations"),
                ("accounts liquidated", "accounts_liquidated"),
                ("accounts fully wiped", "accounts_wiped"), ("collateral lost (USD)", "collateral_lost"),
                ("bad debt (USD)", "bad_debt"), ("liquidation fees (USD)", "fees"),
                ("initial margin (USD)", "initial_margin"),
                ("collateral to survive (USD)", "collateral_to_survive")]
        for label, k in rows:
            a, b = iso[k], cross[k]
            fa = f"{a:,.2f}" if isinstance(a, Decimal) else f"{a:,}"
            fb = f"{b:,.2f}" if isinstance(b, Decimal) else f"{b:,}"
            lines.append(f"{label:<30}{fa:>18}{fb:>18}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window.event, "source": self.window.source, "markets": self.window.markets,
                "bars": len(self.window.times_us), "profile": self.profile, "accounts": self.accounts,
                "left_out": self.left_out, "model": self.model,
                "isolated": {k: str(v) for k, v in self.isolated.totals().items()},
                "cross": {k: str(v) for k, v in self.cross.totals().items()}}


def compare(window: Window, n_accounts: int = 2000, *, profile: str = "binance-usdm",
            seed: int = 1) -> Comparison:
    """Run the book through ``window`` under both models (see the module docstring)."""
    prof = get_profile(profile)
    strict_le = getattr(prof, "strictness", "lt") == "le"
    accts, left_out = perp_accounts(window, n_accounts, seed)
    cross_b = [(a.id, "cross", a.collateral, a.positions) for a in accts]
    iso_b = [(a.id, f"iso-{p.market}-{i}", c, [p]) for a in accts
             for i, (p, c) in enumerate(zip(a.positions, split_isolated(a), strict=True))]
    iso = _simulate(window, _Layout(window.markets, iso_b), strict_le, "isolated")
    cross = _simulate(window, _Layout(window.markets, cross_b), strict_le, "cross")
    return Comparison(window, profile, len(accts), left_out, iso, cross)


PANELS = [("liquidations", "liquidations (buckets)", False),
          ("accounts_wiped", "accounts fully wiped", False),
          ("collateral_lost", "collateral lost", True), ("bad_debt", "bad debt", True),
          ("initial_margin", "initial margin", True),
          ("collateral_to_survive", "collateral to survive", True)]
"""(totals key, title, in dollars): one panel each."""


def human(value: float, money: bool) -> str:
    """``value`` for people: 1,234 / $1.23M / $12.3k, three significant digits for money."""
    if not money:
        return f"{value:,.0f}"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"${value / div:.3g}{unit}"
    return f"${value:,.0f}" if value == int(value) else f"${value:,.2f}"


def comparison_figure(res: Comparison) -> Any:
    """One window's figure: a panel per outcome (two rows of three), isolated and cross side by
    side with their values written on the bars, the window and the model above (the caller
    closes it)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iso, cross = res.isolated.totals(), res.cross.totals()
    fig, axes = plt.subplots(2, 3, figsize=(13, 8))
    for ax, (key, label, money) in zip(axes.flat, PANELS, strict=True):
        vals = [float(iso[key]), float(cross[key])]
        bars = ax.bar(["isolated", "cross"], vals, color=["tab:orange", "tab:blue"])
        ax.bar_label(bars, labels=[human(v, money) for v in vals], padding=2, fontsize=10)
        ax.set_title(label + (" (USD)" if money else ""), fontsize=11)
        ax.set_ylim(0, max(vals) * 1.18 or 1)
        ax.tick_params(labelsize=10)
        ax.yaxis.set_major_formatter(lambda v, _pos, m=money: human(v, m))
    w = res.window
    fig.suptitle(f"{w.event}: isolated vs cross margin, same book and positions "
                 f"({res.accounts:,} perp accounts, {len(w.markets)} markets, {len(w.times_us)} bars; "
                 f"profile {res.profile})", fontsize=13)
    fig.text(0.5, 0.01, "\n".join(textwrap.wrap(f"{w.source}. {res.model}", 160)), ha="center",
             va="bottom", fontsize=8, color="dimgray")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return fig


def plot_comparison(res: Comparison, out: Path) -> Path:
    """Write ``comparison_figure(res)`` to ``out`` (PNG, 1430x880); returns the path."""
    import matplotlib.pyplot as plt

    fig = comparison_figure(res)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
