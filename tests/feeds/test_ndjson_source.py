"""The NDJSON account-event source and the ``keeper feed`` command."""

from __future__ import annotations

import asyncio
import gzip
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from keeper.app import cli
from keeper.domain.codec import encode
from keeper.domain.events import Deposit, Event, FundingApplied, PositionChanged
from keeper.feeds.ingest import Ingest
from keeper.feeds.pipeline import Reject
from keeper.ingest import load_ndjson, read_ndjson
from keeper.store.ndjson import export_log
from keeper.testing import MemoryEventLog

EVENTS: list[Event] = [
    Deposit(event_id="v-1", ts_event=1, account="A", bucket="cross", asset="USDC", amount=Decimal("1000.5")),
    PositionChanged(event_id="v-2", ts_event=2, account="A", bucket="cross", market="ETH-USD",
                    size=Decimal(-3), entry_price=Decimal(2500)),
    FundingApplied(event_id="v-3", ts_event=3, account="A", bucket="cross", market="ETH-USD", asset="USDC",
                   amount=Decimal("-1.25")),
]


async def test_a_log_export_loads_back_in_order_and_twice_appends_nothing(tmp_path: Path) -> None:
    source = MemoryEventLog()
    await source.append(EVENTS)
    path = tmp_path / "export.ndjson.gz"
    await export_log(source, path)

    log = MemoryEventLog()
    ingest = Ingest(log)
    writer = asyncio.create_task(ingest.run())
    first = await load_ndjson(path, ingest)
    await ingest.drain()
    second = await load_ndjson(path, ingest)
    await ingest.close()
    await writer
    assert first["events"] == second["events"] == 3
    assert [e.event for e in await log.read()] == EVENTS
    assert ingest.stats["duplicates"] == 3


def test_bare_event_lines_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "venue.ndjson"
    lines = [encode(EVENTS[0]), b"", b'{"type":"deposit","event_id":"x"}', b"not json",
             b'{"id":"5-0","e":' + encode(EVENTS[1]) + b"}", b'{"type":"nope","event_id":"y","ts_event":1}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = list(read_ndjson(path))
    assert [i.event_id if not isinstance(i, Reject) else i.reason for i in items] == [
        "v-1", "missing_field", "bad_json", "v-2", "unknown_type"]
    bad = items[2]
    assert isinstance(bad, Reject) and bad.payload == b"not json" and bad.source == "ndjson:venue.ndjson"
    assert "line 4" in bad.detail


def _gz_freqtrade(path: Path, rows: list[list[float]]) -> None:
    import json
    path.write_bytes(gzip.compress(json.dumps(rows).encode()))


def test_feed_play_file_into_redis_and_list(redis_url: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_DATA_DIR", str(tmp_path))
    (tmp_path / "ev").mkdir()
    rows = [[1_600_000_000_000 + i * 60_000, 10 + i, 12 + i, 9 + i, 11 + i, 1.0] for i in range(5)]
    rows[3][4] = -1.0  # a negative close in the file: dead-lettered
    _gz_freqtrade(tmp_path / "ev" / "SOL_USDT-1m.json.gz", rows)
    rc = cli.main(["feed", "play", "ev/SOL_USDT-1m.json.gz", "--redis-url", redis_url, "--speed", "max",
                   "--map", "SOL/USDT=SOL-USD"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "played 5 quotes" in out and "appended 4" in out and "'negative': 1" in out
    r = redis.Redis.from_url(redis_url)
    try:
        payloads = [f[b"e"] for _, f in r.xrange("keeper:{0}:log")]
        assert len(payloads) == 4 and all(b'"symbol":"SOL-USD"' in p for p in payloads)
        assert r.xlen("keeper:{0}:dead") == 1
    finally:
        r.close()
    # playing it again appends nothing: the ids are stable
    assert cli.main(["feed", "play", str(tmp_path / "ev" / "SOL_USDT-1m.json.gz"), "--redis-url", redis_url,
                     "--map", "SOL/USDT=SOL-USD"]) == 0
    assert "appended 0, duplicates 4" in capsys.readouterr().out

    assert cli.main(["feed", "list"]) == 0
    assert "ev/SOL_USDT-1m.json.gz" in capsys.readouterr().out


def test_feed_play_unknown_window_is_an_error(redis_url: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["feed", "--data-dir", str(tmp_path), "play", "no-such", "--redis-url", redis_url]) == 1
    assert "FILE_OR_WINDOW" in capsys.readouterr().err
