"""Which cores a replay runs, and where they start.

- ``select_cores``: the live run's cores (from its manifest), every one or the named ones, with
  overrides applied; or one core of a given profile (an upgrade or a what-if is checked so);
- ``core_from_snapshot``: one core restored from a snapshot (a file store or the shard's Redis)
  and the log offset it holds, so that a replay reads only the tail.

Both refuse what cannot be replayed with a ``ConfigError`` naming the ``keeper replay`` option
to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import structlog

from keeper.domain.cores import AnyCore, fmt_of, make_core
from keeper.domain.decide import KeeperParams
from keeper.errors import ConfigError
from keeper.replay import manifest as mf
from keeper.store.slotconn import RedisClient

__all__ = ["core_from_snapshot", "select_cores"]

log = structlog.get_logger("keeper.replay")


def select_cores(live: mf.RunManifest | None, *, profile: str | None = None,
                 mode: str | None = None, params: Sequence[str] = (),
                 cores: Sequence[str] = ()) -> list[mf.NamedParams]:
    """The ``(name, KeeperParams)`` cores to replay: the live run's (every one, or those named
    in ``cores``) with ``mode`` and the ``KEY=VALUE`` ``params`` applied; ``profile`` replaces
    them by one core of that profile (the live run's other params kept). Without a live
    manifest, ``profile`` is required."""
    overrides: dict[str, str | None] = {"mode": mode}
    for item in params:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--param: expected KEY=VALUE, got {item!r}")
        if key not in KeeperParams.__struct_fields__ or key == "profile":
            raise ConfigError(f"--param: unknown parameter {key!r} (use --profile for the profile)")
        overrides[key] = None if value.lower() in ("none", "null") else value
    try:
        if live is None:
            if not profile:
                raise ConfigError("--profile: no run manifest found, so the profile must be given")
            p = mf.convert_params({"profile": profile, "mode": "paper"}, overrides)
            return [(mf.core_name(p), p)]
        named = mf.cores_from(live, **overrides)
        if cores:
            unknown = sorted(set(cores) - {n for n, _ in named})
            if unknown:
                raise ConfigError(f"--core: {unknown[0]!r} is not a core of the run "
                                  f"({', '.join(n for n, _ in named)})")
            named = [(n, p) for n, p in named if n in cores]
        if profile:
            p = mf.convert_params({**mf.params_dict(named[0][1]), "profile": profile}, {})
            named = [(mf.core_name(p), p)]
    except Exception as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--param: {exc}") from None
    return named


async def core_from_snapshot(params: KeeperParams, *, client: RedisClient | None,
                             redis_snapshot: str | None, snapshot_dir: Path | None,
                             snapshot_name: str = "keeper", shard: str = "0",
                             prefix: str = "keeper") -> tuple[AnyCore, str]:
    """A core of ``params`` restored from the newest valid snapshot, and its log offset: the
    shard's Redis snapshot ``redis_snapshot`` (needs ``client``), else ``snapshot_name`` in
    ``snapshot_dir``. A missing or unusable snapshot is a ``ConfigError``."""
    from keeper.projector import unwrap_snapshot
    from keeper.store.snapshots import FileSnapshotStore, RedisSnapshotStore

    store: FileSnapshotStore | RedisSnapshotStore
    if redis_snapshot is not None:
        if client is None:
            raise ConfigError("--redis-snapshot: only with --redis-url")
        store = RedisSnapshotStore(client, shard=shard, prefix=prefix, format=fmt_of(params))
        name, where = redis_snapshot, f"the shard's Redis ({store.key(redis_snapshot)})"
    else:
        assert snapshot_dir is not None
        store = FileSnapshotStore(snapshot_dir, format=fmt_of(params))
        name, where = snapshot_name, str(snapshot_dir)
    found = await store.load(name)
    if found is None:
        raise ConfigError(f"snapshot: no valid snapshot {name!r} in {where}")
    offset, blob = found
    try:
        core = make_core(params, unwrap_snapshot(fmt_of(params), blob))
    except Exception as exc:  # any failure means: do not trust it
        raise ConfigError(f"snapshot {name!r} at {offset} not usable: {exc}") from None
    log.info("replay_from_snapshot", offset=offset, bytes=len(blob))
    return core, offset
