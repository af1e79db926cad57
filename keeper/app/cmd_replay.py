"""``keeper replay``: rebuild state from a recorded log through the keeper's own core.

Reads a Redis log (``--redis-url``) or an NDJSON export (``--ndjson``), never writes to it, never
submits anything. Params come from the live run's manifest (the ``{prefix}:{shard}:manifest``
hash, or ``<export>.manifest.json`` beside the export, or ``--manifest``). A run with several
keeper cores (one per profile) is replayed with every one of them, same params, their decisions
merged (``MultiCore``); ``--core NAME`` keeps only the named ones. ``--param KEY=VALUE`` changes a
parameter of every core, ``--mode`` too, and ``--profile`` replaces the cores by one of that
profile (how an upgrade or a what-if is checked). With ``--snapshot-dir`` the core starts from
the newest valid snapshot there and replays only the tail.

Exit status: 0; 1 when ``--verify`` found a divergence (or on a keeper error).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any

import structlog

from keeper.app import datadir
from keeper.errors import ConfigError

HELP = "rebuild state from the log; --verify decisions, --explain or --plot an account"

log = structlog.get_logger("keeper.replay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--redis-url", help="read the log from this Redis (redis:// or rediss://); "
                     "default $REDIS_URL, else the data folder's log")
    src.add_argument("--ndjson", type=Path, help="read an NDJSON export (.gz by suffix)")
    parser.add_argument("--data-dir", type=Path, default=datadir.DEFAULT,
                        help="without --redis-url, --ndjson or $REDIS_URL: the log of this data "
                             "folder (DIR/redis; default .keeper, as keeper run and keeper demo)")
    parser.add_argument("--shard", default="0", help="log shard (Redis)")
    parser.add_argument("--prefix", default="keeper", help="key prefix (Redis)")
    parser.add_argument("--archive", type=Path, metavar="DIR",
                        help="with --redis-url: the archive of the trimmed part of the log, read with "
                             "the hot log as one log (default: where retention recorded it)")
    parser.add_argument("--to", metavar="ID", help="stop after this log entry id (inclusive)")
    parser.add_argument("--until", metavar="TIME",
                        help="stop before the first entry with a later ts_event (ISO 8601 or µs)")
    parser.add_argument("--verify", action="store_true", help="re-derive decisions and diff them")
    parser.add_argument("--explain", metavar="ACCOUNT", help="explain the decision about ACCOUNT")
    parser.add_argument("--at", metavar="ID", help="with --explain: the decision at or before ID")
    parser.add_argument("--json", action="store_true", help="with --explain: JSON output")
    parser.add_argument("--plot", metavar="ACCOUNT", help="plot ACCOUNT's health and prices")
    parser.add_argument("--out", type=Path, help="with --plot: the PNG to write")
    parser.add_argument("--profile", help="override the recorded params' margin profile")
    parser.add_argument("--mode", choices=("live", "paper"), help="override the recorded mode")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a keeper parameter on every core (repeatable)")
    parser.add_argument("--core", action="append", default=[], metavar="NAME",
                        help="replay only this core of the run (repeatable; default: all)")
    parser.add_argument("--manifest", type=Path, help="the live run's manifest file")
    parser.add_argument("--manifest-out", type=Path, help="write this replay's manifest here")
    parser.add_argument("--snapshot-dir", type=Path, help="start from the newest snapshot here")
    parser.add_argument("--snapshot-name", default="keeper", help="the snapshot's name")
    parser.add_argument("--redis-snapshot", metavar="NAME",
                        help="with --redis-url: start from the shard's Redis snapshot NAME "
                             "(the daemon's is keeper-<consumer>)")
    parser.add_argument("--progress", action="store_true", help="progress line even when not a TTY")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="--ndjson: replay with N processes, the accounts split between them "
                             "(0: one per CPU); the same decisions as one (docs/replay.md). Default: "
                             "one per CPU for an export of 16 MiB or more that can be split, else one")


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


def iso(us: int) -> str:
    """``us`` (µs since the epoch) as an ISO 8601 UTC time to the second, for people."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_ENTRY_ID = re.compile(r"\d{1,19}(-\d{1,19})?")


def _check_to(text: str | None) -> None:
    if text is not None and _ENTRY_ID.fullmatch(text) is None:
        raise ConfigError(f"--to: {text!r} is not a log entry id (like 1760000000011-0: see keeper log "
                          "tail or the status page's log position); for a time, use --until")


def _until_log_us(args: argparse.Namespace, live: Any) -> int | None:
    """``--until`` in log time: a time of the data a run played (``keeper demo``: its manifest's
    clock) is read through the run's clock, said on stderr."""
    from keeper.replay import manifest as mf

    us = _until_us(args.until)
    if us is None:
        return None
    at = mf.log_time(live, us)
    if at is None:
        return us
    print(f"--until {args.until}: the played data's time, at log time {iso(at)} (the run's clock)",
          file=sys.stderr)
    return at


async def _first_time(args: argparse.Namespace, redis_log: Any) -> int | None:
    """The ``ts_event`` of the log's first decodable entry (None for an empty log)."""
    from keeper.replay.source import ndjson_batches

    if redis_log is not None:
        entries, _ = await redis_log.read_batch("0-0", 1)
        return entries[0].event.ts_event if entries else None
    for batch in ndjson_batches(args.ndjson):
        if batch:
            return int(batch[0][1].ts_event)
    return None


@contextmanager
def logs_to_stderr() -> Iterator[None]:
    """Log lines to stderr while a report (or JSON) goes to stdout; the old config after."""
    old = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**old)


def run(args: argparse.Namespace) -> int:
    _check_to(args.to)
    if args.plot and args.out is None:
        raise ConfigError("--plot: needs --out FILE.png")
    if args.archive is not None and not args.redis_url:
        raise ConfigError("--archive: only with --redis-url (an export already holds the archive)")
    if (args.at or args.json) and not args.explain:
        raise ConfigError("--at/--json: only with --explain ACCOUNT")
    if args.ndjson is not None:
        _check_export(args.ndjson)
    with logs_to_stderr():
        return _run_on_a_log(args)


def _run_on_a_log(args: argparse.Namespace) -> int:
    """``_run`` on the log the arguments name: an export, a Redis URL, else the data folder's
    log (its private redis-server started for the replay and stopped after)."""
    server = None
    if args.ndjson is None:
        origin = "--redis-url" if args.redis_url else "REDIS_URL"
        args.redis_url = args.redis_url or os.environ.get("REDIS_URL") or None
        if args.redis_url:
            datadir.check_redis_url(args.redis_url, origin)
        else:
            from keeper.store.embedded import EmbeddedRedis, running_in

            datadir.require_log(args.data_dir)
            args.redis_url = running_in(datadir.redis_dir(args.data_dir))  # a keeper running on it
            if args.redis_url is None:
                server = EmbeddedRedis(datadir.redis_dir(args.data_dir))
                args.redis_url = server.start()
        from_env = origin == "REDIS_URL" and bool(os.environ.get("REDIS_URL"))
        if origin == "--redis-url" or from_env:
            datadir.announce("replay", args.redis_url, None, origin)
        else:
            datadir.announce("replay", None, args.data_dir)
    try:
        return asyncio.run(_run(args))
    finally:
        if server is not None:
            server.stop()


def _check_export(path: Path) -> None:
    """Refuse, in one line, a file that is not there or is not a log export (before the run
    manifest is looked for: a wrong file is not a missing ``--profile``)."""
    from keeper.errors import LogError
    from keeper.store.ndjson import iter_ndjson

    if not path.is_file():
        raise ConfigError(f"--ndjson: no such file {path} (write one with keeper log export FILE)")
    try:
        next(iter_ndjson(path), None)
    except LogError as exc:
        why = str(exc).removeprefix(f"{path}:")
        raise ConfigError(f"--ndjson: {path} is not a keeper log export (line {why}); write one "
                          "with keeper log export FILE") from None


async def _run(args: argparse.Namespace) -> int:
    from keeper.domain.cores import AnyCore, make_core
    from keeper.domain.decide import KeeperCore
    from keeper.replay import manifest as mf
    from keeper.replay.explain import Explainer, render_text, to_json
    from keeper.replay.plot import plot_account
    from keeper.replay.replay import MultiCore, Progress, replay_async, replay_batches
    from keeper.replay.source import SourceStats, ndjson_batches
    from keeper.replay.verify import Verifier

    client: Any = None
    redis_log: Any = None
    try:
        if args.redis_url:
            from keeper.store.redis_log import RedisEventLog

            redis_log = await RedisEventLog.connect(args.redis_url, shard=args.shard, prefix=args.prefix)
            client = redis_log.client
            source = f"{args.redis_url} {redis_log.key}"
        else:
            source = str(args.ndjson)
        live: mf.RunManifest | None = None
        if args.manifest is not None:
            live = mf.read_file(args.manifest)
            if live is None:
                raise ConfigError(f"--manifest: no such file {args.manifest}")
        elif args.ndjson is not None:
            live = mf.read_file(mf.manifest_path(args.ndjson))
        else:
            live = await mf.read_redis(client, shard=args.shard, prefix=args.prefix)
        named = select_cores(live, args)
        params = named[0][1]
        cores: list[AnyCore] = [make_core(p) for _, p in named]
        start = "0-0"
        if args.snapshot_dir is not None or args.redis_snapshot is not None:
            if len(named) > 1:
                raise ConfigError("--snapshot-dir/--redis-snapshot: one core at a time "
                                  f"(the run had {', '.join(n for n, _ in named)}; use --core)")
            core0, start = await _from_snapshot(args, params, client)
            cores = [core0]
        multi = MultiCore(cores, [n for n, _ in named])
        core: Any = cores[0] if len(cores) == 1 else multi
        if args.to is not None and start != "0-0":
            from keeper.store.entries import parse_id

            if parse_id(args.to) < parse_id(start):
                raise ConfigError(f"--to {args.to} is before the snapshot's offset {start}")

        befores: list[Callable[..., None]] = []
        afters: list[Callable[..., None]] = []
        verifier = Verifier(start) if args.verify else None
        if verifier is not None and (args.explain or args.plot):
            afters.append(verifier.after)
        explainers: dict[str, list[Explainer]] = {}
        for account in {a for a in (args.explain, args.plot) if a}:
            at = args.at if account == args.explain else None
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

        jobs = _jobs(args, named, start, bool(explainers))
        stats = SourceStats()
        kw: dict[str, Any] = {
            "to": args.to, "until_us": _until_log_us(args, live),
            "before": _chain(befores), "after": _chain(afters),
            "progress": Progress(force=args.progress),
            "after_batch": verifier.after_batch if verifier is not None and not explainers else None,
        }
        if redis_log is not None:
            batches, late_log = await _redis_source(args, redis_log, start, stats)
            result = await replay_async(core, batches, **kw)
        elif jobs > 1:
            from keeper.replay.parallel import replay_parallel

            par = replay_parallel(named, args.ndjson, jobs, to=args.to, until_us=kw["until_us"],
                                  verify=verifier is not None, progress=kw["progress"].enabled)
            result, stats = par.result, par.stats
            if par.verifier is not None:
                verifier = par.verifier
        else:
            result = replay_batches(core, ndjson_batches(args.ndjson, after=start, to=args.to, stats=stats),
                                    **kw)
        if args.until is not None and result.entries == 0 and result.stopped == "until":
            first = await _first_time(args, redis_log)
            if first is not None:
                raise ConfigError(f"--until {args.until}: before the log's first event ({iso(first)}): "
                                  "nothing to replay (a log is stamped with the wall clock of the "
                                  "run that recorded it)")
        if verifier is not None and result.stopped != "end" and result.last is not None:
            await _scan_late(args, late_log if redis_log is not None else None, verifier, result.last,
                             [p.profile for _, p in named])
    finally:
        if redis_log is not None:
            await redis_log.close()

    out = sys.stderr if args.json else sys.stdout
    origin = f"snapshot at {start}" if start != "0-0" else "the beginning"
    print(f"replay: {result.entries} entries {result.first or '-'}..{result.last or '-'} "
          f"(from {origin}, stopped: {result.stopped}); "
          f"{len(result.derived)} decisions derived, {result.recorded} recorded; "
          f"{stats.bad} undecodable entries skipped; {result.events_per_s:,.0f} events/s"
          + (f" ({jobs} processes)" if jobs > 1 else ""), file=out)
    h = mf.run_hash(named)
    vs = " (no live manifest)"
    if live is not None:
        vs = f" (live run: {live.config_hash[:12]}, {'same' if live.config_hash == h else 'CHANGED'})"
    profiles = ", ".join(f"{n}={p.profile}" for n, p in named)
    print(f"params: cores {profiles} mode={params.mode} config={h[:12]}{vs}", file=out)

    for account, exs in sorted(explainers.items()):
        _known_account(account, exs)
    if args.explain:
        x = pick_explainer(explainers[args.explain]).explanation()
        if args.json:
            sys.stdout.write(to_json(x).decode() + "\n")
        else:
            print(render_text(x))
    if args.plot:
        clock = (lambda us: mf.data_time(live, us)) if live is not None and live.clock else None
        png = plot_account(pick_explainer(explainers[args.plot]), args.out, clock=clock)
        print(f"plot: wrote {png}", file=out)

    status = 0
    verified = None
    report = None
    if verifier is not None:
        report = verifier.finish()
        if report.withheld:
            print(f"verify: {report.withheld} live decisions were recorded withheld (their prices "
                  "were old by the wall clock): the same decisions, held back", file=out)
        if report.first is not None:
            print(report.first.describe(), file=out)
            status = 1
        verified = report.summary()
    if args.manifest_out is not None:
        m = mf.replay_manifest(named, live=live, source=source, first=result.first, last=result.last,
                               entries=result.entries, decisions=len(result.derived), verified=verified,
                               divergences=len(report.divergences) if report is not None else None)
        mf.write_file(args.manifest_out, m)
    if verified is not None:
        print(verified, file=out)
    return status


AUTO_JOBS_BYTES = 16 << 20
"""Without ``--jobs``, an NDJSON export this large (~60,000 entries) or larger is replayed with
one process per CPU: below it, forking and merging (~0.05-0.1 s) cost about what they save."""


def _jobs(args: argparse.Namespace, named: Sequence[tuple[str, Any]], start: str, hooks: bool) -> int:
    """How many processes replay (``--jobs``); 1 where the replay cannot be split
    (``keeper.replay.parallel.serial_reason``), with a warning saying why when ``--jobs`` asked
    for more. Without ``--jobs``: one per CPU for an export of ``AUTO_JOBS_BYTES`` or more."""
    from keeper.replay.parallel import default_jobs, serial_reason

    auto = args.jobs is None
    if auto:
        small = args.ndjson is None or args.ndjson.stat().st_size < AUTO_JOBS_BYTES
        jobs = 1 if small else default_jobs()
    elif args.jobs < 0:
        raise ConfigError(f"--jobs: expected 0 (one per CPU) or more, got {args.jobs}")
    else:
        jobs = args.jobs or default_jobs()
    if jobs == 1:
        return 1
    reason = "a Redis log is read by one process (export it: keeper log export)" if args.redis_url else None
    reason = reason or serial_reason(named, snapshot=start != "0-0", hooks=hooks)
    if reason is not None:
        (log.info if auto else log.warning)("replay_one_process", jobs=jobs, reason=reason)
        return 1
    return jobs


async def _redis_source(args: argparse.Namespace, redis_log: Any, start: str, stats: Any
                        ) -> tuple[Any, Any]:
    """A Redis log's batches from ``start``: the archive (``--archive``, else where retention
    recorded it) and the hot log as one log when entries after ``start`` were trimmed or an
    archive exists, else the hot log; and the log to read past an early stop with."""
    from keeper.replay.source import archived_batches, log_batches
    from keeper.store.archive import ArchivedLog, open_archive

    archive = await open_archive(redis_log, args.archive, start=start)
    if archive is None:
        return log_batches(redis_log, after=start, to=args.to, stats=stats), redis_log
    log.info("replay_with_archive", archive=str(archive.dir))
    return (archived_batches(archive, redis_log, after=start, to=args.to, stats=stats),
            ArchivedLog(redis_log, archive))


async def _scan_late(args: argparse.Namespace, redis_log: Any, verifier: Any, stop: str,
                     profiles: Sequence[str]) -> None:
    """Feed the verifier the intents recorded past an early stop for triggers at or before it,
    until every core has recorded one decided past the stop (``keeper.replay.verify.LateScan``)."""
    from keeper.replay.source import log_batches, ndjson_batches

    scan = verifier.late_scan(stop, profiles)
    if redis_log is not None:
        async with aclosing(log_batches(redis_log, after=stop)) as batches:
            async for batch in batches:
                if not all(scan.take(entry_id, event) for entry_id, event in batch):
                    return
    else:
        for batch in ndjson_batches(args.ndjson, after=stop):
            if not all(scan.take(entry_id, event) for entry_id, event in batch):
                return


async def _from_snapshot(args: argparse.Namespace, params: Any, client: Any) -> tuple[Any, str]:
    from keeper.domain.cores import fmt_of, make_core
    from keeper.projector import unwrap_snapshot
    from keeper.store.snapshots import FileSnapshotStore, RedisSnapshotStore

    store: FileSnapshotStore | RedisSnapshotStore
    if args.redis_snapshot is not None:
        if client is None:
            raise ConfigError("--redis-snapshot: only with --redis-url")
        store = RedisSnapshotStore(client, shard=args.shard, prefix=args.prefix, format=fmt_of(params))
        name, where = args.redis_snapshot, f"the shard's Redis ({store.key(args.redis_snapshot)})"
    else:
        store = FileSnapshotStore(args.snapshot_dir, format=fmt_of(params))
        name, where = args.snapshot_name, str(args.snapshot_dir)
    found = await store.load(name)
    if found is None:
        raise ConfigError(f"snapshot: no valid snapshot {name!r} in {where}")
    offset, blob = found
    try:
        core = make_core(params, unwrap_snapshot(fmt_of(params), blob))
    except Exception as exc:  # any failure means: do not trust it
        raise ConfigError(f"snapshot {name!r} at {offset} not usable: {exc}") from None
    log.info("replay_from_snapshot", offset=offset, bytes=len(blob))
    return core, offset


def select_cores(live: Any, args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The ``(name, KeeperParams)`` cores to replay: the live run's (every one, or the
    ``--core`` ones) with ``--mode``/``--param`` applied; ``--profile`` replaces them by one core
    of that profile (the live run's other params kept)."""
    from keeper.domain.decide import KeeperParams
    from keeper.replay import manifest as mf

    overrides: dict[str, Any] = {"mode": args.mode}
    for item in args.param:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--param: expected KEY=VALUE, got {item!r}")
        if key not in KeeperParams.__struct_fields__ or key == "profile":
            raise ConfigError(f"--param: unknown parameter {key!r} (use --profile for the profile)")
        overrides[key] = None if value.lower() in ("none", "null") else value
    try:
        if live is None:
            if not args.profile:
                raise ConfigError("--profile: no run manifest found, so the profile must be given")
            p = mf.convert_params({"profile": args.profile, "mode": "paper"}, overrides)
            return [(mf.core_name(p), p)]
        named = mf.cores_from(live, **overrides)
        if args.core:
            unknown = sorted(set(args.core) - {n for n, _ in named})
            if unknown:
                raise ConfigError(f"--core: {unknown[0]!r} is not a core of the run "
                                  f"({', '.join(n for n, _ in named)})")
            named = [(n, p) for n, p in named if n in args.core]
        if args.profile:
            p = mf.convert_params({**mf.params_dict(named[0][1]), "profile": args.profile}, {})
            named = [(mf.core_name(p), p)]
    except Exception as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--param: {exc}") from None
    return named


def _known_account(account: str, exs: Sequence[Any]) -> None:
    """Refuse, in one line, to explain or plot an account the replayed log never named (it
    would read as an account that was never unhealthy)."""
    import difflib

    if any(account in ex.core.state.accounts for ex in exs):
        return
    known = sorted({a for ex in exs for a in ex.core.state.accounts})
    close = difflib.get_close_matches(account, known, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"--explain/--plot: no account {account!r} in the replayed log ({len(known):,} "
                      f"accounts); {hint}the liquidated ones are in --verify's intents, keeper log "
                      "tail or the status page")


def pick_explainer(exs: Sequence[Any]) -> Any:
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


def _own(ex: Any, multi: Any, k: int) -> Callable[..., None]:
    """An explainer's ``after`` fed only its own core's decisions (``MultiCore.last[k]``)."""

    def after(entry_id: str, event: Any, _derived: Any) -> None:
        ex.after(entry_id, event, multi.last[k])

    return after


def _chain(hooks: Sequence[Callable[..., None]]) -> Callable[..., None] | None:
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def both(*a: Any) -> None:
        for h in hooks:
            h(*a)

    return both
