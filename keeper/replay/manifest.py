"""The run manifest: what configuration ran over which part of the log, so a replay can say
what it reproduced.

A live run writes one (``kind="live"``) into the ``{prefix}:{shard}:manifest`` hash next to its
log, or into a file beside an NDJSON export (``<export>.manifest.json``). A replay reads it to
take the live run's ``KeeperParams`` (unless a parameter is deliberately overridden: that is how
an upgrade or a what-if is checked) and writes its own (``kind="replay"``) stating the range it
covered, the config hash it ran with, whether that equals the live run's, and the verify result.

A run may have several keeper cores on one log (the demo runs ``generic-perp`` for perp buckets
and ``aave-v3.3`` for lending buckets), each with its own params and snapshot name: ``cores``
lists them all (``CoreSpec``); ``params`` repeats the first core's (older readers). A replay
rebuilds every core of the list and merges their decisions.

``config_hash`` is the SHA-256 of the params' canonical JSON (keys sorted), so two runs with the
same parameters have the same hash whatever produced them; with several cores it is the hash of
the list of ``{name, params}`` (in the manifest's order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from keeper import __version__
from keeper.domain.decide import KeeperParams
from keeper.errors import ConfigError
from keeper.jsonlimits import MAX_DOCUMENT_BYTES, problem, read_capped

__all__ = [
    "ADDED_LATER",
    "MANIFEST_SUFFIX",
    "CoreSpec",
    "NamedParams",
    "RunManifest",
    "config_hash",
    "convert_params",
    "core_name",
    "cores_from",
    "data_time",
    "decode_manifest",
    "encode_manifest",
    "live_manifest",
    "log_time",
    "manifest_path",
    "params_dict",
    "params_from",
    "read_file",
    "read_redis",
    "redis_key",
    "replay_manifest",
    "run_hash",
    "write_file",
    "write_redis",
]

MANIFEST_SUFFIX = ".manifest.json"


class CoreSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One keeper core of a run: its snapshot (projector) name, params and their hash."""

    name: str
    params: dict[str, Any]
    config_hash: str


class RunManifest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One run's record. ``log_first``/``log_last`` are entry ids (inclusive) it covered."""

    kind: str
    keeper_version: str = __version__
    config_hash: str
    params: dict[str, Any]
    source: str = ""
    log_first: str | None = None
    log_last: str | None = None
    entries: int = 0
    decisions: int = 0
    reproduces: str | None = None
    """Replay only: the config hash of the live run it replayed (equal hashes: same params)."""
    same_config: bool | None = None
    verified: str | None = None
    """Replay only: the ``verify: N decisions, M divergences`` line, when it verified."""
    divergences: int | None = None
    cores: list[CoreSpec] = msgspec.field(default_factory=list)
    """Every keeper core of the run (empty in manifests written before several cores)."""
    status: str = ""
    """Live only: ``running`` (written at start) or ``stopped`` (updated at shutdown)."""
    started_us: int | None = None
    stopped_us: int | None = None
    config_files: list[str] = msgspec.field(default_factory=list)
    clock: list[tuple[int, int]] = msgspec.field(default_factory=list)
    """A run that played recorded data (``keeper demo``): ``(log time, data time)`` pairs (µs,
    both increasing) mapping the wall-clock times its log is stamped with to the times of the
    data it played, linear in between (``data_time``, ``log_time``); empty otherwise."""


def _interpolate(points: Sequence[tuple[int, int]], x: int) -> int:
    """Piecewise linear through ``points`` (sorted by x), held flat past either end."""
    import bisect

    i = bisect.bisect_right(points, x, key=lambda p: p[0])
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) // (x1 - x0)


def data_time(m: RunManifest | None, log_us: int) -> int:
    """The recorded data's time that log time ``log_us`` stands for (itself without a clock)."""
    return _interpolate(m.clock, log_us) if m is not None and m.clock else log_us


def log_time(m: RunManifest | None, data_us: int) -> int | None:
    """The log time at which the run played data time ``data_us``; None without a clock or
    outside the data it played."""
    if m is None or not m.clock or not m.clock[0][1] <= data_us <= m.clock[-1][1]:
        return None
    return _interpolate([(d, t) for t, d in m.clock], data_us)


_encoder = msgspec.json.Encoder(order="sorted")


def params_dict(params: KeeperParams) -> dict[str, Any]:
    """The params as plain JSON-able values (decimals as strings)."""
    out: dict[str, Any] = msgspec.to_builtins(params)
    return out


ADDED_LATER: dict[str, Any] = {"sizing": "least", "first_chunk": 16}
"""Params added after runs were recorded, with the value their absence means: hashed only when
they differ from it, so a manifest written before a field existed keeps its hash."""


def _hashed(params: KeeperParams) -> dict[str, Any]:
    out = params_dict(params)
    for key, absent in ADDED_LATER.items():
        if out.get(key) == absent:
            del out[key]
    return out


def config_hash(params: KeeperParams) -> str:
    """SHA-256 (hex) of the params' canonical JSON (``ADDED_LATER`` at their old value left out)."""
    return hashlib.sha256(_encoder.encode(_hashed(params))).hexdigest()


NamedParams = tuple[str, KeeperParams]
"""(core name, params): the core name is its projector's and snapshot's name."""


def core_name(params: KeeperParams) -> str:
    """The daemon's name for the core of these params (its projector and snapshot name)."""
    return f"keeper-{params.profile}"


def _named(params: KeeperParams | Sequence[NamedParams]) -> list[NamedParams]:
    if isinstance(params, KeeperParams):
        return [(core_name(params), params)]
    out = list(params)
    if not out:
        raise ValueError("a run has at least one keeper core")
    return out


def run_hash(params: KeeperParams | Sequence[NamedParams]) -> str:
    """The run's config hash: ``config_hash`` of a single core's params, else the SHA-256 of
    the list of ``{name, params}``."""
    named = _named(params)
    if len(named) == 1:
        return config_hash(named[0][1])
    doc = [{"name": n, "params": _hashed(p)} for n, p in named]
    return hashlib.sha256(_encoder.encode(doc)).hexdigest()


def convert_params(raw: dict[str, Any], overrides: dict[str, Any]) -> KeeperParams:
    """``KeeperParams`` from plain values with ``overrides`` (not None) applied, lax about
    strings (``"3"`` for an int, as typed on a command line); unknown keys are rejected."""
    raw = dict(raw)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(raw, KeeperParams, strict=False)


def params_from(manifest: RunManifest, **overrides: Any) -> KeeperParams:
    """The manifest's (first core's) params with ``overrides`` (not None) applied; unknown keys
    are rejected."""
    return convert_params(manifest.params, overrides)


def cores_from(manifest: RunManifest, **overrides: Any) -> list[NamedParams]:
    """Every core of the run, in order, each with ``overrides`` (not None) applied. A manifest
    without ``cores`` (one core) gives its ``params`` under ``core_name``."""
    if not manifest.cores:
        p = params_from(manifest, **overrides)
        return [(core_name(p), p)]
    return [(c.name, convert_params(c.params, overrides)) for c in manifest.cores]


def _specs(named: Sequence[NamedParams]) -> list[CoreSpec]:
    return [CoreSpec(name=n, params=params_dict(p), config_hash=config_hash(p)) for n, p in named]


def live_manifest(params: KeeperParams | Sequence[NamedParams], *, source: str = "",
                  first: str | None = None, last: str | None = None, entries: int = 0,
                  decisions: int = 0, status: str = "", started_us: int | None = None,
                  stopped_us: int | None = None, config_files: Sequence[str] = ()) -> RunManifest:
    """A live run's manifest: one core's params, or every ``(name, params)`` core of the run."""
    named = _named(params)
    return RunManifest(kind="live", config_hash=run_hash(named), params=params_dict(named[0][1]),
                       cores=_specs(named), source=source, log_first=first, log_last=last,
                       entries=entries, decisions=decisions, status=status, started_us=started_us,
                       stopped_us=stopped_us, config_files=list(config_files))


def replay_manifest(params: KeeperParams | Sequence[NamedParams], *, live: RunManifest | None,
                    source: str, first: str | None, last: str | None, entries: int, decisions: int,
                    verified: str | None = None, divergences: int | None = None) -> RunManifest:
    """A replay's manifest, naming the live run it reproduced (when its manifest was found)."""
    named = _named(params)
    h = run_hash(named)
    return RunManifest(
        kind="replay", config_hash=h, params=params_dict(named[0][1]), cores=_specs(named),
        source=source, log_first=first, log_last=last, entries=entries, decisions=decisions,
        reproduces=live.config_hash if live is not None else None,
        same_config=(live.config_hash == h) if live is not None else None,
        verified=verified, divergences=divergences)


def encode_manifest(m: RunManifest) -> bytes:
    return _encoder.encode(m)


def decode_manifest(data: bytes | str) -> RunManifest:
    return msgspec.json.decode(data, type=RunManifest)


def manifest_path(export: Path) -> Path:
    """Where the manifest of an NDJSON export lives: beside it, ``<name>.manifest.json``."""
    return export.with_name(export.name + MANIFEST_SUFFIX)


def write_file(path: Path, m: RunManifest) -> None:
    """Write atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(encode_manifest(m) + b"\n")
    tmp.replace(path)


def read_file(path: Path) -> RunManifest | None:
    """The manifest at ``path``, or None when there is none. ``ConfigError`` naming the file
    when it is not a manifest, or is past ``keeper.jsonlimits``' size or nesting limit."""
    if not path.is_file():
        return None
    data = read_capped(path, MAX_DOCUMENT_BYTES)
    why = problem(data, max_bytes=MAX_DOCUMENT_BYTES)
    if why is not None:
        raise ConfigError(f"{path}: {why}")
    try:
        return decode_manifest(data)
    except msgspec.MsgspecError as exc:
        raise ConfigError(f"{path}: not a run manifest: {exc}") from None


def redis_key(shard: str = "0", prefix: str = "keeper") -> str:
    """The hash holding a shard's manifest (same hash slot as its log)."""
    return f"{prefix}:{{{shard}}}:manifest"


async def write_redis(client: Any, m: RunManifest, *, shard: str = "0", prefix: str = "keeper") -> None:
    """Store ``m`` in the shard's manifest hash: the whole record in ``json``, and the fields an
    operator looks for (``kind``, ``config_hash``, ``keeper_version``, range) readable by
    ``redis-cli HGETALL``."""
    fields = {"json": encode_manifest(m), "kind": m.kind, "config_hash": m.config_hash,
              "keeper_version": m.keeper_version, "log_first": m.log_first or "",
              "log_last": m.log_last or ""}
    await client.hset(redis_key(shard, prefix), mapping=fields)


async def read_redis(client: Any, *, shard: str = "0", prefix: str = "keeper") -> RunManifest | None:
    raw = await client.hget(redis_key(shard, prefix), "json")
    return None if raw is None else decode_manifest(raw)
