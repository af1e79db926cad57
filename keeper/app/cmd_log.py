"""``keeper log``: export / import (NDJSON, ``.gz``), tail and dead letters of the event log.

Where the log is: ``--redis-url`` (default ``$REDIS_URL``); without one, a private embedded
redis-server is started on ``<data folder>/redis`` (``--data-dir``, default ``.keeper``: the
folder ``keeper run`` and ``keeper demo`` use, see ``keeper.app.datadir``) for the duration of
the command and stopped after it. Only ``import`` starts one where there was no log.

``import`` checks the whole file first and imports nothing when a line is bad (the error names
the file and line); ``--skip-bad`` imports the other lines and sends bad ones to the dead-letter
stream, ``--keep-bad`` imports undecodable payloads verbatim (a byte-exact restore). Run again
after an interrupted import, it resumes where that one stopped (``keeper.store.ndjson``). A file
or folder that is not there is refused before any Redis is started.

``--shard all export DIR`` (``keeper.app.shard_args``) exports every shard of the sharded daemon
(``--shards`` or ``[keeper] shards``) to ``DIR/shard-<N>.ndjson.gz``, each with its run manifest
beside it when the shard has one; ``keeper replay --shard all --ndjson DIR`` replays them. The
other actions take one shard.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import structlog

from keeper.app import datadir
from keeper.app.retention_cli import add_archive_arguments, archive_pass, readable_log
from keeper.app.shard_args import ALL, export_file, shards_of
from keeper.errors import ConfigError, KeeperError, LogError
from keeper.replay import manifest as mf
from keeper.store.embedded import open_redis
from keeper.store.ndjson import export_lines, export_log
from keeper.store.ndjson_import import ImportSummary, import_ndjson
from keeper.store.redis_log import RedisEventLog, wrap_errors

__all__ = ["HELP", "add_arguments", "run"]

HELP = "export, import, tail, archive or list dead letters of the event log"

log = structlog.get_logger()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None,
                        help="the log's Redis (default $REDIS_URL; none: the data folder's own server)")
    parser.add_argument("--data-dir", type=Path, default=datadir.DEFAULT,
                        help="the data folder: its log is a private redis-server on DIR/redis "
                             "(default .keeper, as keeper run and keeper demo)")
    parser.add_argument("--shard", default="0",
                        help="the log shard, or all (export only: FILE is then a folder, one "
                             "shard-<N>.ndjson.gz a shard)")
    parser.add_argument("--shards", type=int, default=None, metavar="S",
                        help="with --shard all: the shard count (default [keeper] shards of "
                             "--config or the environment)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="with --shard all and no --shards: the daemon's config, for its shards")
    parser.add_argument("--prefix", default="keeper")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("export", help="write the whole log to FILE (NDJSON; .gz compresses)")
    p.add_argument("file", type=Path)
    p.add_argument("--archive", type=Path, metavar="DIR",
                   help="the archive of the trimmed part (default: where retention recorded it)")
    p = sub.add_parser("import", help="load FILE into an empty log, same entry ids (all or nothing; "
                       "a re-run resumes an interrupted import)")
    p.add_argument("file", type=Path)
    bad = p.add_mutually_exclusive_group()
    bad.add_argument("--skip-bad", dest="bad", action="store_const", const="skip", default="refuse",
                     help="import the other lines; bad lines go to the dead-letter stream")
    bad.add_argument("--keep-bad", dest="bad", action="store_const", const="keep",
                     help="import undecodable payloads verbatim, as the exported log held them")
    p = sub.add_parser("tail", help="print the last N entries as NDJSON")
    p.add_argument("-n", "--count", type=int, default=20)
    p.add_argument("-f", "--follow", action="store_true", help="then wait for new entries")
    p.add_argument("--follow-for", type=float, default=None,
                   help="with --follow, stop after this many seconds")
    p = sub.add_parser("dead", help="print dead letters (reason, source, detail, payload)")
    p.add_argument("-n", "--count", type=int, default=100)
    p = sub.add_parser("archive", help="one retention pass: archive what is past the hot window "
                       "(--trim: then trim it from Redis); prints what it did")
    add_archive_arguments(p)


def _write(lines: list[bytes]) -> None:
    sys.stdout.buffer.write(b"".join(lines))
    sys.stdout.buffer.flush()


async def _tail(lg: RedisEventLog, count: int, follow: bool, follow_for: float | None) -> int:
    async with wrap_errors("tail"):
        res: Any = await lg.client.xrevrange(lg.key, count=count)
    raw = [(k.decode(), f.get(b"e", b"")) for k, f in reversed(res)]
    if not raw:
        print(f"the log is empty ({lg.key})" + (": waiting for entries" if follow else ""),
              file=sys.stderr)
    _write(list(export_lines(raw)))
    after = raw[-1][0] if raw else await lg.last_id()
    n = len(raw)
    if not follow:
        return n
    loop = asyncio.get_running_loop()
    deadline = None if follow_for is None else loop.time() + follow_for
    while deadline is None or loop.time() < deadline:
        batch = await lg.read_raw(after, 1000, block_ms=1000)
        if batch:
            _write(list(export_lines(batch)))
            after = batch[-1][0]
            n += len(batch)
    return n


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse a missing input file or output folder before any Redis is started."""
    path: Path | None = getattr(args, "file", None)
    if path is None:
        return
    if args.action == "import" and not path.is_file():
        raise LogError(f"{path}: no such file (give the path of an export: keeper log export FILE)")
    if args.action == "export" and args.shard == ALL:
        if path.exists() and not path.is_dir():
            raise LogError(f"{path}: with --shard all, export writes a folder (one file a shard): "
                           "give a folder's path")
        if not path.parent.is_dir():
            raise LogError(f"{path}: cannot write: folder {path.parent} does not exist")
        return
    if args.action == "export" and not path.parent.is_dir():
        raise LogError(f"{path}: cannot write: folder {path.parent} does not exist "
                       f"(create it first: mkdir -p {path.parent})")


def _imported(s: ImportSummary, path: Path) -> str:
    extra = [f"{s.present} already in the log" if s.present else "",
             f"{s.dead_lettered} bad lines dead-lettered" if s.dead_lettered else "",
             f"{s.kept} undecodable kept verbatim" if s.kept else ""]
    notes = ", ".join(e for e in extra if e)
    return f"imported {s.imported} entries from {path}" + (f" ({notes})" if notes else "")


async def _export(lg: RedisEventLog, path: Path, archive: Path | None, *, prefix: str) -> int:
    """The shard's whole log (the archive, then the hot log) to ``path``, its run manifest beside
    it (the export then replays with the run's own cores); returns the entries written."""
    n = await export_log(await readable_log(lg, archive), path)
    print(f"exported {n} entries to {path}", file=sys.stderr)
    live = await mf.read_redis(lg.client, shard=lg.shard, prefix=prefix)
    if live is not None:
        mf.write_file(mf.manifest_path(path), live)
        print(f"wrote the run manifest to {mf.manifest_path(path)}", file=sys.stderr)
    return n


async def _export_all(url: str, args: argparse.Namespace) -> int:
    """``--shard all export DIR``: each shard's log to ``DIR/shard-<N>.ndjson.gz``; a total."""
    shards = shards_of(ALL, args.shards, args.config)
    args.file.mkdir(exist_ok=True)
    total = 0
    for shard in shards:
        lg = await RedisEventLog.connect(url, shard=shard, prefix=args.prefix)
        try:
            total += await _export(lg, export_file(args.file, shard), args.archive,
                                   prefix=args.prefix)
        finally:
            await lg.close()
    print(f"exported {total} entries of {len(shards)} shards to {args.file}", file=sys.stderr)
    return 0


async def _run(args: argparse.Namespace) -> int:
    if args.shard == ALL and args.action != "export":
        raise ConfigError(f"--shard all: only export goes over every shard (log {args.action} "
                          "takes one shard)")
    _check_paths(args)
    origin = "--redis-url" if args.redis_url else "REDIS_URL"
    given = args.redis_url or os.environ.get("REDIS_URL") or None
    if given:
        datadir.check_redis_url(given, origin)
    elif args.action != "import":
        datadir.require_log(args.data_dir)
    datadir.announce(f"log {args.action}", given, args.data_dir, origin)
    url, server = await open_redis(given, datadir.redis_dir(args.data_dir))
    try:
        if args.shard == ALL:
            return await _export_all(url, args)
        lg = await RedisEventLog.connect(url, shard=args.shard, prefix=args.prefix)
        try:
            if args.action == "export":
                await _export(lg, args.file, args.archive, prefix=args.prefix)
            elif args.action == "import":
                summary = await import_ndjson(lg, args.file, args.bad)
                print(_imported(summary, args.file), file=sys.stderr)
                # and the run manifest beside it, so the log replays with the run's own cores
                beside = mf.read_file(mf.manifest_path(args.file))
                if beside is not None and await mf.read_redis(lg.client, shard=args.shard,
                                                              prefix=args.prefix) is None:
                    await mf.write_redis(lg.client, beside, shard=args.shard, prefix=args.prefix)
                    print(f"restored the run manifest from {mf.manifest_path(args.file)}", file=sys.stderr)
            elif args.action == "tail":
                await _tail(lg, args.count, args.follow, args.follow_for)
            elif args.action == "archive":
                return await archive_pass(lg, args)
            elif args.action == "dead":
                for d in await lg.dead_letters(args.count):
                    print(f"{d.id}\t{d.reason}\t{d.source}\t{d.detail}\t"
                          f"{d.payload[:200].decode(errors='replace')}")
            else:  # pragma: no cover - argparse restricts the choices
                raise KeeperError(f"unknown action {args.action}")
        finally:
            await lg.close()
    finally:
        if server is not None:
            server.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    from keeper.app.cmd_replay import logs_to_stderr

    with logs_to_stderr():  # stdout is the entries (tail) or the dead letters
        return asyncio.run(_run(args))
