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

Bounded: ``ROUNDS`` rounds, a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import structlog
import websockets
from eth_account import Account

from keeper.app.daemon import Daemon, read_all
from keeper.chain.anvil import Anvil
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


async def run(anvil: Anvil, redis_url: str) -> None:
    from keeper.app.config import load_config

    rpc = Rpc(anvil.http_url, timeout_s=30)
    net = await LocalMorpho.deploy(rpc, [LLTV])
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
    liquidator = Account.from_key(KEY).address.lower()
    await rpc.call("anvil_setBalance", liquidator, hex(10**22))
    await net.fund(loan, liquidator, 10**30)
    env = {"REDIS_URL": redis_url, "KEEPER_CHAIN_KEY": KEY, "KEEPER_KEEPER__PROFILE": "morpho-blue",
           "KEEPER_KEEPER__MODE": "live", "KEEPER_EXECUTION__EXECUTOR": "chain",
           "KEEPER_VENUE__KIND": "evm", "KEEPER_VENUE__RPC_URL": anvil.http_url,
           "KEEPER_VENUE__WS_URL": anvil.ws_url, "KEEPER_VENUE__CHAIN_ID": "31337",
           "KEEPER_VENUE__ADDRESS": net.morpho,
           "KEEPER_VENUE__MARKETS": "[" + ",".join(f'"{m}"' for m in mids) + "]",
           "KEEPER_VENUE__POLL_S": "0.5", "KEEPER_VENUE__LOOKAHEAD_S": "2",
           "KEEPER_ADMIN__ENABLED": "false"}
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
        for mid in mids:
            # 0.89 of the price: just below the position's liquidation price (it borrowed 0.9 of it)
            oracle = net.markets[mid].oracle
            await net.send(OWNER, oracle, "OracleMock", "setPrice", PRICE * 89 // 100, check=False)
            while True:  # the next head is the price's block (the executor's blocks come later)
                head = json.loads(await heads.recv())["params"]["result"]
                t = time.time_ns() // 1000
                block = await rpc.call("eth_getBlockByHash", head["hash"], False)
                if block["transactions"] and (await rpc.call(
                        "eth_getTransactionByHash", block["transactions"][0]))["to"].lower() == oracle:
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
    print(f"# {ROUNDS} price moves, {len(intents)} intents ({len(block_to_intent)} on a moved block), "
          f"{len(confirmed)} confirmed")
    print(f"bench chain_block_to_intent_p50_ms {statistics.median(block_to_intent):.2f} ms")
    print(f"bench chain_block_to_intent_p99_ms {_pct(block_to_intent, 0.99):.2f} ms")
    print(f"bench chain_intent_to_receipt_p50_ms {statistics.median(to_receipt):.2f} ms")


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp))
        redis.start()
        anvil = Anvil().start(chain_id=31337, extra_args=["--base-fee", "1"])
        try:
            asyncio.run(run(anvil, redis.url))
        finally:
            anvil.stop()
            redis.stop()


if __name__ == "__main__":
    main()
