"""``keeper replay``: rebuild state from a recorded log through the keeper's own core.

Reads a Redis log (``--redis-url``) or an NDJSON export (``--ndjson``), never writes to it, never
submits anything. Params come from the live run's manifest (the ``{prefix}:{shard}:manifest``
hash, or ``<export>.manifest.json`` beside the export, or ``--manifest``). A run with several
keeper cores (one per profile) is replayed with every one of them, same params, their decisions
merged (``MultiCore``); ``--core NAME`` keeps only the named ones. ``--param KEY=VALUE`` changes a
parameter of every core, ``--mode`` too, and ``--profile`` replaces the cores by one of that
profile (how an upgrade or a what-if is checked). With ``--snapshot-dir`` the core starts from
the newest valid snapshot there and replays only the tail.

The command is argument parsing, the choice of the log (``--redis-url``, ``--ndjson``,
``$REDIS_URL``, else the data folder's) and the report; the replay itself is
``keeper.replay.job`` (``ReplayJob`` in, ``ReplayOutcome`` out).

``--shard all`` (``keeper.app.shard_args``) replays every shard in turn (the sharded daemon's
logs: ``--shards`` or ``[keeper] shards``; with ``--ndjson``, the folder ``keeper log --shard all
export`` wrote), each reported as above under ``shard N:``, then one total line (entries,
decisions, and with ``--verify`` divergences and how many shards diverged).

Exit status: 0; 1 when ``--verify`` found a divergence (in any shard; or on a keeper error).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from keeper.app import datadir
from keeper.app.shard_args import ALL, exports_in, shards_of
from keeper.errors import ConfigError

if TYPE_CHECKING:
    from keeper.replay.job import ReplayJob, ReplayOutcome

__all__ = ["HELP", "add_arguments", "job_from_args", "logs_to_stderr", "report", "run"]

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
    parser.add_argument("--shard", default="0",
                        help="log shard (Redis), or all: every shard, one after the other, with a "
                             "total (with --ndjson: the folder of keeper log --shard all export)")
    parser.add_argument("--shards", type=int, default=None, metavar="S",
                        help="with --shard all: the shard count (default [keeper] shards of "
                             "--config or the environment)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="with --shard all and no --shards: the daemon's config, for its shards")
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


def job_from_args(args: argparse.Namespace) -> ReplayJob:
    """The replay job the options describe (the log as given: ``run`` resolves the default)."""
    from keeper.replay.job import ReplayJob

    return ReplayJob(
        redis_url=args.redis_url, ndjson=args.ndjson, shard=args.shard, prefix=args.prefix,
        archive=args.archive, to=args.to, until=args.until, verify=args.verify,
        explain=args.explain, at=args.at, json=args.json, plot=args.plot, out=args.out,
        profile=args.profile, mode=args.mode, params=tuple(args.param), cores=tuple(args.core),
        manifest=args.manifest, manifest_out=args.manifest_out, snapshot_dir=args.snapshot_dir,
        snapshot_name=args.snapshot_name, redis_snapshot=args.redis_snapshot,
        progress=args.progress, jobs=args.jobs)


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
    if args.shard == ALL:
        return _run_all(args)
    job = job_from_args(args)
    job.check()
    with logs_to_stderr():
        return _run_on_a_log(job, args.data_dir)[0]


def _run_all(args: argparse.Namespace) -> int:
    """``--shard all``: each shard's log (or each file of a sharded export) replayed in turn,
    each reported as one replay is, then a total; exit 1 if any shard diverged."""
    if args.explain or args.plot or args.manifest_out:
        raise ConfigError("--shard all: --explain, --plot and --manifest-out take one shard")
    if args.ndjson is not None:
        targets = [(s, {"ndjson": f, "shard": s}) for s, f in exports_in(args.ndjson)]
    else:
        targets = [(s, {"shard": s}) for s in shards_of(ALL, args.shards, args.config)]
    jobs = []
    for _, change in targets:
        job = dataclasses.replace(job_from_args(args), **change)  # type: ignore[arg-type]
        job.check()
        jobs.append(job)
    status = 0
    total = Counter[str]()
    with logs_to_stderr():
        for (shard, _), job in zip(targets, jobs, strict=True):
            print(f"shard {shard}:", file=sys.stdout)
            outcome_status, outcome = _run_on_a_log(job, args.data_dir)
            status = max(status, outcome_status)
            total["entries"] += outcome.result.entries
            total["derived"] += len(outcome.result.derived)
            total["recorded"] += outcome.result.recorded
            v = outcome.verify_report()
            if v is not None:
                total["decisions"] += v.decisions
                total["divergences"] += len(v.divergences)
                total["diverged shards"] += 1 if v.divergences else 0
    line = (f"all {len(targets)} shards: {total['entries']} entries, {total['derived']} decisions "
            f"derived, {total['recorded']} recorded")
    if args.verify:
        line += (f"; verify: {total['decisions']} decisions, {total['divergences']} divergences "
                 f"({total['diverged shards']} shards diverged)")
    print(line)
    return status


def _run_on_a_log(job: ReplayJob, data_dir: Path) -> tuple[int, ReplayOutcome]:
    """The job on the log it names: an export, a Redis URL, else ``$REDIS_URL``, else the data
    folder's log (its private redis-server started for the replay and stopped after); then its
    report: (exit status, the outcome)."""
    from keeper.replay.job import run_replay

    server = None
    if job.ndjson is None:
        origin = "--redis-url" if job.redis_url else "REDIS_URL"
        url = job.redis_url or os.environ.get("REDIS_URL") or None
        if url:
            datadir.check_redis_url(url, origin)
        else:
            from keeper.store.embedded import EmbeddedRedis, running_in

            datadir.require_log(data_dir)
            url = running_in(datadir.redis_dir(data_dir))  # a keeper running on it
            if url is None:
                server = EmbeddedRedis(datadir.redis_dir(data_dir))
                url = server.start()
        from_env = origin == "REDIS_URL" and bool(os.environ.get("REDIS_URL"))
        if origin == "--redis-url" or from_env:
            datadir.announce("replay", url, None, origin)
        else:
            datadir.announce("replay", None, data_dir)
        job = dataclasses.replace(job, redis_url=url)
    try:
        outcome = asyncio.run(run_replay(job))
        return report(outcome), outcome
    finally:
        if server is not None:
            server.stop()


def report(outcome: ReplayOutcome) -> int:
    """Print what the replay went through, the explanation or plot asked for and the verify
    report; write this replay's manifest when asked. Returns the exit status."""
    from keeper.replay import manifest as mf
    from keeper.replay.explain import render_text, to_json
    from keeper.replay.plot import plot_account

    job, result, named, live = outcome.job, outcome.result, outcome.named, outcome.live
    out = sys.stderr if job.json else sys.stdout
    origin = f"snapshot at {outcome.start}" if outcome.start != "0-0" else "the beginning"
    print(f"replay: {result.entries} entries {result.first or '-'}..{result.last or '-'} "
          f"(from {origin}, stopped: {result.stopped}); "
          f"{len(result.derived)} decisions derived, {result.recorded} recorded; "
          f"{outcome.stats.bad} undecodable entries skipped; {result.events_per_s:,.0f} events/s"
          + (f" ({outcome.jobs} processes)" if outcome.jobs > 1 else ""), file=out)
    h = mf.run_hash(named)
    vs = " (no live manifest)"
    if live is not None:
        vs = f" (live run: {live.config_hash[:12]}, {'same' if live.config_hash == h else 'CHANGED'})"
    profiles = ", ".join(f"{n}={p.profile}" for n, p in named)
    print(f"params: cores {profiles} mode={outcome.params.mode} config={h[:12]}{vs}", file=out)

    chosen = {account: outcome.explainer(account) for account in sorted(outcome.explainers)}
    if job.explain:
        x = chosen[job.explain].explanation()
        if job.json:
            sys.stdout.write(to_json(x).decode() + "\n")
        else:
            print(render_text(x))
    if job.plot:
        assert job.out is not None
        clock = (lambda us: mf.data_time(live, us)) if live is not None and live.clock else None
        png = plot_account(chosen[job.plot], job.out, clock=clock)
        print(f"plot: wrote {png}", file=out)

    status = 0
    verify = outcome.verify_report()
    if verify is not None:
        if verify.withheld:
            print(f"verify: {verify.withheld} live decisions were recorded withheld (their prices "
                  "were old by the wall clock): the same decisions, held back", file=out)
        if verify.first is not None:
            print(verify.first.describe(), file=out)
            status = 1
    if job.manifest_out is not None:
        mf.write_file(job.manifest_out, outcome.replay_manifest(verify))
    if verify is not None:
        print(verify.summary(), file=out)
    return status
