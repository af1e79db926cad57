"""The daemon's retention wiring: with a hard cap its projectors read through the archive, so
a cap that trims past a projector that fell behind loses it nothing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec

from keeper.app.config import load_config
from keeper.app.retention_role import capped_reader, catch_up_archived
from keeper.app.stamping import StampingLog
from keeper.domain.events import Deposit
from keeper.projector import ProjectionCore, Projector
from keeper.store.archive import ArchivedLog
from keeper.store.redis_log import RedisEventLog
from keeper.store.retention import Retention, RetentionPolicy
from keeper.store.snapshots import RedisSnapshotStore


def _cfg(tmp_path: Path, cap: int) -> object:
    base = load_config(None, env={}, register_secrets=False)
    r = msgspec.structs.replace
    return r(base, retention=r(base.retention, cap_entries=cap, hot_window_s=3600.0,
                               archive_dir=str(tmp_path / "archive"), min_segment_entries=1),
             keeper=r(base.keeper, state_dir=str(tmp_path)))


def dep(i: int) -> Deposit:
    return Deposit(event_id=f"dep-{i}", ts_event=1_000 + i, account=f"a{i % 7}", bucket="cross",
                   asset="USDC", amount=Decimal(i + 1))


async def test_with_a_hard_cap_a_lagging_projector_reads_what_was_trimmed_past_it(
        redis_url: str, tmp_path: Path) -> None:
    log = await RedisEventLog.connect(redis_url)
    try:
        assert capped_reader(_cfg(tmp_path, 0), log) is log  # type: ignore[arg-type]
        cfg = _cfg(tmp_path, 10_000)
        reading = capped_reader(cfg, log)  # type: ignore[arg-type]
        assert isinstance(reading, ArchivedLog)
        ids = [i for i in await log.append([dep(i) for i in range(15_000)]) if i]
        snaps = RedisSnapshotStore(log.client, format=ProjectionCore.FORMAT)
        proj = Projector(StampingLog(reading), snaps,
                         lambda b: ProjectionCore() if b is None else ProjectionCore.restore(b),
                         name="state", batch=500)
        await proj.start()
        await catch_up_archived(cfg, proj)  # type: ignore[arg-type]  # reads all as it is: no-op
        assert proj.applied == 0
        while proj.applied < 2_000:
            await proj.step(block_ms=None)
        await proj.snapshot()
        policy = RetentionPolicy.from_config(cfg.retention, state_dir=tmp_path)  # type: ignore[attr-defined]
        r = await Retention(log, policy).run_pass()
        assert r.limited_by == "cap_entries" and r.overrun and await log.length() == 10_000
        await proj.catch_up()
        full = ProjectionCore()
        for entry_id, e in zip(ids, [dep(i) for i in range(15_000)], strict=True):
            full.handle(entry_id, e)
        assert proj.applied == 15_000 and proj.core is not None
        assert proj.core.snapshot() == full.snapshot()
    finally:
        await log.close()
