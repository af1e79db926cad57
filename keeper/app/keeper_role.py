"""Wiring of the keeper role (projector + ``KeeperCore``) and the executor role (``Runner``).

``run_keeper`` runs both against one Redis until ``stop`` is set: the projector folds the log
into a ``KeeperCore`` and appends its intents (the outbox, ``ts_ingest`` stamped), the runner
submits live intents and appends outcomes; the intents the projector records are handed to the
runner at once (``Runner.offer``), as the daemon does. Each gets its own Redis client (the
runner's reads block). Tests run it in a subprocess (``tests/execution/keeper_proc.py``); the
daemon (``keeper.app.daemon``) wires the same roles itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from keeper.app.stamping import StampingLog
from keeper.domain.cores import AnyCore, fmt_of, make_core
from keeper.domain.decide import KeeperParams
from keeper.execution.base import VenueExecutor
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.projector import Projector
from keeper.store.redis_log import RedisEventLog
from keeper.store.snapshots import RedisSnapshotStore

__all__ = ["RoleConfig", "core_factory", "run_keeper"]

_log = structlog.get_logger()


@dataclass(frozen=True)
class RoleConfig:
    """Where and as whom: ``consumer`` must be stable per process (claims and pending entries
    are taken back by name after a restart)."""

    redis_url: str
    consumer: str
    group: str = "executor"
    shard: str = "0"
    snapshot_every: int = 10_000
    snapshot_interval_s: float = 5.0
    claim_ttl_ms: int = 30_000
    stale_ms: int = 30_000
    block_ms: int = 100


def core_factory(params: KeeperParams) -> object:
    """The projector's factory: a fresh core for ``None``, else one restored from bytes."""

    def make(data: bytes | None) -> AnyCore:
        return make_core(params, data)

    return make


async def run_keeper(cfg: RoleConfig, params: KeeperParams, executor: VenueExecutor | None,
                     stop: asyncio.Event) -> None:
    """Project and decide; with an executor (and ``params.mode == "live"``) also submit."""
    proj_log = await RedisEventLog.connect(cfg.redis_url, shard=cfg.shard)
    run_log = await RedisEventLog.connect(cfg.redis_url, shard=cfg.shard)
    try:
        snaps = RedisSnapshotStore(proj_log.client, shard=cfg.shard, format=fmt_of(params))
        stamping = StampingLog(proj_log)
        projector = Projector(stamping, snaps, core_factory(params),  # type: ignore[arg-type]
                              name=f"keeper-{cfg.consumer}", fmt=fmt_of(params),
                              snapshot_every=cfg.snapshot_every,
                              snapshot_interval_s=cfg.snapshot_interval_s)
        tasks = [projector.run(stop, block_ms=cfg.block_ms)]
        if executor is not None:
            runner = Runner(run_log, Claims(run_log.client, ttl_ms=cfg.claim_ttl_ms), executor,
                            consumer=cfg.consumer, group=cfg.group, intent_ttl_us=params.intent_ttl_us,
                            stale_ms=cfg.stale_ms)
            tasks.append(runner.run(stop, block_ms=cfg.block_ms))
            stamping.handoff = runner.offer
        _log.info("keeper_started", consumer=cfg.consumer, mode=params.mode, profile=params.profile,
                  executor=None if executor is None else executor.name)
        await asyncio.gather(*tasks)
    finally:
        await proj_log.close()
        await run_log.close()
