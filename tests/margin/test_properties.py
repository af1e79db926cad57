"""Laws of the margin engine, checked with hypothesis over random buckets."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeper.domain.margin import evaluate, get_profile, liquidation_price
from keeper.domain.margin.types import CONTEXT
from keeper.domain.model import AssetParams, Bucket, MarketParams, Position, Tier

D = Decimal
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MARKETS = {
    "BTC": MarketParams(
        symbol="BTC",
        mmf_tiers=(Tier(D(0), D("0.004"), D(0)), Tier(D(50000), D("0.005")), Tier(D(250000), D("0.01"))),
    ),
    "ETH": MarketParams(symbol="ETH", mmf=D("0.05")),
    "SOL": MarketParams(symbol="SOL", max_leverage=D(20)),
}
ASSETS = {"USDC": AssetParams(symbol="USDC", asset_weight=D(1), liability_weight=D(1))}
PERP_PROFILES = [
    "generic-perp",
    "binance-usdm",
    "bybit-usdt",
    "kucoin",
    "hyperliquid",
    "dydx-v4",
    "drift-v2",
    "gmx-v2",
]


def dec(lo: int, hi: int, places: int = 2) -> st.SearchStrategy[Decimal]:
    return st.integers(lo * 10**places, hi * 10**places).map(lambda i: D(i).scaleb(-places))


prices_st = st.fixed_dictionaries({"BTC": dec(1000, 100000), "ETH": dec(100, 10000), "SOL": dec(1, 1000)})


@st.composite
def positions_st(draw: st.DrawFn, markets: tuple[str, ...] = ("BTC", "ETH", "SOL")) -> dict[str, Position]:
    chosen = draw(st.lists(st.sampled_from(markets), min_size=1, max_size=3, unique=True))
    out = {}
    for m in chosen:
        size = draw(dec(-50, 50, 3).filter(lambda x: x != 0))
        entry = draw(dec(1, 100000))
        out[m] = Position(m, size, entry)
    return out


def _prices(p: dict[str, Decimal]) -> dict[str, Decimal]:
    return {**p, "USDC": D(1)}


@SETTINGS
@given(
    profile=st.sampled_from(PERP_PROFILES),
    cross=positions_st(),
    iso=positions_st(),
    prices=prices_st,
    cross_coll=dec(0, 100000),
    iso_coll=dec(0, 100000),
    loss=dec(0, 100000),
    move=dec(1, 100000),
)
def test_isolated_loss_never_changes_another_bucket(
    profile: str,
    cross: dict[str, Position],
    iso: dict[str, Position],
    prices: dict[str, Decimal],
    cross_coll: Decimal,
    iso_coll: Decimal,
    loss: Decimal,
    move: Decimal,
) -> None:
    p = get_profile(profile)
    cross_b = Bucket("cross", {"USDC": cross_coll}, cross)
    iso_b = Bucket("iso", {"USDC": iso_coll}, iso)
    px = _prices(prices)
    before = evaluate(p, cross_b, MARKETS, ASSETS, px)
    lp_before = {m: liquidation_price(p, cross_b, m, MARKETS, ASSETS, px) for m in cross}
    # The isolated bucket loses collateral and its market jumps: the cross bucket must not see it.
    iso_b.balances["USDC"] = iso_coll - loss
    for m in iso:
        if m not in cross:
            px[m] = move
    assert evaluate(p, cross_b, MARKETS, ASSETS, px) == before
    assert {m: liquidation_price(p, cross_b, m, MARKETS, ASSETS, px) for m in cross} == lp_before


@SETTINGS
@given(
    profile=st.sampled_from([*PERP_PROFILES, "mango-v4"]),
    positions=positions_st(),
    prices=prices_st,
    coll=dec(0, 200000),
    data=st.data(),
)
def test_at_the_liquidation_price_equity_equals_requirement(
    profile: str,
    positions: dict[str, Position],
    prices: dict[str, Decimal],
    coll: Decimal,
    data: st.DataObject,
) -> None:
    p = get_profile(profile)
    bucket = Bucket("b", {"USDC": coll}, positions)
    market = data.draw(st.sampled_from(sorted(positions)))
    px = _prices(prices)
    lp = liquidation_price(p, bucket, market, MARKETS, ASSETS, px)
    if lp is None:
        return
    assert lp > 0
    h = evaluate(p, bucket, MARKETS, ASSETS, {**px, market: lp})
    # The solver works at 60 significant digits: what is left is the last digit's rounding of
    # the largest term (equity can be a near-total cancellation of large position values).
    terms = sum((abs(q.size) * max(q.entry_price or D(0), lp) for q in positions.values()), D(0))
    scale = max(abs(h.equity), abs(h.requirement), terms + coll, D(1))
    assert abs(h.equity - h.requirement) <= scale * D(10) ** (-CONTEXT.prec + 6)


@SETTINGS
@given(
    profile=st.sampled_from(PERP_PROFILES),
    market=st.sampled_from(["BTC", "ETH", "SOL"]),
    size=dec(0, 50, 3).filter(lambda x: x != 0),
    entry=dec(1, 100000),
    coll=dec(0, 100000),
    p1=dec(1, 200000),
    p2=dec(1, 200000),
    short=st.booleans(),
)
def test_single_position_health_moves_with_price(
    profile: str,
    market: str,
    size: Decimal,
    entry: Decimal,
    coll: Decimal,
    p1: Decimal,
    p2: Decimal,
    short: bool,
) -> None:
    p = get_profile(profile)
    lo, hi = min(p1, p2), max(p1, p2)
    signed = -size if short else size
    bucket = Bucket("b", {"USDC": coll}, {market: Position(market, signed, entry)})
    h_lo = evaluate(p, bucket, MARKETS, ASSETS, {"USDC": D(1), market: lo})
    h_hi = evaluate(p, bucket, MARKETS, ASSETS, {"USDC": D(1), market: hi})
    margin_lo, margin_hi = h_lo.equity - h_lo.requirement, h_hi.equity - h_hi.requirement
    if short:
        assert margin_hi <= margin_lo
        assert not (h_lo.liquidatable and not h_hi.liquidatable)
    else:
        assert margin_hi >= margin_lo
        assert not (h_hi.liquidatable and not h_lo.liquidatable)


@SETTINGS
@given(
    profile=st.sampled_from(PERP_PROFILES),
    positions=positions_st(),
    prices=prices_st,
)
def test_cross_never_needs_more_collateral_than_the_isolated_buckets(
    profile: str, positions: dict[str, Position], prices: dict[str, Decimal]
) -> None:
    p = get_profile(profile)
    px = _prices(prices)

    def needed(bucket: Bucket) -> Decimal:
        h = evaluate(p, bucket, MARKETS, ASSETS, px)
        return max(D(0), h.requirement - h.equity)

    cross = needed(Bucket("cross", {}, dict(positions)))
    isolated = sum((needed(Bucket(m, {}, {m: pos})) for m, pos in positions.items()), D(0))
    assert cross <= isolated
