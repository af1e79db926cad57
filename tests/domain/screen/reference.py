"""What the screen's tests share: markets and assets, an exact reference of the slack written
independently of the margin engine, and hypothesis books placed right at their boundary."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import strategies as st

from keeper.domain.model import AssetParams, Bucket, MarketParams, Position, Tier

D = Decimal
MARKETS = {
    "BTC": MarketParams(symbol="BTC", mmf=D("0.005")),
    "ETH": MarketParams(symbol="ETH", mmf=D("0.01")),
    "SOL": MarketParams(symbol="SOL", max_leverage=D("20")),
    "TIER": MarketParams(symbol="TIER", mmf_tiers=(
        Tier(D(0), D("0.004")), Tier(D(50_000), D("0.005")), Tier(D(250_000), D("0.01")),
        Tier(D(1_000_000), D("0.025")), Tier(D(5_000_000), D("0.05")))),
}
ASSETS = {
    "USDC": AssetParams(symbol="USDC", liquidation_threshold=D("0.9"), asset_weight=D(1)),
    "WETH": AssetParams(symbol="WETH", liquidation_threshold=D("0.8"), asset_weight=D("0.9"),
                        liability_weight=D("1.1")),
}


# ---------------------------------------------------------------- an exact reference, independent


def _brackets(m: MarketParams) -> list[tuple[D, D, D]]:
    out: list[tuple[D, D, D]] = []
    pr = pd = D(0)
    for i, t in enumerate(sorted(m.mmf_tiers, key=lambda t: t.notional_floor)):
        d = t.deduction if t.deduction is not None else (
            t.notional_floor * t.rate if i == 0 else pd + t.notional_floor * (t.rate - pr))
        out.append((t.notional_floor, t.rate, d))
        pr, pd = t.rate, d
    return out


def exact_mm(m: MarketParams, notional: D) -> D:
    if m.mmf is not None:
        return notional * m.mmf
    if m.max_leverage is not None:
        return notional / (2 * m.max_leverage)
    br = _brackets(m)
    _, rate, ded = br[0]
    for f, r, d in br:
        if notional >= f:
            rate, ded = r, d
    return max(D(0), notional * rate - ded)


def exact_slack(b: Bucket, prices: dict[str, D], lending: bool) -> D:
    """equity - requirement (perp) or weighted collateral - debt (lending), in exact Decimal."""
    s = D(0)
    for sym, bal in b.balances.items():
        a = ASSETS[sym]
        if bal > 0:
            w = a.liquidation_threshold if lending else a.asset_weight
            assert w is not None
        else:
            w = max(D(1), a.liability_weight or D(1))
        s += bal * prices[sym] * w
    for sym, p in b.positions.items():
        px = prices[sym]
        s += p.size * px + p.quote_value() - exact_mm(MARKETS[sym], abs(p.size) * px)
    return s


def magnitude(b: Bucket, prices: dict[str, D], lending: bool) -> D:
    """The size of the numbers the slack is made of: sum of the absolute terms."""
    terms = [abs(bal) * prices[s] for s, bal in b.balances.items()]
    terms += [abs(p.size * prices[s]) + abs(p.quote_value()) for s, p in b.positions.items()]
    return sum(terms, D(0))


def liquidatable(b: Bucket, prices: dict[str, D], lending: bool) -> bool:
    has_risk = bool(b.positions) or any(v < 0 for v in b.balances.values())
    return has_risk and exact_slack(b, prices, lending) < 0


def long_btc(collateral: str, size: str = "1", entry: str = "60000") -> Bucket:
    return Bucket("cross", {"USDC": D(collateral)}, {"BTC": Position("BTC", D(size), D(entry))})


# ---------------------------------------------------------------- random books and price paths

SYMS = ["BTC", "ETH", "SOL", "TIER", "USDC", "WETH"]
BASE = {"BTC": D(60000), "ETH": D(3000), "SOL": D(150), "TIER": D(20000), "USDC": D(1), "WETH": D(3000)}


@st.composite
def books(draw: st.DrawFn) -> list[tuple[Bucket, bool]]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        lending = draw(st.booleans())
        if lending:
            b = Bucket("cross", {"WETH": D(draw(st.integers(1, 10**6))) / 1000,
                                 "USDC": -D(draw(st.integers(1, 10**7))) / 100})
        else:
            pos = {}
            for m in draw(st.lists(st.sampled_from(["BTC", "ETH", "SOL", "TIER"]), min_size=1,
                                   max_size=4, unique=True)):
                size = D(draw(st.integers(-10**6, 10**6)) or 1) / 1000
                entry = BASE[m] * D(draw(st.integers(900, 1100))) / 1000
                pos[m] = Position(m, size, entry)
            b = Bucket("cross", {}, pos)
            bal = {"USDC": D(0)}
            if draw(st.booleans()):
                bal["WETH"] = D(draw(st.integers(-1000, 1000))) / 100
            b.balances.update({k: v for k, v in bal.items() if v})
        # put the bucket right at its boundary, a hair either side (relative 1e-6 .. 1e-17 of its
        # size, or exactly on it), so float noise and a wrong tolerance band would show
        slack = exact_slack(b, BASE, lending)
        mag = magnitude(b, BASE, lending)
        sign = draw(st.sampled_from([-1, 0, 1]))
        nudge = sign * mag * D(10) ** -draw(st.integers(6, 17))
        target = b.balances.get("USDC", D(0)) - slack + nudge  # USDC weighs 1 as debt or perp cash
        if target:
            b.balances["USDC"] = target
        out.append((b, lending))
    return out


# price levels in basis points from the base: paths leave and come back to the boundary
moves = st.lists(st.tuples(st.sampled_from(SYMS), st.sampled_from([-3000, -300, -1, 0, 0, 1, 300, 3000])),
                 min_size=1, max_size=30)
