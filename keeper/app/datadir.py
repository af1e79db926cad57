"""The keeper's one data folder, and where each command finds the log.

Every command that reads or writes the log (``keeper run``, ``demo``, ``log``, ``feed play``,
``replay``) uses the same place unless told otherwise: a Redis URL (``--redis-url``, else
``REDIS_URL``), or else the private redis-server it starts on ``<data folder>/redis``, the data
folder being ``.keeper`` (``--data-dir``; ``keeper run``: ``[redis] data_dir``). So ``keeper
log tail`` after ``keeper demo`` or ``keeper run`` reads the log they wrote. Each command says
on stderr, when it starts, which log it uses (a URL with its password shown as ``***``) unless
``--redis-url`` named it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from keeper.errors import ConfigError
from keeper.redaction import mask_password

__all__ = [
    "DEFAULT",
    "DEMO_MARK",
    "SCHEMES",
    "announce",
    "check_redis_url",
    "claim_for_run",
    "fresh_demo_log",
    "redis_dir",
    "require_log",
]

DEFAULT = Path(".keeper")
"""The data folder of every command (``.gitignore`` lists it)."""

SCHEMES = ("redis", "rediss", "unix", "redis+cluster")


def redis_dir(data_dir: Path) -> Path:
    """The embedded redis-server's folder (its AOF) inside a data folder."""
    return data_dir / "redis"


def check_redis_url(url: str, where: str) -> str:
    """``url`` when it is a Redis URL; else ``ConfigError`` naming ``where`` (the flag or the
    variable it came from) and how to write it."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in SCHEMES:
        hint = f"redis://{url}" if not scheme else "redis://host:6379 (rediss:// for TLS)"
        raise ConfigError(f"{where}: {mask_password(url)!r} is not a Redis URL: write {hint}")
    return url


def announce(command: str, url: str | None, data_dir: Path | None, origin: str = "") -> None:
    """One line on stderr: which log the command uses; nothing for a URL given on the command
    line (``origin`` ``--redis-url``: the user just said it)."""
    if url and origin == "--redis-url":
        return
    if url:
        where = f"{mask_password(url)}" + (f" ({origin})" if origin else "")
    else:
        assert data_dir is not None
        where = f"{redis_dir(data_dir)} (a private redis-server in the data folder {data_dir})"
    print(f"keeper {command}: the log: {where}", file=sys.stderr)


def require_log(data_dir: Path) -> None:
    """Refuse, in one line, to read a log from a data folder that holds none (rather than
    start an empty one and print nothing)."""
    if not redis_dir(data_dir).is_dir():
        raise ConfigError(f"--data-dir: no log in {redis_dir(data_dir)} (the folder does not exist): "
                          "run keeper demo or keeper run first, give --data-dir DIR of the run, or "
                          "--redis-url URL")


DEMO_MARK = "written-by-keeper-demo"
"""A file in a log's folder that says ``keeper demo`` wrote that log (and may replace it)."""


def fresh_demo_log(redis: Path) -> None:
    """Empty ``redis`` for a demo's log: a log an earlier demo wrote is replaced; another (a
    ``keeper run``'s, an import) is refused in one line, never deleted."""
    from keeper.store.embedded import running_in

    if running_in(redis) is not None:
        raise ConfigError(f"--data-dir: {redis} is in use by a running keeper (run or demo): stop it, "
                          "or give keeper demo --data-dir DIR")
    if redis.is_dir() and any(redis.iterdir()) and not (redis / DEMO_MARK).exists():
        raise ConfigError(f"--data-dir: {redis} holds a log keeper demo did not write (keeper run's or "
                          f"an import): keep it (keeper log export FILE) and remove {redis}, or give "
                          "keeper demo --data-dir DIR")
    if redis.exists():
        shutil.rmtree(redis)
    redis.mkdir(parents=True)
    (redis / DEMO_MARK).write_text("keeper demo wrote this log; the next keeper demo replaces it\n")


def claim_for_run(redis: Path) -> None:
    """``keeper run`` writes into ``redis``: no later demo may replace that log."""
    (redis / DEMO_MARK).unlink(missing_ok=True)
