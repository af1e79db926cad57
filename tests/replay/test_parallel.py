"""Parallel replay (``keeper replay --jobs N``): the same decisions, in the same order, as one core."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from decimal import Decimal
from pathlib import Path

import pytest

from keeper.app import cli
from keeper.domain import events as ev
from keeper.domain.codec import encode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.replay import job as replay_job
from keeper.replay.parallel import _Shard, _ShardOut, replay_parallel, serial_reason
from keeper.replay.replay import MultiCore, replay_batches
from keeper.replay.route import Router, account_of, shard_of
from keeper.replay.source import ndjson_batches
from keeper.replay.verify import decision_bytes
from keeper.store.ndjson import export_log
from tests.replay.scenario import PARAMS, T0, record_live
from tests.replay.test_replay_verify import export

D = Decimal


async def keeper(argv: list[str]) -> int:
    return await asyncio.to_thread(cli.main, argv)


def decisions(path: Path, jobs: int, params: KeeperParams = PARAMS, **kw: object
              ) -> list[tuple[str, bytes]]:
    if jobs == 1:
        res = replay_batches(KeeperCore(params), ndjson_batches(path), **kw)  # type: ignore[arg-type]
    else:
        res = replay_parallel([("k", params)], path, jobs, **kw).result  # type: ignore[arg-type]
    return [(t, decision_bytes(e.decision)) for t, e in res.derived]


def test_entries_are_routed_by_account() -> None:
    dep = ev.Deposit(event_id="d", ts_event=1, account="alice", bucket=CROSS, asset="USDC", amount=D(1))
    ok = ev.LiquidationConfirmed(event_id="c", ts_event=1, intent_id="liq:bob/cross@5-0")
    px = ev.PriceUpdated(event_id="p", ts_event=1, symbol="BTC-USD", price=D(1))
    assert [account_of(e) for e in (dep, ok, px)] == ["alice", "bob", None]
    assert {shard_of(f"acct-{i}", 3) for i in range(50)} == {0, 1, 2}
    assert shard_of("alice", 2) == shard_of("alice", 2)


async def test_parallel_replay_gives_one_cores_decisions_in_its_order(tmp_path: Path) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    one = decisions(path, 1)
    assert len(one) >= 10
    for jobs in (2, 3):
        assert decisions(path, jobs) == one
    par = replay_parallel([("k", PARAMS)], path, 2, verify=True)
    assert par.verifier is not None
    report = par.verifier.finish()
    assert report.ok and report.decisions == len(one)
    assert par.result.entries == len(log.entries)
    assert par.result.recorded == len(one)
    assert sum(par.kept) > len(log.entries)  # global entries go to every worker


async def test_parallel_replay_keeps_the_order_of_several_cores(tmp_path: Path) -> None:
    """Two cores on one log: on one trigger, the first core's decisions before the second's."""
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    named = [("generic", PARAMS), ("binance", KeeperParams(profile="binance-usdm", mode="live"))]
    one = replay_batches(MultiCore([KeeperCore(p) for _, p in named]), ndjson_batches(path))
    par = replay_parallel(named, path, 2).result
    assert {e.decision.profile for _, e in one.derived} == {"generic-perp", "binance-usdm"}
    assert [decision_bytes(e.decision) for _, e in par.derived] == [
        decision_bytes(e.decision) for _, e in one.derived]


async def test_parallel_replay_stops_where_one_core_stops(tmp_path: Path) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    ids = [i for i, _ in log.entries]
    to = ids[len(ids) * 2 // 3]
    assert decisions(path, 2, to=to) == decisions(path, 1, to=to)
    until = T0 + 20 * 60_000_000
    one = replay_batches(KeeperCore(PARAMS), ndjson_batches(path), until_us=until)
    par = replay_parallel([("k", PARAMS)], path, 2, until_us=until).result
    assert (par.entries, par.last, par.stopped) == (one.entries, one.last, "until")
    assert [t for t, _ in par.derived] == [t for t, _ in one.derived]


def _accounts_on_two_shards() -> tuple[str, str]:
    names = [f"acct-{i}" for i in range(100)]
    a = next(n for n in names if shard_of(n, 2) == 0)
    b = next(n for n in names if shard_of(n, 2) == 1)
    return a, b


def _write_live(path: Path, entries: list[ev.Event], params: KeeperParams) -> int:
    """Feed a live core each entry and write it, then the intents it decided, as NDJSON."""
    core = KeeperCore(params)
    n = 0
    with path.open("wb") as f:
        for k, e in enumerate(entries):
            todo: list[ev.Event] = [e]
            seq = 0
            while todo:
                x = todo.pop(0)
                entry_id = f"{1000 + k}-{seq}"
                seq += 1
                f.write(b'{"id":"' + entry_id.encode() + b'","e":' + encode(x) + b"}\n")
                out = core.handle(entry_id, x)
                n += sum(1 for o in out if isinstance(o, ev.LiquidationIntended))
                todo += out
    return n


def test_another_workers_later_entry_moves_log_time_for_this_one(tmp_path: Path) -> None:
    """A confirmed liquidation whose account events never come is retried once log time passes
    ``intent_ttl_us``. Here what moves log time past it is an entry of an account of the other
    worker, followed by a tick stamped earlier: one core decides again at that tick, so must the
    worker that holds the liquidated account."""
    a, b = _accounts_on_two_shards()
    ttl = PARAMS.intent_ttl_us
    s = 1_000_000
    trigger = "1008-0"  # px[1]'s entry: the first intent's id is known from it
    px = [ev.PriceUpdated(event_id=f"p{i}", ts_event=T0 + t, symbol="BTC-USD", price=D(p))
          for i, (t, p) in enumerate([(0, 60000), (s, 59000), (3 * s, 58900), (4 * s, 58800)])]
    entries: list[ev.Event] = [
        ev.AssetListed(event_id="usdc", ts_event=T0, params=AssetParams(symbol="USDC", decimals=6)),
        ev.PriceUpdated(event_id="pu", ts_event=T0, symbol="USDC", price=D(1)),
        ev.MarketListed(event_id="btc", ts_event=T0, params=MarketParams(
            symbol="BTC-USD", mmf=D("0.005"), imf=D("0.01"), liquidation_fee=D("0.01"))),
        px[0],
        ev.Deposit(event_id="da", ts_event=T0, account=a, bucket=CROSS, asset="USDC", amount=D(1000)),
        ev.PositionChanged(event_id="oa", ts_event=T0, account=a, bucket=CROSS, market="BTC-USD",
                           size=D(1), entry_price=D(60000)),
        ev.Deposit(event_id="db", ts_event=T0, account=b, bucket=CROSS, asset="USDC", amount=D(5000)),
        ev.PositionChanged(event_id="ob", ts_event=T0, account=b, bucket=CROSS, market="BTC-USD",
                           size=D("0.1"), entry_price=D(60000)),
        px[1],  # a breaches: intent 1
        ev.LiquidationConfirmed(event_id="ok", ts_event=T0 + 2 * s, account=a, bucket=CROSS,
                                intent_id=f"liq:{a}/{CROSS}@{trigger}"),
        px[2],  # confirmed, its account events not in the log yet: a is settling, skipped
        ev.Deposit(event_id="late", ts_event=T0 + 2 * s + ttl + 1, account=b, bucket=CROSS, asset="USDC",
                   amount=D(1)),
        px[3],  # stamped before b's deposit; log time is past the wait: a is decided again
    ]
    path = tmp_path / "log.ndjson"
    assert _write_live(path, entries, PARAMS) == 2
    one = decisions(path, 1)
    assert [t for t, _ in one] == [trigger, "1012-0"]
    assert decisions(path, 2) == one
    # the worker holding a kept b's deposit out but moved its log time before the last tick
    r = Router(2, shard_of(a, 2))
    batch = next(iter(ndjson_batches(path)))
    runs = r.split(batch)
    assert [at for at, _ in runs] == [0, T0 + 2 * s + ttl + 1]
    assert "late" not in {e.event_id for _, own in runs for _, e in own}


def test_coupled_cores_are_refused() -> None:
    capped = KeeperParams(profile="generic-perp", mode="live", cap_count=3)
    assert serial_reason([("k", PARAMS)]) is None
    assert "cap" in (serial_reason([("k", capped)]) or "")
    assert "snapshot" in (serial_reason([("k", PARAMS)], snapshot=True) or "")
    assert "profile" in (serial_reason([("a", PARAMS), ("b", PARAMS)]) or "")
    with pytest.raises(ValueError, match="cap"):
        replay_parallel([("k", capped)], Path("unused"), 2)


async def test_cli_jobs_verifies_and_reports_the_same_first_divergence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    assert await keeper(["replay", "--ndjson", str(path), "--verify", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "(2 processes)" in out
    assert out.strip().endswith("0 divergences")
    firsts = []
    for jobs in ("1", "2"):
        rc = await keeper(["replay", "--ndjson", str(path), "--verify", "--jobs", jobs,
                           "--profile", "binance-usdm"])
        out = capsys.readouterr().out
        assert rc == 1
        firsts.append(next(line for line in out.splitlines() if line.startswith("first divergence")))
    assert firsts[0] == firsts[1]
    # a cap couples accounts: one process, and it says why
    rc = await keeper(["replay", "--ndjson", str(path), "--jobs", "2", "--param", "cap_count=2"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "processes)" not in captured.out
    assert "replay_one_process" in captured.err


async def test_cli_without_jobs_splits_a_large_export_between_the_cpus(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    monkeypatch.setattr("keeper.replay.parallel.default_jobs", lambda: 2)  # whatever this machine has
    assert await keeper(["replay", "--ndjson", str(path), "--verify"]) == 0
    assert "processes)" not in capsys.readouterr().out  # a small export: one process
    monkeypatch.setattr(replay_job, "AUTO_JOBS_BYTES", path.stat().st_size)
    assert await keeper(["replay", "--ndjson", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "(2 processes)" in out
    assert out.strip().endswith("0 divergences")
    # one that cannot be split: one process, said at info level (nobody asked for more)
    assert await keeper(["replay", "--ndjson", str(path), "--param", "cap_count=2"]) == 0
    captured = capsys.readouterr()
    assert "processes)" not in captured.out
    said = [line for line in captured.err.splitlines() if "replay_one_process" in line]
    assert len(said) == 1 and "info" in said[0] and "warning" not in said[0]


async def test_export_of_a_redis_style_log_replays_in_parallel(tmp_path: Path) -> None:
    """The export the daemon's log gives (``export_log``) is what ``--jobs`` reads."""
    log, _, _ = await record_live(fillers=8)
    path = tmp_path / "plain.ndjson"
    await export_log(log, path)
    assert decisions(path, 2) == decisions(path, 1)


def _fail_in_shard_1(self: _Shard) -> _ShardOut:
    if self.task.shard == 1:
        raise ValueError("shard 1 broke")
    time.sleep(30)  # still running when its sibling fails: it is stopped
    return _SHARD_RUN(self)


def _die_in_shard_1(self: _Shard) -> _ShardOut:
    if self.task.shard == 1:
        os._exit(3)
    time.sleep(30)  # the other worker is still running when its sibling dies: it is stopped
    return _SHARD_RUN(self)


_SHARD_RUN = _Shard.run


@pytest.mark.parametrize(("run", "message"), [(_fail_in_shard_1, "(?s)failed:.*shard 1 broke"),
                                               (_die_in_shard_1, "died.*exit code 3")])
async def test_a_worker_that_fails_or_dies_fails_the_replay_and_stops_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: object, message: str) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    for p in multiprocessing.active_children():  # earlier replays' workers, exiting
        p.join(10)
    monkeypatch.setattr(_Shard, "run", run)  # the workers are forked: they run the patched method
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=message):
        replay_parallel([("k", PARAMS)], path, 2)
    assert time.monotonic() - t0 < 20  # the sleeping worker was terminated, not waited for
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("keeper-replay")]
