"""The daemon against Aave v3.0.2's own bytecode, and Aave's own refusals.

In the normal loop the keeper liquidates the accounts a crash makes unhealthy, each intent once,
and every ``LiquidationCall`` on chain is a recorded ``LiquidationConfirmed`` (by transaction
hash) and the other way round; a healthy account is untouched; ``keeper replay --verify`` finds
0 divergences. A paused reserve is refused with Aave's code and name and not retried at every
block; a borrower who repays in the liquidation's block makes it revert with code 45, recorded
as a rejection naming it; a collateral disabled by its owner is never the one seized; an account
in an eMode category is refused, visibly, and never liquidated.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account

from keeper.app.config import Config, load_config
from keeper.chain.aave import AaveVenue
from keeper.chain.aave_testnet import LocalAave
from keeper.chain.anvil import Anvil
from keeper.chain.executor import ChainExecutor
from keeper.chain.rpc import Rpc
from keeper.domain import events as ev
from keeper.domain.aave_v3.core import AaveCore
from keeper.errors import PermanentError
from keeper.testing import MemoryEventLog
from tests.chain.conftest import LIQUIDATOR_KEY
from tests.chain.test_chain_faults import _verifies
from tests.chain.test_morpho_daemon import outcomes, running, wait_for

LIQUIDATOR = Account.from_key(LIQUIDATOR_KEY).address.lower()
MAX = (1 << 256) - 1
ETH = 2_000 * 10**8


class Pool:
    """A pool of WETH, WBTC and USDC; accounts by name."""

    def __init__(self, net: LocalAave) -> None:
        self.net = net
        self.weth = self.wbtc = self.usdc = ""
        self.who: dict[str, str] = {}

    async def open(self) -> None:
        net = self.net
        self.weth = await net.add_reserve("WETH", 18, ltv_bps=8000, threshold_bps=8250, bonus_bps=10500,
                                          reserve_factor_bps=1000, protocol_fee_bps=1000, price8=ETH)
        self.wbtc = await net.add_reserve("WBTC", 8, ltv_bps=7000, threshold_bps=7500, bonus_bps=10650,
                                          reserve_factor_bps=2000, protocol_fee_bps=1000,
                                          price8=60_000 * 10**8)
        self.usdc = await net.add_reserve("USDC", 6, ltv_bps=8500, threshold_bps=8800, bonus_bps=10450,
                                          reserve_factor_bps=1000, protocol_fee_bps=0, price8=10**8)
        await net.supply(self.usdc, 10**13, "0x" + "1f" * 20)  # liquidity
        await net.supply(self.weth, 10**24, "0x" + "1f" * 20)
        self.who = {n: "0x" + c * 20 for n, c in (("falls", "a1"), ("healthy", "b2"), ("two", "c3"),
                                                   ("emode", "d4"))}
        await net.impersonate([*self.who.values(), LIQUIDATOR])
        # 1 WETH each (2,000 USD): "falls" and "emode" borrow 1,550 USDC (HF 1.06), "healthy" 500
        for name, usdc in (("falls", 1_550), ("healthy", 500), ("emode", 1_550)):
            await net.supply(self.weth, 10**18, self.who[name])
            await net.borrow(self.usdc, usdc * 10**6, self.who[name])
        # "two": 1 WETH and 0.05 WBTC (3,000 USD), borrows 2,300 USDC
        await net.supply(self.weth, 10**18, self.who["two"])
        await net.supply(self.wbtc, 5 * 10**6, self.who["two"])
        await net.borrow(self.usdc, 2_300 * 10**6, self.who["two"])
        await net.rpc.call("anvil_setBalance", LIQUIDATOR, hex(10**22))
        await net.send(LIQUIDATOR, self.usdc, "MintableERC20", "mint", LIQUIDATOR, 10**15)

    async def crash(self) -> None:
        await self.net.set_price(self.weth, ETH * 85 // 100)


def aave_config(redis_url: str, anvil: Anvil, net: LocalAave) -> Config:
    env = {"REDIS_URL": redis_url, "KEEPER_CHAIN_KEY": LIQUIDATOR_KEY, "KEEPER_KEEPER__PROFILE": "aave-v3.0",
           "KEEPER_KEEPER__MODE": "live", "KEEPER_EXECUTION__EXECUTOR": "chain", "KEEPER_VENUE__KIND": "evm",
           "KEEPER_VENUE__PROTOCOL": "aave-v3.0", "KEEPER_VENUE__RPC_URL": anvil.http_url,
           "KEEPER_VENUE__WS_URL": anvil.ws_url, "KEEPER_VENUE__CHAIN_ID": "31337",
           "KEEPER_VENUE__ADDRESS": net.provider, "KEEPER_VENUE__POLL_S": "0.05",
           "KEEPER_VENUE__LOOKAHEAD_S": "2", "KEEPER_ADMIN__ENABLED": "false"}
    return load_config(None, env=env, register_secrets=False)


async def liquidation_calls(net: LocalAave) -> list[tuple[str, dict[str, Any]]]:
    return [(str(e["_tx"]), e) for e in await net.events(net.pool, "Pool", "LiquidationCall")]


async def test_daemon_liquidates_on_aave_and_every_chain_event_is_a_recorded_outcome(
        chain: Rpc, anvil: Anvil, redis_url: str) -> None:
    net = await LocalAave.deploy(chain)
    pool = Pool(net)
    await pool.open()
    # "emode": an eMode category the keeper does not model (it must refuse that account)
    await net.send("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", net.configurator, "PoolConfigurator",
                   "setEModeCategory", 1, 9000, 9300, 10200, "0x" + "00" * 20, "eth")
    for asset in (pool.weth, pool.usdc):
        await net.send("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", net.configurator, "PoolConfigurator",
                       "setAssetEModeCategory", asset, 1)
    await net.send(pool.who["emode"], net.pool, "Pool", "setUserEMode", 1)
    async with running(aave_config(redis_url, anvil, net)) as d:
        await pool.crash()

        async def settled() -> bool:
            events = await outcomes(redis_url)
            intents = [e for e in events if isinstance(e, ev.LiquidationIntended)]
            done = {e.intent_id for e in events if isinstance(e, ev._Outcome)
                    and not isinstance(e, ev.LiquidationSubmitted)}
            return len(intents) >= 1 and all(i.event_id in done for i in intents)

        await wait_for(settled, 60)
        for _ in range(5):
            await net.rpc.call("evm_mine")
            await asyncio.sleep(0.1)
        await wait_for(settled, 60)
        core = d.keeper_projectors()[0].core
        assert isinstance(core, AaveCore)
        assert "eMode" in core.refused[f"{pool.who['emode']}/cross"]
    events = await outcomes(redis_url)
    confirmed = {e.venue_ref: e for e in events if isinstance(e, ev.LiquidationConfirmed)}
    calls = await liquidation_calls(net)
    # sound: every LiquidationCall on chain is a recorded outcome, and every outcome is on chain
    assert {tx for tx, _ in calls} == set(confirmed)
    for tx, args in calls:
        got = confirmed[tx]
        assert (got.repaid, got.seized) == (args["debtToCover"], args["liquidatedCollateralAmount"])
    hit = {str(a["user"]) for _, a in calls}
    assert pool.who["falls"] in hit
    assert pool.who["healthy"] not in hit and pool.who["emode"] not in hit
    assert pool.who["two"] not in hit  # its WBTC backs the WETH loss: one health factor (cross)
    await _verifies(redis_url)


async def executor_for(net: LocalAave) -> ChainExecutor:
    venue = AaveVenue(net.rpc, net.provider)
    await venue.resolve()
    x = ChainExecutor(Rpc(net.rpc.url), MemoryEventLog(), venue, chain_id=31337, private_key=LIQUIDATOR_KEY)
    await x.start()
    return x


def decision(user: str, collateral: str, debt: str, intent: str) -> ev.Decision:
    return ev.Decision(intent_id=intent, account=user, bucket="cross", trigger="1-0", trigger_event_id="blk",
                       profile="aave-v3.0", rule="test", action="repay_seize", market="cross",
                       repay_asset=debt, repay_amount=Decimal(1), seize_asset=collateral,
                       seize_amount=Decimal(1))


async def test_a_paused_reserve_is_refused_with_aaves_code_and_name(chain: Rpc) -> None:
    net = await LocalAave.deploy(chain)
    pool = Pool(net)
    await pool.open()
    await pool.crash()
    await net.send("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", net.configurator, "PoolConfigurator",
                   "setReservePause", pool.weth, True)
    x = await executor_for(net)
    try:
        with pytest.raises(PermanentError, match=r"29 \(RESERVE_PAUSED\)"):
            await x.execute(decision(pool.who["falls"], pool.weth, pool.usdc, "liq:p@1"))
    finally:
        await x.close()


async def test_a_repayment_in_the_liquidations_block_is_a_rejection_naming_code_45(chain: Rpc) -> None:
    net = await LocalAave.deploy(chain)
    pool = Pool(net)
    await pool.open()
    await pool.crash()
    falls = pool.who["falls"]
    await net.send(falls, pool.usdc, "MintableERC20", "mint", falls, 10**12)
    await net.send(falls, pool.usdc, "MintableERC20", "approve", net.pool, MAX)
    x = await executor_for(net)
    await x._approve(pool.usdc)  # mined before the race
    await net.rpc.call("evm_setAutomine", False)
    try:
        task = asyncio.ensure_future(x.execute(decision(falls, pool.weth, pool.usdc, "liq:raced@1")))
        for _ in range(200):  # the liquidation is in the pool: the borrower's repayment goes first
            if await net.rpc.call("eth_getTransactionCount", LIQUIDATOR, "pending") != \
                    await net.rpc.call("eth_getTransactionCount", LIQUIDATOR, "latest"):
                break
            await asyncio.sleep(0.02)
        repay = {"from": falls, "to": net.pool, "gas": hex(1_000_000), "maxPriorityFeePerGas": hex(10**12),
                 "maxFeePerGas": hex(10**13),
                 "data": net.abis["Pool"].call_data("repay", pool.usdc, MAX, 2, falls)}
        await net.rpc.call("eth_sendTransaction", repay)
        await net.rpc.call("evm_mine")
        with pytest.raises(PermanentError, match=r"reverted.*45 \(HEALTH_FACTOR_NOT_BELOW_THRESHOLD\)"):
            await asyncio.wait_for(task, 30)
    finally:
        await net.rpc.call("evm_setAutomine", True)
        await x.close()


async def test_a_collateral_its_owner_disabled_is_never_the_one_seized(
        chain: Rpc, anvil: Anvil, redis_url: str) -> None:
    net = await LocalAave.deploy(chain)
    pool = Pool(net)
    await pool.open()
    two = pool.who["two"]
    # it stops using WBTC as collateral (the pool allows it: the account stays healthy)
    await net.send(two, pool.usdc, "MintableERC20", "mint", two, 10**12)
    await net.send(two, pool.usdc, "MintableERC20", "approve", net.pool, MAX)
    await net.send(two, net.pool, "Pool", "repay", pool.usdc, 800 * 10**6, 2, two)
    await net.send(two, net.pool, "Pool", "setUserUseReserveAsCollateral", pool.wbtc, False)
    async with running(aave_config(redis_url, anvil, net)):
        await pool.crash()

        async def two_liquidated() -> bool:
            return any(isinstance(e, ev.LiquidationConfirmed) and e.account == two
                       for e in await outcomes(redis_url))

        await wait_for(two_liquidated, 60)
    calls = [a for _, a in await liquidation_calls(net) if a["user"] == two]
    assert calls and all(a["collateralAsset"] == pool.weth for a in calls)
