"""NDJSON lines: our own lines are sliced verbatim; foreign-but-valid lines are still read."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.errors import LogError
from keeper.store.ndjson import export_lines, iter_ndjson, parse_line


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
