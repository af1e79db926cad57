"""Faults on the chain venue: the node missing or wrong at start, a reorganisation that removes a
Borrow, the node killed and restarted from its dumped state mid-run, and the executor killed -9
before broadcast, after broadcast and after the receipt. Each ends with nothing lost, nothing
twice on chain, and a log that replays to the same decisions."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import gzip
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from keeper.app.chain_role import start_chain_executor, start_chain_ingest
from keeper.app.cli import main as cli_main
from keeper.app.config import load_config
from keeper.app.status import Status
from keeper.chain.aave import AaveVenue
from keeper.chain.aave_testnet import LocalAave
from keeper.chain.anvil import Anvil, free_port
from keeper.chain.ingest import ChainIngest, ChainMismatch
from keeper.chain.morpho import MorphoVenue
from keeper.chain.rpc import ChainUnavailable, Rpc
from keeper.chain.testnet import LocalMorpho
from keeper.domain import events as ev
from keeper.domain.aave_v3.core import AaveCore
from keeper.domain.morpho.core import MorphoCore
from keeper.domain.params import KeeperParams
from keeper.testing import MemoryEventLog
from tests.chain.conftest import LIQUIDATOR_KEY, LLTVS
from tests.chain.test_morpho_daemon import (
    Book,
    chain_config,
    liquidations_on_chain,
    outcomes,
    running,
    wait_for,
)

LIQUIDATOR = Account.from_key(LIQUIDATOR_KEY).address.lower()
KEEPER = Path(sys.executable).parent / "keeper"


# ---------------------------------------------------------------- at start


async def test_a_node_that_does_not_answer_is_refused_with_its_url_redacted() -> None:
    port = free_port()
    env = {"KEEPER_KEEPER__PROFILE": "morpho-blue", "KEEPER_VENUE__KIND": "evm",
           "KEEPER_VENUE__RPC_URL": f"http://user:hunter2@127.0.0.1:{port}/v2/apikey123",
           "KEEPER_VENUE__ADDRESS": "0x" + "11" * 20}
    cfg = load_config(None, env=env, register_secrets=False)
    with pytest.raises(ChainUnavailable) as info:
        await start_chain_ingest(cfg, MemoryEventLog())
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "does not answer" in text
    assert "hunter2" not in text and "apikey123" not in text


@pytest.mark.parametrize("protocol", ["morpho-blue", "aave-v3.0"])
async def test_a_node_of_another_chain_is_refused_naming_both_ids(anvil: Anvil, protocol: str) -> None:
    env = {"KEEPER_KEEPER__PROFILE": protocol, "KEEPER_VENUE__KIND": "evm",
           "KEEPER_VENUE__PROTOCOL": protocol, "KEEPER_VENUE__RPC_URL": anvil.http_url,
           "KEEPER_VENUE__CHAIN_ID": "1", "KEEPER_VENUE__ADDRESS": "0x" + "11" * 20,
           "KEEPER_CHAIN_KEY": LIQUIDATOR_KEY}
    cfg = load_config(None, env=env, register_secrets=False)
    with pytest.raises(ChainMismatch, match=r"chain id 31337.*names 1"):
        await start_chain_ingest(cfg, MemoryEventLog())
    with pytest.raises(ChainMismatch, match=r"chain id 31337.*names 1"):  # the executor role alone too
        await start_chain_executor(cfg, MemoryEventLog())


# ---------------------------------------------------------------- reorganisation


async def test_a_reorg_of_the_last_two_blocks_undoes_the_borrow_it_removed(morpho: LocalMorpho) -> None:
    net = morpho
    book = Book(net)
    await book.open()
    log = MemoryEventLog()
    venue = MorphoVenue(net.rpc, net.morpho)
    ingest = ChainIngest(net.rpc, log, venue="morpho-blue", chain_id=31337, source=venue)
    await ingest.start()
    await ingest.sync()
    borrower = "0x" + "e5" * 20
    await net.impersonate([borrower])
    snap = await net.rpc.call("evm_snapshot")
    await net.collateral(book.m1, borrower, 10**18)  # block N+1
    await net.borrow(book.m1, borrower, 10**8)  # block N+2: the Borrow the reorg removes
    await ingest.sync()
    core = MorphoCore(KeeperParams(profile="morpho-blue", chain="morpho-blue"))
    for e in await log.read("0-0", 100_000):
        core.handle(e.id, e.event)
    assert core.state.position(book.m1, borrower).borrow_shares > 0
    await net.rpc.call("evm_revert", snap)
    for _ in range(3):  # another branch: three empty blocks
        await net.rpc.call("evm_mine")
    await ingest.sync()
    assert ingest.status.reorgs == 1
    removed = [e.event for e in await log.read("0-0", 100_000) if isinstance(e.event, ev.ChainLogRemoved)]
    assert removed, "the orphaned blocks' logs are undone by compensating entries"
    core = MorphoCore(KeeperParams(profile="morpho-blue", chain="morpho-blue"))
    for e in await log.read("0-0", 100_000):
        core.handle(e.id, e.event)
    assert core.quarantined == 0, core.last_quarantine
    pos = core.state.position(book.m1, borrower)
    assert (pos.borrow_shares, pos.collateral) == (0, 0)
    # the keeper's totals equal the contract's own after the reorg
    m = core.state.markets[book.m1]
    chain_market = await net.view("Morpho", net.morpho, "market", bytes.fromhex(book.m1[2:]))
    assert (m.total_supply_assets, m.total_supply_shares, m.total_borrow_assets, m.total_borrow_shares,
            m.last_update, m.fee) == tuple(int(x) for x in chain_market)


# ---------------------------------------------------------------- the node dies mid-run


@pytest.fixture
def private_anvil() -> Iterator[Anvil]:
    node = Anvil().start(chain_id=31337, extra_args=["--disable-block-gas-limit", "--base-fee", "1"])
    try:
        yield node
    finally:
        node.stop()


async def test_the_node_killed_and_restarted_from_its_state_is_waited_out(
        private_anvil: Anvil, redis_url: str, tmp_path: Path) -> None:
    rpc = Rpc(private_anvil.http_url, timeout_s=30)
    net = await LocalMorpho.deploy(rpc, LLTVS)
    book = Book(net)
    await book.open()
    await rpc.call("anvil_setBalance", LIQUIDATOR, hex(10**22))
    await net.fund(net.markets[book.m1].loan_token, LIQUIDATOR, 10**30)
    cfg = chain_config(redis_url, private_anvil, net, [book.m1, book.m2])
    async with running(cfg) as d:
        ingest = d.chain_ingest
        assert ingest is not None
        head = int(await rpc.call("eth_blockNumber"), 16)
        await wait_for(lambda: _at(ingest, head))
        state = tmp_path / "anvil-state.json"
        dumped = await rpc.call("anvil_dumpState")
        state.write_bytes(gzip.decompress(binascii.unhexlify(dumped[2:])))
        private_anvil.kill()  # the node is gone: the daemon stays up and waits
        await rpc.close()

        async def disconnected() -> bool:
            return not ingest.status.connected and bool(ingest.status.error)

        await wait_for(disconnected)
        assert d.log is not None
        status = Status(d, d.log)
        ok, detail = await status.ready()
        assert not ok and detail["chain"]["connected"] is False and detail["chain"]["error"]
        assert 'keeper_chain_connected 0' in status.metrics().render()
        await asyncio.sleep(0.5)
        private_anvil.start(private_anvil.port, chain_id=31337, load_state=state,
                            extra_args=["--disable-block-gas-limit", "--base-fee", "1"])
        rpc = Rpc(private_anvil.http_url, timeout_s=30)
        net.rpc = rpc

        async def reconnected() -> bool:
            return ingest.status.connected

        await wait_for(reconnected)
        assert 'keeper_chain_connected 1' in status.metrics().render()
        await book.crash()

        async def all_confirmed() -> bool:
            return sum(isinstance(e, ev.LiquidationConfirmed) for e in await outcomes(redis_url)) >= 3

        await wait_for(all_confirmed)
    hit = sorted((str(a["borrower"]), str(a["id"])) for a in await liquidations_on_chain(net))
    assert hit == sorted(book.liquidatable)
    events = await outcomes(redis_url)
    blocks = [e.block for e in events if isinstance(e, ev.ChainBlock)]
    assert blocks == sorted(set(blocks)), "every block once, in order: no gap filled twice"
    assert blocks == list(range(blocks[0], blocks[-1] + 1)), "no block skipped across the outage"
    await _verifies(redis_url)
    await rpc.close()


async def _at(ingest: ChainIngest, head: int) -> bool:
    return ingest.status.last_block >= head


async def _verifies(redis_url: str, export: Path | None = None) -> None:
    """``keeper replay --verify`` of the log in Redis, or of its export (``keeper log export``
    writes the run manifest beside it): every decision re-derived, 0 divergences."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        if export is None:
            code = await asyncio.to_thread(cli_main, ["replay", "--redis-url", redis_url, "--verify"])
        else:
            code = await asyncio.to_thread(cli_main, ["log", "--redis-url", redis_url, "export", str(export)])
            assert code == 0, out.getvalue()
            code = await asyncio.to_thread(cli_main, ["replay", "--ndjson", str(export), "--verify"])
    assert code == 0 and "0 divergences" in out.getvalue(), out.getvalue()


# ---------------------------------------------------------------- the executor killed -9


def _env(cfg_env: dict[str, str], crash: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    env.update(cfg_env)
    env["KEEPER_LOG__FORMAT"] = "json"
    if crash:
        env["KEEPER_TEST_CRASH_AT"] = crash
    return env


async def _executor(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(KEEPER), "run", "--role", "executor", "--consumer", "chain-executor-1", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


@pytest.mark.parametrize("crash", ["before_broadcast", "after_broadcast", "after_submit"])
async def test_executor_killed_at_each_step_liquidates_each_intent_once(
        morpho: LocalMorpho, anvil: Anvil, redis_url: str, crash: str, tmp_path: Path) -> None:
    net = morpho
    book = Book(net)
    await book.open()
    await net.rpc.call("anvil_setBalance", LIQUIDATOR, hex(10**22))
    await net.fund(net.markets[book.m1].loan_token, LIQUIDATOR, 10**30)
    cfg = chain_config(redis_url, anvil, net, [book.m1, book.m2])
    cfg_env = _cfg_env(redis_url, anvil, net.morpho, [book.m1, book.m2])
    # ingest and keeper here; the executor role in its own process, killed and restarted
    async with running(cfg, roles=("ingest", "keeper")):
        proc = await _executor(_env(cfg_env, crash))
        await book.crash()
        code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 137, f"the executor should have died at {crash}"
        proc = await _executor(_env(cfg_env, None))
        try:
            async def all_confirmed() -> bool:
                return sum(isinstance(e, ev.LiquidationConfirmed) for e in await outcomes(redis_url)) >= 3

            await wait_for(all_confirmed, 60)
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    hit = sorted((str(a["borrower"]), str(a["id"])) for a in await liquidations_on_chain(net))
    assert hit == sorted(book.liquidatable), f"one Liquidate per intent after a kill at {crash}"
    events = await outcomes(redis_url)
    intents = {e.event_id for e in events if isinstance(e, ev.LiquidationIntended)}
    done = [e.intent_id for e in events if isinstance(e, ev.LiquidationConfirmed)]
    assert sorted(done) == sorted(intents) and len(intents) == 3
    await _verifies(redis_url, tmp_path / "chain.ndjson")


def _cfg_env(redis_url: str, anvil: Anvil, address: str, markets: list[str]) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url, "KEEPER_CHAIN_KEY": LIQUIDATOR_KEY,
        "KEEPER_KEEPER__PROFILE": "morpho-blue", "KEEPER_KEEPER__MODE": "live",
        "KEEPER_EXECUTION__EXECUTOR": "chain", "KEEPER_VENUE__KIND": "evm",
        "KEEPER_VENUE__RPC_URL": anvil.http_url, "KEEPER_VENUE__CHAIN_ID": "31337",
        "KEEPER_VENUE__ADDRESS": address,
        "KEEPER_VENUE__MARKETS": "[" + ", ".join(f'"{m}"' for m in markets) + "]",
        "KEEPER_ADMIN__ENABLED": "false",
    }


async def test_a_reorg_on_aave_undoes_the_supply_and_borrow_it_removed(chain: Rpc) -> None:
    """The Aave fold's journal: the orphaned blocks' token and pool events are undone newest
    first, and the keeper's scaled balances and reserve data equal the pool's own after it."""
    net = await LocalAave.deploy(chain)
    weth = await net.add_reserve("WETH", 18, ltv_bps=8000, threshold_bps=8250, bonus_bps=10500,
                                 reserve_factor_bps=1000, protocol_fee_bps=1000, price8=2_000 * 10**8)
    usdc = await net.add_reserve("USDC", 6, ltv_bps=8500, threshold_bps=8800, bonus_bps=10450,
                                 reserve_factor_bps=1000, protocol_fee_bps=0, price8=10**8)
    await net.supply(usdc, 10**12, "0x" + "1f" * 20)
    user = "0x" + "e6" * 20
    await net.supply(weth, 10**18, user)
    log = MemoryEventLog()
    venue = AaveVenue(net.rpc, net.provider)
    await venue.resolve()
    ingest = ChainIngest(net.rpc, log, venue="aave-v3.0", chain_id=31337, source=venue)
    await ingest.start()
    await ingest.sync()
    snap = await net.rpc.call("evm_snapshot")
    await net.supply(weth, 2 * 10**18, user)  # N+1 (and more blocks: mint, approve, supply)
    await net.borrow(usdc, 1_000 * 10**6, user)  # the Borrow the reorg removes
    await ingest.sync()
    await net.rpc.call("evm_revert", snap)
    for _ in range(6):  # another branch, longer: empty blocks
        await net.rpc.call("evm_mine")
    await ingest.sync()
    assert ingest.status.reorgs == 1
    core = AaveCore(KeeperParams(profile="aave-v3.0", chain="aave-v3.0"))
    for e in await log.read("0-0", 100_000):
        core.handle(e.id, e.event)
    assert core.quarantined == 0, core.last_quarantine
    mine = core.state.users[user]
    a_weth, _, _ = await net.reserve_tokens(weth)
    scaled = int((await net.view("AToken", a_weth.lower(), "scaledBalanceOf", user))[0])
    assert mine.supplied[weth] == scaled == 10**18  # the second supply is gone
    assert usdc not in mine.borrowed  # and so is the borrow
    r = core.state.reserves[usdc]
    data = await net.view("Pool", net.pool, "getReserveData", usdc)
    fields = data[0]
    assert (r.liquidity_index, r.variable_index, r.liquidity_rate, r.variable_rate, r.last_update) == (
        int(fields[1]), int(fields[3]), int(fields[2]), int(fields[4]), int(fields[6]))


async def test_blocks_are_read_only_once_they_are_confirmations_deep(morpho: LocalMorpho) -> None:
    net = morpho
    book = Book(net)
    await book.open()
    log = MemoryEventLog()
    venue = MorphoVenue(net.rpc, net.morpho)
    ingest = ChainIngest(net.rpc, log, venue="morpho-blue", chain_id=31337, source=venue, confirmations=3)
    await ingest.start()
    await ingest.sync()
    head = int(await net.rpc.call("eth_blockNumber"), 16)
    assert ingest.status.last_block == head - 3
    borrower = "0x" + "e7" * 20
    await net.impersonate([borrower])
    await net.collateral(book.m1, borrower, 10**18)  # head + 1
    await ingest.sync()
    logged = [e.event for e in await log.read("0-0", 100_000)]
    assert not any(isinstance(e, ev.ChainLog) and e.args.get("onBehalf") == borrower for e in logged)
    for _ in range(3):
        await net.rpc.call("evm_mine")
    await ingest.sync()
    logged = [e.event for e in await log.read("0-0", 100_000)]
    assert any(isinstance(e, ev.ChainLog) and e.args.get("onBehalf") == borrower for e in logged)


@pytest.mark.parametrize("crash", ["before_broadcast", "after_broadcast", "after_submit"])
async def test_aave_executor_killed_at_each_step_sends_each_intent_once(
        chain: Rpc, anvil: Anvil, redis_url: str, crash: str, tmp_path: Path) -> None:
    from tests.chain.test_aave_daemon import Pool, aave_config, liquidation_calls

    net = await LocalAave.deploy(chain)
    pool = Pool(net)
    await pool.open()
    cfg = aave_config(redis_url, anvil, net)
    env = {**_cfg_env(redis_url, anvil, net.provider, []), "KEEPER_KEEPER__PROFILE": "aave-v3.0",
           "KEEPER_VENUE__PROTOCOL": "aave-v3.0"}
    async with running(cfg, roles=("ingest", "keeper")):
        proc = await _executor(_env(env, crash))
        await pool.crash()
        assert await asyncio.wait_for(proc.wait(), 60) == 137, f"the executor should have died at {crash}"
        proc = await _executor(_env(env, None))
        try:
            async def answered() -> bool:
                events = await outcomes(redis_url)
                intents = {e.event_id for e in events if isinstance(e, ev.LiquidationIntended)}
                done = {e.intent_id for e in events if isinstance(e, ev._Outcome)
                        and not isinstance(e, ev.LiquidationSubmitted)}
                return bool(intents) and intents <= done

            await wait_for(answered, 60)
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    events = await outcomes(redis_url)
    confirmed = [e.venue_ref for e in events if isinstance(e, ev.LiquidationConfirmed)]
    calls = [tx for tx, _ in await liquidation_calls(net)]
    assert sorted(calls) == sorted(confirmed) and len(set(calls)) == len(calls)  # once each, all recorded
    assert pool.who["falls"] in {str(a["user"]) for _, a in await liquidation_calls(net)}
    await _verifies(redis_url, tmp_path / "aave.ndjson")
