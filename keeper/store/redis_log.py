"""The event log on Redis Streams (implements ``keeper.ports.EventLog``).

Keys of one shard (all in the ``{shard}`` hash slot)::

    {prefix}:{shard}:log     the stream; one field ``e`` = the event's JSON payload
    {prefix}:{shard}:ids     set of the event ids of the dedup window (the dedup index)
    {prefix}:{shard}:seq     sequenced sources' high-water marks (``keeper.store.dedup``: what
                             the index guarantees, per kind of event)
    {prefix}:{shard}:dead    dead-letter stream (source, reason, detail, payload, ref)
    {prefix}:{shard}:deadref set of log entry ids already dead-lettered (dead-letter once)
    {prefix}:{shard}:repl    a counter each replicated append (``wait_replicas``) increments

On a Redis Cluster (``connect("redis+cluster://host:port,...")``, ``keeper.store.slotconn``)
the shard is one hash slot: the scripts keep their atomicity, redis-py's ``RedisCluster`` runs
every other command (following MOVED/ASK and failovers), and the hot paths go over a raw
connection to the slot's primary (``SlotConnection``), looked up again after a failover or a
move. Any number of shards share a cluster, each its own slot (``{0}``, ``{1}``, ...).

Durability: Redis replicates asynchronously, so an append acknowledged by a primary that dies
before its replica has it is lost when the replica is promoted (and from one Redis, by the
AOF's fsync policy). ``wait_replicas=n`` (per log or per ``append``) sends, on the connection
of the append, an ``INCR`` of ``repl`` and ``WAIT n timeout``: the call returns only once ``n``
replicas hold everything the primary had when it ran (the increment makes that so even when
the append was all duplicates, a retry of an append whose reply was lost), else it raises
``LogNotReplicated`` (the entries may be on the primary only: append again, the same ids are
dropped as duplicates, and the new ``WAIT`` covers the old entries). Redis' automatic failover
promotes the replica with the most data first, so with one replica a primary (or ``n`` = all
of them) the promoted replica holds every replicated append; a forced failover (``CLUSTER
FAILOVER TAKEOVER``) to a replica without it would lose it.

``append`` runs one Lua script per batch (``scripts.APPEND``: a bulk SMISMEMBER/SADD on ``ids``,
then ``XADD`` for each new event), so a retried producer (or the same id twice in one batch) adds
the event once, and no other client sees half a batch. ``keeper.store.retention`` bounds the
log, ``ids`` (to a time window) and the dead letters. Reads decode with
``keeper.domain.codec.decode``; an entry that fails is copied to the dead-letter stream with its
reason (once per entry), counted in ``stats`` and logged, and skipped: readers never crash on
bad input and never lose good input.

Fencing (``keeper.store.leases``): an append given a ``fence`` (per call, or the log's
``fence`` attribute, which covers every append of whoever holds the log: the projector's
intents, the runner's outcomes) runs ``scripts.FENCED_APPEND``: unless the shard's lease is
still that grant, nothing is written and ``LeaseLost`` is raised. Without one (the default, one
Redis) an append is exactly the unfenced script, as before.

Blocking reads (``block_ms``) hold the connection: give a blocking reader its own client, and
keep ``block_ms`` below the client's ``socket_timeout`` (``connect`` sets 30 s; redis-py's
default is 5 s). redis-py errors are wrapped: connection/timeout -> ``LogUnavailable``, anything
else -> ``LogError``, with the original as ``__cause__``.

Hot paths: a log made by ``connect`` (or with ``fast=True``; on a cluster always) sends
``append`` and non-blocking reads over its own raw pipelined connection
(``keeper.store.fastpath``: hiredis packing and parsing, several batches in flight), which
``close`` closes. Errors there are wrapped the same
way (connection/timeout -> ``LogUnavailable``, an error reply -> ``LogError``). Blocking reads,
consumer groups and everything else go through the redis-py client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import redis.asyncio
import redis.exceptions
import structlog
from redis.asyncio.cluster import RedisCluster

from keeper.domain.codec import encode
from keeper.domain.events import Event
from keeper.errors import LogNotReplicated
from keeper.ports import DeadLetter, LogEntry
from keeper.store import health, scripts
from keeper.store.dedup import SEQUENCED_SOURCES, DedupIndex
from keeper.store.entries import READ_SOURCE, event_id_of, split_decoded
from keeper.store.fastpath import RawRedis, ReplyError
from keeper.store.leases import Fence
from keeper.store.redis_io import (
    SOCKET_TIMEOUT_S,
    as_str,
    classify_reply,
    make_client,
    raw_entries,
    raw_from_client,
    raw_reply_entries,
    wrap_errors,
)
from keeper.store.slotconn import RedisClient, SlotConnection, is_cluster_url, make_cluster_client

__all__ = ["SOCKET_TIMEOUT_S", "RedisEventLog", "classify_reply", "make_client", "wrap_errors"]

log = structlog.get_logger()

class RedisEventLog:
    """One shard's log. See the module docstring for keys and guarantees."""

    def __init__(self, client: RedisClient, *, shard: str = "0", prefix: str = "keeper",
                 owns_client: bool = False, fast: bool | None = None, url: str | None = None,
                 sequenced: Sequence[str] = SEQUENCED_SOURCES, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000) -> None:
        """``fast`` (default: ``owns_client``) sends appends and non-blocking reads over a raw
        connection of the log's own, made from ``url`` or the client's connection settings;
        call ``close`` to close it. Without a usable address (TLS, unusual options) it stays off.
        A ``RedisCluster`` client always gets one (to the shard slot's primary; ``fast`` is
        ignored): a replicated append's ``WAIT`` must follow the append on its connection.
        ``sequenced``: id prefixes of sources numbered in order (``keeper.store.dedup``).
        ``wait_replicas``/``wait_timeout_ms``: the default of ``append``'s (module docstring).
        """
        self.client = client
        self.shard = shard
        tag = f"{prefix}:{{{shard}}}"
        self.key = f"{tag}:log"
        self.ids_key = f"{tag}:ids"
        self.dead_key = f"{tag}:dead"
        self.deadref_key = f"{tag}:deadref"
        self.repl_key = f"{tag}:repl"
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.fence: Fence | None = None
        """The default fence of ``append`` (module docstring): set by the shard's lease holder."""
        self.dedup = DedupIndex(tag, sequenced=sequenced)
        self.stats: Counter[str] = Counter()
        self._owns = owns_client
        self._append = client.register_script(scripts.APPEND)
        self._fenced_append = client.register_script(scripts.FENCED_APPEND)
        self._import = client.register_script(scripts.IMPORT)
        self._dead = client.register_script(scripts.DEAD_LETTER)
        self._group_start: dict[str, str] = {}
        self._log = log.bind(shard=shard, stream=self.key)
        self._append_sha = scripts.sha1(scripts.APPEND)
        self._fenced_sha = scripts.sha1(scripts.FENCED_APPEND)
        self._raw: RawRedis | SlotConnection | None = None
        if isinstance(client, RedisCluster):
            self._raw = SlotConnection(client, self.key)
        elif fast if fast is not None else owns_client:
            self._raw = RawRedis.from_url(url) if url else raw_from_client(client)

    @classmethod
    async def connect(cls, url: str, *, shard: str = "0", prefix: str = "keeper",
                      wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> RedisEventLog:
        """A log on its own client (``socket_timeout`` 30 s), checked with PING; ``close`` closes it.

        ``url``: ``redis://``, ``rediss://``, ``unix://``, or ``redis+cluster://host:port,...``
        for a Redis Cluster (``keeper.store.slotconn``: any live node is enough as a seed; the
        client is then redis-py's ``RedisCluster``, checked by loading the slot map).
        """
        if is_cluster_url(url):
            cluster = make_cluster_client(url, socket_timeout=SOCKET_TIMEOUT_S)
            async with wrap_errors("connect"):
                try:
                    await cluster.initialize()
                except BaseException:
                    await cluster.aclose()
                    raise
            return cls(cluster, shard=shard, prefix=prefix, owns_client=True,
                       wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)
        client = make_client(url)
        async with wrap_errors("connect"):
            try:
                await client.ping()
            except BaseException:
                await client.aclose()
                raise
        return cls(client, shard=shard, prefix=prefix, owns_client=True, url=url,
                   wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)

    async def close(self) -> None:
        """Close the raw connection, and the client if this log made it (``connect``); a
        passed-in client is the caller's."""
        if self._raw is not None:
            await self._raw.close()
        if self._owns:
            await self.client.aclose()

    # ------------------------------------------------------------------ append

    async def append(self, events: Sequence[Event], *, wait_replicas: int | None = None,
                     fence: Fence | None = None) -> list[str | None]:
        """Append atomically, dropping events whose ``event_id`` is already in the log.

        ``wait_replicas`` (default: the log's) > 0: return only once that many replicas hold the
        append, else raise ``LogNotReplicated`` (module docstring, *Durability*). ``fence``
        (default: the log's ``fence``): write only while the shard's lease is that grant, else
        write nothing and raise ``LeaseLost``."""
        return await self.append_encoded([(e.event_id, encode(e)) for e in events],
                                         wait_replicas=wait_replicas, fence=fence)

    async def append_encoded(self, items: Sequence[tuple[str, bytes]], *,
                             wait_replicas: int | None = None, fence: Fence | None = None
                             ) -> list[str | None]:
        """``append`` for pre-encoded ``(event_id, payload)`` pairs (the payload is not checked)."""
        if not items:
            return []
        ids = [event_id for event_id, _ in items]
        args = self.dedup.sequenced_args(ids)
        args += ids
        args += [payload for _, payload in items]
        replicas = self.wait_replicas if wait_replicas is None else wait_replicas
        fence = self.fence if fence is None else fence
        keys = [self.key, self.ids_key, self.dedup.seq_key]
        script, sha, source = self._append, self._append_sha, scripts.APPEND
        if fence is not None:
            keys.append(fence.key)
            args.append(fence.value)
            script, sha, source = self._fenced_append, self._fenced_sha, scripts.FENCED_APPEND
        acked = 0
        async with wrap_errors("append"):
            if replicas > 0:
                res, acked = await self._append_waited(keys, args, replicas, sha, source)
            elif self._raw is not None:
                res = await self._evalsha_raw(sha, source, keys, args)
            else:
                res = await script(keys=keys, args=args)
        out = [None if r is None else as_str(r) for r in res]
        added = len(out) - out.count(None)
        self.stats["appended"] += added
        self.stats["duplicates"] += len(out) - added
        if acked < replicas:
            self.stats["not_replicated"] += 1
            raise health.REDIS.failed(LogNotReplicated(
                f"append: {acked} of {replicas} replicas acknowledged within "
                f"{self.wait_timeout_ms} ms (the entries may be on the primary only: append again)"))
        return out

    async def _append_waited(self, keys: list[str], args: list[str | bytes], replicas: int,
                             sha: str, source: str) -> tuple[Any, int]:
        """The append script, ``INCR repl`` and ``WAIT`` on one connection: (script's reply,
        replicas that acknowledged)."""
        wait = ("WAIT", replicas, self.wait_timeout_ms)
        if self._raw is None:  # one Redis (a cluster's log always has its raw connection)
            for _ in range(2):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.evalsha(sha, len(keys), *keys, *args)
                    pipe.incr(self.repl_key)
                    pipe.execute_command(*wait)
                    res: list[Any] = await pipe.execute(raise_on_error=False)
                if not isinstance(res[0], redis.exceptions.NoScriptError):
                    break
                await self.client.script_load(source)
            for r in res:
                if isinstance(r, Exception):
                    raise r
            return res[0], int(res[2])
        cmds = [("EVALSHA", sha, len(keys), *keys, *args), ("INCR", self.repl_key),
                wait]
        replies = await self._raw.pipeline(cmds)
        if isinstance(replies[0], ReplyError) and str(replies[0]).startswith("NOSCRIPT"):
            await self._raw.call("SCRIPT", "LOAD", source)
            replies = await self._raw.pipeline(cmds)
        for r in replies:
            if isinstance(r, ReplyError):
                raise r
        return replies[0], int(replies[2])

    async def forget_ids(self, event_ids: Sequence[str]) -> int:
        """Take event ids out of the dedup index (retention, as their entries leave the dedup
        window: ``keeper.store.dedup``); returns how many were in it."""
        n = 0
        async with wrap_errors("forget_ids"):
            for k in range(0, len(event_ids), 1000):
                chunk = event_ids[k:k + 1000]
                if self._raw is not None:
                    n += int(await self._raw.call("SREM", self.ids_key, *chunk))
                else:
                    n += int(await self.client.srem(self.ids_key, *chunk))
        return n

    async def append_raw(self, payloads: Sequence[bytes]) -> list[str]:
        """XADD payloads as they are: no dedup, no validation. For tests and tools only."""
        async with wrap_errors("append_raw"), self.client.pipeline(transaction=True) as pipe:
            for p in payloads:
                pipe.xadd(self.key, {"e": p})
            res = await pipe.execute()
        return [as_str(r) for r in res]

    async def import_entries(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Append ``(entry_id, payload)`` with the given ids (each above the last), indexing event ids."""
        if not items:
            return 0
        args: list[str | bytes] = []
        for entry_id, payload in items:
            args += [entry_id, event_id_of(payload), payload]
        async with wrap_errors("import"):
            n = await self._import(keys=[self.key, self.ids_key], args=args)
        return int(n)

    async def _evalsha_raw(self, sha: str, source: str, keys: list[str], args: list[str | bytes]
                           ) -> Any:
        """EVALSHA on the raw connection; on NOSCRIPT (a restarted or flushed server) load the
        script and retry once."""
        assert self._raw is not None
        try:
            return await self._raw.call("EVALSHA", sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self._raw.call("SCRIPT", "LOAD", source)
        return await self._raw.call("EVALSHA", sha, len(keys), *keys, *args)

    # ------------------------------------------------------------------ read

    async def read_raw(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                       ) -> list[tuple[str, bytes]]:
        """Entries with id > ``after`` as ``(id, payload)``, undecoded, at most ``count``."""
        if block_ms is None and self._raw is not None:
            async with wrap_errors("read"):
                reply: Any = await self._raw.call("XREAD", "COUNT", count, "STREAMS", self.key,
                                                  after)
            return [] if not reply else raw_reply_entries(reply[0][1])
        async with wrap_errors("read"):
            res: Any = await self.client.xread({self.key: after}, count=count, block=block_ms)
        if not res:
            return []
        return raw_entries(res[0][1])

    async def read(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                   ) -> list[LogEntry]:
        """Decoded entries with id > ``after`` in log order; bad ones dead-lettered and skipped.

        May return fewer than ``count`` (or none) when entries were dead-lettered, so the last
        entry returned is not where to continue: a loop reads with ``read_batch``, which also
        returns the last raw id read.
        """
        entries, _ = await self.read_batch(after, count, block_ms)
        return entries

    async def read_batch(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                         ) -> tuple[list[LogEntry], str]:
        """Like ``read``, also returning the id to continue after (the last raw id seen).

        Use this in loops: when a whole batch is bad, ``read`` returns ``[]`` although the log
        goes on; the returned position moves past the bad entries.
        """
        raw = await self.read_raw(after, count, block_ms)
        if not raw:
            return [], after
        good, bad = split_decoded(raw)
        for entry_id, payload, exc in bad:
            await self._dead_letter_entry(entry_id, payload, exc.reason, exc.detail)
        return good, raw[-1][0]

    async def _dead_letter_entry(self, entry_id: str, payload: bytes, reason: str, detail: str) -> None:
        added = await self.dead_letter(READ_SOURCE, reason, detail, payload, ref=entry_id)
        if added:
            self._log.warning("log_entry_dead_lettered", entry_id=entry_id, reason=reason,
                              detail=detail[:200])

    async def last_id(self) -> str:
        """The id of the newest entry, ``"0-0"`` for an empty log."""
        async with wrap_errors("last_id"):
            res: Any = await self.client.xrevrange(self.key, count=1)
        return as_str(res[0][0]) if res else "0-0"

    async def length(self) -> int:
        async with wrap_errors("length"):
            return int(await self.client.xlen(self.key))

    # ------------------------------------------------------------------ dead letters

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes,
                          ref: str = "") -> bool:
        """Record an entry that cannot be accepted. With ``ref`` (a log entry id), only once.

        Returns whether it was recorded (False: ``ref`` was dead-lettered before).
        """
        async with wrap_errors("dead_letter"):
            res = await self._dead(keys=[self.dead_key, self.deadref_key],
                                   args=[source, reason, detail, payload, ref])
        if res is None:
            return False
        self.stats["dead_lettered"] += 1
        self.stats[f"dead_lettered.{reason}"] += 1
        return True

    async def dead_letters(self, count: int = 1000) -> list[DeadLetter]:
        """The oldest ``count`` dead letters; ``DeadLetter.id`` is the dead-letter stream's id."""
        async with wrap_errors("dead_letters"):
            res: Any = await self.client.xrange(self.dead_key, count=count)
        out = []
        for entry_id, f in res:
            out.append(DeadLetter(as_str(entry_id), as_str(f.get(b"source", b"")),
                                  as_str(f.get(b"reason", b"")), as_str(f.get(b"detail", b"")),
                                  f.get(b"payload", b"")))
        return out

    # ------------------------------------------------------------------ consumer groups

    async def ensure_group(self, group: str, start: str = "0") -> None:
        """Create ``group`` (and the stream) if missing; an existing group is left as it is."""
        self._group_start[group] = start
        async with wrap_errors("ensure_group"):
            try:
                await self.client.xgroup_create(self.key, group, id=start, mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _group_call(self, group: str, op: str, fn: Any) -> Any:
        """Run ``fn()``; on NOGROUP (Redis restarted without the group) recreate it once and retry."""
        async with wrap_errors(op):
            try:
                return await fn()
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._log.warning("consumer_group_recreated", group=group, op=op)
                self.stats["groups_recreated"] += 1
                await self.ensure_group(group, self._group_start.get(group, "0"))
                return await fn()

    async def read_group(self, group: str, consumer: str, count: int = 100,
                         block_ms: int | None = None) -> list[LogEntry]:
        """New entries for ``consumer`` (XREADGROUP ``>``); ack them after handling.

        Undecodable entries are dead-lettered and acked here (never delivered, never pending).
        """
        async def call() -> Any:
            return await self.client.xreadgroup(group, consumer, {self.key: ">"}, count=count,
                                                block=block_ms)
        res = await self._group_call(group, "read_group", call)
        if not res:
            return []
        return await self._group_decode(group, raw_entries(res[0][1]))

    async def read_group_raw(self, group: str, consumer: str, count: int = 100
                             ) -> list[tuple[str, bytes]]:
        """New entries for ``consumer`` (XREADGROUP ``>``, never blocking) undecoded, as
        ``(id, payload)``: for a consumer that decodes only the entries it acts on. Ack them
        after handling, as ``read_group``'s (an entry it cannot decode is its to dead-letter).
        Through the raw connection when there is one."""
        async def call() -> list[tuple[str, bytes]]:
            if self._raw is not None:
                try:
                    reply: Any = await self._raw.call("XREADGROUP", "GROUP", group, consumer,
                                                      "COUNT", count, "STREAMS", self.key, ">")
                except ReplyError as exc:  # NOGROUP included: _group_call's to handle
                    raise redis.exceptions.ResponseError(str(exc)) from exc
                return [] if not reply else raw_reply_entries(reply[0][1])
            res: Any = await self.client.xreadgroup(group, consumer, {self.key: ">"}, count=count)
            return [] if not res else raw_entries(res[0][1])
        got: list[tuple[str, bytes]] = await self._group_call(group, "read_group", call)
        return got

    async def read_pending(self, group: str, consumer: str, count: int = 100) -> list[LogEntry]:
        """Every entry delivered to ``consumer`` and not acked yet (its pending list, walked from
        the start ``count`` at a time, at most 10,000 reads); undecodable ones are left out."""
        out: list[LogEntry] = []
        after = "0"
        for _ in range(10_000):  # bounded walk through this consumer's pending list
            async with wrap_errors("read_pending"):
                res: Any = await self.client.xreadgroup(group, consumer, {self.key: after}, count=count)
            raw = [(i.decode() if isinstance(i, bytes) else i, (f or {}).get(b"e", b""))
                   for i, f in (res[0][1] if res else []) if i is not None]
            if not raw:
                break
            good, _bad = split_decoded(raw)
            out += good
            after = raw[-1][0]
        return out

    async def _group_decode(self, group: str, raw: list[tuple[str, bytes]]) -> list[LogEntry]:
        good, bad = split_decoded(raw)
        for entry_id, payload, exc in bad:
            await self._dead_letter_entry(entry_id, payload, exc.reason, exc.detail)
        if bad:
            await self.ack(group, [b[0] for b in bad])
        return good

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with wrap_errors("ack"):
            await self.client.xack(self.key, group, *ids)

    async def claim_stale(self, group: str, consumer: str, min_idle_ms: int, count: int = 100
                          ) -> list[LogEntry]:
        """Take over entries pending longer than ``min_idle_ms`` (a crashed consumer's), XAUTOCLAIM.

        Scans the whole pending list from the start (several XAUTOCLAIM calls) up to ``count``.
        """
        out: list[LogEntry] = []
        start = "0-0"
        for _ in range(1000):  # bounded: each call advances the cursor through the PEL
            async def call(start: str = start, want: int = count - len(out)) -> Any:
                return await self.client.xautoclaim(self.key, group, consumer, min_idle_ms,
                                                    start_id=start, count=want)
            res = await self._group_call(group, "claim_stale", call)
            cursor, entries = as_str(res[0]), res[1]
            out += await self._group_decode(group, raw_entries(entries))
            if cursor == "0-0" or len(out) >= count:
                break
            start = cursor
        if out:
            self._log.info("pending_claimed", group=group, consumer=consumer, n=len(out))
        return out
