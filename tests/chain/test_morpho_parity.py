"""Parity with Morpho Blue's own bytecode: the contract is the judge.

Thousands of random positions are opened on the real Morpho Blue 1.0.0 bytecode (several
markets, every enabled LLTV, loan and collateral "decimals" 6 and 18 both ways, prices over
eight orders of magnitude, borrows up to a unit under the limit, days of interest), prices move,
and then every position meets one ``liquidate`` in a single block at a pinned time: the keeper's
plan where the keeper finds it liquidatable, a one-unit seizure where it finds it healthy. The
keeper's state is built only from the chain's own logs (``ChainIngest`` into a log, folded by
``MorphoCore``), and its plans are predicted in block order (each liquidation moves the market's
totals for the next). The verdict must equal the transaction's success, and the planned amounts
the ``Liquidate`` event's, to the unit.
"""

from __future__ import annotations

import random
from decimal import Decimal, localcontext

import msgspec
import pytest

from keeper.chain.ingest import ChainIngest
from keeper.chain.morpho import ZERO_ADDRESS, MorphoVenue
from keeper.chain.testnet import OWNER, LocalMorpho
from keeper.domain.margin import Pricing, evaluate, get_profile
from keeper.domain.margin.types import ENGINE
from keeper.domain.model import AssetParams, Bucket
from keeper.domain.morpho import liquidation as lq
from keeper.domain.morpho.core import MorphoCore
from keeper.domain.morpho.state import Market, MorphoState, Position
from keeper.domain.params import KeeperParams
from keeper.testing import MemoryEventLog
from tests.chain.conftest import LLTVS

POSITIONS = 2_000
LIQUIDATOR = "0x" + "1d" * 20


async def keeper_state(net: LocalMorpho) -> MorphoState:
    """The keeper's view, from the chain's logs only: ingest into a log, fold with the core."""
    log = MemoryEventLog()
    venue = MorphoVenue(net.rpc, net.morpho)
    ingest = ChainIngest(net.rpc, log, venue="morpho-blue", chain_id=31337, source=venue)
    await ingest.start()
    await ingest.sync()
    core = MorphoCore(KeeperParams(profile="morpho-blue"))
    for entry in await log.read("0-0", 1_000_000):
        core.handle(entry.id, entry.event)
    assert core.quarantined == 0, core.last_quarantine
    return core.state


DECIMALS: dict[str, tuple[int, int]] = {}
"""market id -> (loan decimals, collateral decimals) of the book being built."""
FINAL_PRICE: dict[str, int] = {}
"""market id -> the oracle price the test moves it to before the liquidations."""


async def build_book(net: LocalMorpho, rng: random.Random) -> list[tuple[str, str]]:
    tokens = {d: [await net.token(), await net.token()] for d in (6, 18)}
    mids: list[str] = []
    coll_decimals: dict[str, int] = {}
    for loan_dec, coll_dec in ((6, 18), (18, 6), (18, 18), (6, 6)):
        for k, lltv in enumerate(rng.sample(LLTVS, 4)):
            human = 10 ** rng.uniform(-3, 5)  # loan per collateral, 1e-3 .. 1e5
            price = int(human * 10 ** (36 + loan_dec - coll_dec))
            # one market in four has no IRM: no interest, so positions can sit on the unit boundary
            mid = await net.create_market(tokens[loan_dec][0], tokens[coll_dec][1], lltv, price, irm=k != 3)
            FINAL_PRICE[mid] = max(1, int(price * rng.uniform(0.90, 1.01)))  # most fall, some rise
            mids.append(mid)
            coll_decimals[mid] = coll_dec
            DECIMALS[mid] = (loan_dec, coll_dec)
    for mid in mids:
        p = net.markets[mid]
        await net.fund(p.collateral_token, OWNER, 1 << 200)
        await net.approve_collateral(mid)
    book: list[tuple[str, str]] = []
    plans: list[tuple[str, str, int, float]] = []
    for i in range(POSITIONS):
        mid = mids[i % len(mids)]
        borrower = "0x" + rng.randbytes(20).hex()
        collateral = int(10 ** rng.uniform(-2, 6) * 10 ** coll_decimals[mid]) + 1
        plans.append((mid, borrower, collateral, rng.random()))
    await net.impersonate([b for _, b, _, _ in plans])
    async with net.batch():
        for mid, borrower, collateral, _ in plans:
            await net.collateral(mid, borrower, collateral)
    # liquidity: what the book can borrow, so that utilisation (and the IRM's rate) varies
    need: dict[str, int] = {}
    for mid, _, collateral, _ in plans:
        p = net.markets[mid]
        price = int((await net.view("OracleMock", p.oracle, "price"))[0])
        need[mid] = need.get(mid, 0) + lq.max_borrow(collateral, price, p.lltv)
    for mid in mids:
        await net.supply(mid, int(need[mid] * rng.uniform(1.05, 3)) + 10**6)
    async with net.batch():
        for mid, borrower, collateral, r in plans:
            p = net.markets[mid]
            price = int((await net.view("OracleMock", p.oracle, "price"))[0])
            cap = lq.max_borrow(collateral, price, p.lltv)
            final = lq.max_borrow(collateral, FINAL_PRICE[mid], p.lltv)
            if p.irm == ZERO_ADDRESS and r < 0.6 and final + 2 < cap:
                # on the boundary at the final price, to the unit: maxBorrow - 1 .. maxBorrow + 2
                assets = final + rng.randint(-1, 2)
            else:  # half of them a few units under the limit, the others anywhere below it
                assets = cap - rng.randint(2, 4) if r < 0.5 else int(cap * rng.uniform(0.3, 0.999))
            if assets > 0:
                await net.borrow(mid, borrower, assets)
            book.append((mid, borrower))
    return book


def health_verdict(m: Market, pos: Position, t: int) -> bool:
    """``keeper health``'s verdict (the ``morpho-blue`` profile on a bucket of the position's
    collateral and its debt at ``t``, the loan token at 1 and the collateral at the oracle's
    price in token terms): what an operator's what-if says of this position."""
    loan_dec, coll_dec = DECIMALS[m.id]
    debt = lq.borrowed(pos, lq.accrue(m, t).totals)
    assets = {"COLL": AssetParams(symbol="COLL", decimals=coll_dec,
                                  liquidation_threshold=Decimal(m.lltv).scaleb(-18)),
              "LOAN": AssetParams(symbol="LOAN", decimals=loan_dec)}
    prices = {"COLL": Decimal(m.price).scaleb(-(36 + loan_dec - coll_dec)), "LOAN": Decimal(1)}
    balances = {"COLL": Decimal(pos.collateral).scaleb(-coll_dec)} if pos.collateral else {}
    if debt:
        balances["LOAN"] = -Decimal(debt).scaleb(-loan_dec)
    with localcontext(ENGINE):
        pricing = Pricing(get_profile("morpho-blue"), {}, assets, prices)
        return evaluate(pricing, Bucket(m.id, balances)).liquidatable


@pytest.mark.slow
async def test_keeper_verdicts_and_amounts_equal_the_contracts(
        morpho: LocalMorpho, capsys: pytest.CaptureFixture[str]) -> None:
    net = morpho
    rng = random.Random(20261204)
    book = await build_book(net, rng)
    # days of interest, then prices move (some up, most down)
    await net.rpc.call("evm_increaseTime", hex(rng.randint(1, 20) * 86_400 + rng.randint(0, 86_399)))
    for mid in net.markets:
        await net.set_price(mid, FINAL_PRICE[mid])
    state = await keeper_state(net)
    t = await net.block_time() + rng.randint(1, 3_600)
    # the liquidator: loan tokens and approvals, in the blocks before
    await net.impersonate([LIQUIDATOR])
    for token in sorted({p.loan_token for p in net.markets.values()}):
        await net.fund(token, LIQUIDATOR, 1 << 200)
        await net.send(LIQUIDATOR, token, "ERC20Mock", "approve", net.morpho, (1 << 256) - 1)
    t = max(t, await net.block_time() + 1)

    markets = {mid: msgspec.structs.replace(m) for mid, m in state.markets.items()}
    scenario_verdicts: list[bool] = []
    predicted: list[lq.Result | None] = []
    positions = [state.position(mid, b) for mid, b in book]
    async with net.batch(timestamp=t):
        for (mid, borrower), pos in zip(book, positions, strict=True):
            m = markets[mid]
            scenario_verdicts.append(health_verdict(m, pos, t))
            p = lq.plan(m, pos, verdict_time=t, plan_time=t)
            if p is None:
                predicted.append(None)
                args = (1, 0)  # the least seizure: the contract must refuse it
            else:
                predicted.append(p.result)
                args = (p.seized_assets, p.repaid_shares)
                r = p.result
                # the market as the next liquidation in this block will find it
                m.total_supply_assets, m.total_supply_shares, m.total_borrow_assets, \
                    m.total_borrow_shares, m.last_update = r.totals
            # a refused liquidation reverts whole: nothing accrues, nothing moves
            await net.send(LIQUIDATOR, net.morpho, "Morpho", "liquidate", tuple(net.markets[mid]), borrower,
                           *args, b"")
    block = await net.rpc.call("eth_getBlockByNumber", "latest", True)
    assert int(block["timestamp"], 16) == t
    txs = [tx["hash"] for tx in block["transactions"]]
    assert len(txs) == len(book)
    receipts = await net.receipts(txs)
    topic = net.abis["Morpho"].topics["Liquidate"]
    agree_liq = agree_healthy = amounts_equal = health_agrees = 0
    misses: list[str] = []
    for (mid, borrower), want, receipt, health_says in zip(book, predicted, receipts, scenario_verdicts,
                                                            strict=True):
        ok = int(receipt["status"], 16) == 1
        if health_says == ok:
            health_agrees += 1
        else:
            misses.append(f"{borrower} in {mid[:10]}: keeper health says liquidatable={health_says}, "
                          f"the contract {ok}")
        if want is None:
            if ok:
                misses.append(f"{borrower} in {mid[:10]}: keeper healthy, contract liquidated")
            else:
                agree_healthy += 1
            continue
        if not ok:
            misses.append(f"{borrower} in {mid[:10]}: keeper liquidatable, contract refused")
            continue
        agree_liq += 1
        got = next(net.abis["Morpho"].decode_log(raw) for raw in receipt["logs"] if raw["topics"][0] == topic)
        assert got is not None
        a = got[1]
        mine = (want.repaid_assets, want.repaid_shares, want.seized_assets, want.bad_debt_assets,
                want.bad_debt_shares)
        theirs = (a["repaidAssets"], a["repaidShares"], a["seizedAssets"], a["badDebtAssets"],
                  a["badDebtShares"])
        if mine == theirs:
            amounts_equal += 1
        else:
            misses.append(f"{borrower} in {mid[:10]}: keeper {mine}, contract {theirs}")
    with capsys.disabled():  # the counts belong in the test run's output, -s or not
        print(f"\nmorpho parity: {len(book)} positions, {len(net.markets)} markets; verdicts agree "
              f"{agree_liq + agree_healthy}/{len(book)} ({agree_liq} liquidatable, {agree_healthy} "
              f"healthy); amounts exact {amounts_equal}/{agree_liq}; keeper health (the morpho-blue "
              f"profile on the position's assets and price) agrees {health_agrees}/{len(book)}")
    assert not misses, "\n".join(misses[:20])
    assert agree_liq > 200 and agree_healthy > 200, "the book should hold both kinds in numbers"
