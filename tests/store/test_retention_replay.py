"""Archive + hot log replay as the whole log did: replay, --verify, export and `keeper log archive`."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from keeper.app import cli
from keeper.domain.decide import KeeperCore
from keeper.replay import manifest as mf
from keeper.replay.replay import replay_async
from keeper.replay.source import SourceStats, archived_batches, log_batches
from keeper.replay.verify import Verifier, decision_bytes
from keeper.store.entries import parse_id
from keeper.store.ndjson import export_log
from keeper.store.redis_log import RedisEventLog
from keeper.store.retention import Retention, RetentionPolicy
from keeper.testing import MemoryEventLog
from tests.replay.scenario import PARAMS, record_live


async def keeper(argv: list[str]) -> int:
    """The CLI, in a thread: it runs its own event loop."""
    return await asyncio.to_thread(cli.main, argv)


@pytest_asyncio.fixture(loop_scope="function")
async def recorded(redis_url: str) -> AsyncIterator[tuple[MemoryEventLog, RedisEventLog]]:
    """A live run (the replay tests' crash) in memory, and the same entries in Redis with its
    manifest: the full copy and the log retention will cut."""
    full, _, _ = await record_live()
    lg = await RedisEventLog.connect(redis_url)
    try:
        assert await lg.import_entries(full.entries) == len(full.entries)
        await mf.write_redis(lg.client, mf.live_manifest(
            PARAMS, source="test", first=full.entries[0][0], last=full.entries[-1][0],
            entries=len(full.entries)))
        yield full, lg
    finally:
        await lg.close()


async def cut_in_the_middle(lg: RedisEventLog, full: MemoryEventLog, root: Path) -> Retention:
    """One pass that archives and trims the first half of the log."""
    mid = full.entries[len(full.entries) // 2][0]
    ret = Retention(lg, RetentionPolicy(archive_dir=root, hot_window_s=1.0, dedup_window_s=1.0,
                                        min_segment_entries=1, segment_entries=50),
                    now_ms=lambda: parse_id(mid)[0] + 1000)
    r = await ret.run_pass()
    assert not r.error, r.error
    assert 0 < r.trimmed < len(full.entries) and r.archived == r.trimmed
    assert len(r.segments) > 2
    return ret


async def test_replay_of_archive_and_hot_log_equals_replay_of_the_full_copy(
        recorded: tuple[MemoryEventLog, RedisEventLog], tmp_path: Path) -> None:
    full, lg = recorded
    ret = await cut_in_the_middle(lg, full, tmp_path / "archive")
    assert await lg.length() < len(full.entries)

    async def replay(batches: object) -> tuple[KeeperCore, list[str], object]:
        core = KeeperCore(PARAMS)
        v = Verifier()
        ids: list[str] = []

        def after(entry_id: str, event: object, derived: object) -> None:
            ids.append(entry_id)
            v.after(entry_id, event, derived)  # type: ignore[arg-type]

        await replay_async(core, batches, after=after)  # type: ignore[arg-type]
        return core, ids, v.finish()

    stats = SourceStats()
    core_a, ids_a, rep_a = await replay(archived_batches(ret.archive, lg, stats=stats))
    core_f, ids_f, rep_f = await replay(log_batches(full))
    assert ids_a == ids_f == [i for i, _ in full.entries]  # no entry lost, none twice
    assert stats.read == len(full.entries) and stats.bad == 0
    assert rep_a.ok and rep_f.ok and rep_a.decisions == rep_f.decisions > 10  # type: ignore[attr-defined]
    assert rep_a.agreed == rep_a.decisions  # type: ignore[attr-defined]
    assert core_a.snapshot() == core_f.snapshot()
    # from an offset inside the archive, and up to one in it
    start, stop = full.entries[10][0], full.entries[40][0]
    part = [i for b in [b async for b in archived_batches(ret.archive, lg, after=start, to=stop)]
            for i, _ in b]
    assert part == [i for i, _ in full.entries[11:41]]
    derived = {decision_bytes(e.decision) for _, e in (await replay_async(
        KeeperCore(PARAMS), archived_batches(ret.archive, lg))).derived}
    assert derived == {decision_bytes(e.decision) for _, e in (await replay_async(
        KeeperCore(PARAMS), log_batches(full))).derived}


async def test_cli_replay_verify_and_export_read_archive_and_hot_log(
        recorded: tuple[MemoryEventLog, RedisEventLog], redis_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    full, lg = recorded
    await cut_in_the_middle(lg, full, tmp_path / "archive")
    n = len(full.entries)
    rc = await keeper(["replay", "--redis-url", redis_url, "--verify"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"replay: {n} entries" in out  # the archive found where retention recorded it
    assert out.strip().splitlines()[-1].endswith(" 0 divergences")

    path = tmp_path / "export.ndjson.gz"
    rc = await keeper(["log", "--redis-url", redis_url, "export", str(path)])
    assert rc == 0
    want = tmp_path / "full.ndjson.gz"
    await export_log(full, want)
    assert gzip.decompress(path.read_bytes()) == gzip.decompress(want.read_bytes())

    # moved away: the replay refuses to start over the gap, naming what to pass
    (tmp_path / "archive").rename(tmp_path / "moved")
    rc = await keeper(["replay", "--redis-url", redis_url, "--verify"])
    err = capsys.readouterr().err
    assert rc == 1 and "--archive DIR" in err
    rc = await keeper(["replay", "--redis-url", redis_url, "--archive", str(tmp_path / "moved"), "--verify"])
    out = capsys.readouterr().out
    assert rc == 0 and f"replay: {n} entries" in out


async def test_cli_archive_pass_archives_then_trims_on_request(
        recorded: tuple[MemoryEventLog, RedisEventLog], redis_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    full, lg = recorded
    n = len(full.entries)
    root = tmp_path / "arch"
    # the recorded run's entries are far in the past: all of them are past a 60 s window
    args = ["log", "--redis-url", redis_url, "archive", "--archive-dir", str(root), "--hot-window-s", "60"]
    rc = await keeper(args)
    out = capsys.readouterr().out
    assert rc == 0 and f"archived {n} entries" in out and "trimmed 0 " in out
    assert await lg.length() == n  # without --trim Redis keeps everything
    rc = await keeper([*args, "--trim"])
    out = capsys.readouterr().out
    assert rc == 0 and f"trimmed {n} below {full.entries[-1][0]}" in out, out
    assert await lg.length() == 0
    rc = await keeper(["log", "--redis-url", redis_url, "archive", "--json"])  # the recorded directory
    assert rc == 0 and f'"archive_entries": {n}' in capsys.readouterr().out


async def test_cli_archive_follow_runs_passes_until_sigterm(
        recorded: tuple[MemoryEventLog, RedisEventLog], redis_url: str, tmp_path: Path) -> None:
    """Retention as its own process (the Procfile's ``retention`` line): a JSON report per pass,
    entries archived and trimmed while it runs, a clean exit on SIGTERM."""
    import json
    import signal
    import sys

    full, lg = recorded
    root = tmp_path / "arch"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keeper", "log", "--redis-url", redis_url, "archive", "--follow",
        "--trim", "--json", "--archive-dir", str(root), "--hot-window-s", "60", "--interval-s", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert first["trimmed"] == len(full.entries) and not first["error"]
        second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert second["trimmed"] == 0 and second["archive_entries"] == len(full.entries)
        assert await lg.length() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
