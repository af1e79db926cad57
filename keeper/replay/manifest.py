"""The run manifest: what configuration ran over which part of the log, so a replay can say
what it reproduced.

A live run writes one (``kind="live"``) into the ``{prefix}:{shard}:manifest`` hash next to its
log, or into a file beside an NDJSON export (``<export>.manifest.json``). A replay reads it to
take the live run's ``KeeperParams`` (unless a parameter is deliberately overridden: that is how
an upgrade or a what-if is checked) and writes its own (``kind="replay"``) stating the range it
covered, the config hash it ran with, whether that equals the live run's, and the verify result.

``config_hash`` is the SHA-256 of the params' canonical JSON (keys sorted), so two runs with the
same parameters have the same hash whatever produced them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec

from keeper import __version__
from keeper.domain.decide import KeeperParams

MANIFEST_SUFFIX = ".manifest.json"


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


_encoder = msgspec.json.Encoder(order="sorted")


def params_dict(params: KeeperParams) -> dict[str, Any]:
    """The params as plain JSON-able values (decimals as strings)."""
    out: dict[str, Any] = msgspec.to_builtins(params)
    return out


def config_hash(params: KeeperParams) -> str:
    """SHA-256 (hex) of the params' canonical JSON."""
    return hashlib.sha256(_encoder.encode(params_dict(params))).hexdigest()


def params_from(manifest: RunManifest, **overrides: Any) -> KeeperParams:
    """The manifest's params with ``overrides`` (not None) applied; unknown keys are rejected."""
    raw = dict(manifest.params)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(raw, KeeperParams, strict=False)


def live_manifest(params: KeeperParams, *, source: str = "", first: str | None = None,
                  last: str | None = None, entries: int = 0, decisions: int = 0) -> RunManifest:
    """A live run's manifest."""
    return RunManifest(kind="live", config_hash=config_hash(params), params=params_dict(params),
                       source=source, log_first=first, log_last=last, entries=entries,
                       decisions=decisions)


def replay_manifest(params: KeeperParams, *, live: RunManifest | None, source: str,
                    first: str | None, last: str | None, entries: int, decisions: int,
                    verified: str | None = None, divergences: int | None = None) -> RunManifest:
    """A replay's manifest, naming the live run it reproduced (when its manifest was found)."""
    h = config_hash(params)
    return RunManifest(
        kind="replay", config_hash=h, params=params_dict(params), source=source, log_first=first,
        log_last=last, entries=entries, decisions=decisions,
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
    """The manifest at ``path``, or None when there is none."""
    if not path.is_file():
        return None
    return decode_manifest(path.read_bytes())


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
