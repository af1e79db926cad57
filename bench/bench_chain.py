"""The chain venue on anvil (automine): Morpho Blue's own bytecode, the daemon's ingest, keeper and
chain executor in one process, a private Redis.

``ROUNDS`` markets hold one position each (the daemon reads every market's oracle and IRM at
every block); each round moves one market's oracle price just below its position's liquidation
price, so every such block makes exactly one position liquidatable. Figures, from the log's own
stamps:

- ``chain_block_to_intent_p50_ms`` / ``_p99_ms``: the price-moving transaction's receipt (the
  block exists) to the intent recorded in the log (``ts_ingest`` of ``LiquidationIntended``);
- ``chain_intent_to_receipt_p50_ms``: the intent recorded to the liquidation's receipt read by the
  executor (``ts_event`` of ``LiquidationConfirmed``).

The same figures for Aave v3.0.2 (``aave_`` lines: ``ROUNDS`` accounts, each with its own
collateral reserve's price moved), and ``chain_demo_seconds``: the whole ``keeper demo --venue
chain`` (1,000 borrowers on both protocols, the 2025-10-10 window; the synthetic crash without
``../shared/data``), set-up included.

Bounded: ``ROUNDS`` rounds per protocol, then the demo (about 1.5 minutes).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
import websockets
from eth_account import Account

from keeper.app.config import load_config
from keeper.app.daemon import Daemon, read_all
from keeper.app.demo import default_shared_data
from keeper.chain.aave_testnet import LocalAave
from keeper.chain.anvil import Anvil
from keeper.chain.demo import ChainDemoOptions, run_chain_demo
from keeper.chain.rpc import Rpc
from keeper.chain.testnet import OWNER, LocalMorpho
from keeper.domain import events as ev
from keeper.domain.morpho.liquidation import max_borrow
from keeper.store.embedded import EmbeddedRedis
from keeper.store.redis_log import RedisEventLog

ROUNDS = 40
LLTV = 860 * 10**15
PRICE = 2_000 * 10**24
KEY = "0x" + "5e" * 32


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


Move = tuple[str, str, str, tuple[Any, ...]]
"""(contract, abi, function, args) of the transaction that makes one more account liquidatable."""


async def _morpho(net: LocalMorpho, rpc: Rpc) -> tuple[dict[str, str], list[Move]]:
    loan, coll = await net.token(), await net.token()
    await net.fund(coll, OWNER, 10**30)
    borrowers = ["0x" + f"{i + 1:040x}" for i in range(ROUNDS)]
    await net.impersonate(borrowers)
    mids = []
    for who in borrowers:
        mid = await net.create_market(loan, coll, LLTV, PRICE)
        await net.supply(mid, 10**20)
        await net.approve_collateral(mid)
        await net.collateral(mid, who, 10**18)
        await net.borrow(mid, who, int(max_borrow(10**18, PRICE, LLTV) * 0.9))
        mids.append(mid)
    await net.fund(loan, Account.from_key(KEY).address.lower(), 10**30)
    env = {"KEEPER_KEEPER__PROFILE": "morpho-blue", "KEEPER_VENUE__ADDRESS": net.morpho,
           "KEEPER_VENUE__MARKETS": "[" + ",".join(f'"{m}"' for m in mids) + "]"}
    # 0.89 of the price: just below the position's liquidation price (it borrowed 0.9 of it)
    return env, [(net.markets[m].oracle, "OracleMock", "setPrice", (PRICE * 89 // 100,)) for m in mids]


async def _aave(rpc: Rpc) -> tuple[LocalAave, dict[str, str], list[Move]]:
    net = await LocalAave.deploy(rpc)
    weth = await net.add_reserve("WETH", 18, ltv_bps=8000, threshold_bps=8250, bonus_bps=10500,
                                 reserve_factor_bps=1000, protocol_fee_bps=1000, price8=2_000 * 10**8)
    usdc = await net.add_reserve("USDC", 6, ltv_bps=8500, threshold_bps=8800, bonus_bps=10450,
                                 reserve_factor_bps=1000, protocol_fee_bps=0, price8=10**8)
    await net.supply(usdc, 10**14, "0x" + "1f" * 20)
    moves: list[Move] = []
    for i in range(ROUNDS):  # health factors 1.30, 1.31, ...: each move breaches the next one
        who, hf = "0x" + f"{i + 1:040x}", 1.30 + 0.01 * i
        await net.supply(weth, 10**18, who)
        await net.borrow(usdc, int(2_000 * 0.825 / hf * 10**6), who)
    for i in range(ROUNDS):  # the price falls step by step: each step breaches account i
        moves.append((net.oracle, "PriceOracle", "setAssetPrice",
                      (weth, int(2_000 * 10**8 * 0.995 / (1.30 + 0.01 * i)))))
    who = Account.from_key(KEY).address.lower()
    await net.impersonate([who])
    await net.send(who, usdc, "MintableERC20", "mint", who, 10**15)
    return net, {"KEEPER_KEEPER__PROFILE": "aave-v3.0", "KEEPER_VENUE__PROTOCOL": "aave-v3.0",
                 "KEEPER_VENUE__ADDRESS": net.provider}, moves


async def run(anvil: Anvil, redis_url: str, protocol: str) -> None:
    rpc = Rpc(anvil.http_url, timeout_s=30)
    await rpc.call("anvil_setBalance", Account.from_key(KEY).address.lower(), hex(10**22))
    net: LocalMorpho | LocalAave
    if protocol == "morpho-blue":
        net = await LocalMorpho.deploy(rpc, [LLTV])
        extra, moves = await _morpho(net, rpc)
        prefix = "chain"
    else:
        net, extra, moves = await _aave(rpc)
        prefix = "aave"
    env = {"REDIS_URL": redis_url, "KEEPER_CHAIN_KEY": KEY, "KEEPER_KEEPER__MODE": "live",
           "KEEPER_EXECUTION__EXECUTOR": "chain", "KEEPER_VENUE__KIND": "evm",
           "KEEPER_VENUE__RPC_URL": anvil.http_url, "KEEPER_VENUE__WS_URL": anvil.ws_url,
           "KEEPER_VENUE__CHAIN_ID": "31337", "KEEPER_VENUE__POLL_S": "0.5",
           "KEEPER_VENUE__LOOKAHEAD_S": "2", "KEEPER_ADMIN__ENABLED": "false", **extra}
    cfg = load_config(None, env=env, register_secrets=False)
    d = Daemon(cfg, roles=["ingest", "keeper", "executor"], consumer="bench", block_ms=50)
    stop = asyncio.Event()
    task = asyncio.ensure_future(d.run(stop))
    await asyncio.wait_for(d.started.wait(), 30)
    log = await RedisEventLog.connect(redis_url)
    moved: dict[str, int] = {}
    """block frame id -> when this process heard of the block that moved the price (its own
    newHeads subscription, like the ingest's)."""
    heads = await websockets.connect(anvil.ws_url)
    await heads.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                 "params": ["newHeads"]}))
    await heads.recv()  # the subscription id
    try:
        await asyncio.sleep(0.5)
        for to, abi, fn, args in moves:
            await net.send(OWNER, to, abi, fn, *args, check=False)
            while True:  # the next head is the price's block (the executor's blocks come later)
                head = json.loads(await heads.recv())["params"]["result"]
                t = time.time_ns() // 1000
                block = await rpc.call("eth_getBlockByHash", head["hash"], False)
                if block["transactions"] and (await rpc.call(
                        "eth_getTransactionByHash", block["transactions"][0]))["to"].lower() == to:
                    break
            frame = f"blk:31337:{head['hash']}"
            moved[frame] = t
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                events = [e.event for e in await read_all(log)]
                mine = [e for e in events
                        if isinstance(e, ev.LiquidationIntended) and e.causation_id == frame]
                done = {e.intent_id for e in events if isinstance(e, ev.LiquidationConfirmed)}
                if mine and all(e.event_id in done for e in mine):
                    break
                await asyncio.sleep(0.005)
        events = [e.event for e in await read_all(log)]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await log.close()
        await rpc.close()
        await heads.close()
    intents = [e for e in events if isinstance(e, ev.LiquidationIntended)]
    confirmed = {e.intent_id: e for e in events if isinstance(e, ev.LiquidationConfirmed)}
    block_to_intent = [(i.ts_ingest - moved[i.causation_id]) / 1000 for i in intents
                       if i.causation_id in moved]
    to_receipt = [(confirmed[i.event_id].ts_event - i.ts_ingest) / 1000 for i in intents
                  if i.event_id in confirmed]
    print(f"# {protocol}: {len(moves)} price moves, {len(intents)} intents ({len(block_to_intent)} on a "
          f"moved block), {len(confirmed)} confirmed")
    print(f"bench {prefix}_block_to_intent_p50_ms {statistics.median(block_to_intent):.2f} ms")
    print(f"bench {prefix}_block_to_intent_p99_ms {_pct(block_to_intent, 0.99):.2f} ms")
    print(f"bench {prefix}_intent_to_receipt_p50_ms {statistics.median(to_receipt):.2f} ms")


def demo_seconds() -> None:
    t0 = time.monotonic()
    summary = asyncio.run(run_chain_demo(ChainDemoOptions(shared_data=default_shared_data())))
    print(f"# chain demo: {summary.accounts} borrowers, {summary.blocks} price blocks ({summary.prices}); "
          f"sound {summary.sound}; liquidations " + ", ".join(f"{p.protocol} {p.liquidations}"
                                                              for p in summary.protocols))
    print(f"bench chain_demo_seconds {time.monotonic() - t0:.1f} s")


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp))
        redis.start()
        anvil = Anvil().start(chain_id=31337, extra_args=["--base-fee", "1"])
        try:
            for protocol in ("morpho-blue", "aave-v3.0"):
                redis.flushall()
                asyncio.run(run(anvil, redis.url, protocol))
        finally:
            anvil.stop()
            redis.stop()
    demo_seconds()


if __name__ == "__main__":
    main()
