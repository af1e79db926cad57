"""Replay and verify over a log recorded "live" by the projector driving a KeeperCore."""

from __future__ import annotations

import asyncio
import io
from decimal import Decimal
from pathlib import Path

import pytest

from keeper.app import cli
from keeper.domain import events as ev
from keeper.domain.codec import decode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS
from keeper.projector import unwrap_snapshot
from keeper.replay import manifest as mf
from keeper.replay.replay import Progress, replay_async, replay_batches
from keeper.replay.source import SourceStats, log_batches, ndjson_batches
from keeper.replay.verify import DERIVED_ONLY, MISMATCH, Verifier, decision_bytes
from keeper.store.entries import parse_id
from keeper.store.ndjson import export_log
from keeper.store.snapshots import FileSnapshotStore
from keeper.testing import MemoryEventLog
from tests.replay.scenario import PARAMS, T0, TICK_US, open_position, record_live

D = Decimal


async def keeper(argv: list[str]) -> int:
    """The CLI, in a thread: it runs its own event loop."""
    return await asyncio.to_thread(cli.main, argv)


def recorded_intents(log: MemoryEventLog) -> list[tuple[str, ev.LiquidationIntended]]:
    out = []
    for entry_id, payload in log.entries:
        e = decode(payload)
        if isinstance(e, ev.LiquidationIntended):
            out.append((entry_id, e))
    return out


async def export(log: MemoryEventLog, tmp_path: Path, params: KeeperParams = PARAMS) -> Path:
    path = tmp_path / "log.ndjson.gz"
    await export_log(log, path)
    mf.write_file(mf.manifest_path(path), mf.live_manifest(
        params, source="memory", first=log.entries[0][0], last=log.entries[-1][0], entries=len(log.entries)))
    return path


async def test_replay_verify_over_live_run_has_zero_divergences() -> None:
    log, _, _ = await record_live()
    recorded = recorded_intents(log)
    assert len(recorded) >= 10  # the crash liquidates many buckets
    v = Verifier()
    res = await replay_async(KeeperCore(PARAMS), log_batches(log), after=v.after)
    report = v.finish()
    assert res.entries == len(log.entries)
    assert report.ok, report.first.describe() if report.first else ""
    assert report.decisions == len(recorded) == report.agreed
    derived = {e.decision.intent_id: decision_bytes(e.decision) for _, e in res.derived}
    assert derived == {e.decision.intent_id: decision_bytes(e.decision) for _, e in recorded}


async def test_replay_to_id_stops_there_and_state_matches_a_prefix(tmp_path: Path) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    stop = log.entries[len(log.entries) // 2][0]
    core = KeeperCore(PARAMS)
    res = replay_batches(core, ndjson_batches(path, batch=5), to=stop)
    assert res.stopped == "to"
    assert core.offset == stop == res.last
    assert res.entries == len(log.entries) // 2 + 1
    prefix = KeeperCore(PARAMS)
    for entry_id, payload in log.entries[:res.entries]:
        prefix.handle(entry_id, decode(payload))
    assert prefix.snapshot() == core.snapshot()


async def test_replay_until_time_stops_before_the_first_later_event() -> None:
    log, _, _ = await record_live()
    until = T0 + 10 * TICK_US
    core = KeeperCore(PARAMS)
    res = await replay_async(core, log_batches(log, batch=3), until_us=until)
    assert res.stopped == "until"
    assert core.state.log_time <= until
    nxt = decode(log.entries[res.entries][1])
    assert nxt.ts_event > until


def _alice_only() -> tuple[list[ev.Event], list[ev.PriceUpdated]]:
    """alice: cross, long 1 BTC at 60,000 with 3,000 USDC. generic-perp (MM at the mark, strict <)
    liquidates below 57,286.43; bybit-usdt (MM at entry, <=) at or below 57,300. The path puts one
    tick (57,290) between the two thresholds."""
    n = [0]
    accounts = open_position("alice", CROSS, "BTC-USD", "1", "60000", "3000", n)
    path = ["59000", "58000", "57290", "57200", "56500"]
    ticks = [ev.PriceUpdated(event_id=f"px-BTC-USD-{i + 1}", ts_event=T0 + (i + 1) * TICK_US,
                             symbol="BTC-USD", price=D(p)) for i, p in enumerate(path)]
    return accounts, ticks


def _entry_of(log: MemoryEventLog, event_id: str) -> str:
    return next(i for i, p in log.entries if decode(p).event_id == event_id)


async def test_changed_profile_reports_first_divergence_at_the_right_position(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]
                                                                            ) -> None:
    accounts, ticks = _alice_only()
    log, _, _ = await record_live(accounts=accounts, ticks=ticks)
    [(_, live)] = recorded_intents(log)
    assert live.decision.trigger == _entry_of(log, "px-BTC-USD-4")  # 57,200 under generic-perp
    path = await export(log, tmp_path)

    rc = await keeper(["replay", "--ndjson", str(path), "--verify"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.strip().splitlines()[-1] == "verify: 1 decisions, 0 divergences"

    rc = await keeper(["replay", "--ndjson", str(path), "--verify", "--profile", "bybit-usdt"])
    out = capsys.readouterr().out
    assert rc == 1
    first_tick = _entry_of(log, "px-BTC-USD-3")  # 57,290: bybit-usdt decides one tick earlier
    want = f"first divergence: {DERIVED_ONLY} liq:alice/cross@{first_tick} at log position {first_tick}"
    assert want in out
    assert "recorded: (none)" in out
    assert out.strip().splitlines()[-1] == "verify: 2 decisions, 2 divergences"


async def test_changed_mode_diverges_on_every_decision_field_named() -> None:
    log, _, _ = await record_live()
    v = Verifier()
    await replay_async(KeeperCore(KeeperParams(profile=PARAMS.profile, mode="paper")), log_batches(log),
                       after=v.after)
    report = v.finish()
    first = report.first
    assert first is not None
    assert first.kind in (MISMATCH, DERIVED_ONLY)
    recorded = recorded_intents(log)
    assert parse_id(first.position) == min(parse_id(e.decision.trigger) for _, e in recorded)
    if first.kind == MISMATCH:
        assert "mode" in first.describe()


async def test_snapshot_plus_tail_gives_the_same_decisions_as_from_the_beginning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snaps = FileSnapshotStore(tmp_path / "snaps", format=KeeperCore.FORMAT)
    log, _, _ = await record_live(snapshots=snaps, snapshot_after_chunk=8)
    found = await snaps.load("keeper")
    assert found is not None
    offset, blob = found
    recorded = recorded_intents(log)
    assert any(parse_id(e.decision.trigger) > parse_id(offset) for _, e in recorded)
    assert any(parse_id(e.decision.trigger) <= parse_id(offset) for _, e in recorded)

    full = await replay_async(KeeperCore(PARAMS), log_batches(log))
    tail_core = KeeperCore.restore(unwrap_snapshot(KeeperCore.FORMAT, blob), PARAMS)
    v = Verifier(offset)
    tail = await replay_async(tail_core, log_batches(log, after=offset), after=v.after)
    after_snap = [(t, decision_bytes(e.decision)) for t, e in full.derived if parse_id(t) > parse_id(offset)]
    assert after_snap == [(t, decision_bytes(e.decision)) for t, e in tail.derived]
    assert after_snap
    assert v.finish().ok
    assert tail_core.state.offset == log.entries[-1][0]

    path = await export(log, tmp_path)
    rc = await keeper(["replay", "--ndjson", str(path), "--verify",
                       "--snapshot-dir", str(tmp_path / "snaps")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"from snapshot at {offset}" in out
    assert out.strip().endswith("0 divergences")


async def test_undecodable_entries_are_skipped_and_counted() -> None:
    log, _, _ = await record_live(fillers=2)
    await log.append_raw([b'{"type":"no_such_event","event_id":"x","ts_event":1}', b"not json"])
    stats = SourceStats()
    res = await replay_async(KeeperCore(PARAMS), log_batches(log, stats=stats))
    assert stats.bad == 2
    assert res.entries == len(log.entries) - 2
    assert set(stats.bad_reasons) == {"unknown_type", "bad_json"}


def test_progress_line_only_when_forced_or_a_tty() -> None:
    quiet = io.StringIO()
    p = Progress(stream=quiet, every_s=0)
    p.update(10, "1-0")
    p.close(10, "1-0")
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    p = Progress(force=True, stream=loud, every_s=0)
    p.update(10, "5-0")
    p.close(20, "9-0")
    assert "replay: 10 entries at 5-0" in loud.getvalue()
    assert loud.getvalue().endswith("\n")


def test_manifest_hash_is_stable_and_overrides_apply(tmp_path: Path) -> None:
    a = mf.config_hash(KeeperParams(profile="generic-perp", mode="live"))
    assert a == mf.config_hash(KeeperParams(mode="live", profile="generic-perp"))
    assert a != mf.config_hash(KeeperParams(profile="generic-perp", mode="paper"))
    live = mf.live_manifest(PARAMS, source="x", first="1-0", last="9-0", entries=9, decisions=2)
    p = tmp_path / "m.json"
    mf.write_file(p, live)
    back = mf.read_file(p)
    assert back == live
    assert mf.params_from(back) == PARAMS
    assert mf.params_from(back, profile="bybit-usdt").profile == "bybit-usdt"
    rep = mf.replay_manifest(mf.params_from(back, profile="bybit-usdt"), live=live, source="y",
                             first="1-0", last="9-0", entries=9, decisions=3)
    assert rep.reproduces == live.config_hash and rep.same_config is False


async def test_verify_to_a_trigger_finds_its_intent_recorded_just_after(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, _, _ = await record_live()
    recorded = recorded_intents(log)
    entry_id, first = recorded[0]
    trigger = first.decision.trigger
    assert parse_id(entry_id) > parse_id(trigger)  # the projector appends after its batch
    path = await export(log, tmp_path)
    rc = await keeper(["replay", "--ndjson", str(path), "--verify", "--to", trigger])
    out = capsys.readouterr().out
    assert rc == 0, out
    n = sum(1 for _, e in recorded if parse_id(e.decision.trigger) <= parse_id(trigger))
    assert "stopped: to" in out
    assert out.strip().splitlines()[-1] == f"verify: {n} decisions, 0 divergences"
