"""--explain and --plot over the recorded crash."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest

from keeper.app import cli
from keeper.domain import events as ev
from keeper.domain.codec import decode
from keeper.domain.decide import KeeperCore
from keeper.projector import wrap_snapshot
from keeper.replay import manifest as mf
from keeper.replay.explain import Explainer
from keeper.replay.replay import replay_async
from keeper.replay.source import log_batches
from keeper.store.entries import parse_id
from keeper.store.ndjson import export_log
from keeper.store.redis_log import RedisEventLog
from keeper.store.snapshots import RedisSnapshotStore
from tests.replay.scenario import PARAMS, record_live


@pytest.fixture
async def export(tmp_path: Path) -> tuple[Path, dict[str, ev.Event]]:
    log, _, _ = await record_live()
    path = tmp_path / "crash.ndjson"
    await export_log(log, path)
    mf.write_file(mf.manifest_path(path), mf.live_manifest(PARAMS, source="memory"))
    by_entry = {i: decode(p) for i, p in log.entries}
    return path, by_entry


async def keeper(argv: list[str]) -> int:
    return await asyncio.to_thread(cli.main, argv)


async def test_explain_liquidated_account_lists_trigger_price_and_rule(
        export: tuple[Path, dict[str, ev.Event]], capsys: pytest.CaptureFixture[str]) -> None:
    path, by_entry = export
    intents = [e for e in by_entry.values()
               if isinstance(e, ev.LiquidationIntended) and e.decision.account == "alice"]
    assert len(intents) == 1
    d = intents[0].decision
    trigger = by_entry[d.trigger]
    assert isinstance(trigger, ev.PriceUpdated)

    assert await keeper(["replay", "--ndjson", str(path), "--explain", "alice"]) == 0
    out = capsys.readouterr().out
    assert f"{d.trigger}  price {trigger.symbol} = {trigger.price}" in out
    assert f"rule: {d.rule}" in out
    assert f"decision {d.intent_id} (live) after entry {d.trigger} [{trigger.event_id}]" in out
    assert f"submitted {d.intent_id} via toy" in out
    assert f"confirmed {d.intent_id}" in out
    # the trigger's line shows the bucket going from healthy to liquidatable
    line = next(x for x in out.splitlines() if x.strip().startswith(d.trigger))
    assert "LIQUIDATABLE" in line

    assert await keeper(["replay", "--ndjson", str(path), "--explain", "alice", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["liquidated"] is True
    assert doc["trigger"] == d.trigger and doc["rule"] == d.rule
    last = doc["steps"][-1]
    assert last["entry_id"] == d.trigger and last["type"] == "price_updated"
    assert float(last["before"]["cross"]["health"]) >= 1 > float(last["after"]["cross"]["health"])
    assert [s["type"] for s in doc["outcomes"]] == [
        "liquidation_intended", "liquidation_submitted", "position_changed", "liquidation_confirmed"]


async def test_explain_healthy_account_says_why_not(export: tuple[Path, dict[str, ev.Event]],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = export
    assert await keeper(["replay", "--ndjson", str(path), "--explain", "carol", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["liquidated"] is False and doc["decision"] is None
    low = doc["lowest"]["cross"]
    # carol: 0.5 BTC from 60,000 on 20,000 USDC: equity 0.5 P - 10,000, maintenance 0.0025 P
    assert float(low["health"]) > 1
    lowest_price = min(float(s["summary"].split("= ")[1]) for s in doc["steps"]
                       if s["type"] == "price_updated")
    assert float(low["prices"]["BTC-USD"]) == lowest_price
    assert float(low["margin_left"]) == pytest.approx(0.5 * lowest_price - 10000 - 0.0025 * lowest_price)

    assert await keeper(["replay", "--ndjson", str(path), "--explain", "carol"]) == 0
    out = capsys.readouterr().out
    assert "not liquidated: no decision about carol" in out
    assert "lowest health" in out and "margin left" in out
    assert "never fell to the profile's liquidation threshold" in out


async def test_explain_isolated_loss_leaves_the_other_bucket_healthy(
        export: tuple[Path, dict[str, ev.Event]]) -> None:
    path, _ = export
    from keeper.replay.replay import replay_batches
    from keeper.replay.source import ndjson_batches

    core = KeeperCore(PARAMS)
    ex = Explainer(core, "bob")
    replay_batches(core, ndjson_batches(path), before=ex.before, after=ex.after)
    x = ex.explanation()
    assert x.decision is not None and x.decision.bucket == "iso-ETH"
    assert x.lowest["iso-BTC"].health > 100  # 0.1 BTC on 5,000 USDC never came close


async def test_explain_at_an_earlier_position_sees_no_decision_yet(
        export: tuple[Path, dict[str, ev.Event]], capsys: pytest.CaptureFixture[str]) -> None:
    path, by_entry = export
    d = next(e.decision for e in by_entry.values()
             if isinstance(e, ev.LiquidationIntended) and e.decision.account == "alice")
    ids = list(by_entry)
    before = ids[ids.index(d.trigger) - 1]
    assert await keeper(["replay", "--ndjson", str(path), "--explain", "alice", "--at", before]) == 0
    out = capsys.readouterr().out
    assert f"not liquidated: no decision about alice in the log up to {before}" in out


async def test_plot_writes_a_png(export: tuple[Path, dict[str, ev.Event]], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = export
    png = tmp_path / "bob.png"
    assert await keeper(["replay", "--ndjson", str(path), "--plot", "bob", "--out", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 500
    assert len(data) > 20_000


async def test_replay_from_redis_verifies_against_the_manifest_there(
        redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from keeper.store.ndjson_import import import_log

    mem, _, _ = await record_live(fillers=10)
    path = tmp_path / "x.ndjson"
    await export_log(mem, path)
    rlog = await RedisEventLog.connect(redis_url)
    try:
        assert await import_log(rlog, path) == len(mem.entries)
        live = mf.live_manifest(PARAMS, source=redis_url, first=mem.entries[0][0], last=mem.entries[-1][0])
        await mf.write_redis(rlog.client, live)
        res = await replay_async(KeeperCore(PARAMS), log_batches(rlog, batch=50))
        assert res.entries == len(mem.entries)
        # a snapshot of the core halfway, where the daemon keeps its own
        half = mem.entries[len(mem.entries) // 2][0]
        core = KeeperCore(PARAMS)
        await replay_async(core, log_batches(rlog), to=half)
        snaps = RedisSnapshotStore(rlog.client, format=KeeperCore.FORMAT)
        await snaps.save("keeper-k1", core.offset, wrap_snapshot(KeeperCore.FORMAT, core.snapshot()))
    finally:
        await rlog.close()
    out_manifest = tmp_path / "replay.manifest.json"
    rc = await keeper(["replay", "--redis-url", redis_url, "--verify", "--manifest-out", str(out_manifest)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "(live run: " in out and ", same)" in out
    n = sum(1 for e in map(lambda p: decode(p[1]), mem.entries) if isinstance(e, ev.LiquidationIntended))
    assert out.strip().splitlines()[-1] == f"verify: {n} decisions, 0 divergences"
    m = mf.read_file(out_manifest)
    assert m is not None and m.kind == "replay" and m.same_config is True
    assert m.log_first == mem.entries[0][0] and m.log_last == mem.entries[-1][0]
    assert m.verified == f"verify: {n} decisions, 0 divergences"

    rc = await keeper(["replay", "--redis-url", redis_url, "--verify", "--redis-snapshot", "keeper-k1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"from snapshot at {half}" in out
    tail = sum(1 for e in map(lambda p: decode(p[1]), mem.entries)
               if isinstance(e, ev.LiquidationIntended) and parse_id(e.decision.trigger) > parse_id(half))
    assert 0 < tail < n
    assert out.strip().splitlines()[-1] == f"verify: {tail} decisions, 0 divergences"


async def test_explain_at_the_trigger_still_shows_what_became_of_the_intent(
        export: tuple[Path, dict[str, ev.Event]], capsys: pytest.CaptureFixture[str]) -> None:
    path, by_entry = export
    d = next(e.decision for e in by_entry.values()
             if isinstance(e, ev.LiquidationIntended) and e.decision.account == "bob")
    argv = ["replay", "--ndjson", str(path), "--explain", "bob", "--at", d.trigger, "--json"]
    assert await keeper(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trigger"] == d.trigger
    assert all(parse_id(s["entry_id"]) <= parse_id(d.trigger) for s in doc["steps"])
    assert [s["type"] for s in doc["outcomes"]][-1] == "liquidation_confirmed"
    # as of the trigger, the isolated ETH bucket is liquidatable and the BTC one is not
    assert doc["final"]["iso-ETH"]["liquidatable"] is True
    assert doc["final"]["iso-BTC"]["liquidatable"] is False
