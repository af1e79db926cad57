"""The issue's proof: a live run (reference venue + daemon, two keeper cores) on a crash window,
then ``keeper replay --verify`` on its log from the NDJSON export and from Redis: zero
divergences; a deliberately changed parameter reports the first divergence at the log position
where the changed rule first bites; ``--explain`` on a liquidated account names the triggering
price and the rule.

The window is the 2025-10-10 Bybit crash from ``../shared/data`` when present, else the built-in
synthetic crash; 300 accounts, bounded well under a minute.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from keeper.app import cli
from keeper.app.demo import LENDING_PROFILE, PERP_PROFILE, DemoOptions, run_demo
from keeper.domain import events as ev
from keeper.replay import manifest as mf
from keeper.store.entries import parse_id
from keeper.store.ndjson import iter_ndjson_events
from keeper.store.redis_log import RedisEventLog

ROOT = Path(__file__).resolve().parents[2]
CAP = 2


def _shared_data() -> Path | None:
    shared = Path(os.environ.get("KEEPER_SHARED_DIR", ROOT.parent / "shared"))
    p = Path(os.environ.get("KEEPER_DATA_DIR", shared / "data"))
    return p if (p / "event_windows_tidy.csv.gz").is_file() else None


async def keeper(argv: list[str]) -> int:
    return await asyncio.to_thread(cli.main, argv)


@pytest.mark.timeout(120)
async def test_live_run_replays_with_zero_divergences_and_a_changed_param_diverges_where_it_bites(
        redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "live.ndjson"
    data = _shared_data()
    opts = DemoOptions(accounts=300, start="2025-10-10T20:00:00Z", end="2025-10-10T22:30:00Z",
                       bar_s=0.05, data_dir=tmp_path / "run", shared_data=data, export=export,
                       progress=False, redis_url=redis_url)
    summary = await asyncio.wait_for(run_demo(opts), 90)
    assert summary.sound, summary.problems
    capsys.readouterr()

    # the daemon wrote the run manifest at start and updated it at shutdown
    log = await RedisEventLog.connect(redis_url)
    try:
        live = await mf.read_redis(log.client)
        last = await log.last_id()
    finally:
        await log.close()
    assert live is not None and live.kind == "live" and live.status == "stopped"
    names = [c.name for c in live.cores]
    assert names == [f"keeper-{PERP_PROFILE}", f"keeper-{LENDING_PROFILE}"]
    assert [c.params["profile"] for c in live.cores] == [PERP_PROFILE, LENDING_PROFILE]
    assert {c.params["mode"] for c in live.cores} == {"live"}
    assert live.config_hash == mf.run_hash(mf.cores_from(live))
    entries = list(iter_ndjson_events(export))
    assert live.log_first == entries[0][0]
    assert live.log_last is not None and parse_id(live.log_last) <= parse_id(last)
    assert live.decisions > 0
    # the demo wrote it beside the export, as `keeper replay --ndjson` reads it
    beside = mf.read_file(mf.manifest_path(export))
    assert beside is not None
    assert beside.config_hash == live.config_hash
    assert [c.name for c in beside.cores] == names

    recorded = [(i, e.decision) for i, e in entries if isinstance(e, ev.LiquidationIntended)]
    intents = {d.intent_id for _, d in recorded}
    assert intents, "a crash with leveraged accounts liquidates some"
    # the log's intents carry the wall-clock stamp in their envelope, not in the decision
    assert all(e.ts_ingest > 0 for _, e in entries if isinstance(e, ev.LiquidationIntended))

    # 1. verify from the export and from Redis: zero divergences, every recorded decision
    for src in (["--ndjson", str(export)], ["--redis-url", redis_url]):
        assert await keeper(["replay", *src, "--verify"]) == 0
        out = capsys.readouterr().out
        assert f"verify: {len(intents)} decisions, 0 divergences" in out, out
        assert "same)" in out  # the config hash equals the live run's

    # 2. a deliberately changed parameter: a cap of CAP live decisions per core over the whole
    # window. Each core's (CAP+1)-th live decision becomes skip:cap, so the first divergence is
    # the earliest of those triggers.
    by_profile: dict[str, list[str]] = {}
    for _, d in recorded:
        if d.mode == "live":
            by_profile.setdefault(d.profile, []).append(d.trigger)
    nth = [sorted(t, key=parse_id)[CAP] for t in by_profile.values() if len(t) > CAP]
    assert nth, f"needs a core with more than {CAP} live decisions: {by_profile}"
    expected = min(nth, key=parse_id)
    rc = await keeper(["replay", "--ndjson", str(export), "--verify", "--param", f"cap_count={CAP}",
                       "--param", "cap_interval_us=1000000000000000"])
    out = capsys.readouterr().out
    assert rc == 1, out
    first = re.search(r"first divergence: (\S+) (\S+) at log position (\S+)", out)
    assert first is not None, out
    assert first.group(1) == "mismatch"
    assert first.group(3) == expected
    assert "CHANGED)" in out
    assert re.search(r"mode: recorded 'live' derived 'skip:cap'", out), out
    assert not re.search(r"verify: \d+ decisions, 0 divergences", out)

    # 3. explain an account the live run liquidated (confirmed by the venue, price-triggered)
    confirmed = {e.intent_id for _, e in entries if isinstance(e, ev.LiquidationConfirmed)
                 and not e.duplicate}
    by_id = dict(entries)
    picked = next((d for _, d in recorded if d.intent_id in confirmed
                   and isinstance(by_id.get(d.trigger), ev.PriceUpdated)), None)
    assert picked is not None
    trig = by_id[picked.trigger]
    assert isinstance(trig, ev.PriceUpdated)
    assert await keeper(["replay", "--ndjson", str(export), "--explain", picked.account,
                         "--at", picked.trigger]) == 0
    out = capsys.readouterr().out
    assert f"{picked.trigger}  price {trig.symbol} = {trig.price}" in out, out
    assert f"rule: {picked.rule}" in out
    assert f"decision {picked.intent_id} (live)" in out
