"""The chain ingest resumes from its last recorded block: on a trimmed log it must read through the
archive (``ArchivedLog``), or it would find no frame and read the chain again from its start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest_asyncio

from keeper.chain.ingest import ChainIngest
from keeper.domain import events as ev
from keeper.store.archive import ArchivedLog
from keeper.store.entries import parse_id
from keeper.store.redis_log import RedisEventLog
from keeper.store.retention import Retention, RetentionPolicy

VENUE = "morpho-blue"


class Node:
    """What ``ChainIngest.start`` asks of the node: its chain id."""

    url = "http://node.invalid"

    async def call(self, method: str, *params: Any) -> Any:
        assert method == "eth_chainId"
        return "0x1"


class Source:
    """The venue: records the logs it learns from."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def log_filter(self) -> dict[str, Any]:
        return {}

    def decode(self, raw: Mapping[str, Any]) -> tuple[str, dict[str, int | str]] | None:
        return None

    def on_log(self, e: ev.ChainLog) -> None:
        self.seen.append(e.event_id)

    async def readings(self, block_hash: str) -> tuple[dict[str, int], dict[str, int]]:
        return {}, {}


def block(n: int) -> list[ev.Event]:
    h = f"0x{n:064x}"
    out: list[ev.Event] = [ev.ChainLog(
        event_id=f"evm:1:{h}:0", ts_event=n * 1_000_000, venue=VENUE, name="Supply", block=n,
        block_hash=h, tx_hash=h, log_index=0, block_time=n, args={"id": "0x01"})]
    out.append(ev.ChainBlock(event_id=f"blk:1:{h}", ts_event=n * 1_000_000, venue=VENUE, chain_id=1, block=n,
                             block_hash=h, parent_hash=f"0x{n - 1:064x}", block_time=n))
    return out


@pytest_asyncio.fixture(loop_scope="function")
async def log(redis_url: str) -> AsyncIterator[RedisEventLog]:
    lg = await RedisEventLog.connect(redis_url)
    try:
        yield lg
    finally:
        await lg.close()


async def test_the_chain_ingest_resumes_through_the_archive(log: RedisEventLog, tmp_path: Path) -> None:
    for n in range(1, 41):
        await log.append(block(n))
    # the chain stops for a while; the keeper's entries go on (the frames are now old)
    await asyncio.sleep(0.02)
    ids = await log.append([ev.KeeperPaused(event_id=f"pause:{i}", ts_event=i, scope=f"m{i}", reason="x")
                            for i in range(10)])
    first = ids[0]
    assert first is not None
    ret = Retention(log, RetentionPolicy(archive_dir=tmp_path, hot_window_s=1.0, min_segment_entries=1),
                    now_ms=lambda: parse_id(first)[0] + 1000)
    r = await ret.run_pass()
    assert r.trimmed == 80 and await log.length() == 10  # every block is in the archive only

    resumed = ChainIngest(Node(), ArchivedLog(log, ret.archive), venue=VENUE, chain_id=1,  # type: ignore[arg-type]
                          source=Source(), start_block=1)
    await resumed.start()
    assert resumed.next_block == 41  # after the last recorded frame
    assert len(resumed.source.seen) == 40  # type: ignore[attr-defined]  # every market learnt again

    # the hot log alone has no frame: it would start over at start_block (what ArchivedLog prevents)
    alone = ChainIngest(Node(), log, venue=VENUE, chain_id=1, source=Source(), start_block=1)  # type: ignore[arg-type]
    await alone.start()
    assert alone.next_block == 1
