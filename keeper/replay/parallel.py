"""Parallel replay: the log's accounts split between processes, each running the keeper's own core.

``keeper replay --jobs N`` on an NDJSON export. Why the decisions are the ones one core makes:

- every decision is about one bucket, and what the core decides about a bucket depends only on
  the entries of that bucket's account, the entries every account sees (prices, market and asset
  parameters, feed and keeper guards) and the log time (``state.log_time``: the settling wait of
  a confirmed liquidation is measured in it);
- so each worker reads and decodes the whole export, keeps every global entry and the entries of
  its own accounts (``crc32(account) % jobs``; ``keeper.replay.route`` routes each event type,
  and refuses to import if a type is missing), and advances its cores' log time over the
  entries it drops, at the point where one core would have seen them (before the next entry it
  keeps);
- the decisions are merged in the order one core returns them: trigger position, then the core
  (a run's cores in their order), then health, then bucket key (``KeeperCore`` decides the
  buckets breaching on one entry lowest health first, ties by key).

What couples buckets, and is therefore refused (``serial_reason``): caps (``cap_count``,
``cap_notional``: the cap window is spent across buckets), a start from a snapshot (its state
holds every account), two cores of one profile (the merge tells cores apart by profile), per-entry
hooks (``--explain``, ``--plot``). Every worker decodes every line, so the gain is bounded by the
decoding and the per-tick work that each one repeats (figures from the replay bench,
``bench/bench_replay.py``, in ``docs/performance.md``).

Workers are forked (``multiprocessing``, ``fork``): the parent's imports and configuration come
along, nothing is pickled in but a small task, and what comes back is each worker's decisions as
one msgpack array, its ``Verifier`` and its counts.
"""

from __future__ import annotations

import gc
import heapq
import multiprocessing
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import cast

import msgspec
import structlog

from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import bucket_key
from keeper.replay.replay import Core, MultiCore, Progress, ReplayResult, gc_paused, handle_batch
from keeper.replay.route import Router, account_of, shard_of
from keeper.replay.source import Batch, SourceStats, ndjson_batches
from keeper.replay.verify import Verifier
from keeper.store.entries import parse_id

log = structlog.get_logger("keeper.replay")

_intents_encoder = msgspec.msgpack.Encoder()
_intents_decoder = msgspec.msgpack.Decoder(list[ev.LiquidationIntended])

__all__ = ["ParallelReplay", "account_of", "default_jobs", "replay_parallel", "serial_reason", "shard_of"]


def serial_reason(named: Sequence[tuple[str, KeeperParams]], *, snapshot: bool = False,
                  hooks: bool = False) -> str | None:
    """Why these cores cannot be replayed in parallel (None: they can)."""
    if hooks:
        return "--explain/--plot follow one account entry by entry"
    if snapshot:
        return "a replay from a snapshot starts from every account's state"
    for name, p in named:
        if p.chain is not None:
            return f"core {name} folds a chain venue's market totals, which every account shares"
        if p.cap_count is not None or p.cap_notional is not None:
            return f"core {name} has a cap (cap_count/cap_notional): the cap window spans accounts"
    profiles = [p.profile for _, p in named]
    if len(set(profiles)) != len(profiles):
        return "two cores of one profile"
    return None


@dataclass(frozen=True)
class _Task:
    named: list[tuple[str, KeeperParams]]
    path: Path
    jobs: int
    shard: int
    to: str | None
    until_us: int | None
    verify: bool
    progress: bool


@dataclass
class _ShardOut:
    entries: int = 0
    first: str | None = None
    last: str | None = None
    stopped: str = "end"
    recorded: int = 0
    intents: list[ev.LiquidationIntended] = field(default_factory=list)
    derived: bytes = b""
    """``intents`` as one msgpack array (what is sent back: decoding it beats unpickling)."""
    verifier: Verifier | None = None
    stats: SourceStats = field(default_factory=SourceStats)
    kept: int = 0
    elapsed_s: float = 0.0
    shard: int = 0


class _Shard:
    """One worker's loop: split each batch (``Router``), keep log time in step, feed the cores."""

    def __init__(self, task: _Task) -> None:
        self.task = task
        self.cores = [KeeperCore(p) for _, p in task.named]
        self.core: Core = self.cores[0] if len(self.cores) == 1 else MultiCore(
            self.cores, [n for n, _ in task.named])
        self.out = _ShardOut(verifier=Verifier() if task.verify else None, shard=task.shard)
        self.router = Router(task.jobs, task.shard)

    def run(self) -> _ShardOut:
        task, out = self.task, self.out
        t0 = time.perf_counter()
        progress = Progress(force=True) if task.progress else None
        split = self.router.split
        with gc_paused(freeze=False):
            for read in ndjson_batches(task.path, to=task.to, stats=out.stats):
                batch = self._until(read)
                if batch:
                    for at, own in split(batch):
                        if at:
                            for c in self.cores:
                                if at > c.state.log_time:  # noqa: PLR1730
                                    c.state.log_time = at
                        self._handle(own)
                    out.entries += len(batch)
                    out.first = out.first or batch[0][0]
                    out.last = batch[-1][0]
                    if progress is not None:
                        progress.update(out.entries, out.last)
                if out.stopped != "end":
                    break
        if progress is not None:
            progress.close(out.entries, out.last or "-")
        out.recorded = self.router.recorded
        out.derived = _intents_encoder.encode(out.intents)
        out.intents = []
        out.elapsed_s = time.perf_counter() - t0
        return out

    def _until(self, batch: Batch) -> Batch:
        until = self.task.until_us
        if until is not None:
            for i, (_, e) in enumerate(batch):
                if e.ts_event > until:  # cut before splitting: one stop for every worker
                    self.out.stopped = "until"
                    return batch[:i]
        return batch

    def _handle(self, own: Batch) -> None:
        out = self.out
        derived = handle_batch(self.core, own)
        for e in derived:
            if type(e) is ev.LiquidationIntended:
                assert isinstance(e, ev.LiquidationIntended)
                out.intents.append(e)
        out.kept += len(own)
        if out.verifier is not None:
            out.verifier.after_batch(own, derived)


def _worker(task: _Task, conn: Connection) -> None:
    """A worker process: its shard's result, or the traceback that stopped it, sent once."""
    # the collector stays off for the process's life: it exits once its result is sent, and
    # re-enabled (as ``gc_paused`` would) a collection of everything the shard built would
    # run first, delaying that result
    gc.disable()
    try:
        out = _Shard(task).run()
    except BaseException:  # sent to the parent, which raises it
        conn.send((False, traceback.format_exc()))
    else:
        conn.send((True, out))
    finally:
        conn.close()


@dataclass
class ParallelReplay:
    """What ``replay_parallel`` returns: the merged result, verifier (with ``verify``) and counts."""

    result: ReplayResult
    verifier: Verifier | None
    stats: SourceStats
    kept: list[int]
    """Entries each worker handled (its accounts' entries and every global one)."""


def replay_parallel(named: Sequence[tuple[str, KeeperParams]], path: Path, jobs: int, *,
                    to: str | None = None, until_us: int | None = None, verify: bool = False,
                    progress: bool = False) -> ParallelReplay:
    """Replay the export at ``path`` with ``jobs`` worker processes; the same decisions, in the
    same order, as ``replay_batches`` with one core (or a ``MultiCore``) of ``named``.

    Raises ValueError when ``serial_reason(named)`` names a reason or ``jobs < 2``. ``verify``
    collects both sides as ``Verifier`` does, from the beginning of the log.
    """
    if jobs < 2:
        raise ValueError("replay_parallel needs jobs >= 2")
    reason = serial_reason(named)
    if reason is not None:
        raise ValueError(f"cannot replay in parallel: {reason}")
    order = {p.profile: i for i, (_, p) in enumerate(named)}
    tasks = [_Task(list(named), path, jobs, k, to, until_us, verify, progress and k == 0)
             for k in range(jobs)]
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("fork")

    def position(e: ev.LiquidationIntended) -> tuple[tuple[int, int], int, bool, Decimal, str]:
        d = e.decision
        h = d.health_before
        return (parse_id(d.trigger), order[d.profile], h is None, h if h is not None else Decimal(0),
                bucket_key(d.account, d.bucket))

    outs: list[_ShardOut] = []
    keyed: list[list[tuple[tuple[tuple[int, int], int, bool, Decimal, str], ev.LiquidationIntended]]] = []
    procs: list[BaseProcess] = []
    pending: dict[Connection, BaseProcess] = {}
    with gc_paused(freeze=False):  # thousands of decisions decoded: no collection among them
        try:
            for task in tasks:
                r, w = ctx.Pipe(duplex=False)
                started: BaseProcess = ctx.Process(target=_worker, args=(task, w), daemon=True,
                                                   name=f"keeper-replay-{task.shard}")
                started.start()
                w.close()
                procs.append(started)
                pending[r] = started
            # as each worker ends, its decisions are decoded and keyed while the others still run
            # (on the CPU it freed); each worker's list is in one core's order already
            while pending:
                for ready in mp_connection.wait(list(pending)):
                    conn = cast(Connection, ready)
                    proc = pending.pop(conn)
                    try:
                        ok, got = conn.recv()
                    except EOFError:
                        proc.join()
                        raise RuntimeError(f"parallel replay: worker {proc.name} died "
                                           f"(exit code {proc.exitcode})") from None
                    finally:
                        conn.close()
                    if not ok:
                        raise RuntimeError(f"parallel replay: worker {proc.name} failed:\n{got}")
                    outs.append(got)
                    keyed.append([(position(e), e) for e in _intents_decoder.decode(got.derived)])
        finally:
            for proc in procs:
                if pending and proc.is_alive():  # failed or interrupted: stop the others
                    proc.terminate()
                # a worker that sent its result exits at once; its memory is freed while the
                # decisions are merged below, and it is reaped then or by multiprocessing later
                proc.join(0 if not pending else None)
    outs.sort(key=lambda o: o.shard)
    first = outs[0]
    if any((o.entries, o.last, o.stopped) != (first.entries, first.last, first.stopped) for o in outs):
        raise RuntimeError("parallel replay: the workers read different entries")  # never: one file
    intents = [e for _, e in heapq.merge(*keyed, key=lambda ke: ke[0])]
    res = ReplayResult(entries=first.entries, first=first.first, last=first.last,
                       recorded=sum(o.recorded for o in outs), stopped=first.stopped)
    res.derived = [(e.decision.trigger, e) for e in intents]
    if (res.stopped == "end" and to is not None and res.last is not None
            and parse_id(res.last) >= parse_id(to)):
        res.stopped = "to"
    verifier = None
    if verify:
        verifier = Verifier()
        for o in outs:
            assert o.verifier is not None
            verifier.absorb(o.verifier)
    res.elapsed_s = time.perf_counter() - t0
    log.info("replay_done", entries=res.entries, first=res.first, last=res.last, derived=len(res.derived),
             recorded=res.recorded, stopped=res.stopped, jobs=jobs, kept=[o.kept for o in outs],
             worker_s=[round(o.elapsed_s, 3) for o in outs],
             elapsed_s=round(res.elapsed_s, 3), events_per_s=round(res.events_per_s))
    return ParallelReplay(res, verifier, first.stats, [o.kept for o in outs])


def default_jobs() -> int:
    """Worker processes for ``--jobs 0``: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
