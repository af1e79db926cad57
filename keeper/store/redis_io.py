"""Redis as the event log meets it: how an error reply or a failed connection is classified
(``classify_reply``, ``wrap_errors``: unavailable, refused, or an error), the clients the log
makes (``make_client``), and stream entries as ``(id, payload)`` pairs from either client's
replies. ``keeper.store.redis_log`` builds on these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
import redis.exceptions

from keeper.errors import LeaseLost, LogError, LogRefused, LogUnavailable
from keeper.store import health
from keeper.store.fastpath import RawRedis, ReplyError
from keeper.store.slotconn import is_cluster_url

__all__ = ["SOCKET_TIMEOUT_S", "as_str", "classify_reply", "make_client", "raw_entries", "raw_from_client",
           "raw_reply_entries", "wrap_errors"]

SOCKET_TIMEOUT_S = 30.0
"""Socket timeout of clients made by ``connect``: blocking reads must BLOCK for less."""


_UNAVAILABLE_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "ASK", "MOVED")
"""Error replies meaning "not now" (redis-py raises some of these as connection errors too;
ASK and MOVED reach the log only while a cluster's slot moves or fails over)."""
_UNAVAILABLE_TYPES = (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
                      redis.exceptions.AskError)
"""redis-py's classes for some of those (ClusterDownError's text has lost the code)."""
_REFUSED_REPLIES = ("OOM", "READONLY", "MISCONF", "NOREPLICAS")
"""Error replies refusing a write that Redis will take later (``keeper.errors.LogRefused``)."""
_REFUSED_TYPES = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)


def classify_reply(op: str, exc: BaseException) -> LogError:
    """The keeper's error for an error reply of Redis (``op`` names the operation): a fenced
    write refused (``LeaseLost``), refused, unavailable (waited out) or another ``LogError``.
    A script's error reply carries the inner command's error after a prefix, so the text is
    searched, not only its start."""
    text = str(exc)
    head = text.split(" ", 1)[0]
    if head == "LEASELOST":  # a fenced script refused the write (keeper.store.leases)
        return LeaseLost(f"{op}: {text.removeprefix('LEASELOST ')}")
    # redis-py strips the code of the replies it has a class for (OOM, READONLY)
    if isinstance(exc, _REFUSED_TYPES) or head in _REFUSED_REPLIES \
            or "command not allowed when used memory" in text \
            or "-READONLY" in text or "-MISCONF" in text:
        return LogRefused(f"{op}: redis refused the write: {text}")
    if isinstance(exc, _UNAVAILABLE_TYPES) or head in _UNAVAILABLE_REPLIES \
            or text.startswith(_UNAVAILABLE_REPLIES):
        return LogUnavailable(f"{op}: redis unavailable: {text}")
    return LogError(f"{op}: {text}")


@asynccontextmanager
async def wrap_errors(op: str) -> AsyncIterator[None]:
    """Re-raise redis-py (and raw connection) errors as the keeper's own (``op`` names the
    operation), and count them in ``keeper.store.health.REDIS``."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        # BusyLoadingError (LOADING) is a ConnectionError in redis-py
        raise health.REDIS.failed(LogUnavailable(f"{op}: redis unreachable: {exc}")) from exc
    except (redis.exceptions.RedisError, ReplyError) as exc:
        err = classify_reply(op, exc)
        raise (err if isinstance(err, LeaseLost) else health.REDIS.failed(err)) from exc
    except (redis.exceptions.SlotNotCoveredError, redis.exceptions.RedisClusterUnreachableError
            ) as exc:  # a cluster failing over, or none of its nodes answering
        raise health.REDIS.failed(LogUnavailable(f"{op}: redis cluster unavailable: {exc}")) from exc
    except redis.exceptions.RedisClusterException as exc:  # not a RedisError in redis-py
        raise health.REDIS.failed(LogError(f"{op}: {exc}")) from exc
    except (OSError, TimeoutError) as exc:  # the raw connection: ConnectionError is an OSError
        raise health.REDIS.failed(LogUnavailable(f"{op}: redis unreachable: {exc}")) from exc


def make_client(url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S) -> redis.asyncio.Redis:
    """A binary (non-decoding) asyncio client for ``url`` (``redis://`` or ``rediss://``); a
    ``redis+cluster://`` URL is refused with a ``LogError`` (only ``RedisEventLog.connect``
    takes one yet: ``docs/scaling.md``)."""
    if is_cluster_url(url):
        raise LogError("a redis+cluster:// URL: only the event log (RedisEventLog.connect) runs on "
                       "a Redis Cluster yet, not this part of the keeper (docs/scaling.md)")
    return redis.asyncio.Redis.from_url(url, decode_responses=False, socket_timeout=socket_timeout,
                                        socket_connect_timeout=5.0)


def as_str(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def raw_entries(entries: Sequence[Any]) -> list[tuple[str, bytes]]:
    """redis-py's parsed stream entries ``(id, {field: value})`` -> ``(id, payload)``.

    An entry without an ``e`` field (written by something else) yields ``b""``, which then fails
    to decode and is dead-lettered rather than silently ignored.
    """
    out = []
    for entry_id, fields in entries:
        if entry_id is None:  # deleted while pending (XAUTOCLAIM / XREADGROUP of history)
            continue
        out.append((as_str(entry_id), (fields or {}).get(b"e", b"")))
    return out


def raw_reply_entries(entries: list[Any]) -> list[tuple[str, bytes]]:
    """hiredis' XREAD entries ``[id, [field, value, ...]]`` -> ``(id, payload of e)``; an entry
    without ``e`` yields ``b""`` (dead-lettered on decode), as ``raw_entries``."""
    out = []
    for entry_id, fields in entries:
        if fields and fields[0] == b"e":
            out.append((entry_id.decode(), fields[1]))
        else:
            f = fields or []
            payload = next((f[i + 1] for i in range(0, len(f) - 1, 2) if f[i] == b"e"), b"")
            out.append((entry_id.decode(), payload))
    return out


def raw_from_client(client: redis.asyncio.Redis) -> RawRedis | None:
    """A raw connection with the client's address and credentials; None when it uses TLS or a
    credential provider (the raw connection does not speak those)."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    if kw.get("credential_provider") is not None or "ssl" in pool.connection_class.__name__.lower():
        return None
    common: dict[str, Any] = {"username": kw.get("username"), "password": kw.get("password"),
                              "db": int(kw.get("db") or 0)}
    if kw.get("path"):
        return RawRedis(path=str(kw["path"]), **common)
    return RawRedis(str(kw.get("host", "localhost")), int(kw.get("port", 6379)), **common)
