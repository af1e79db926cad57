"""The daemon against Morpho Blue's own bytecode: ingest, keeper and chain executor in their normal
loop liquidate every unhealthy position exactly once, and nothing else.

A healthy neighbour in the same market and the same borrower's healthy position in another
market are untouched (isolation, shown on chain). Every ``Liquidate`` event on chain matches a
recorded ``LiquidationConfirmed`` with the contract's own amounts, and ``keeper replay --verify``
of the log re-derives every decision (0 divergences).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

from eth_account import Account

from keeper.app.cli import main as cli_main
from keeper.app.config import Config, load_config
from keeper.app.daemon import Daemon, read_all
from keeper.app.status import Status
from keeper.chain.anvil import Anvil
from keeper.chain.testnet import LocalMorpho
from keeper.domain import events as ev
from keeper.domain.morpho.liquidation import max_borrow
from keeper.store.redis_log import RedisEventLog
from tests.chain.conftest import LIQUIDATOR_KEY

LLTV_1, LLTV_2 = 860 * 10**15, 915 * 10**15
PRICE = 2_000 * 10**24  # 2,000 loan units (6 decimals) per collateral unit (18 decimals)


def chain_config(redis_url: str, anvil: Anvil, net: LocalMorpho, markets: list[str], **extra: str) -> Config:
    env = {
        "REDIS_URL": redis_url,
        "KEEPER_CHAIN_KEY": LIQUIDATOR_KEY,
        "KEEPER_KEEPER__PROFILE": "morpho-blue",
        "KEEPER_KEEPER__MODE": "live",
        "KEEPER_EXECUTION__EXECUTOR": "chain",
        "KEEPER_VENUE__KIND": "evm",
        "KEEPER_VENUE__RPC_URL": anvil.http_url,
        "KEEPER_VENUE__WS_URL": anvil.ws_url,
        "KEEPER_VENUE__CHAIN_ID": "31337",
        "KEEPER_VENUE__ADDRESS": net.morpho,
        "KEEPER_VENUE__MARKETS": "[" + ", ".join(f'"{m}"' for m in markets) + "]",
        "KEEPER_VENUE__POLL_S": "0.05",
        "KEEPER_VENUE__LOOKAHEAD_S": "2",
        "KEEPER_ADMIN__ENABLED": "false",
        "KEEPER_SNAPSHOTS__INTERVAL_S": "0.5",
        **extra,
    }
    return load_config(None, env=env, register_secrets=False)


class Book:
    """Two markets; who is made unhealthy by the price move and who stays healthy."""

    def __init__(self, net: LocalMorpho) -> None:
        self.net = net
        self.m1 = self.m2 = ""
        self.liquidatable: set[tuple[str, str]] = set()
        self.healthy: set[tuple[str, str]] = set()

    async def open(self) -> None:
        net = self.net
        loan, coll = await net.token(), await net.token()
        self.m1 = await net.create_market(loan, coll, LLTV_1, PRICE)
        self.m2 = await net.create_market(loan, coll, LLTV_2, PRICE)
        a, b, c, d = ("0x" + f"{n:02x}" * 20 for n in (0xa1, 0xb2, 0xc3, 0xd4))
        await net.impersonate([a, b, c, d])
        await net.fund(coll, "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", 10**30)
        for m in (self.m1, self.m2):
            await net.approve_collateral(m)
            await net.supply(m, 10**18)
        one = 10**18  # one collateral unit: 2,000 loan units of value
        # share of the most it may borrow, and whether the price move below makes it liquidatable
        plan = [(self.m1, a, 0.90, True), (self.m1, b, 0.30, False), (self.m1, d, 0.98, True),
                (self.m2, c, 0.95, True), (self.m2, a, 0.30, False)]
        for m, who, share, falls in plan:
            lltv = LLTV_1 if m == self.m1 else LLTV_2
            await net.collateral(m, who, 5 * one)
            await net.borrow(m, who, int(max_borrow(5 * one, PRICE, lltv) * share))
            (self.liquidatable if falls else self.healthy).add((who, m))

    async def crash(self) -> None:
        await self.net.set_price(self.m1, PRICE * 85 // 100)
        await self.net.set_price(self.m2, PRICE * 90 // 100)


async def liquidations_on_chain(net: LocalMorpho) -> list[dict[str, Any]]:
    return await net.events(net.morpho, "Morpho", "Liquidate")


@contextlib.asynccontextmanager
async def running(cfg: Config, consumer: str = "chain-test",
                  roles: tuple[str, ...] = ("ingest", "keeper", "executor")) -> AsyncIterator[Daemon]:
    d = Daemon(cfg, roles=roles, consumer=consumer, block_ms=50)
    stop = asyncio.Event()
    task = asyncio.ensure_future(d.run(stop))
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        yield d
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_for(pred: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def outcomes(redis_url: str) -> list[ev.Event]:
    log = await RedisEventLog.connect(redis_url)
    try:
        return [e.event for e in await read_all(log)]
    finally:
        await log.close()


async def test_daemon_liquidates_each_unhealthy_position_once_and_nothing_else(
        morpho: LocalMorpho, anvil: Anvil, redis_url: str) -> None:
    net = morpho
    book = Book(net)
    await book.open()
    liquidator = Account.from_key(LIQUIDATOR_KEY).address.lower()
    await net.rpc.call("anvil_setBalance", liquidator, hex(10**22))
    await net.fund(net.markets[book.m1].loan_token, liquidator, 10**30)
    cfg = chain_config(redis_url, anvil, net, [book.m1, book.m2])
    async with running(cfg) as d:
        assert d.chain_ingest is not None
        await book.crash()

        async def all_confirmed() -> bool:
            return sum(isinstance(e, ev.LiquidationConfirmed) for e in await outcomes(redis_url)) >= 3

        await wait_for(all_confirmed)
        for _ in range(5):  # more blocks: nothing more may happen
            await net.rpc.call("evm_mine")
            await asyncio.sleep(0.1)
        assert d.log is not None
        _, detail = await Status(d, d.log).ready()
        assert detail["chain"]["connected"] is True and detail["chain"]["blocks_behind"] <= 1
        text = Status(d, d.log).metrics().render()
        assert 'keeper_chain_block{which="ingested"}' in text and "keeper_chain_gas_used" in text
        assert "keeper_chain_pending_transactions 0" in text
        rows = {r["what"]: r["value"] for r in await Status(d, d.log).chain()}
        assert rows["node"] == "answers" and rows["gas used"] > 0 and rows["next nonce"] >= 3
    events = await outcomes(redis_url)
    on_chain = await liquidations_on_chain(net)
    hit = sorted((str(a["borrower"]), str(a["id"])) for a in on_chain)
    assert hit == sorted(book.liquidatable), "one Liquidate per unhealthy position, none other"
    assert not {(w, m) for w, m in hit} & book.healthy
    confirmed = {e.intent_id: e for e in events if isinstance(e, ev.LiquidationConfirmed)}
    intents = [e for e in events if isinstance(e, ev.LiquidationIntended)]
    assert len(intents) == len(confirmed) == 3
    by_pos = {(str(a["borrower"]), str(a["id"])): a for a in on_chain}
    for i in intents:
        got = confirmed[i.event_id]
        chain_amounts = by_pos[(i.decision.account, i.decision.bucket)]
        assert (got.repaid, got.seized) == (chain_amounts["repaidAssets"], chain_amounts["seizedAssets"])
    # the insolvent borrower's whole collateral was seized: the contract realised the bad debt
    d_addr = "0x" + "d4" * 20
    assert int(by_pos[(d_addr, book.m1)]["badDebtShares"]) > 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = await asyncio.to_thread(cli_main, ["replay", "--redis-url", redis_url, "--verify"])
    assert code == 0, out.getvalue()
    assert "0 divergences" in out.getvalue(), out.getvalue()
    print(out.getvalue())
