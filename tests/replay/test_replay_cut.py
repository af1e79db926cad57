"""Where a replay stops: ``--to ID`` with ``--verify`` finds every intent recorded for a trigger
at or before the cut, however far past it a lagging projector recorded it; ``--until`` given a
time the log does not cover says so in one line, and a run's clock (``keeper demo``) maps the
recorded data's times to its log's."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from keeper.app import cli
from keeper.domain import events as ev
from keeper.domain.codec import decode
from keeper.domain.decide import KeeperCore
from keeper.projector import Projector
from keeper.replay import manifest as mf
from keeper.store.entries import parse_id
from keeper.store.ndjson import export_log
from keeper.testing import FakeClock, MemoryEventLog, MemorySnapshotStore
from tests.replay.scenario import (
    PARAMS,
    T0,
    TICK_US,
    _venue_fills,
    account_events,
    core_factory,
    crash_ticks,
    setup_events,
)

LAG = 10_500
"""Entries the projector is behind when the crash's first liquidating tick arrives."""


async def _lagging_run() -> MemoryEventLog:
    """The recorded crash, but a burst of other prices reaches the log with the first ticks,
    before the projector reads them: it records the first intents ~LAG entries past their
    triggers."""
    clock = FakeClock(T0)
    log = MemoryEventLog(clock)
    proj = Projector(log, MemorySnapshotStore(), core_factory(PARAMS), name="keeper",
                     fmt=KeeperCore.FORMAT, batch=1000, snapshot_every=10**9,
                     snapshot_interval_s=1e9, monotonic=lambda: 0.0)
    await log.append(setup_events())
    await log.append(account_events(30))
    await proj.catch_up()
    ticks = crash_ticks()
    burst = [ev.PriceUpdated(event_id=f"px-DOGE-{i}", ts_event=T0 + 2 * TICK_US, symbol="DOGE-USD",
                             price=Decimal("0.1") + Decimal(i) / 10**6) for i in range(LAG)]
    for i in range(0, len(ticks), 2):
        clock.advance(1000)
        before = await log.last_id()
        await log.append(ticks[i:i + 2])
        if i == 6:  # ticks 4 (the first liquidations) and 5 wait behind the burst
            await log.append(burst)
        await proj.catch_up()
        assert isinstance(proj.core, KeeperCore)
        clock.advance(1000)
        await _venue_fills(log, before, proj.core)
        await proj.catch_up()
    return log


async def _export(log: MemoryEventLog, path: Path) -> Path:
    await export_log(log, path)
    mf.write_file(mf.manifest_path(path), mf.live_manifest(
        PARAMS, source="memory", first=log.entries[0][0], last=log.entries[-1][0],
        entries=len(log.entries)))
    return path


async def test_verify_to_finds_an_intent_recorded_past_any_window_after_its_trigger(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = await _lagging_run()
    ids = [i for i, _ in log.entries]
    late = [(entry_id, e) for entry_id, p in log.entries
            if type(e := decode(p)) is ev.LiquidationIntended
            and ids.index(entry_id) - ids.index(e.decision.trigger) > 10_000]
    assert late, "the burst puts an intent more than 10,000 entries past its trigger"
    trigger = late[0][1].decision.trigger
    path = await _export(log, tmp_path / "lag.ndjson")
    rc = await asyncio.to_thread(cli.main, ["replay", "--ndjson", str(path), "--verify", "--to", trigger])
    out = capsys.readouterr().out
    assert rc == 0, out
    n = sum(1 for _, p in log.entries if type(e := decode(p)) is ev.LiquidationIntended
            and parse_id(e.decision.trigger) <= parse_id(trigger))
    assert out.strip().splitlines()[-1] == f"verify: {n} decisions, 0 divergences"


async def _small_export(tmp_path: Path, clock: list[tuple[int, int]] | None = None) -> Path:
    log = MemoryEventLog(FakeClock(T0))
    for chunk in (setup_events(), account_events(3), crash_ticks(6)):
        await log.append(chunk)
    path = tmp_path / "small.ndjson"
    await export_log(log, path)
    m = mf.live_manifest(PARAMS, source="memory")
    mf.write_file(mf.manifest_path(path), msgspec.structs.replace(m, clock=clock or []))
    return path


async def test_until_before_the_logs_first_event_is_one_line_naming_the_logs_times(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = await _small_export(tmp_path)
    rc = await asyncio.to_thread(cli.main, ["replay", "--ndjson", str(path), "--verify",
                                            "--until", "2020-03-12T12:00:00Z"])
    err = capsys.readouterr().err
    assert rc == 1
    [line] = [x for x in err.splitlines() if x.startswith("keeper replay: error:")]
    assert "--until 2020-03-12T12:00:00Z" in line and "before the log's first event" in line
    assert "2025-10-09T08:53:20" in line  # T0: where the log's times begin


async def test_until_a_time_of_the_played_data_is_read_through_the_runs_clock(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crash = 1_760_130_000_000_000  # 2025-10-10T21:00:00Z, the data the run played
    # the run played data from 21:00 to 21:06 over the first 6 minutes of its log
    path = await _small_export(tmp_path, clock=[(T0, crash), (T0 + 6 * TICK_US, crash + 6 * TICK_US)])
    rc = await asyncio.to_thread(cli.main, ["replay", "--ndjson", str(path),
                                            "--until", "2025-10-10T21:03:00Z"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "stopped: until" in cap.out
    assert "the played data's time" in cap.err
    replayed = int(cap.out.split("replay: ", 1)[1].split(" entries", 1)[0])
    # setup, accounts and the ticks at or before log time T0 + 3 minutes
    assert replayed == len(setup_events()) + len(account_events(3)) + 2 * 3


def test_to_that_is_not_an_entry_id_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = asyncio.run(_small_export(tmp_path))
    rc = cli.main(["replay", "--ndjson", str(path), "--verify", "--to", "yesterday"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip().splitlines()[-1].startswith("keeper replay: error: --to: 'yesterday' is not")
    assert "Traceback" not in err
