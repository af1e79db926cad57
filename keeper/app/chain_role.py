"""Wiring of a chain venue (``[venue] kind = "evm"``): its ingest and its executor.

The daemon calls ``start_chain_ingest`` for the ``ingest`` role and ``start_chain_executor`` for
the ``executor`` role; each has its own JSON-RPC client. Both refuse to start, with one line
naming the (redacted) URL, when the node does not answer or serves another chain.
"""

from __future__ import annotations

from decimal import Decimal

from keeper.app.config import Config
from keeper.chain.aave import AaveVenue
from keeper.chain.executor import ChainExecutor
from keeper.chain.ingest import ChainIngest, check_node
from keeper.chain.morpho import MorphoVenue
from keeper.chain.rpc import Rpc
from keeper.errors import ConfigError
from keeper.ports import EventLog

__all__ = ["start_chain_executor", "start_chain_ingest"]


async def _venue(cfg: Config, rpc: Rpc) -> MorphoVenue | AaveVenue:
    """The protocol's venue on a node checked first (it answers, and serves the chain named)."""
    v = cfg.venue
    await check_node(rpc, v.chain_id)
    if v.protocol == "aave-v3.0":
        venue = AaveVenue(rpc, v.address)
        await venue.resolve()
        return venue
    return MorphoVenue(rpc, v.address, watch=v.markets or None)


async def start_chain_ingest(cfg: Config, log: EventLog) -> ChainIngest:
    """The venue's ingest, started (chain id checked, resumed from the log)."""
    v = cfg.venue
    rpc = Rpc(v.rpc_url)
    try:
        venue = await _venue(cfg, rpc)
    except BaseException:
        await rpc.close()
        raise
    ingest = ChainIngest(rpc, log, venue=v.protocol, chain_id=v.chain_id, source=venue,
                         confirmations=v.confirmations, start_block=v.start_block,
                         range_blocks=v.range_blocks, ws_url=v.ws_url or None, poll_s=v.poll_s)
    try:
        await ingest.start()
    except BaseException:
        await rpc.close()
        raise
    return ingest


async def start_chain_executor(cfg: Config, log: EventLog) -> ChainExecutor:
    """The venue's executor, started (recorded transactions read, nonces reconciled, the
    watched markets' loan tokens approved)."""
    v = cfg.venue
    key = cfg.secrets.chain_key
    if key is None:
        raise ConfigError("execution.executor: 'chain' signs transactions; set KEEPER_CHAIN_KEY to the "
                          "liquidator's private key (0x + 64 hex digits)")
    rpc = Rpc(v.rpc_url)
    try:
        venue = await _venue(cfg, rpc)
        ex = ChainExecutor(rpc, log, venue, chain_id=v.chain_id, private_key=key.reveal(),
                           gas_margin=v.gas_margin, gas_cap=v.gas_cap,
                           max_fee_per_gas=int(v.max_fee_gwei * Decimal(10**9)),
                           replace_after_s=v.replace_after_s)
    except ValueError:
        await rpc.close()
        raise ConfigError("KEEPER_CHAIN_KEY: not a private key (expected 0x + 64 hex digits)") from None
    except BaseException:
        await rpc.close()
        raise
    try:
        tokens = []
        if isinstance(venue, MorphoVenue):  # the watched markets' loan tokens, approved up front
            tokens = sorted({(await venue.market_params(m)).loan_token for m in v.markets})
        await ex.start(tokens)
    except BaseException:
        await rpc.close()
        raise
    return ex
