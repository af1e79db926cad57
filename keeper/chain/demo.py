"""``keeper demo --venue chain``: isolated (Morpho Blue) against cross (Aave v3.0.2) on their own
bytecode, through a real crash, with the daemon liquidating live on both.

1. A private anvil and a private Redis; Morpho Blue and an Aave pool deployed from the committed
   artifacts; WETH (18 decimals), WBTC (8) and USDC (6) on each.
2. A book of ``accounts`` borrowers, the same people on both protocols: each holds WETH (and, one
   in two, WBTC) worth 1,000 to 100,000 USD and owes USDC. On Morpho each collateral is its own
   market (LLTV 0.86) with its own loan-to-value; on Aave the same collateral backs the sum of
   the same debts under one health factor (liquidation threshold 0.86, bonus 4.38%: Morpho's
   incentive at that LLTV, no protocol fee, so only the margin model differs).
3. The crash: ETH and BTC prices of a recorded window (``../shared/data``, Bybit 5-minute bars;
   a seeded synthetic crash where the data is absent), each step one block on chain that moves
   every oracle of both protocols at once, 75 s of chain time apart.
4. Two daemons (shards 0 and 1 of the Redis, one per protocol), each with the chain ingest, the
   protocol's keeper core and the chain executor under its own key.
5. The summary, per protocol, from the chain's own events (``Liquidate``, ``LiquidationCall``, the
   receipts, the accounts' final state): liquidations, collateral seized and debt repaid (USD at
   the oracle's price in the event's block), bad debt realised (Morpho) or left (Aave), accounts
   wiped, rejections by reason, gas, latencies, and ``sound``: every liquidation on chain is a
   recorded outcome and every intent has one.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from eth_account import Account

from keeper.app.config import Config, load_config
from keeper.app.daemon import Daemon, read_all
from keeper.app.demo import load_window
from keeper.chain.aave_testnet import LocalAave
from keeper.chain.anvil import Anvil
from keeper.chain.rpc import Rpc
from keeper.chain.testnet import OWNER, LocalMorpho
from keeper.domain import events as ev
from keeper.domain.chain_core import ChainCore
from keeper.domain.cores import make_core
from keeper.domain.morpho.liquidation import max_borrow
from keeper.replay import manifest as mf
from keeper.replay.replay import replay_async
from keeper.replay.source import log_batches
from keeper.replay.verify import Verifier
from keeper.sim.prices import Tick, synthetic_crash
from keeper.store.embedded import EmbeddedRedis
from keeper.store.ndjson import export_log
from keeper.store.redis_log import RedisEventLog

__all__ = [
    "DECIMALS",
    "KEYS",
    "LLTV",
    "MARKET",
    "MAX",
    "STEP_S",
    "Book",
    "ChainDemoOptions",
    "ChainDemoSummary",
    "ProtocolSummary",
    "crash_path",
    "make_book",
    "rejection_kind",
    "render",
    "run_chain_demo",
    "summary_json",
]

_log = structlog.get_logger("keeper.chain.demo")

LLTV = 860 * 10**15
KEYS = {"morpho-blue": "0x" + "a1" * 32, "aave-v3.0": "0x" + "a2" * 32}
DECIMALS = {"WETH": 18, "WBTC": 8, "USDC": 6}
MARKET = {"WETH": "ETH-USD", "WBTC": "BTC-USD"}
MAX = (1 << 256) - 1
STEP_S = 75


@dataclass(frozen=True)
class ChainDemoOptions:
    accounts: int = 1_000
    window: str = "2025-10-10"
    start: str = "2025-10-10T20:00:00Z"
    end: str = "2025-10-10T23:00:00Z"
    shared_data: Path | None = None
    seed: int = 7
    export: Path | None = None
    """A folder to write both logs into (``morpho-blue.ndjson``, ``aave-v3.0.ndjson``, each with its
    run manifest): ``keeper replay`` and ``keeper compare --chain-log`` read them."""
    settle_s: float = 30.0
    """The longest wait, after each price block, for both keepers to have read the chain's head
    and settled every intent (a chain's blocks are seconds apart: the keeper has that time)."""
    redis_url: str | None = None


@dataclass
class ProtocolSummary:
    protocol: str
    liquidations: int = 0
    collateral_seized_usd: float = 0.0
    debt_repaid_usd: float = 0.0
    bad_debt_usd: float = 0.0
    bad_debt_kind: str = ""
    accounts_wiped: int = 0
    accounts_liquidated: int = 0
    intents: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    gas_used: int = 0
    block_to_intent_p50_ms: float | None = None
    block_to_intent_p99_ms: float | None = None
    intent_to_receipt_p50_ms: float | None = None
    divergences: int | None = None
    sound: bool = False


@dataclass
class ChainDemoSummary:
    accounts: int
    prices: str
    blocks: int
    seconds: float
    protocols: list[ProtocolSummary]

    @property
    def sound(self) -> bool:
        return all(p.sound for p in self.protocols)


def crash_path(opts: ChainDemoOptions) -> tuple[list[Tick], str]:
    """ETH and BTC prices, a recorded window where the data is there, else the synthetic crash."""
    if opts.shared_data is not None and (opts.shared_data / "event_windows_tidy.csv.gz").exists():
        path = load_window(opts.shared_data, opts.window, opts.start, opts.end)
        if path:
            return path, f"bybit 5m bars {opts.start} .. {opts.end} ({opts.window})"
    return synthetic_crash(opts.seed), "synthetic crash (no ../shared/data)"


def _morpho_price(usd: Decimal, coll: str) -> int:
    return int(usd * 10 ** (36 + DECIMALS["USDC"] - DECIMALS[coll]))


def _aave_price(usd: Decimal) -> int:
    return int(usd * 10**8)


@dataclass
class Book:
    """The borrowers: collateral by asset (units), and the debt of each collateral's market."""

    who: list[str]
    collateral: dict[str, dict[str, int]]
    debt: dict[str, dict[str, int]]


def make_book(n: int, prices: dict[str, Decimal], rng: random.Random) -> Book:
    who = [f"0x{rng.getrandbits(160):040x}" for _ in range(n)]
    coll: dict[str, dict[str, int]] = {}
    debt: dict[str, dict[str, int]] = {}
    for w in who:
        coll[w], debt[w] = {}, {}
        for asset in ("WETH", "WBTC"):
            if asset == "WBTC" and rng.random() < 0.5:
                continue
            usd = Decimal(repr(10 ** rng.uniform(3, 5)))
            units = int(usd / prices[asset] * 10 ** DECIMALS[asset])
            coll[w][asset] = units
            cap = max_borrow(units, _morpho_price(prices[asset], asset), LLTV)
            debt[w][asset] = int(cap * rng.uniform(0.55, 0.97))
    return Book(who, coll, debt)


async def _morpho(net: LocalMorpho, book: Book, prices: dict[str, Decimal]
                  ) -> tuple[dict[str, str], dict[str, str]]:
    tokens = {a: await net.token() for a in ("WETH", "WBTC", "USDC")}
    markets = {a: await net.create_market(tokens["USDC"], tokens[a], LLTV, _morpho_price(prices[a], a))
               for a in ("WETH", "WBTC")}
    total_debt = {a: sum(book.debt[w].get(a, 0) for w in book.who) for a in markets}
    for a, mid in markets.items():
        await net.supply(mid, total_debt[a] * 3 + 10**12)
        await net.fund(tokens[a], OWNER, sum(book.collateral[w].get(a, 0) for w in book.who) + 1)
        await net.approve_collateral(mid)
    await net.impersonate(book.who)
    async with net.batch():
        for w in book.who:
            for a, units in book.collateral[w].items():
                await net.collateral(markets[a], w, units)
    async with net.batch():
        for w in book.who:
            for a, units in book.debt[w].items():
                await net.borrow(markets[a], w, units)
    return tokens, markets


async def _aave(net: LocalAave, book: Book, prices: dict[str, Decimal]) -> dict[str, str]:
    assets = {}
    for a in ("WETH", "WBTC", "USDC"):
        assets[a] = await net.add_reserve(a, DECIMALS[a], ltv_bps=8500, threshold_bps=8600, bonus_bps=10438,
                                          reserve_factor_bps=1000, protocol_fee_bps=0,
                                          price8=_aave_price(prices.get(a, Decimal(1))))
    lp = "0x" + "1f" * 20
    await net.supply(assets["USDC"], sum(sum(d.values()) for d in book.debt.values()) * 3 + 10**12, lp)
    await net.impersonate(book.who)
    async with net.batch():
        for w in book.who:
            for a, units in book.collateral[w].items():
                await net.send(w, assets[a], "MintableERC20", "mint", w, units)
                await net.send(w, assets[a], "MintableERC20", "approve", net.pool, MAX)
                await net.send(w, net.pool, "Pool", "supply", assets[a], units, w, 0)
    async with net.batch():
        for w in book.who:
            total = sum(book.debt[w].values())
            if total:
                await net.send(w, net.pool, "Pool", "borrow", assets["USDC"], total, 2, 0, w)
    return assets


def _config(protocol: str, shard: int, redis_url: str, anvil: Anvil, address: str) -> Config:
    env = {"REDIS_URL": redis_url, "KEEPER_CHAIN_KEY": KEYS[protocol], "KEEPER_KEEPER__PROFILE": protocol,
           "KEEPER_KEEPER__MODE": "live", "KEEPER_KEEPER__SHARD": str(shard), "KEEPER_KEEPER__SHARDS": "2",
           "KEEPER_EXECUTION__EXECUTOR": "chain", "KEEPER_VENUE__KIND": "evm",
           "KEEPER_VENUE__PROTOCOL": protocol, "KEEPER_VENUE__RPC_URL": anvil.http_url,
           "KEEPER_VENUE__WS_URL": anvil.ws_url, "KEEPER_VENUE__CHAIN_ID": "31337",
           "KEEPER_VENUE__ADDRESS": address, "KEEPER_VENUE__POLL_S": "0.05",
           "KEEPER_VENUE__LOOKAHEAD_S": str(STEP_S), "KEEPER_ADMIN__ENABLED": "false",
           "KEEPER_EXECUTION__INTENT_TTL_S": "600"}
    return load_config(None, env=env, register_secrets=False)


async def run_chain_demo(opts: ChainDemoOptions) -> ChainDemoSummary:
    started = time.monotonic()
    path, source = crash_path(opts)
    first = {a: path[0].prices[m] for a, m in MARKET.items()}
    first["USDC"] = Decimal(1)
    rng = random.Random(opts.seed)
    book = make_book(opts.accounts, first, rng)
    tmp = Path(tempfile.mkdtemp(prefix="keeper-chain-demo-"))
    redis = None
    if opts.redis_url is None:
        redis = EmbeddedRedis(tmp / "redis")
        redis.start()
    redis_url = opts.redis_url or (redis.url if redis is not None else "")
    anvil = Anvil().start(chain_id=31337, extra_args=["--base-fee", "1", "--disable-block-gas-limit"])
    rpc = Rpc(anvil.http_url, timeout_s=60)
    try:
        morpho = await LocalMorpho.deploy(rpc, [LLTV])
        m_tokens, m_markets = await _morpho(morpho, book, first)
        aave = await LocalAave.deploy(rpc)
        morpho.abis["PriceOracle"] = aave.abis["PriceOracle"]
        a_assets = await _aave(aave, book, first)
        for protocol, key in KEYS.items():
            who = Account.from_key(key).address.lower()
            await rpc.call("anvil_setBalance", who, hex(10**24))
            if protocol == "morpho-blue":
                await morpho.fund(m_tokens["USDC"], who, 10**30)
            else:
                await aave.impersonate([who])
                await aave.send(who, a_assets["USDC"], "MintableERC20", "mint", who, 10**30)
        _log.info("chain_demo_book", accounts=len(book.who), seconds=round(time.monotonic() - started, 1))
        daemons = [Daemon(_config("morpho-blue", 0, redis_url, anvil, morpho.morpho), consumer="demo-morpho",
                          block_ms=50),
                   Daemon(_config("aave-v3.0", 1, redis_url, anvil, aave.provider), consumer="demo-aave",
                          block_ms=50)]
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(d.run(stop)) for d in daemons]
        moved: dict[str, int] = {}
        try:
            await asyncio.gather(*(asyncio.wait_for(d.started.wait(), 60) for d in daemons))
            for tick in path[1:]:
                await rpc.call("evm_increaseTime", hex(STEP_S))
                async with morpho.batch() as sent:  # both protocols' oracles in one block
                    for a, m in MARKET.items():
                        usd = tick.prices[m]
                        await morpho.set_price(m_markets[a], _morpho_price(usd, a))
                        await morpho.send(OWNER, aave.oracle, "PriceOracle", "setAssetPrice", a_assets[a],
                                          _aave_price(usd))
                mined = time.time_ns() // 1000
                block_hash = str((await rpc.call("eth_getTransactionReceipt", sent[0]))["blockHash"])
                moved[f"blk:31337:{block_hash}"] = mined
                await _settle(rpc, daemons, opts.settle_s)
            await _settle(rpc, daemons, 10 * opts.settle_s)
        finally:
            stop.set()
            await asyncio.gather(*(asyncio.wait_for(t, 60) for t in tasks), return_exceptions=True)
        summaries = [await _summarise_morpho(morpho, m_markets, book, redis_url, moved),
                     await _summarise_aave(aave, a_assets, book, redis_url, moved)]
        for shard, s in enumerate(summaries):
            s.divergences = await _verify(redis_url, str(shard))
            s.sound = s.sound and s.divergences == 0
        if opts.export is not None:
            await _export(redis_url, opts.export)
        return ChainDemoSummary(len(book.who), source, len(path) - 1, time.monotonic() - started, summaries)
    finally:
        await rpc.close()
        anvil.stop()
        if redis is not None:
            redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _settle(rpc: Rpc, daemons: list[Daemon], wait_s: float) -> None:
    """Until both keepers have decided on the chain's head block and have no intent in flight
    (their own liquidations make new blocks: they are read too), at most ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        head = int(await rpc.call("eth_blockNumber"), 16)
        if all(_caught_up(d, head) for d in daemons):
            return
        await asyncio.sleep(0.005)


def _caught_up(d: Daemon, head: int) -> bool:
    cores = [p.core for p in d.keeper_projectors()]
    busy = d.runner is not None and d.runner.busy()
    return not busy and all(isinstance(c, ChainCore) and c.block >= head and not c.busy for c in cores)


async def _verify(redis_url: str, shard: str) -> int:
    lg = await RedisEventLog.connect(redis_url, shard=shard)
    try:
        live = await mf.read_redis(lg.client, shard=shard)
        assert live is not None
        params = mf.convert_params(live.params, {})
        verifier = Verifier("0-0")
        await replay_async(make_core(params), log_batches(lg), after_batch=verifier.after_batch)
        return len(verifier.finish().divergences)
    finally:
        await lg.close()


async def _export(redis_url: str, folder: Path) -> None:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    for shard, name in (("0", "morpho-blue"), ("1", "aave-v3.0")):
        lg = await RedisEventLog.connect(redis_url, shard=shard)
        try:
            path = folder / f"{name}.ndjson"
            await export_log(lg, path)
            live = await mf.read_redis(lg.client, shard=shard)
            if live is not None:
                mf.write_file(mf.manifest_path(path), live)
        finally:
            await lg.close()


async def _log_events(redis_url: str, shard: str) -> list[ev.Event]:
    lg = await RedisEventLog.connect(redis_url, shard=shard)
    try:
        return [e.event for e in await read_all(lg)]
    finally:
        await lg.close()


def _latencies(s: ProtocolSummary, events: list[ev.Event], moved: dict[str, int]) -> None:
    intents = [e for e in events if isinstance(e, ev.LiquidationIntended)]
    confirmed = {e.intent_id: e for e in events if isinstance(e, ev.LiquidationConfirmed)}
    b2i = sorted((i.ts_ingest - moved[i.causation_id]) / 1000 for i in intents if i.causation_id in moved)
    i2r = sorted((confirmed[i.event_id].ts_event - i.ts_ingest) / 1000 for i in intents
                 if i.event_id in confirmed)
    s.intents = len(intents)
    if b2i:
        s.block_to_intent_p50_ms = round(statistics.median(b2i), 2)
        s.block_to_intent_p99_ms = round(b2i[min(len(b2i) - 1, round(0.99 * (len(b2i) - 1)))], 2)
    if i2r:
        s.intent_to_receipt_p50_ms = round(statistics.median(i2r), 2)
    rejected = (e for e in events if isinstance(e, ev.LiquidationRejected))
    s.rejections = dict(Counter(rejection_kind(e.reason) for e in rejected))


def rejection_kind(reason: str) -> str:
    """A rejection's reason without its transaction and block: ``simulated: position is healthy``,
    ``on chain: 45 (HEALTH_FACTOR_NOT_BELOW_THRESHOLD)``."""
    if reason.startswith("simulation reverted: "):
        return "simulated: " + reason.removeprefix("simulation reverted: ").split(" (at block")[0]
    if reason.startswith("transaction ") and ": " in reason:
        return "on chain: " + reason.split(": ", 1)[1]
    return reason


async def _gas(rpc: Rpc, txs: list[str]) -> int:
    receipts = await rpc.batch([("eth_getTransactionReceipt", [t]) for t in txs]) if txs else []
    return sum(int(r["gasUsed"], 16) for r in receipts if r)


async def _summarise_morpho(net: LocalMorpho, markets: dict[str, str], book: Book, redis_url: str,
                            moved: dict[str, int]) -> ProtocolSummary:
    s = ProtocolSummary("morpho-blue (isolated)", bad_debt_kind="realised")
    events = await _log_events(redis_url, "0")
    liqs = await net.events(net.morpho, "Morpho", "Liquidate")
    prices = await net.rpc.batch([("eth_call", [{"to": net.markets[str(x["id"])].oracle,
                                                 "data": net.abis["OracleMock"].call_data("price")},
                                                hex(x["_block"])]) for x in liqs]) if liqs else []
    for x, raw in zip(liqs, prices, strict=True):
        price = int(net.abis["OracleMock"].decode_return("price", raw)[0])
        usd_units = int(x["seizedAssets"]) * price // 10**36  # in USDC units
        s.collateral_seized_usd += usd_units / 10**6
        s.debt_repaid_usd += int(x["repaidAssets"]) / 10**6
        s.bad_debt_usd += int(x["badDebtAssets"]) / 10**6
    s.liquidations = len(liqs)
    s.accounts_liquidated = len({str(x["borrower"]) for x in liqs})
    held = [(w, a) for w in book.who for a in book.collateral[w]]
    left = await net.rpc.batch([("eth_call", [{"to": net.morpho, "data": net.abis["Morpho"].call_data(
        "position", bytes.fromhex(markets[a][2:]), w)}, "latest"]) for w, a in held])
    coll_left: dict[str, int] = {}
    for (w, _), raw in zip(held, left, strict=True):
        coll_left[w] = coll_left.get(w, 0) + int(net.abis["Morpho"].decode_return("position", raw)[2])
    s.accounts_wiped = sum(1 for w in book.who if coll_left.get(w, 0) == 0)
    _latencies(s, events, moved)
    recorded = {e.venue_ref for e in events if isinstance(e, ev.LiquidationConfirmed)}
    s.gas_used = await _gas(net.rpc, sorted(str(r) for r in recorded))
    s.sound = {str(x["_tx"]) for x in liqs} == recorded and _all_answered(events)
    return s


async def _summarise_aave(net: LocalAave, assets: dict[str, str], book: Book, redis_url: str,
                          moved: dict[str, int]) -> ProtocolSummary:
    s = ProtocolSummary("aave-v3.0 (cross)", bad_debt_kind="left")
    events = await _log_events(redis_url, "1")
    liqs = await net.events(net.pool, "Pool", "LiquidationCall")
    oracle = net.abis["PriceOracle"]
    prices = await net.rpc.batch([("eth_call", [{"to": net.oracle, "data": oracle.call_data(
        "getAssetPrice", str(x["collateralAsset"]))}, hex(x["_block"])]) for x in liqs]) if liqs else []
    dec = {v: DECIMALS[k] for k, v in assets.items()}
    for x, raw in zip(liqs, prices, strict=True):
        price = int(net.abis["PriceOracle"].decode_return("getAssetPrice", raw)[0])
        s.collateral_seized_usd += int(x["liquidatedCollateralAmount"]) * price / 10**8 / 10 ** dec[
            str(x["collateralAsset"])]
        s.debt_repaid_usd += int(x["debtToCover"]) / 10**6
    s.liquidations = len(liqs)
    s.accounts_liquidated = len({str(x["user"]) for x in liqs})
    data = await net.rpc.batch([("eth_call", [{"to": net.pool, "data": net.abis["Pool"].call_data(
        "getUserAccountData", w)}, "latest"]) for w in book.who])
    for raw in data:
        coll, debt = (int(v) for v in net.abis["Pool"].decode_return("getUserAccountData", raw)[:2])
        if coll == 0:
            s.accounts_wiped += 1
            s.bad_debt_usd += debt / 10**8
    _latencies(s, events, moved)
    recorded = {e.venue_ref for e in events if isinstance(e, ev.LiquidationConfirmed)}
    s.gas_used = await _gas(net.rpc, sorted(str(r) for r in recorded))
    s.sound = {str(x["_tx"]) for x in liqs} == recorded and _all_answered(events)
    return s


def _all_answered(events: list[ev.Event]) -> bool:
    intents = {e.event_id for e in events
               if isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live"}
    outs = {e.intent_id for e in events
            if isinstance(e, ev._Outcome) and not isinstance(e, ev.LiquidationSubmitted)}
    return intents <= outs


def render(s: ChainDemoSummary) -> str:
    rows = [("liquidations on chain", "liquidations"), ("accounts liquidated", "accounts_liquidated"),
            ("collateral seized (USD)", "collateral_seized_usd"), ("debt repaid (USD)", "debt_repaid_usd"),
            ("bad debt (USD)", "bad_debt_usd"), ("accounts wiped", "accounts_wiped"),
            ("intents", "intents"), ("gas used", "gas_used"),
            ("block to intent p50 / p99 (ms)", "block_to_intent"), ("intent to receipt p50 (ms)",
                                                                     "intent_to_receipt_p50_ms"),
            ("replay --verify divergences", "divergences"), ("sound", "sound")]
    head = f"{'':34}" + "".join(f"{p.protocol:>26}" for p in s.protocols)
    lines = [f"chain demo: {s.accounts} borrowers on both protocols, {s.blocks} price blocks ({s.prices}), "
             f"{s.seconds:.1f} s", head]
    for label, key in rows:
        cells = []
        for p in s.protocols:
            d = asdict(p)
            if key == "block_to_intent":
                v: Any = f"{d['block_to_intent_p50_ms']} / {d['block_to_intent_p99_ms']}"
            else:
                v = d[key]
            if key == "bad_debt_usd":
                v = f"{v:,.2f} ({p.bad_debt_kind})"
            elif isinstance(v, float):
                v = f"{v:,.2f}"
            cells.append(f"{v!s:>26}")
        lines.append(f"{label:34}" + "".join(cells))
    for p in s.protocols:
        if p.rejections:
            lines.append(f"rejections ({p.protocol}): "
                         + ", ".join(f"{k}: {n}" for k, n in p.rejections.items()))
    return "\n".join(lines)


def summary_json(s: ChainDemoSummary) -> dict[str, Any]:
    out = asdict(s)
    out["sound"] = s.sound
    return out

