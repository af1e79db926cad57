"""Retention: the hot log in Redis holds a bounded window; older entries live in the archive.

One pass (``Retention.run_pass``, ``keeper log archive``, or every ``interval_s`` in the daemon
through ``run_retention``) of one shard, under a lock in Redis (one pass at a time per shard):

1. **Cut.** Entries older than ``hot_window_s`` (by their entry id's time, the log's clock) are
   to go, and so are the oldest beyond ``max_entries`` (0: no cap).
2. **Pins.** Nothing is trimmed that a reader still needs: each projector's snapshot offsets in
   Redis (``{prefix}:{shard}:snap:*``, the current **and** the previous one, which a projector
   falls back to on start), and each consumer group's last-delivered entry and oldest pending
   one. The trim point is the lowest of the cut and the pins. A pin that holds back entries
   older than the hot window is reported (``PassReport.lagging``, a warning in the log): a
   projector that stopped snapshotting, a dead consumer group, a snapshot of a removed profile.
   **The hard cap** (``cap_entries``, 0: off) is the one limit a snapshot does not hold back:
   beyond it the oldest entries go even past a projector's snapshot (archived first, as always),
   so Redis stays bounded when a keeper falls far behind its writers; that projector reads them
   from the archive (``ArchivedLog``, which notices the trim on the read that crosses it) and is
   reported (``PassReport.overrun``). A consumer group still holds: it cannot read an archive.
3. **Archive.** Entries after the archive's high-water mark and below the trim point are
   written to segments (``keeper.store.archive``), fsynced and renamed, before anything is
   trimmed; a trailing segment smaller than ``min_segment_entries`` waits for more entries
   (unless its entries are older than twice the hot window).
4. **Trim.** ``XTRIM key MINID <point>``, the point never above the archive's high-water mark
   as the segment files show it: an entry leaves Redis only once it is in a file.
5. **Dedup.** Sequenced sources' marks are raised through the ids the index holds, then the
   event ids of entries older than ``dedup_window_s`` are removed from the index
   (``keeper.store.dedup``: the guarantee per kind of event). The ids come from where they are
   quickest to read: those this process held while archiving (``keeper.store.recent_ids``), the
   archive (after a restart), or the hot log.
6. **Dead letters.** The dead-letter stream is capped at ``dead_max_entries`` (approximately,
   whole nodes), and ``deadref`` loses the refs of entries no longer in the hot log.

**Rounds.** Writers do not stop while a pass runs: a round that archived at least
``min_segment_entries`` entries is followed by another (``CHASE_ROUNDS`` at most, within
``ARCHIVE_BUDGET``), from step 1 with the clock read again, so a pass ends with the hot log near
its bound instead of the bound plus what arrived while it ran. ``PassReport.absorb`` adds them up.

The shard's retention hash (``{prefix}:{shard}:retention``) records the archive directory (so
``keeper replay`` and ``keeper log export`` find it), the high-water mark, totals and the last
pass. A pass that fails (Redis away, the archive directory unwritable) changes nothing that a
later pass cannot finish: each step is idempotent and starts from what is recorded.

The policy, the pins and the pass report are ``keeper.store.retention_policy``'s, re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog

from keeper.errors import KeeperError, LogError, LogUnavailable
from keeper.store import scripts
from keeper.store.archive import Archive, SegmentWriter, max_deleted, meta_key, trim_log
from keeper.store.entries import parse_id
from keeper.store.recent_ids import RecentIds
from keeper.store.redis_log import RedisEventLog, wrap_errors
from keeper.store.retention_policy import (
    CAP_MIN,
    PassReport,
    Pin,
    Pos,
    RetentionPolicy,
    below,
    event_ids_of,
    fmt,
    succ,
)

__all__ = [
    "ARCHIVE_BUDGET",
    "CAP_MIN",
    "CHASE_ROUNDS",
    "EXPIRE_BUDGET",
    "LOCK_MS",
    "MARK_STEP",
    "NTH_STEP",
    "READ_BATCH",
    "PassReport",
    "Pin",
    "Pos",
    "Retention",
    "RetentionPolicy",
    "below",
    "event_ids_of",
    "fmt",
    "run_retention",
    "succ",
]

log = structlog.get_logger("keeper.retention")

READ_BATCH = 5_000
"""Entries per read while archiving or expiring ids: one XREAD, short enough that the event loop it
shares with the keeper is held only briefly."""
NTH_STEP = 10_000
"""Entries the server walks per call while finding the ``max_entries`` cut."""
MARK_STEP = 1_000
EXPIRE_BUDGET = 5_000_000
"""Ids expired per pass at most (a log upgraded from the unbounded index catches up over passes)."""
ARCHIVE_BUDGET = 2_000_000
"""Entries archived per pass (all its rounds) at most: a pass stays well inside its lock (a long
backlog, a log that never had retention, is worked through over several passes)."""
LOCK_MS = 600_000
CHASE_ROUNDS = 8
"""Rounds of one pass at most: a round that archived at least ``min_segment_entries`` (writers
appended that many while the last round ran) is followed by another, so a pass ends with the hot
log near its bound rather than that bound plus whatever arrived during the pass."""


class Retention:
    """Retention of one shard's log (see the module docstring). ``now_ms``: the log's clock by
    default (Redis ``TIME``), injectable for tests."""

    def __init__(self, lg: RedisEventLog, policy: RetentionPolicy, *,
                 now_ms: Callable[[], int] | None = None) -> None:
        self.log = lg
        self.policy = policy
        tag = lg.key.removesuffix(":log")  # {prefix}:{shard}
        self.meta_key = meta_key(lg)
        self.lock_key = f"{tag}:retention:lock"
        self.snap_pattern = f"{tag}:snap:*"
        self.archive = Archive.of(policy.archive_dir, lg)
        self._now_ms = now_ms
        self._t0 = time.monotonic()
        client = lg.client
        self._nth = client.register_script(scripts.NTH_ID)
        self._raise = client.register_script(scripts.RAISE_MARK)
        self._unlock = client.register_script(scripts.UNLOCK)
        self._budget = ARCHIVE_BUDGET
        self.recent = RecentIds()
        """The event ids of the entries this process archived, until their dedup window ends."""

    async def now_ms(self) -> int:
        if self._now_ms is not None:
            return self._now_ms()
        async with wrap_errors("time"):
            sec, usec = await self.log.client.time()
        return int(sec) * 1000 + int(usec) // 1000

    # ------------------------------------------------------------------ the pass

    async def run_pass(self) -> PassReport:
        """One pass; see the module docstring. Raises ``LogUnavailable`` when Redis is away;
        other failures are in ``PassReport.error`` (and logged)."""
        report = PassReport()
        t0 = self._t0 = time.monotonic()
        token = secrets.token_hex(8)
        async with wrap_errors("retention_lock"):
            got = await self.log.client.set(self.lock_key, token, nx=True, px=LOCK_MS)
        if not got:
            report.skipped = "another retention pass holds the lock"
            return report
        try:
            report.started_ms = now = await self.now_ms()
            self._budget = ARCHIVE_BUDGET
            await self._pass(report, now)
            archived = report.archived
            for _ in range(CHASE_ROUNDS - 1):
                if (not self.policy.trim or archived < self.policy.min_segment_entries
                        or self._budget <= 0):
                    break
                later = PassReport(started_ms=await self.now_ms())
                await self._pass(later, later.started_ms)
                report.absorb(later)
                archived = later.archived
        except LogUnavailable:
            raise
        except (KeeperError, OSError) as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            log.error("retention_failed", error=report.error)
        finally:
            with contextlib.suppress(LogError):
                async with wrap_errors("retention_unlock"):
                    await self._unlock(keys=[self.lock_key], args=[token])
            report.duration_s = time.monotonic() - t0
        return report

    async def _pass(self, r: PassReport, now: int) -> None:
        """One round of the pass at ``now`` (the log's clock)."""
        p = self.policy
        await asyncio.to_thread(self.archive.sweep)
        segs = await asyncio.to_thread(self.archive.segments)
        hwm = parse_id(self.archive.high_water(segs))
        deleted = parse_id(await max_deleted(self.log))
        if deleted > hwm:
            raise LogError(f"the hot log was trimmed up to {fmt(deleted)} but the archive at "
                           f"{self.archive.dir} ends at {fmt(hwm)}: is archive_dir the one this log "
                           f"was archived to? (recorded: {await self._recorded('archive_dir')})")
        cut, why = await self._cut(now)
        cap = await self._nth_cut(p.cap_entries) if p.cap_entries else None
        if cap is not None and cap > cut:
            cut, why = cap, "cap_entries"
        pins = await self.pins()
        point, limited = self._held(cut, why, pins, cap)
        window = (now - int(p.hot_window_s * 1000), 0)
        r.lagging = [str(pin) for pin in pins if pin.bound < window]
        for text in r.lagging:
            log.warning("retention_held_back", pin=text, hot_window_s=p.hot_window_s)
        # the dedup window's expiry usually starts where archiving does: collect its ids on the way
        hwm, complete = await self._archive(hwm, point, now, r)
        r.archived_to, r.archive_entries = fmt(hwm), self.archive.entries()
        if succ(hwm) < point:  # never past the files (with nothing left below ``point``: the same cut)
            point, limited = succ(hwm), (limited if complete else "archive")
        # the pins again, right before trimming: a reader may have appeared during archiving
        pins = await self.pins()
        point, limited = self._held(point, limited, pins, cap)
        r.overrun = [str(pin) for pin in pins if pin.snapshot and pin.bound < point]
        for text in r.overrun:
            log.warning("retention_past_snapshot", pin=text, cap_entries=p.cap_entries)
        r.trim_point, r.limited_by = fmt(point), limited
        trimmed = 0
        if p.trim:  # archive only (``keeper log archive`` without --trim): Redis is left as it is
            xpos = await self._recorded("ids_expired_to") or "0-0"
            dcut = (now - int(p.dedup_window_s * 1000), 0)
            await self._dedup(dcut, deleted, xpos, r)
            if point > (0, 0):
                r.trimmed = trimmed = await trim_log(self.log, fmt(point))
        trimmed_to = parse_id(await max_deleted(self.log))
        r.trimmed_to = fmt(trimmed_to)
        if p.trim:
            await self._dead_letters(trimmed_to, r)
        await self._record(r, trimmed)

    async def _recorded(self, name: str) -> str | None:
        async with wrap_errors("retention_state"):
            v: Any = await self.log.client.hget(self.meta_key, name)
        return None if v is None else v.decode()

    async def _record(self, r: PassReport, trimmed: int) -> None:
        async with wrap_errors("retention_state"):
            info: Any = await self.log.client.info("memory")
            r.used_memory = int(info.get("used_memory", 0))
            r.hot_entries = int(await self.log.client.xlen(self.log.key))
            first: Any = await self.log.client.xrange(self.log.key, count=1)
            r.hot_first = first[0][0].decode() if first else ""
            r.ids_size = int(await self.log.client.scard(self.log.ids_key))
            r.duration_s = time.monotonic() - self._t0
            await self.log.client.hset(self.meta_key, mapping={
                "archive_dir": str(self.archive.root.resolve()), "archived_to": r.archived_to,
                "archive_entries": r.archive_entries, "trimmed_to": r.trimmed_to,
                "last_pass_ms": r.started_ms,
                "last_pass": r.to_json()})
            await self.log.client.hincrby(self.meta_key, "trimmed_entries", trimmed)

    # ------------------------------------------------------------------ cut and pins

    async def _cut(self, now: int) -> tuple[Pos, str]:
        """Where the window would cut (entries below go), and which rule set it."""
        p = self.policy
        cut, why = (now - int(p.hot_window_s * 1000), 0), "hot_window"
        if p.max_entries > 0:
            keep = await self._nth_cut(p.max_entries)
            if keep is not None and keep > cut:
                cut, why = keep, "max_entries"
        return cut, why

    async def _nth_cut(self, entries: int) -> Pos | None:
        """The MINID that leaves the newest ``entries`` entries (None: the log holds no more)."""
        async with wrap_errors("xlen"):
            n = int(await self.log.client.xlen(self.log.key))
        excess = n - entries
        start = "-"
        last: Pos | None = None
        while excess > 0:
            async with wrap_errors("nth_id"):
                got: Any = await self._nth(keys=[self.log.key], args=[start, min(excess, NTH_STEP)])
            if not got[0]:
                break
            last = parse_id(got[0].decode() if isinstance(got[0], bytes) else got[0])
            excess -= int(got[1])
            start = "(" + fmt(last)
        return None if last is None else succ(last)

    @staticmethod
    def _held(point: Pos, limited: str, pins: list[Pin], cap: Pos | None) -> tuple[Pos, str]:
        """``point`` lowered to every pin below it (a snapshot's only down to the hard cap
        ``cap``), and what limits it."""
        for pin in pins:
            bound = max(pin.bound, cap) if pin.snapshot and cap is not None else pin.bound
            if bound < point:
                point, limited = bound, pin.name
        return point, limited

    async def pins(self) -> list[Pin]:
        """What readers still need: snapshots (current and previous offsets) and groups."""
        out: list[Pin] = []
        client: Any = self.log.client
        async with wrap_errors("retention_pins"):
            async for key in client.scan_iter(match=self.snap_pattern, count=100):
                k = key.decode() if isinstance(key, bytes) else key
                cur, prev = await client.hmget(k, "offset", "prev_offset")
                offsets = [parse_id(v.decode()) for v in (cur, prev) if v]
                if offsets:
                    name = "snapshot " + k.rsplit(":", 1)[-1]
                    out.append(Pin(name, succ(min(offsets)), snapshot=True))
            try:
                groups = await client.xinfo_groups(self.log.key)
            except Exception as exc:  # no stream yet
                if "no such key" in str(exc):
                    groups = []
                else:
                    raise
            for g in groups:
                name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
                last = g["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else str(last)
                out.append(Pin(f"group {name}", succ(parse_id(last))))
                if int(g.get("pending", 0)):
                    summary = await client.xpending(self.log.key, name)
                    low = summary.get("min")
                    if low:
                        low = low.decode() if isinstance(low, bytes) else str(low)
                        out.append(Pin(f"group {name} (pending)", parse_id(low)))
        return out

    # ------------------------------------------------------------------ archive

    async def _archive(self, hwm: Pos, point: Pos, now: int, r: PassReport) -> tuple[Pos, bool]:
        """Archive the entries after ``hwm`` below ``point``; returns the new high-water mark and
        whether every entry below ``point`` is archived now. The event ids of the entries read
        are held (``recent``) for their expiry from the dedup index, when this pass trims."""
        p = self.policy
        writer = SegmentWriter(self.archive, max_entries=p.segment_entries)
        after = fmt(hwm)
        done = False
        try:
            while not done and self._budget > 0:
                raw = await self.log.read_raw(after, min(READ_BATCH, self._budget))
                if not raw:
                    done = True
                    break
                keep = below(raw, point)
                done = len(keep) < len(raw)
                if not keep:
                    done = True
                    break
                if p.trim:
                    self.recent.add(after, keep)
                await asyncio.to_thread(writer.add, keep)
                after = keep[-1][0]
                self._budget -= len(keep)
            old = (now - 2 * int(p.hot_window_s * 1000), 0)
            complete = done  # else the budget stopped it
            if writer.count >= p.min_segment_entries or (writer.count and parse_id(writer.first) < old):
                await asyncio.to_thread(writer.seal)
            elif writer.count:
                complete = False
                await asyncio.to_thread(writer.abort)
        except BaseException:
            await asyncio.to_thread(writer.abort)
            raise
        for seg in writer.sealed:
            r.archived += seg.count
            r.segments.append(seg.path.name)
            hwm = max(hwm, seg.last_key)
        if writer.sealed:
            async with wrap_errors("retention_state"):
                await self.log.client.hset(self.meta_key, "archived_to", fmt(hwm))
            log.info("archived", entries=r.archived, segments=len(writer.sealed), archived_to=fmt(hwm))
        return hwm, complete

    # ------------------------------------------------------------------ dedup index

    async def _dedup(self, cut: Pos, trimmed: Pos, pos: str, r: PassReport) -> None:
        """Raise the sequenced marks, then forget the ids of entries older than the window
        (``cut``) after ``pos``, from where each is quickest to read: the archive up to where
        the ids this process holds begin (``recent``; the archive only after a restart, or
        past what it holds), then those held, then the hot log."""
        for prefix in await self._sources():
            r.marks[prefix] = await self.raise_mark(prefix)
        expired = 0
        self.recent.drop_through(pos)
        stop = min(cut, succ(trimmed))
        if self.recent.start is not None:
            stop = min(stop, succ(parse_id(self.recent.start)))
        if parse_id(pos) < trimmed and succ(parse_id(pos)) < stop:
            chunks = self.archive.event_ids(pos, stop)
            while expired < EXPIRE_BUDGET:
                got = await asyncio.to_thread(next, chunks, None)
                if got is None:
                    break
                ids, pos = got
                await self.log.forget_ids(ids)
                expired += len(ids)
        if self.recent.start is not None and parse_id(self.recent.start) == parse_id(pos):
            ids, last, n = self.recent.take_below(cut, EXPIRE_BUDGET - expired)
            if n:
                await self.log.forget_ids(ids)
                expired += n
                pos = last
        while expired < EXPIRE_BUDGET and parse_id(pos) >= trimmed:
            raw = await self.log.read_raw(pos, READ_BATCH)
            keep = below(raw, cut)
            if keep:
                ids = event_ids_of([payload for _, payload in keep])
                await self.log.forget_ids(ids)
                expired += len(keep)
                pos = keep[-1][0]
            if len(keep) < len(raw) or not raw:
                break
        r.ids_expired, r.ids_expired_to = expired, pos
        async with wrap_errors("retention_state"):
            await self.log.client.hset(self.meta_key, "ids_expired_to", pos)

    async def _sources(self) -> list[str]:
        async with wrap_errors("retention_marks"):
            fields: Any = await self.log.client.hkeys(self.log.dedup.seq_key)
        known = {f.decode() if isinstance(f, bytes) else str(f) for f in fields}
        return sorted(known | set(self.log.dedup.sequenced))

    async def raise_mark(self, prefix: str) -> int:
        """Raise ``prefix``'s contiguous high-water mark through the ids the index holds."""
        client: Any = self.log.client
        async with wrap_errors("retention_marks"):
            raw = await client.hget(self.log.dedup.seq_key, prefix)
            start = c = int(raw) if raw is not None else 0
            while True:
                cands = [f"{prefix}{c + i}" for i in range(1, MARK_STEP + 1)]
                found = await client.smismember(self.log.ids_key, cands)
                run = next((i for i, f in enumerate(found) if not f), len(found))
                c += run
                if run < len(found):
                    break
            if c > start:
                await self._raise(keys=[self.log.dedup.seq_key], args=[prefix, c])
        return c

    # ------------------------------------------------------------------ dead letters

    async def _dead_letters(self, trimmed_to: Pos, r: PassReport) -> None:
        client: Any = self.log.client
        async with wrap_errors("retention_dead"):
            r.dead_trimmed = int(await client.xtrim(self.log.dead_key, maxlen=self.policy.dead_max_entries,
                                                    approximate=True))
            if trimmed_to == (0, 0):
                return
            gone: list[bytes] = []
            async for ref in client.sscan_iter(self.log.deadref_key, count=1000):
                with contextlib.suppress(ValueError):
                    if parse_id(ref.decode()) <= trimmed_to:
                        gone.append(ref)
            for k in range(0, len(gone), 1000):
                r.deadrefs_removed += int(await client.srem(self.log.deadref_key, *gone[k:k + 1000]))


async def run_retention(lg: RedisEventLog, policy: RetentionPolicy, stop: asyncio.Event,
                        on_pass: Callable[[PassReport], None] | None = None) -> None:
    """The daemon's schedule: a pass every ``policy.interval_s`` until ``stop`` is set (a pass
    in progress finishes first). Never raises for Redis being away or a failed pass: it logs,
    hands the report (``error`` set) to ``on_pass`` and tries again next interval."""
    retention = Retention(lg, policy)
    log.info("retention_started", archive_dir=str(retention.archive.dir), hot_window_s=policy.hot_window_s,
             max_entries=policy.max_entries, dedup_window_s=policy.dedup_window_s,
             interval_s=policy.interval_s)
    while not stop.is_set():
        try:
            report = await retention.run_pass()
        except LogUnavailable as exc:
            report = PassReport(error=f"LogUnavailable: {exc}")
            log.warning("retention_waiting_for_redis", error=str(exc))
        except Exception as exc:  # a retention bug must not take the keeper down
            report = PassReport(error=f"{type(exc).__name__}: {exc}")
            log.exception("retention_failed")
        if not report.skipped and not report.error:
            log.info("retention_pass", archived=report.archived, trimmed=report.trimmed,
                     trim_point=report.trim_point, limited_by=report.limited_by,
                     hot_entries=report.hot_entries, ids_size=report.ids_size,
                     used_memory=report.used_memory, duration_s=round(report.duration_s, 3))
        if on_pass is not None:
            on_pass(report)
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([waiter], timeout=policy.interval_s)
        finally:
            waiter.cancel()
