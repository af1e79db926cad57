"""``--shard N|all`` of ``keeper replay`` and ``keeper log``: which shards a command goes over, and
where a sharded export's files are.

``shards_of(shard, shards)``: ``["N"]`` for one shard; for ``all``, ``0`` .. ``S-1`` where ``S``
is ``--shards`` or else ``[keeper] shards`` of the configuration (``--config`` or the
environment's ``KEEPER_KEEPER__SHARDS``; 1, the default, means just ``0``). A sharded export is a
folder with one file a shard, ``shard-<N>.ndjson.gz`` (each with its run manifest beside it when
the shard has one); ``exports_in(folder)`` finds them, in shard order.
"""

from __future__ import annotations

import re
from pathlib import Path

from keeper.errors import ConfigError

__all__ = ["ALL", "export_file", "exports_in", "shards_of"]

ALL = "all"

_EXPORT = re.compile(r"^shard-(\d+)\.ndjson(\.gz)?$")


def shards_of(shard: str, shards: int | None = None, config: Path | None = None) -> list[str]:
    """The shard names ``--shard`` means (module docstring); ``ConfigError`` for a shard that is
    neither a number nor ``all``, or a shard count below 1."""
    if shard != ALL:
        if not shard.isdigit():
            raise ConfigError(f"--shard: {shard!r} is not a shard (a number, or all)")
        return [shard]
    if shards is None:
        from keeper.app.config import load_config

        shards = load_config(config, register_secrets=False).keeper.shards
    if shards < 1:
        raise ConfigError(f"--shards: {shards} (at least 1)")
    return [str(s) for s in range(shards)]


def export_file(folder: Path, shard: str) -> Path:
    """The file of ``shard`` in a sharded export ``folder``."""
    return folder / f"shard-{shard}.ndjson.gz"


def exports_in(folder: Path) -> list[tuple[str, Path]]:
    """``(shard, file)`` of a sharded export folder, in shard order; ``ConfigError`` when it is
    not a folder or holds no shard's file."""
    if not folder.is_dir():
        raise ConfigError(f"--ndjson {folder}: with --shard all, give the folder of a sharded "
                          "export (keeper log --shard all export DIR)")
    found = [(m.group(1), p) for p in folder.iterdir() if (m := _EXPORT.match(p.name))]
    if not found:
        raise ConfigError(f"--ndjson {folder}: no shard-<N>.ndjson(.gz) file in it")
    return sorted(found, key=lambda sp: int(sp[0]))
