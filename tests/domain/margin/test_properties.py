"""Laws of the margin engine, checked with hypothesis over random buckets."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeper.domain.margin import Extras, Pricing, evaluate, get_profile, liquidation_price, plan_liquidation
from keeper.domain.margin.types import CONTEXT
from keeper.domain.margin.venues import vertex
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
# Vertex reads long/short weights 1 -/+ mmf (imf): a flat rate on every market
VERTEX_MARKETS = {
    "BTC": MarketParams(symbol="BTC", mmf=D("0.03"), imf=D("0.05")),
    "ETH": MarketParams(symbol="ETH", mmf=D("0.05"), imf=D("0.1")),
    "SOL": MarketParams(symbol="SOL", mmf=D("0.1"), imf=D("0.2")),
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
    "vertex",
    "aevo",
]


def _markets(profile: str) -> dict[str, MarketParams]:
    return VERTEX_MARKETS if profile == "vertex" else MARKETS


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
    pricing = Pricing(p, _markets(profile), ASSETS, px)
    before = evaluate(pricing, cross_b)
    lp_before = {m: liquidation_price(pricing, cross_b, m) for m in cross}
    # The isolated bucket loses collateral and its market jumps: the cross bucket must not see it.
    iso_b.balances["USDC"] = iso_coll - loss
    for m in iso:
        if m not in cross:
            px[m] = move
    pricing = Pricing(p, _markets(profile), ASSETS, px)
    assert evaluate(pricing, cross_b) == before
    assert {m: liquidation_price(pricing, cross_b, m) for m in cross} == lp_before


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
    lp = liquidation_price(Pricing(p, _markets(profile), ASSETS, px), bucket, market)
    if lp is None:
        return
    assert lp > 0
    h = evaluate(Pricing(p, _markets(profile), ASSETS, {**px, market: lp}), bucket)
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
    h_lo = evaluate(Pricing(p, _markets(profile), ASSETS, {"USDC": D(1), market: lo}), bucket)
    h_hi = evaluate(Pricing(p, _markets(profile), ASSETS, {"USDC": D(1), market: hi}), bucket)
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
        h = evaluate(Pricing(p, _markets(profile), ASSETS, px), bucket)
        return max(D(0), h.requirement - h.equity)

    cross = needed(Bucket("cross", {}, dict(positions)))
    isolated = sum((needed(Bucket(m, {}, {m: pos})) for m, pos in positions.items()), D(0))
    assert cross <= isolated


# --- MarginFi v2: the same laws for a weighted lending account on confidence-biased prices ------

MRGN_ASSETS = {
    "SOL": AssetParams(symbol="SOL", decimals=9, asset_weight=D("0.8"), liability_weight=D("1.25")),
    "ETH": AssetParams(symbol="ETH", decimals=8, asset_weight=D("0.85"), liability_weight=D("1.2")),
    "USDC": AssetParams(symbol="USDC", decimals=6, asset_weight=D("1"), liability_weight=D("1.05")),
}
mrgn_prices_st = st.fixed_dictionaries({"SOL": dec(1, 1000), "ETH": dec(100, 10000), "USDC": dec(0, 2, 4).map(
    lambda x: x + D("0.5"))})


@st.composite
def mrgn_balances_st(draw: st.DrawFn) -> dict[str, Decimal]:
    syms = draw(st.lists(st.sampled_from(sorted(MRGN_ASSETS)), min_size=1, max_size=3, unique=True))
    return {s: draw(dec(-5000, 5000, 4).filter(lambda x: x != 0)) for s in syms}


@st.composite
def mrgn_extras_st(draw: st.DrawFn, prices: dict[str, Decimal]) -> Extras:
    """Each symbol's oracle conf, up to 4% of the price (2.12 * 4% < the 10% the program accepts;
    above 2.36% the 5% cap applies)."""
    return Extras(conf={s: p * draw(st.integers(0, 100)) / 2500 for s, p in prices.items()})


MRGN = get_profile("marginfi-v2")


@SETTINGS
@given(cross=mrgn_balances_st(), iso=mrgn_balances_st(), prices=mrgn_prices_st, data=st.data(),
       loss=dec(0, 5000), move=dec(1, 10000))
def test_marginfi_isolated_loss_never_changes_another_bucket(
    cross: dict[str, Decimal], iso: dict[str, Decimal], prices: dict[str, Decimal], data: st.DataObject,
    loss: Decimal, move: Decimal,
) -> None:
    extras = data.draw(mrgn_extras_st(prices))
    cross_b, iso_b = Bucket("cross", dict(cross)), Bucket("iso", dict(iso))
    before = evaluate(Pricing(MRGN, {}, MRGN_ASSETS, prices, extras), cross_b)
    sym = sorted(iso)[0]
    iso_b.balances[sym] -= loss  # the other account loses, and a price only it holds jumps
    moved = dict(prices)
    for s in iso:
        if s not in cross:
            moved[s] = move
    conf = {s: min(c, moved[s] * 4 / 100) for s, c in extras.conf.items()}
    assert evaluate(Pricing(MRGN, {}, MRGN_ASSETS, moved, Extras(conf=conf)), cross_b) == before


@SETTINGS
@given(balances=mrgn_balances_st(), prices=mrgn_prices_st, data=st.data(), up=dec(0, 1000))
def test_marginfi_health_rises_with_collateral_prices_and_falls_with_debt_prices(
    balances: dict[str, Decimal], prices: dict[str, Decimal], data: st.DataObject, up: Decimal
) -> None:
    extras = data.draw(mrgn_extras_st(prices))  # held while the price rises: the share only falls
    sym = data.draw(st.sampled_from(sorted(balances)))
    b = Bucket("b", dict(balances))
    lo = evaluate(Pricing(MRGN, {}, MRGN_ASSETS, prices, extras), b)
    hi = evaluate(Pricing(MRGN, {}, MRGN_ASSETS, {**prices, sym: prices[sym] + up}, extras), b)
    if balances[sym] > 0:
        assert hi.equity - hi.requirement >= lo.equity - lo.requirement
        assert not (hi.liquidatable and not lo.liquidatable)
    else:
        assert hi.equity - hi.requirement <= lo.equity - lo.requirement
        assert not (lo.liquidatable and not hi.liquidatable)


@SETTINGS
@given(balances=mrgn_balances_st(), prices=mrgn_prices_st, data=st.data())
def test_marginfi_cross_never_needs_more_collateral_than_the_isolated_accounts(
    balances: dict[str, Decimal], prices: dict[str, Decimal], data: st.DataObject
) -> None:
    extras = data.draw(mrgn_extras_st(prices))

    def needed(bal: dict[str, Decimal]) -> Decimal:
        h = evaluate(Pricing(MRGN, {}, MRGN_ASSETS, prices, extras), Bucket("b", bal))
        return max(D(0), h.requirement - h.equity)

    isolated = sum((needed({s: v}) for s, v in balances.items()), D(0))
    assert needed(dict(balances)) <= isolated


@SETTINGS
@given(balances=mrgn_balances_st(), prices=mrgn_prices_st, data=st.data())
def test_marginfi_plan_is_what_the_program_accepts(
    balances: dict[str, Decimal], prices: dict[str, Decimal], data: st.DataObject
) -> None:
    extras = data.draw(mrgn_extras_st(prices))
    b = Bucket("b", dict(balances))
    h = evaluate(Pricing(MRGN, {}, MRGN_ASSETS, prices, extras), b)
    plan = plan_liquidation(Pricing(MRGN, {}, MRGN_ASSETS, prices, extras), b)
    if not h.liquidatable:
        assert plan is None
        return
    assert plan is not None
    if plan.seize_amount is None or plan.seize_amount == 0:
        return
    assert plan.repay_asset is not None
    assert plan.seize_asset is not None
    assert plan.repay_amount is not None
    assert plan.seize_amount <= balances[plan.seize_asset]
    assert plan.repay_amount < -balances[plan.repay_asset]  # the liability is never exhausted
    after = plan.maintenance_health_after
    assert after is not None
    assert after <= 0  # TooSevereLiquidation otherwise
    assert after > h.equity - h.requirement  # WorseHealthPostLiquidation otherwise


# --- Vertex: spreads only add health; the plan never lifts initial health above zero ------------

VERTEX = get_profile("vertex")
V_ASSETS = {
    "USDC": AssetParams(symbol="USDC"),
    "BTCS": AssetParams(symbol="BTCS", asset_weight=D("0.95"), liability_weight=D("1.05")),
    "ETHS": AssetParams(symbol="ETHS", asset_weight=D("0.9"), liability_weight=D("1.1")),
}
V_EXTRAS = Extras(spreads={"BTC": "BTCS", "ETH": "ETHS"},
                  initial={"BTCS": (D("0.9"), D("1.1")), "ETHS": (D("0.8"), D("1.2"))})


@st.composite
def vertex_bucket_st(draw: st.DrawFn) -> tuple[Bucket, dict[str, Decimal]]:
    prices = draw(st.fixed_dictionaries({"BTC": dec(1000, 100000), "ETH": dec(100, 10000)}))
    prices = {**prices, "BTCS": prices["BTC"] * draw(dec(95, 105)) / 100,
              "ETHS": prices["ETH"] * draw(dec(95, 105)) / 100, "USDC": D(1)}
    spots = draw(st.lists(st.sampled_from(["BTCS", "ETHS"]), max_size=2, unique=True))
    balances = {s: draw(dec(-50, 50, 3).filter(lambda x: x != 0)) for s in spots}
    balances["USDC"] = draw(dec(-200000, 200000))
    positions = draw(positions_st(("BTC", "ETH")))
    return Bucket("b", balances, positions), prices


@SETTINGS
@given(data=vertex_bucket_st())
def test_vertex_cross_never_needs_more_collateral_than_the_isolated_products(
    data: tuple[Bucket, dict[str, Decimal]]
) -> None:
    bucket, prices = data

    def needed(b: Bucket) -> Decimal:
        h = evaluate(Pricing(VERTEX, VERTEX_MARKETS, V_ASSETS, prices, V_EXTRAS), b)
        return max(D(0), h.requirement - h.equity)

    parts = [Bucket(s, {s: v}) for s, v in bucket.balances.items()]
    parts += [Bucket(m, {}, {m: p}) for m, p in bucket.positions.items()]
    assert needed(bucket) <= sum((needed(b) for b in parts), D(0))  # spreads net in cross only


@SETTINGS
@given(data=vertex_bucket_st())
def test_vertex_plan_never_lifts_initial_health_above_zero(data: tuple[Bucket, dict[str, Decimal]]) -> None:
    bucket, prices = data
    pricing = Pricing(VERTEX, VERTEX_MARKETS, V_ASSETS, prices, V_EXTRAS)
    h = evaluate(pricing, bucket)
    plan = plan_liquidation(pricing, bucket)
    if not h.liquidatable:
        assert plan is None
        return
    assert plan is not None
    acts = vertex.actions(pricing, bucket)
    if not acts:
        return
    assert plan.size is not None
    done = vertex.fill(pricing, bucket, acts[0], plan.size)
    before = vertex.health_value(pricing, bucket, "initial")[0]
    after = vertex.health_value(pricing, done.bucket, "initial")[0]
    assert after <= 0  # ERR_LIQUIDATED_TOO_MUCH otherwise
    assert after >= before  # a liquidation never makes the account worse
    assert plan.maintenance_health_after is not None
    assert plan.maintenance_health_after >= h.equity - h.requirement
