"""The daemon's side of retention (``keeper.store.retention``): the pass on a schedule, and
reading a log whose oldest part retention moved to the archive.

- ``retain``: a pass every ``[retention] interval_s`` until ``stop``, each pass's report handed
  to ``on_pass`` and counted in ``Metrics``; a failed pass is logged and tried again;
- ``archived``: a log read with its archive when retention trimmed part of it;
- ``capped_reader``: the projectors' log, read through the archive for good when the hard cap
  (``[retention] cap_entries``) may trim past them while they run;
- ``catch_up_archived``: a projector that starts below what retention trimmed reads that part
  from the archive, then goes on with the hot log.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import structlog

from keeper.app.config import Config
from keeper.app.metrics import Metrics
from keeper.app.stamping import StampingLog
from keeper.projector import Projector
from keeper.store.archive import Archive, ArchivedLog, open_archive
from keeper.store.redis_log import RedisEventLog
from keeper.store.retention import PassReport, RetentionPolicy, run_retention

__all__ = ["archived", "capped_reader", "catch_up_archived", "retain"]

_log = structlog.get_logger()


async def archived(cfg: Config, log: RedisEventLog) -> RedisEventLog | ArchivedLog:
    """``log``, read with the archive when retention trimmed part of it (``ArchivedLog``)."""
    if not cfg.retention.enabled:
        return log
    archive = await open_archive(log, None)
    return log if archive is None else ArchivedLog(log, archive)


def capped_reader(cfg: Config, log: RedisEventLog) -> RedisEventLog | ArchivedLog:
    """What the projectors read: ``log`` itself, or with a hard cap (``[retention]
    cap_entries``) ``log`` through its archive (the configured directory, empty until the first
    pass): the cap may trim past a projector that fell that far behind while it runs, and its
    next read then comes from the archive. (Without a cap nothing is trimmed past a projector's
    snapshot: the hot log alone serves it, with no extra call per read.)"""
    if not cfg.retention.enabled or not cfg.retention.cap_entries:
        return log
    policy = RetentionPolicy.from_config(cfg.retention, state_dir=cfg.keeper.state_dir)
    return ArchivedLog(log, Archive.of(policy.archive_dir.resolve(), log))


async def catch_up_archived(cfg: Config, p: Projector) -> None:
    """A projector that starts below what retention trimmed (no snapshot yet: a profile
    added, or both snapshots unusable) reads that part from the archive; then the hot log
    as usual (retention never trims past a projector's snapshots, so a restart from one
    needs no archive)."""
    stamping = p.log
    if (not cfg.retention.enabled or not isinstance(stamping, StampingLog)
            or isinstance(stamping.inner, ArchivedLog)):  # capped_reader's: it reads all as it is
        return
    inner = stamping.inner
    archive = await open_archive(inner, None, start=p.position)
    if archive is None:
        return
    stamping.inner = ArchivedLog(inner, archive)
    try:
        n = await p.catch_up()
    finally:
        stamping.inner = inner
    _log.info("projector_caught_up_from_archive", projector=p.name, entries=n,
              offset=p.position)


async def retain(cfg: Config, log: RedisEventLog, metrics: Metrics, stop: asyncio.Event,
                 on_pass: Callable[[PassReport], None]) -> None:
    """Retention passes on ``log`` every ``[retention] interval_s`` until ``stop``, run by the
    process that writes the keeper's snapshots (they pin what may be trimmed). Each pass's
    report goes to ``on_pass``, then into ``metrics``."""
    policy = RetentionPolicy.from_config(cfg.retention, state_dir=cfg.keeper.state_dir)
    policy = dataclasses.replace(policy, archive_dir=policy.archive_dir.resolve())
    m = metrics

    def counted(report: PassReport) -> None:
        on_pass(report)
        m.retention_passes.inc("error" if report.error else "skipped" if report.skipped else "ok")
        if report.error or report.skipped:
            return
        m.retention_archived.inc(by=report.archived)
        m.retention_trimmed.inc(by=report.trimmed)
        m.retention_hot.set(report.hot_entries)
        m.retention_lagging.set(len(report.lagging))
        m.retention_seconds.set(report.duration_s)

    await run_retention(log, policy, stop, counted)
