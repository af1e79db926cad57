"""Isolated against cross from recorded chain logs: ``keeper compare --chain-log FILE ...``.

Each NDJSON export of a chain venue's log (``keeper demo --venue chain --export DIR``, or ``keeper
log export`` of a daemon's shard: the run manifest beside it names the core) is replayed through
its own core (the manifest's params, ``keeper.domain.cores.make_core``), and the protocol's
figures are read from the log alone: its recorded contract events (``Liquidate``,
``LiquidationCall``: repaid, seized, bad debt realised), the block frames' oracle prices at each
event's block (USD values), the core's final state (accounts wiped, Aave's debt left without
collateral), the keeper's own entries (intents, rejections by reason, keeper latency from a
block's frame to its intents), and ``sound``: every recorded liquidation event is a recorded
``LiquidationConfirmed`` (by transaction hash) and the other way round, every intent answered.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from keeper.chain.demo import ProtocolSummary, rejection_kind
from keeper.domain import events as ev
from keeper.domain.aave_v3 import liquidation as alq
from keeper.domain.aave_v3.core import AaveCore
from keeper.domain.cores import make_core
from keeper.domain.morpho.core import MorphoCore
from keeper.errors import ConfigError
from keeper.replay import manifest as mf
from keeper.replay.replay import replay_batches
from keeper.replay.source import ndjson_batches

__all__ = ["summarise_log"]

_LIQUIDATIONS = {"morpho-blue": "Liquidate", "aave-v3.0": "LiquidationCall"}


def summarise_log(path: Path) -> ProtocolSummary:
    """One chain venue's figures from its exported log (module docstring)."""
    live = mf.read_file(mf.manifest_path(path))
    if live is None:
        raise ConfigError(f"--chain-log: {path} has no run manifest beside it "
                          f"({mf.manifest_path(path).name}): export it with `keeper log export`")
    params = mf.convert_params(live.params, {})
    if params.chain is None:
        raise ConfigError(f"--chain-log: {path} is not a chain venue's log (its core: {params.profile})")
    core = make_core(params)
    events: list[ev.Event] = []

    def keep(batch: Sequence[tuple[str, ev.Event]], derived: Sequence[ev.Event]) -> None:
        events.extend(e for _, e in batch)

    replay_batches(core, ndjson_batches(path), after_batch=keep)
    kind = "isolated" if params.chain == "morpho-blue" else "cross"
    s = ProtocolSummary(f"{params.chain} ({kind})",
                        bad_debt_kind="realised" if kind == "isolated" else "left")
    prices: dict[int, dict[str, int]] = {}
    frames: dict[str, int] = {}
    for e in events:
        if isinstance(e, ev.ChainBlock):
            prices[e.block] = e.prices
            frames[e.event_id] = e.ts_ingest
    liqs = [e for e in events if isinstance(e, ev.ChainLog) and e.name == _LIQUIDATIONS[params.chain]]
    for e in liqs:
        a = e.args
        if isinstance(core, MorphoCore):
            price = prices.get(e.block, {}).get(str(a["id"]), 0)
            s.collateral_seized_usd += int(a["seizedAssets"]) * price // 10**36 / 10**6
            s.debt_repaid_usd += int(a["repaidAssets"]) / 10**6
            s.bad_debt_usd += int(a["badDebtAssets"]) / 10**6
        else:
            assert isinstance(core, AaveCore)
            coll = str(a["collateralAsset"])
            price = prices.get(e.block, {}).get(coll, 0)
            dec = core.state.decimals.get(coll, 18)
            s.collateral_seized_usd += int(a["liquidatedCollateralAmount"]) * price / 10**8 / 10**dec
            debt = str(a["debtAsset"])
            debt_price = prices.get(e.block, {}).get(debt, 0)
            debt_dec = core.state.decimals.get(debt, 18)
            s.debt_repaid_usd += int(a["debtToCover"]) * debt_price / 10**8 / 10**debt_dec
    s.liquidations = len(liqs)
    s.accounts_liquidated = len({str(e.args.get("borrower", e.args.get("user"))) for e in liqs})
    if isinstance(core, MorphoCore):
        had = {str(e.args["onBehalf"]) for e in events
               if isinstance(e, ev.ChainLog) and e.name == "SupplyCollateral"}
        left = {b for book in core.state.positions.values() for b, p in book.items() if p.collateral}
        s.accounts_wiped = len(had - left)
    else:
        assert isinstance(core, AaveCore)
        for user in core.state.users.values():
            if not user.borrowed:
                continue
            acct = alq.account(core.state, user, core.state.block_time)
            if acct.total_collateral_base == 0:
                s.accounts_wiped += 1
                s.bad_debt_usd += acct.total_debt_base / 10**8
    intents = [e for e in events if isinstance(e, ev.LiquidationIntended)]
    outcomes = {e.intent_id for e in events if isinstance(e, ev._Outcome)
                and not isinstance(e, ev.LiquidationSubmitted)}
    confirmed = {e.venue_ref for e in events if isinstance(e, ev.LiquidationConfirmed)}
    s.intents = len(intents)
    seen = {i.event_id: frames.get(i.causation_id or "", 0) for i in intents}
    lat = sorted((i.ts_ingest - seen[i.event_id]) / 1000 for i in intents if seen[i.event_id])
    if lat:
        s.block_to_intent_p50_ms = round(statistics.median(lat), 2)
        s.block_to_intent_p99_ms = round(lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))], 2)
    rejected = (e for e in events if isinstance(e, ev.LiquidationRejected))
    s.rejections = dict(Counter(rejection_kind(e.reason) for e in rejected))
    s.sound = {e.tx_hash for e in liqs} == confirmed and {i.event_id for i in intents} <= outcomes
    return s
