"""Redis Cluster on the client side: ``redis+cluster://`` URLs, and a raw connection to the
primary that owns one hash slot (a shard's), re-resolved when the slot moves or its node fails.

URL: ``redis+cluster://[user:password@]host:port[,host:port...]``: any of the nodes as seeds
(one live seed is enough; the client learns the rest). TLS (``rediss+cluster``) and ``db`` are
not supported (a cluster has only db 0).

``SlotConnection`` speaks ``keeper.store.fastpath.RawRedis``'s ``call``/``pipeline``/``close``
to whichever primary owns its key's slot, so the log's hot paths (the append script, XREAD)
keep the hiredis pipelined connection on a cluster. Contract:

- The owner is taken from the cluster client's slot map (``RedisCluster``, which follows
  MOVED/ASK and refreshes its map after failovers). Resolving it first sends ``EXISTS key``
  through that client, so its map is fresh where it matters.
- A ``MOVED`` reply means the command did not run: the connection goes to the named node and
  the command is sent there once more. ``ASK``/``TRYAGAIN`` (the slot is being migrated) are
  raised as they are (the log waits them out: ``LogUnavailable``).
- A connection error (the primary died) is raised; the next call resolves the owner again,
  so after the failover (a replica promoted) calls go to the new primary. Until the cluster
  has promoted it, calls fail (connection refused, or ``CLUSTERDOWN``): waited out by callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from keeper.errors import LogError
from keeper.store.fastpath import RawRedis, ReplyError

__all__ = ["CLUSTER_SCHEMES", "RedisClient", "SlotConnection", "is_cluster_url", "make_cluster_client",
           "parse_cluster_url"]

CLUSTER_SCHEMES = ("redis+cluster",)

RedisClient = redis.asyncio.Redis | RedisCluster
"""A client of one Redis or of a Redis Cluster: key-based commands behave the same."""


def is_cluster_url(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return bool(url) and urlsplit(url or "").scheme in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """``redis+cluster://[user:pass@]h1:p1,h2:p2`` -> (seeds, username, password)."""
    u = urlsplit(url)
    if u.scheme not in CLUSTER_SCHEMES:
        raise LogError(f"not a cluster URL (redis+cluster://host:port,...): {u.scheme}://...")
    creds, _, hosts = u.netloc.rpartition("@")
    user, _, password = creds.partition(":")
    if u.path.strip("/") not in ("", "0") or u.query:
        raise LogError("a cluster URL takes no database and no options: redis+cluster://host:port,...")
    seeds = []
    for h in hosts.split(","):
        host, _, port = h.strip().rpartition(":")
        if not host or not port.isdigit():
            raise LogError(f"bad node {h!r} in cluster URL: expected host:port")
        seeds.append((host.strip("[]"), int(port)))
    return seeds, unquote(user) or None, unquote(password) or None


def make_cluster_client(url: str, *, socket_timeout: float) -> RedisCluster:
    """A binary (non-decoding) asyncio cluster client for a ``redis+cluster://`` URL."""
    seeds, user, password = parse_cluster_url(url)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds], username=user,
                        password=password, decode_responses=False, socket_timeout=socket_timeout,
                        socket_connect_timeout=5.0)


def _moved_to(exc: ReplyError) -> tuple[str, int] | None:
    """``MOVED <slot> <host>:<port>`` -> (host, port)."""
    parts = str(exc).split()
    if len(parts) == 3 and parts[0] == "MOVED":
        host, _, port = parts[2].rpartition(":")
        return host, int(port)
    return None


class SlotConnection:
    """A raw connection to the primary owning ``key``'s slot; see the module docstring."""

    def __init__(self, client: RedisCluster, key: str, *, timeout: float = 30.0) -> None:
        self.client = client
        self.key = key
        self.slot = key_slot(key.encode())
        self.timeout = timeout
        self.resolutions = 0
        """How many times the owner was looked up (1 at start, +1 per failover or move)."""
        self._raw: RawRedis | None = None
        self._stale = True

    @property
    def address(self) -> tuple[str, int] | None:
        """The node the connection goes to now (None before the first call)."""
        return None if self._raw is None else (self._raw.host, self._raw.port)

    async def _connect_to(self, host: str, port: int) -> RawRedis:
        if self._raw is not None and (self._raw.host, self._raw.port) == (host, port):
            return self._raw
        if self._raw is not None:
            await self._raw.close()
        kw = self.client.get_connection_kwargs()
        self._raw = RawRedis(host, port, username=kw.get("username"), password=kw.get("password"),
                             timeout=self.timeout)
        return self._raw

    async def _owner(self) -> RawRedis:
        if self._raw is not None and not self._stale:
            return self._raw
        await self.client.exists(self.key)  # the client follows MOVED / refreshes after failover
        node = self.client.get_node_from_key(self.key)
        if node is None:
            raise ConnectionError(f"no node serves slot {self.slot}")
        self.resolutions += 1
        raw = await self._connect_to(node.host, int(node.port))
        self._stale = False
        return raw

    async def _redirected(self, exc: ReplyError) -> RawRedis:
        """The connection to the node a MOVED reply names; re-raise anything else."""
        to = _moved_to(exc)
        if to is None:
            raise exc
        self.resolutions += 1
        return await self._connect_to(*to)

    async def call(self, *args: Any) -> Any:
        """One command on the slot's primary (``RawRedis.call``'s contract)."""
        raw = await self._owner()
        try:
            try:
                return await raw.call(*args)
            except ReplyError as exc:
                raw = await self._redirected(exc)
            return await raw.call(*args)
        except (OSError, TimeoutError):  # ConnectionError is an OSError
            self._stale = True
            raise

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Several commands on one connection to the slot's primary (``RawRedis.pipeline``);
        a MOVED for the first command sends them all again to the named node."""
        raw = await self._owner()
        try:
            replies = await raw.pipeline(commands)
            first = replies[0] if replies else None
            if isinstance(first, ReplyError) and _moved_to(first) is not None:
                raw = await self._redirected(first)
                replies = await raw.pipeline(commands)
            return replies
        except (OSError, TimeoutError):
            self._stale = True
            raise

    async def close(self) -> None:
        if self._raw is not None:
            await self._raw.close()
