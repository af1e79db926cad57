"""``keeper log export/import/tail/dead`` through the real CLI entry point, on the private server."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from keeper.app.cli import main
from keeper.domain.events import Deposit
from keeper.store.ndjson import iter_ndjson
from keeper.store.redis_log import RedisEventLog


async def _seed(url: str, shard: str) -> list[tuple[str, bytes]]:
    log = await RedisEventLog.connect(url, shard=shard)
    try:
        await log.append([Deposit(event_id=f"d{i}", ts_event=i, account="a", bucket="cross",
                                  asset="USDC", amount=Decimal("1.5")) for i in range(30)])
        await log.append_raw([b"{broken"])
        await log.read()  # dead-letters the broken one
        return await log.read_raw("0-0", 100)
    finally:
        await log.close()


async def _append(url: str, shard: str) -> None:
    log = await RedisEventLog.connect(url, shard=shard)
    try:
        await log.append([Deposit(event_id="late", ts_event=99, account="a", bucket="cross",
                                  asset="USDC", amount=Decimal(1))])
    finally:
        await log.close()


async def _raw(url: str, shard: str) -> list[tuple[str, bytes]]:
    log = await RedisEventLog.connect(url, shard=shard)
    try:
        return await log.read_raw("0-0", 100)
    finally:
        await log.close()


def test_cli_round_trip_tail_and_dead(redis_url: str, tmp_path: Path,
                                      capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    src = asyncio.run(_seed(redis_url, "src"))
    f = tmp_path / "log.ndjson.gz"
    assert main(["log", "--redis-url", redis_url, "--shard", "src", "export", str(f)]) == 0
    assert list(iter_ndjson(f)) == src
    capsysbinary.readouterr()
    # the broken entry (line 31) does not decode: refused by default, imported verbatim on request
    assert main(["log", "--redis-url", redis_url, "--shard", "dst", "import", str(f)]) == 1
    assert f"{f}:31: bad_json: ".encode() in capsysbinary.readouterr().err
    assert asyncio.run(_raw(redis_url, "dst")) == []
    assert main(["log", "--redis-url", redis_url, "--shard", "dst", "import", "--keep-bad", str(f)]) == 0
    assert asyncio.run(_raw(redis_url, "dst")) == src
    # again: everything is there already (a finished import resumes to nothing)
    assert main(["log", "--redis-url", redis_url, "--shard", "dst", "import", "--keep-bad", str(f)]) == 0
    assert b"imported 0 entries" in capsysbinary.readouterr().err
    assert asyncio.run(_raw(redis_url, "dst")) == src
    # a log holding an entry the file has not: refused
    asyncio.run(_append(redis_url, "dst"))
    assert main(["log", "--redis-url", redis_url, "--shard", "dst", "import", "--keep-bad", str(f)]) == 1
    assert b"the log is not empty" in capsysbinary.readouterr().err
    assert main(["log", "--redis-url", redis_url, "--shard", "src", "tail", "-n", "3"]) == 0
    lines = capsysbinary.readouterr().out.splitlines()
    assert [ln.split(b'"')[3].decode() for ln in lines] == [i for i, _ in src[-3:]]
    assert main(["log", "--redis-url", redis_url, "--shard", "src", "dead"]) == 0
    out = capsysbinary.readouterr().out.decode()
    assert "\tbad_json\tlog.read\t" in out and "{broken" in out
