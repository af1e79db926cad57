"""``keeper replay --shard all`` and ``keeper log --shard all export`` on the real cluster: a book
and a falling price written through ``ShardedLog`` to 4 shards, each shard's decisions recorded
by its own core (as the sharded daemon's keeper does); ``replay --shard all --verify`` reports
each shard and a total with 0 divergences; the export writes one file a shard, which replays to
the same total; a decision recorded wrongly in one shard makes the total say so and exit 1."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from keeper.app.cli import main
from keeper.app.shard_args import shards_of
from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.errors import ConfigError
from keeper.scenarios.book import generate_book
from keeper.store.redis_log import RedisEventLog
from keeper.store.shards import ShardedLog
from tests.cluster.lease_helpers import open_client
from tests.cluster.sharded_helpers import price_events

SHARDS = 4
D = Decimal


async def _record(url: str) -> int:
    """The book and a fall to 4 shards; each shard's core decides on its log and its decisions
    are appended, as the daemon's keeper would. Returns how many decisions were recorded."""
    client = await open_client(url)
    writer = ShardedLog(client, SHARDS)
    book = generate_book(120, 5, {"SOL-USD": D(150)})
    assets = sorted(e.params.symbol for e in book.events if isinstance(e, ev.AssetListed))
    recorded = 0
    try:
        await writer.append(list(book.events))
        for step in range(12):
            px = {"SOL-USD": D(150) - D(step) * D(3)}
            await writer.append(price_events(f"p{step}", 1_000_000 + step, px, assets))
        for s in shards_of("all", SHARDS):
            log = RedisEventLog(client, shard=s)
            core = KeeperCore(KeeperParams(profile="generic-perp", mode="paper"))
            for entry in await log.read("0-0", 100_000):
                out = core.handle(entry.id, entry.event)
                if out:
                    recorded += len([e for e in out if isinstance(e, ev.LiquidationIntended)])
                    await log.append(out)
            await log.close()
    finally:
        await writer.close()
        await client.aclose()
    return recorded


def _total(text: str) -> tuple[int, int]:
    m = re.search(r"all 4 shards: \d+ entries, \d+ decisions derived, (\d+) recorded; verify: "
                  r"\d+ decisions, (\d+) divergences", text)
    assert m, text
    return int(m.group(1)), int(m.group(2))


def test_replay_and_export_go_over_every_shard(cluster_url: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    recorded = asyncio.run(_record(cluster_url))
    assert recorded > 0
    common = ["--profile", "generic-perp", "--mode", "paper", "--verify"]
    assert main(["replay", "--redis-url", cluster_url, "--shard", "all", "--shards", "4", *common]) == 0
    out = capsys.readouterr().out
    assert [f"shard {s}:" in out for s in range(4)] == [True] * 4
    assert _total(out) == (recorded, 0)

    folder = tmp_path / "export"
    assert main(["log", "--redis-url", cluster_url, "--shard", "all", "--shards", "4", "export",
                 str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [f"shard-{s}.ndjson.gz" for s in range(4)]
    capsys.readouterr()
    assert main(["replay", "--ndjson", str(folder), "--shard", "all", *common]) == 0
    assert _total(capsys.readouterr().out) == (recorded, 0)

    # a decision recorded wrongly in shard 2: the total names it, the exit status is 1
    async def tamper() -> None:
        client = await open_client(cluster_url)
        log = RedisEventLog(client, shard="2")
        intent = next(e.event for e in await log.read("0-0", 100_000)
                      if isinstance(e.event, ev.LiquidationIntended))
        assert isinstance(intent, ev.LiquidationIntended)
        bad = msgspec.structs.replace(intent, event_id="forged", decision=msgspec.structs.replace(
            intent.decision, intent_id="forged", account="acct-forged"))
        await log.append([bad])
        await log.close()
        await client.aclose()
    asyncio.run(tamper())
    assert main(["replay", "--redis-url", cluster_url, "--shard", "all", "--shards", "4", *common]) == 1
    out = capsys.readouterr().out
    assert "(1 shards diverged)" in out and _total(out)[1] == 1


def test_shard_all_takes_its_count_from_the_config_and_refuses_what_takes_one_shard(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEEPER__SHARDS", "3")
    assert shards_of("all") == ["0", "1", "2"]
    assert shards_of("7") == ["7"]
    with pytest.raises(ConfigError, match="not a shard"):
        shards_of("x")
    assert main(["log", "--redis-url", "redis://127.0.0.1:1", "--shard", "all", "tail"]) == 1
    assert main(["replay", "--redis-url", "redis://127.0.0.1:1", "--shard", "all",
                 "--explain", "a1"]) == 1
