"""JSON read from outside has a size and a nesting limit, and going past one is one line naming
the file and the limit: never a RecursionError, never a traceback (``keeper.jsonlimits``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.app.cli import main
from keeper.app.scenario import load_scenario
from keeper.domain.codec import decode
from keeper.errors import DecodeError, ScenarioError
from keeper.jsonlimits import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_LINE_BYTES,
    deeper_than,
    problem,
    read_capped,
    size_text,
)
from keeper.store.entries import event_id_of

DEEP = 100_000
"""Deep enough to pass any recursion limit: the fault campaign's file."""


def _depth(doc: object) -> int:
    if isinstance(doc, list):
        return 1 + max((_depth(d) for d in doc), default=0)
    if isinstance(doc, dict):
        return 1 + max((_depth(d) for d in doc.values()), default=0)
    return 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\k'), inner,
                                                                 max_size=3),
    max_leaves=40)


# ---------------------------------------------------------------- the depth check itself

@given(_json, st.integers(min_value=0, max_value=12))
def test_depth_check_agrees_with_the_parsed_depth(doc: object, limit: int) -> None:
    """Brackets inside strings (escaped quotes included) are text, not nesting."""
    text = json.dumps(doc)
    assert deeper_than(text, limit) == (_depth(doc) > limit)
    assert deeper_than(text.encode(), limit) == (_depth(doc) > limit)


@pytest.mark.parametrize(("text", "deep"), [
    ("[" * DEEP, True),  # unclosed: every open bracket is a level a parser would enter
    ("[" * DEEP + "]" * DEEP, True),
    ('{"a":' * 40 + "[" * 30 + "]" * 30 + "}" * 40, True),  # objects and arrays both count
    ("[" * MAX_DEPTH + "]" * MAX_DEPTH, False),
    ('["' + "[" * DEEP + '"]', False),  # inside a string
    ("]" * DEEP + "[" * 3, False),  # unbalanced, not deep: the parser says what is wrong
])
def test_depth_check_edge_cases(text: str, deep: bool) -> None:
    assert deeper_than(text) is deep


def test_problem_names_the_limit() -> None:
    assert problem(b"[]", max_bytes=2) is None
    assert problem(b"[1]", max_bytes=2) == "larger than the limit of 2 bytes"
    assert problem("[" * 65 + "]" * 65, max_bytes=1000) == "nested deeper than the limit of 64 levels"
    assert size_text(MAX_DOCUMENT_BYTES) == "16 MiB" and size_text(MAX_LINE_BYTES) == "1 MiB"


def test_read_capped_reads_one_byte_past_the_limit(tmp_path: Path) -> None:
    p = tmp_path / "big.json"
    p.write_bytes(b" " * 1000)
    assert len(read_capped(p, 10)) == 11


# ---------------------------------------------------------------- keeper health

def _health(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["health", str(path)])
    return code, capsys.readouterr().err


def test_health_on_a_deeply_nested_file_is_one_line_naming_file_and_limit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "deep.json"
    p.write_text("[" * DEEP + "]" * DEEP)
    code, err = _health(p, capsys)
    assert code == 1
    assert err == f"keeper health: error: {p}: nested deeper than the limit of 64 levels\n"


def test_health_on_a_file_over_the_size_limit_is_refused_unread(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "huge.json"
    with p.open("wb") as f:
        f.truncate(MAX_DOCUMENT_BYTES + 5)  # sparse: only the limit and one byte are read
    code, err = _health(p, capsys)
    assert code == 1
    assert err == f"keeper health: error: {p}: larger than the limit of 16 MiB\n"


def test_load_scenario_refuses_deep_nesting_itself() -> None:
    with pytest.raises(ScenarioError, match=r"^scenario: nested deeper than the limit of 64 levels$"):
        load_scenario('{"profile": ' + "[" * DEEP + "]" * DEEP + "}")


# ---------------------------------------------------------------- events and NDJSON lines

_DEEP_EVENT = b'{"type":"deposit","x":' + b"[" * DEEP + b"]" * DEEP + b"}"
"""Fails the typed decode (an unknown field), then recurses in the untyped one (upcasting)."""


def test_codec_turns_a_deep_payload_into_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode(_DEEP_EVENT)
    assert info.value.reason in {"bad_json", "invalid_field", "unknown_type"}
    for payload in (b"[" * DEEP, b'{"type":' + b"[" * DEEP, b'{"event_id":"e","x":' + b"[" * DEEP):
        with pytest.raises(DecodeError):
            decode(payload)
    assert event_id_of(_DEEP_EVENT) == ""
