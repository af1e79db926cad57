"""NDJSON lines: our own lines are sliced verbatim; foreign-but-valid lines are still read."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import pytest

from keeper.domain.codec import decode, encode
from keeper.domain.events import Deposit, PriceUpdated
from keeper.errors import DecodeError, LogError
from keeper.store.ndjson import export_lines, iter_ndjson, iter_ndjson_events, parse_line


@pytest.mark.parametrize("payload", [
    b'{"type":"deposit","a":"1.50"}',
    b'{ "spaced" : [1, 2] }',
    b"{half",
    b'{"two":\n"lines"}',
    b"\x00\xffbytes",
    b"",
    b'["not","an","object"]',
])
def test_line_round_trip_is_byte_exact(payload: bytes) -> None:
    (line,) = export_lines([("17-3", payload)])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_line(line) == ("17-3", payload)


def test_foreign_lines_and_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "x.ndjson"
    p.write_bytes(b'{"e": {"k": 1}, "id": "5-0"}\n\n{"id":"6-0","b64":"aGk="}\n')
    assert list(iter_ndjson(p)) == [("5-0", b'{"k": 1}'), ("6-0", b"hi")]


def test_garbage_line_is_an_error() -> None:
    with pytest.raises(LogError, match="bad NDJSON"):
        parse_line(b"not json at all\n")
    with pytest.raises(LogError, match="without e or b64"):
        parse_line(b'{"id":"1-0"}\n')


def test_fast_event_iteration_matches_decode(tmp_path: Path) -> None:
    good = [(f"{i}-0", encode(Deposit(event_id=f"d{i}", ts_event=i, account="a", bucket="cross",
                                      asset="USDC", amount=Decimal(i + 1))))
            for i in range(5)]
    good.append(("9-0", encode(PriceUpdated(event_id="p", ts_event=9, symbol="X", price=Decimal("2.5")))))
    bad = [("10-0", b'{"type":"price_updated","event_id":"q","ts_event":1,"symbol":"X","price":"0"}'),
           ("11-0", b"\xff")]
    p = tmp_path / "x.ndjson.gz"
    with gzip.open(p, "wb") as f:
        f.writelines(export_lines(good + bad))
    seen: list[tuple[str, str]] = []

    def on_bad(entry_id: str, payload: bytes, exc: DecodeError) -> None:
        seen.append((entry_id, exc.reason))

    got = list(iter_ndjson_events(p, on_bad))
    assert got == [(i, decode(b)) for i, b in good]
    assert seen == [("10-0", "invalid_price"), ("11-0", "bad_json")]


@pytest.mark.parametrize("chunk", [7, 300, 1 << 20])
def test_chunked_iteration_matches_line_by_line(tmp_path: Path, chunk: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks cut lines anywhere; good chunks, chunks with a bad or foreign line and the last
    line without a newline all give what line-by-line decoding gives."""
    monkeypatch.setattr("keeper.store.ndjson._CHUNK", chunk)
    good = [(f"{i}-0", encode(Deposit(event_id=f"d{i}", ts_event=i, account=f"a{i % 3}",
                                      bucket="cross", asset="USDC", amount=Decimal(i + 1))))
            for i in range(40)]
    lines = list(export_lines(good[:20]))
    lines.append(b'{"id":"50-0","b64":"/w=="}\n')  # a payload that is not JSON
    lines.append(b"\n")
    lines += list(export_lines(good[20:]))
    lines[-1] = lines[-1].rstrip(b"\n")  # no final newline
    p = tmp_path / "x.ndjson"
    p.write_bytes(b"".join(lines))
    seen: list[tuple[str, str]] = []
    got = list(iter_ndjson_events(p, lambda i, _p, exc: seen.append((i, exc.reason))))
    assert [tuple(g) for g in got] == [(i, decode(b)) for i, b in good]
    assert all(type(g).__name__ == "LogEntry" for g in got)
    assert seen == [("50-0", "bad_json")]
