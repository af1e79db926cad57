"""Replay and raw iteration of an NDJSON export: a line past ``MAX_LINE_BYTES`` or nested past
the parsers' recursion limit is a bad entry (reported with file and line), never a crash."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from keeper.domain.codec import decode, encode
from keeper.domain.events import Deposit
from keeper.errors import ConfigError, LogError
from keeper.feeds.pipeline import Reject
from keeper.ingest.ndjson_source import read_ndjson
from keeper.jsonlimits import MAX_LINE_BYTES
from keeper.replay import manifest as mf
from keeper.store.ndjson import export_lines, export_log, iter_ndjson, iter_ndjson_batches
from keeper.testing import FakeClock, MemoryEventLog

DEEP = 100_000
_DEEP_EVENT = b'{"type":"deposit","x":' + b"[" * DEEP + b"]" * DEEP + b"}"
"""Fails the typed decode (an unknown field), then recurses in the untyped one (upcasting)."""


def _deposit(i: int) -> bytes:
    return encode(Deposit(event_id=f"d{i}", ts_event=i, account="a", bucket="cross", asset="USDC",
                          amount=Decimal(i + 1)))


def test_replay_lines_too_long_or_too_deep_are_bad_entries_not_crashes(tmp_path: Path) -> None:
    """A line over ``MAX_LINE_BYTES`` is reported (file and line) and stepped over, never read
    whole; a deeply nested payload is an undecodable entry."""
    good = [(f"{i}-0", _deposit(i)) for i in range(1, 6)]
    lines = list(export_lines(good[:2]))
    lines.append(b'{"id":"3-0","e":{"type":"deposit","pad":"' + b"x" * (MAX_LINE_BYTES + 10) + b'"}}\n')
    lines += list(export_lines([("4-0", _DEEP_EVENT)]))
    lines += list(export_lines(good[2:]))
    p = tmp_path / "x.ndjson"
    p.write_bytes(b"".join(lines))
    seen: list[tuple[str, str, str]] = []
    got = [pair for batch in iter_ndjson_batches(p, lambda i, _p, exc: seen.append((i, exc.reason,
                                                                                     exc.detail)))
           for pair in batch]
    assert [(i, decode(b)) for i, b in good] == got
    assert seen[0] == ("3-0", "too_large", f"{p}:3: line longer than the limit of 1 MiB")
    assert seen[1][:2] in {("4-0", "bad_json"), ("4-0", "invalid_field"), ("4-0", "unknown_type")}
    assert len(seen) == 2


def test_raw_iteration_names_the_file_and_line_of_a_bad_line(tmp_path: Path) -> None:
    p = tmp_path / "x.ndjson"
    p.write_bytes(b"".join(export_lines([("1-0", _deposit(1))])) + b"garbage\n")
    with pytest.raises(LogError, match=rf"^{p}:2: bad NDJSON line: "):
        list(iter_ndjson(p))
    p.write_bytes(b'{"id":"1-0","e":"' + b"x" * MAX_LINE_BYTES + b'"}\n')
    with pytest.raises(LogError, match=rf"^{p}:1: line longer than the limit of 1 MiB$"):
        list(iter_ndjson(p))


async def test_a_deeply_nested_entry_exports_as_b64_and_comes_back(tmp_path: Path) -> None:
    log = MemoryEventLog(FakeClock(1_700_000_000_000_000))
    await log.append_raw([_DEEP_EVENT])
    p = tmp_path / "x.ndjson"
    assert await export_log(log, p) == 1
    assert b'"b64":' in p.read_bytes()
    assert [payload for _, payload in iter_ndjson(p)] == [_DEEP_EVENT]


def test_a_manifest_beside_an_export_that_is_not_one_is_named(tmp_path: Path) -> None:
    p = mf.manifest_path(tmp_path / "x.ndjson")
    p.write_bytes(b'{"params":' + b"[" * DEEP + b"}")
    with pytest.raises(ConfigError, match=rf"^{p}: nested deeper than the limit of 64 levels$"):
        mf.read_file(p)
    p.write_bytes(b'{"kind": 5}')
    with pytest.raises(ConfigError, match=rf"^{p}: not a run manifest: "):
        mf.read_file(p)


def test_ingesting_an_export_rejects_long_and_deep_lines_and_goes_on(tmp_path: Path) -> None:
    p = tmp_path / "x.ndjson"
    p.write_bytes(b"".join([*export_lines([("1-0", _deposit(1))]),
                            b'{"id":"2-0","e":' + b"[" * DEEP + b"}\n",
                            b'{"id":"3-0","e":"' + b"x" * MAX_LINE_BYTES + b'"}\n',
                            *export_lines([("4-0", _deposit(4))])]))
    got = list(read_ndjson(p))
    assert [g for g in got if not isinstance(g, Reject)] == [decode(_deposit(1)), decode(_deposit(4))]
    rejects = [(g.reason, g.detail) for g in got if isinstance(g, Reject)]
    assert rejects[0][1].startswith("line 2: ")
    assert rejects[1] == ("too_large", "line 3: longer than 1 MiB")
