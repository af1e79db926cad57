"""One replay as a typed job: ``ReplayJob`` (what to replay, where to stop, what to derive) in,
``ReplayOutcome`` (what the replay went through and derived) out.

``keeper replay`` is this module behind an argument parser (``keeper.app.cmd_replay``): the
command fills a ``ReplayJob`` from its options, names the log (``redis_url`` or ``ndjson``),
awaits ``run_replay`` and prints the outcome.

Contract of ``run_replay``:

- it reads the log, never writes to it and never submits anything;
- the cores are the live run's (its manifest: the Redis shard's, the one beside an export, or
  ``manifest``), every one or the ``cores`` named, with ``mode``/``params`` applied; ``profile``
  replaces them by one core of that profile (``keeper.replay.selection``);
- with ``snapshot_dir`` or ``redis_snapshot`` the one core starts from that snapshot and the
  replay reads only the tail;
- an NDJSON export is replayed by ``jobs`` processes when it can be split
  (``keeper.replay.parallel``), the same decisions as one;
- a ``ConfigError`` says, in one line, which option to change.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, ParamSpec

import structlog

from keeper.domain.cores import AnyCore, make_core
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.events import Event
from keeper.errors import ConfigError, LogError
from keeper.replay import manifest as mf
from keeper.replay.explain import Explainer
from keeper.replay.replay import (
    Core,
    DerivedHook,
    EntryHook,
    MultiCore,
    Progress,
    ReplayResult,
    replay_async,
    replay_batches,
)
from keeper.replay.selection import core_from_snapshot, select_cores
from keeper.replay.source import Batch, RawReader, SourceStats, ndjson_batches
from keeper.replay.verify import Verifier, VerifyReport
from keeper.store.entries import parse_id
from keeper.store.redis_log import RedisEventLog

__all__ = ["AUTO_JOBS_BYTES", "ReplayJob", "ReplayOutcome", "iso", "pick_explainer", "run_replay"]

log = structlog.get_logger("keeper.replay")

AUTO_JOBS_BYTES = 16 << 20
"""Without ``jobs``, an NDJSON export this large (~60,000 entries) or larger is replayed with
one process per CPU: below it, forking and merging cost about what they save."""

_ENTRY_ID = re.compile(r"\d{1,19}(-\d{1,19})?")


@dataclass(frozen=True, kw_only=True)
class ReplayJob:
    """What one replay does. Exactly one of ``redis_url`` and ``ndjson`` names the log by the
    time ``run_replay`` runs (``keeper replay`` resolves ``$REDIS_URL`` and the data folder)."""

    redis_url: str | None = None
    """The Redis holding the log (``redis://``, ``rediss://``)."""
    ndjson: Path | None = None
    """An NDJSON export (``.gz`` by suffix) instead of a Redis log."""
    shard: str = "0"
    prefix: str = "keeper"
    archive: Path | None = None
    """With ``redis_url``: the archive of the log's trimmed part (default: where retention
    recorded it)."""
    to: str | None = None
    """Stop after this entry id (inclusive)."""
    until: str | None = None
    """Stop before the first entry with a later ``ts_event`` (ISO 8601 or µs since the epoch)."""
    verify: bool = False
    """Re-derive every decision and diff it against the recorded one."""
    explain: str | None = None
    """The account whose decision is explained."""
    at: str | None = None
    """With ``explain``: the decision at or before this entry id."""
    json: bool = False
    """With ``explain``: the explanation is JSON (the report lines go to stderr)."""
    plot: str | None = None
    """The account whose health and prices are plotted into ``out``."""
    out: Path | None = None
    profile: str | None = None
    """Replace the run's cores by one core of this margin profile."""
    mode: Literal["live", "paper"] | None = None
    params: tuple[str, ...] = ()
    """``KEY=VALUE`` overrides of a keeper parameter, on every core."""
    cores: tuple[str, ...] = ()
    """Replay only these cores of the run (default: all)."""
    manifest: Path | None = None
    """The live run's manifest file (default: the log's own, or the one beside the export)."""
    manifest_out: Path | None = None
    """Where this replay's manifest is written."""
    snapshot_dir: Path | None = None
    snapshot_name: str = "keeper"
    redis_snapshot: str | None = None
    """With ``redis_url``: start from the shard's Redis snapshot of this name."""
    progress: bool = False
    """A progress line even when stderr is not a terminal."""
    jobs: int | None = None
    """Processes for an NDJSON export (0: one per CPU; None: one per CPU from
    ``AUTO_JOBS_BYTES`` up, else one)."""

    def check(self) -> None:
        """Refuse, in one line, options that do not go together or a log that is not one."""
        if self.to is not None and _ENTRY_ID.fullmatch(self.to) is None:
            raise ConfigError(f"--to: {self.to!r} is not a log entry id (like 1760000000011-0: see "
                              "keeper log tail or the status page's log position); for a time, use "
                              "--until")
        if self.plot and self.out is None:
            raise ConfigError("--plot: needs --out FILE.png")
        if self.archive is not None and not self.redis_url:
            raise ConfigError("--archive: only with --redis-url (an export already holds the archive)")
        if (self.at or self.json) and not self.explain:
            raise ConfigError("--at/--json: only with --explain ACCOUNT")
        if self.ndjson is not None:
            _check_export(self.ndjson)


@dataclass
class ReplayOutcome:
    """What ``run_replay`` went through and derived."""

    job: ReplayJob
    named: list[mf.NamedParams]
    """The cores replayed: (name, params), in the run's order."""
    live: mf.RunManifest | None
    """The live run's manifest (None when none was found)."""
    source: str
    """The log read, for people and for this replay's manifest."""
    start: str
    """The entry the replay began after (``0-0``: the beginning; else a snapshot's offset)."""
    jobs: int
    """Processes that replayed."""
    result: ReplayResult
    stats: SourceStats
    explainers: dict[str, list[Explainer]] = field(default_factory=dict)
    """Per explained or plotted account, one explainer per core."""
    verifier: Verifier | None = None

    @property
    def params(self) -> KeeperParams:
        """The first core's params."""
        return self.named[0][1]

    def explainer(self, account: str) -> Explainer:
        """The explainer of ``account`` (``pick_explainer``); a ``ConfigError`` when the
        replayed log never named it (it would read as an account that was never unhealthy)."""
        exs = self.explainers[account]
        _known_account(account, exs)
        return pick_explainer(exs)

    def verify_report(self) -> VerifyReport | None:
        """With ``verify``: the recorded decisions against the derived ones."""
        return self.verifier.finish() if self.verifier is not None else None

    def replay_manifest(self, report: VerifyReport | None) -> mf.RunManifest:
        """This replay's manifest (``keeper.replay.manifest.replay_manifest``)."""
        r = self.result
        return mf.replay_manifest(
            self.named, live=self.live, source=self.source, first=r.first, last=r.last,
            entries=r.entries, decisions=len(r.derived),
            verified=report.summary() if report is not None else None,
            divergences=len(report.divergences) if report is not None else None)


def iso(us: int) -> str:
    """``us`` (µs since the epoch) as an ISO 8601 UTC time to the second, for people."""
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def run_replay(job: ReplayJob) -> ReplayOutcome:
    """Run ``job`` (see the module docstring); ``job.check()`` is the caller's, before."""
    redis_log: RedisEventLog | None = None
    try:
        if job.redis_url:
            redis_log = await RedisEventLog.connect(job.redis_url, shard=job.shard, prefix=job.prefix)
            source = f"{job.redis_url} {redis_log.key}"
        else:
            source = str(job.ndjson)
        live = await _live_manifest(job, redis_log)
        return await _replay(job, redis_log, live, source)
    finally:
        if redis_log is not None:
            await redis_log.close()


async def _live_manifest(job: ReplayJob, redis_log: RedisEventLog | None) -> mf.RunManifest | None:
    if job.manifest is not None:
        live = mf.read_file(job.manifest)
        if live is None:
            raise ConfigError(f"--manifest: no such file {job.manifest}")
        return live
    if job.ndjson is not None:
        return mf.read_file(mf.manifest_path(job.ndjson))
    assert redis_log is not None
    return await mf.read_redis(redis_log.client, shard=job.shard, prefix=job.prefix)


async def _replay(job: ReplayJob, redis_log: RedisEventLog | None, live: mf.RunManifest | None,
                  source: str) -> ReplayOutcome:
    named = select_cores(live, profile=job.profile, mode=job.mode, params=job.params,
                         cores=job.cores)
    cores: list[AnyCore] = [make_core(p) for _, p in named]
    start = "0-0"
    if job.snapshot_dir is not None or job.redis_snapshot is not None:
        if len(named) > 1:
            raise ConfigError("--snapshot-dir/--redis-snapshot: one core at a time "
                              f"(the run had {', '.join(n for n, _ in named)}; use --core)")
        core0, start = await core_from_snapshot(
            named[0][1], client=redis_log.client if redis_log is not None else None,
            redis_snapshot=job.redis_snapshot, snapshot_dir=job.snapshot_dir,
            snapshot_name=job.snapshot_name, shard=job.shard, prefix=job.prefix)
        cores = [core0]
    multi = MultiCore(cores, [n for n, _ in named])
    core: Core = cores[0] if len(cores) == 1 else multi
    if job.to is not None and start != "0-0" and parse_id(job.to) < parse_id(start):
        raise ConfigError(f"--to {job.to} is before the snapshot's offset {start}")

    befores: list[EntryHook] = []
    afters: list[DerivedHook] = []
    verifier = Verifier(start) if job.verify else None
    if verifier is not None and (job.explain or job.plot):
        afters.append(verifier.after)
    explainers: dict[str, list[Explainer]] = {}
    for account in {a for a in (job.explain, job.plot) if a}:
        at = job.at if account == job.explain else None
        for k, c in enumerate(cores):
            if not isinstance(c, KeeperCore):
                raise ConfigError("--explain/--plot: a chain venue's core has no explainer; each of "
                                  "its decisions' rule names the contract's own numbers "
                                  "(keeper log tail, or replay --verify)")
            ex = Explainer(c, account, at)
            explainers.setdefault(account, []).append(ex)
            befores.append(ex.before)
            afters.append(ex.after if len(cores) == 1 else _own(ex, multi, k))
    if afters or befores:
        core = multi  # per-entry hooks: ``multi.last`` holds each core's own output

    jobs = _jobs(job, named, start, bool(explainers))
    stats = SourceStats()
    until_us = _until_log_us(job, live)
    progress = Progress(force=job.progress)
    before, after = _chain(befores), _chain(afters)
    after_batch = verifier.after_batch if verifier is not None and not explainers else None
    late_log: RawReader | None = None
    if redis_log is not None:
        batches, late_log = await _redis_source(job, redis_log, start, stats)
        result = await replay_async(core, batches, to=job.to, until_us=until_us, before=before,
                                    after=after, progress=progress, after_batch=after_batch)
    elif jobs > 1:
        from keeper.replay.parallel import replay_parallel

        assert job.ndjson is not None
        par = replay_parallel(named, job.ndjson, jobs, to=job.to, until_us=until_us,
                              verify=verifier is not None, progress=progress.enabled)
        result, stats = par.result, par.stats
        if par.verifier is not None:
            verifier = par.verifier
    else:
        assert job.ndjson is not None
        result = replay_batches(core, ndjson_batches(job.ndjson, after=start, to=job.to, stats=stats),
                                to=job.to, until_us=until_us, before=before, after=after,
                                progress=progress, after_batch=after_batch)
    if job.until is not None and result.entries == 0 and result.stopped == "until":
        first = await _first_time(job, redis_log)
        if first is not None:
            raise ConfigError(f"--until {job.until}: before the log's first event ({iso(first)}): "
                              "nothing to replay (a log is stamped with the wall clock of the "
                              "run that recorded it)")
    if verifier is not None and result.stopped != "end" and result.last is not None:
        await _scan_late(job, late_log, verifier, result.last, [p.profile for _, p in named])
    return ReplayOutcome(job=job, named=named, live=live, source=source, start=start, jobs=jobs,
                         result=result, stats=stats, explainers=explainers, verifier=verifier)


def _check_export(path: Path) -> None:
    """Refuse, in one line, a file that is not there or is not a log export (before the run
    manifest is looked for: a wrong file is not a missing ``--profile``)."""
    from keeper.store.ndjson import iter_ndjson

    if not path.is_file():
        raise ConfigError(f"--ndjson: no such file {path} (write one with keeper log export FILE)")
    try:
        next(iter_ndjson(path), None)
    except LogError as exc:
        why = str(exc).removeprefix(f"{path}:")
        raise ConfigError(f"--ndjson: {path} is not a keeper log export (line {why}); write one "
                          "with keeper log export FILE") from None


def _until_us(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    from keeper.feeds.parsers import iso_to_us

    try:
        return iso_to_us(text)
    except Exception:
        raise ConfigError(f"--until: {text!r} is not a time (give ISO 8601, e.g. 2025-10-10T21:15:00Z, "
                          "or µs since the epoch)") from None


def _until_log_us(job: ReplayJob, live: mf.RunManifest | None) -> int | None:
    """``until`` in log time: a time of the data a run played (``keeper demo``: its manifest's
    clock) is read through the run's clock, said on stderr."""
    us = _until_us(job.until)
    if us is None:
        return None
    at = mf.log_time(live, us)
    if at is None:
        return us
    print(f"--until {job.until}: the played data's time, at log time {iso(at)} (the run's clock)",
          file=sys.stderr)
    return at


async def _first_time(job: ReplayJob, redis_log: RedisEventLog | None) -> int | None:
    """The ``ts_event`` of the log's first decodable entry (None for an empty log)."""
    if redis_log is not None:
        entries, _ = await redis_log.read_batch("0-0", 1)
        return entries[0].event.ts_event if entries else None
    assert job.ndjson is not None
    for batch in ndjson_batches(job.ndjson):
        if batch:
            return int(batch[0][1].ts_event)
    return None


def _jobs(job: ReplayJob, named: Sequence[mf.NamedParams], start: str, hooks: bool) -> int:
    """How many processes replay; 1 where the replay cannot be split
    (``keeper.replay.parallel.serial_reason``), with a warning saying why when ``jobs`` asked
    for more. Without ``jobs``: one per CPU for an export of ``AUTO_JOBS_BYTES`` or more."""
    from keeper.replay.parallel import default_jobs, serial_reason

    auto = job.jobs is None
    if job.jobs is None:
        small = job.ndjson is None or job.ndjson.stat().st_size < AUTO_JOBS_BYTES
        jobs = 1 if small else default_jobs()
    elif job.jobs < 0:
        raise ConfigError(f"--jobs: expected 0 (one per CPU) or more, got {job.jobs}")
    else:
        jobs = job.jobs or default_jobs()
    if jobs == 1:
        return 1
    reason = "a Redis log is read by one process (export it: keeper log export)" if job.redis_url else None
    reason = reason or serial_reason(named, snapshot=start != "0-0", hooks=hooks)
    if reason is not None:
        (log.info if auto else log.warning)("replay_one_process", jobs=jobs, reason=reason)
        return 1
    return jobs


async def _redis_source(job: ReplayJob, redis_log: RedisEventLog, start: str, stats: SourceStats
                        ) -> tuple[AsyncIterator[Batch], RawReader]:
    """A Redis log's batches from ``start``: the archive (``job.archive``, else where retention
    recorded it) and the hot log as one log when entries after ``start`` were trimmed or an
    archive exists, else the hot log; and the log to read past an early stop with."""
    from keeper.replay.source import archived_batches, log_batches
    from keeper.store.archive import ArchivedLog, open_archive

    archive = await open_archive(redis_log, job.archive, start=start)
    if archive is None:
        return log_batches(redis_log, after=start, to=job.to, stats=stats), redis_log
    log.info("replay_with_archive", archive=str(archive.dir))
    return (archived_batches(archive, redis_log, after=start, to=job.to, stats=stats),
            ArchivedLog(redis_log, archive))


async def _scan_late(job: ReplayJob, late_log: RawReader | None, verifier: Verifier, stop: str,
                     profiles: Sequence[str]) -> None:
    """Feed the verifier the intents recorded past an early stop for triggers at or before it,
    until every core has recorded one decided past the stop (``keeper.replay.verify.LateScan``)."""
    from keeper.replay.source import log_batches

    scan = verifier.late_scan(stop, profiles)
    if late_log is not None:
        async with aclosing(log_batches(late_log, after=stop)) as batches:
            async for batch in batches:
                if not all(scan.take(entry_id, event) for entry_id, event in batch):
                    return
    else:
        assert job.ndjson is not None
        for batch in ndjson_batches(job.ndjson, after=stop):
            if not all(scan.take(entry_id, event) for entry_id, event in batch):
                return


def _known_account(account: str, exs: Sequence[Explainer]) -> None:
    """Refuse, in one line, to explain or plot an account the replayed log never named."""
    import difflib

    if any(account in ex.core.state.accounts for ex in exs):
        return
    known = sorted({a for ex in exs for a in ex.core.state.accounts})
    close = difflib.get_close_matches(account, known, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"--explain/--plot: no account {account!r} in the replayed log ({len(known):,} "
                      f"accounts); {hint}the liquidated ones are in --verify's intents, keeper log "
                      "tail or the status page")


def pick_explainer(exs: Sequence[Explainer]) -> Explainer:
    """Of one account's explainers (one per core), the one whose core decided about it, else
    the one whose core takes its buckets (perp buckets: a perp profile), else the first."""
    for ex in exs:
        if ex.explanation().decision is not None:
            return ex
    for ex in exs:
        a = ex.core.state.accounts.get(ex.account)
        if a is None:
            continue
        lending = ex.core.profile.kind == "lending"
        if any(bool(b.positions) != lending for b in a.buckets.values() if b.positions or b.balances):
            return ex
    return exs[0]


def _own(ex: Explainer, multi: MultiCore, k: int) -> DerivedHook:
    """An explainer's ``after`` fed only its own core's decisions (``MultiCore.last[k]``)."""

    def after(entry_id: str, event: Event, _derived: Sequence[Event]) -> None:
        ex.after(entry_id, event, multi.last[k])

    return after


_P = ParamSpec("_P")


def _chain(hooks: Sequence[Callable[_P, None]]) -> Callable[_P, None] | None:
    """One hook calling ``hooks`` in order (None for none)."""
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def every(*args: _P.args, **kwargs: _P.kwargs) -> None:
        for h in hooks:
            h(*args, **kwargs)

    return every
