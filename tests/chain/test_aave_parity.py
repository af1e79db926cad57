"""Parity with Aave v3.0.2's own bytecode: the contracts are the judge.

Thousands of random accounts on the real pool (four reserves of 18, 8, 6 and 18 decimals, with
different thresholds, bonuses, reserve factors and protocol fees; each account supplies one to
three of them and borrows one or two, sometimes an asset it also supplies), weeks of interest,
prices moved. The keeper's state is built only from the chain's logs (``ChainIngest`` into a
log, folded by ``AaveCore``). Then, at a pinned block time, the keeper's health factor must equal
``getUserAccountData``'s to the wei for every account; and in the next block, at a pinned time,
every account meets one ``liquidationCall``: the keeper's plan where it finds the account
liquidatable, a one-unit call where it finds it healthy. The verdict must equal the transaction's
success, and the planned debt covered, collateral to the liquidator and protocol fee the
``LiquidationCall`` event's and the aToken's transfer to the treasury, to the unit.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from keeper.chain.aave import AaveVenue
from keeper.chain.aave_testnet import LocalAave
from keeper.chain.ingest import ChainIngest
from keeper.domain.aave_v3 import liquidation as lq
from keeper.domain.aave_v3.core import AaveCore
from keeper.domain.aave_v3.state import AaveState
from keeper.domain.params import KeeperParams
from keeper.testing import MemoryEventLog

ACCOUNTS = 2_000
LP = "0x" + "1f" * 20
LIQUIDATOR = "0x" + "2e" * 20
MAX = (1 << 256) - 1
# symbol, decimals, LTV, threshold, bonus (with the principal), reserve factor, protocol fee, price8
RESERVES = [("WETH", 18, 8000, 8250, 10500, 1500, 1000, 2_000 * 10**8),
            ("WBTC", 8, 7000, 7500, 10650, 2000, 1000, 60_000 * 10**8),
            ("USDC", 6, 8500, 8800, 10450, 1000, 500, 10**8),
            ("DAI", 18, 7500, 8000, 10400, 1000, 2000, 10**8)]


async def keeper_state(net: LocalAave) -> AaveState:
    log = MemoryEventLog()
    venue = AaveVenue(net.rpc, net.provider)
    await venue.resolve()
    ingest = ChainIngest(net.rpc, log, venue="aave-v3.0", chain_id=31337, source=venue)
    await ingest.start()
    await ingest.sync()
    core = AaveCore(KeeperParams(profile="aave-v3.0", chain="aave-v3.0"))
    for entry in await log.read("0-0", 10_000_000):
        core.handle(entry.id, entry.event)
    assert core.quarantined == 0, core.last_quarantine
    return core.state


async def build_book(net: LocalAave, rng: random.Random) -> tuple[list[str], dict[str, str]]:
    assets = {}
    for sym, dec, ltv, lt, bonus, rf, fee, price in RESERVES:
        assets[sym] = await net.add_reserve(sym, dec, ltv_bps=ltv, threshold_bps=lt, bonus_bps=bonus,
                                            reserve_factor_bps=rf, protocol_fee_bps=fee, price8=price)
    users = ["0x" + rng.randbytes(20).hex() for _ in range(ACCOUNTS)]
    await net.impersonate([LP, LIQUIDATOR, *users])
    plans: list[tuple[str, dict[str, int], dict[str, float]]] = []
    for u in users:
        k = rng.randint(2, 4)
        chosen = rng.sample(RESERVES, k)
        n_coll = rng.randint(1, min(3, k - 1))
        supplied = {}
        for sym, dec, *_rest, price in chosen[:n_coll]:
            value = 10 ** rng.uniform(1, 6)  # USD 10 .. 1M
            supplied[sym] = int(value * 10**8 * 10**dec // price) + 1
        borrow_syms = [c[0] for c in chosen[n_coll:n_coll + 2]]
        if rng.random() < 0.15:  # the same asset supplied and borrowed
            borrow_syms.append(chosen[0][0])
        share = rng.uniform(0.75, 0.999)
        weights = {s: rng.random() + 0.1 for s in borrow_syms}
        total = sum(weights.values())
        plans.append((u, supplied, {s: share * w / total for s, w in weights.items()}))
    # liquidity for every borrow: one large supplier per reserve
    async with net.batch():
        for sym, dec, *_rest, price in RESERVES:
            amount = 10**12 * 10**8 * 10**dec // price  # USD 1e12 of each
            await net.send(LP, assets[sym], "MintableERC20", "mint", LP, amount)
            await net.send(LP, assets[sym], "MintableERC20", "approve", net.pool, MAX)
            await net.send(LP, net.pool, "Pool", "supply", assets[sym], amount, LP, 0)
    async with net.batch():
        for u, supplied, _ in plans:
            for sym, amount in supplied.items():
                await net.send(u, assets[sym], "MintableERC20", "mint", u, amount)
                await net.send(u, assets[sym], "MintableERC20", "approve", net.pool, MAX)
                await net.send(u, net.pool, "Pool", "supply", assets[sym], amount, u, 0)
    params = {sym: (dec, ltv, price) for sym, dec, ltv, _lt, _b, _rf, _f, price in RESERVES}
    async with net.batch():
        for u, supplied, borrows in plans:
            capacity = sum(amount * params[s][2] // 10 ** params[s][0] * params[s][1] // 10_000
                           for s, amount in supplied.items())  # base units, at the LTVs
            for sym, part in borrows.items():
                dec, _, price = params[sym]
                units = int(capacity * part * 0.999) * 10**dec // price
                if units > 0:
                    await net.send(u, net.pool, "Pool", "borrow", assets[sym], units, 2, 0, u)
    return users, assets


def _transfer_to_treasury(net: LocalAave, receipt: dict[str, Any], user: str, a_token: str) -> int:
    topic = net.abis["AToken"].topics["Transfer"]
    for raw in receipt["logs"]:
        if raw["address"].lower() == a_token and raw["topics"][0].lower() == topic:
            got = net.abis["AToken"].decode_log(raw)
            assert got is not None
            if got[1]["from"] == user and got[1]["to"] == net.treasury.lower():
                return int(got[1]["value"])
    return 0


@pytest.mark.slow
async def test_keeper_health_verdicts_and_amounts_equal_aaves(
        chain: Any, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(20261205)
    net = await LocalAave.deploy(chain)
    users, assets = await build_book(net, rng)
    await net.rpc.call("evm_increaseTime", hex(rng.randint(1, 30) * 86_400 + rng.randint(0, 86_399)))
    for sym, *_rest, price in RESERVES:
        if sym != "USDC":
            await net.set_price(assets[sym], int(price * rng.uniform(0.65, 1.0)))
    # the liquidator's funds and approvals
    async with net.batch():
        for asset in assets.values():
            await net.send(LIQUIDATOR, asset, "MintableERC20", "mint", LIQUIDATOR, 10**40)
            await net.send(LIQUIDATOR, asset, "MintableERC20", "approve", net.pool, MAX)
    state = await keeper_state(net)
    t = await net.block_time() + rng.randint(60, 86_400)
    await net.rpc.call("evm_setNextBlockTimestamp", hex(t))
    await net.rpc.call("evm_mine")
    # 1. the health factor, to the wei, at t
    data = await net.rpc.batch([("eth_call", [{"to": net.pool, "data": net.abis["Pool"].call_data(
        "getUserAccountData", u)}, "latest"]) for u in users])
    hf_equal = 0
    misses: list[str] = []
    for u, raw in zip(users, data, strict=True):
        theirs = int(net.abis["Pool"].decode_return("getUserAccountData", raw)[5])
        mine = lq.account(state, state.users[u], t).health_factor
        if mine == theirs:
            hf_equal += 1
        else:
            misses.append(f"{u}: keeper HF {mine}, the pool's {theirs}")
    # 2. one liquidationCall per account in the next block
    t1 = t + rng.randint(1, 600)
    plans: list[lq.Result | None] = []
    async with net.batch(timestamp=t1):
        for u in users:
            user = state.users[u]
            p = lq.plan(state, user, t1)
            plans.append(p)
            if p is not None:
                # the most the close factor allows, as the keeper's executor asks
                args = (p.collateral_asset, p.debt_asset, u, MAX, False)
            else:
                coll = min(user.collateral or sorted(user.supplied) or sorted(assets.values()))
                args = (coll, min(user.borrowed or assets.values()), u, 1, False)
            await net.send(LIQUIDATOR, net.pool, "Pool", "liquidationCall", *args)
    block = await net.rpc.call("eth_getBlockByNumber", "latest", False)
    assert int(block["timestamp"], 16) == t1
    receipts = await net.receipts(list(block["transactions"]))
    assert len(receipts) == len(users)
    topic = net.abis["Pool"].topics["LiquidationCall"]
    agree_liq = agree_healthy = amounts_equal = whole = same_asset = 0
    for u, p, receipt in zip(users, plans, receipts, strict=True):
        if p is not None:
            held = lq.holdings(state, state.users[u], t1)[p.collateral_asset].supplied
            whole += p.collateral_to_liquidator + p.protocol_fee >= held  # all the collateral taken
            same_asset += p.collateral_asset == p.debt_asset
        ok = int(receipt["status"], 16) == 1
        if p is None:
            if ok:
                misses.append(f"{u}: keeper healthy, the pool liquidated")
            else:
                agree_healthy += 1
            continue
        if not ok:
            misses.append(f"{u}: keeper liquidatable ({p}), the pool refused")
            continue
        agree_liq += 1
        event = next(net.abis["Pool"].decode_log(raw) for raw in receipt["logs"]
                     if raw["topics"][0].lower() == topic)
        assert event is not None
        fee = _transfer_to_treasury(net, receipt, u, state.reserves[p.collateral_asset].a_token)
        mine = (p.debt_covered, p.collateral_to_liquidator, p.protocol_fee)
        theirs = (int(event[1]["debtToCover"]), int(event[1]["liquidatedCollateralAmount"]), fee)
        if mine == theirs:
            amounts_equal += 1
        else:
            misses.append(f"{u}: keeper (debt, collateral, fee) {mine}, the pool {theirs}")
    with capsys.disabled():
        print(f"\naave parity: {len(users)} accounts, {len(RESERVES)} reserves; health factor equal "
              f"{hf_equal}/{len(users)}; verdicts agree {agree_liq + agree_healthy}/{len(users)} "
              f"({agree_liq} liquidatable, {agree_healthy} healthy); debt covered, collateral and "
              f"protocol fee exact {amounts_equal}/{agree_liq} ({whole} taking the whole collateral "
              f"balance, {same_asset} repaying and seizing one asset)")
    assert not misses, "\n".join(misses[:20])
    assert agree_liq > 200 and agree_healthy > 200, "the book should hold both kinds in numbers"
