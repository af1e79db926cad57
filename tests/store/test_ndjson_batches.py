"""``iter_ndjson_batches``: the chunked fast path gives exactly what line-by-line decoding gives."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from keeper.domain.codec import decode, encode
from keeper.domain.events import Deposit, PriceUpdated
from keeper.replay.source import SourceStats, ndjson_batches
from keeper.store.ndjson import export_lines, iter_ndjson_batches


def _export(tmp_path: Path) -> tuple[Path, list[tuple[str, bytes]]]:
    good = [(f"{i + 1}-0", encode(Deposit(event_id=f"d{i}", ts_event=i, account=f"a{i % 3}",
                                      bucket="cross", asset="USDC", amount=Decimal(i + 1))))
            if i % 4 else
            (f"{i + 1}-0", encode(PriceUpdated(event_id=f"p{i}", ts_event=i, symbol="X",
                                           price=Decimal(i + 1))))
            for i in range(60)]
    lines = list(export_lines(good[:30]))
    lines.append(b'{"id":"30-5","b64":"/w=="}\n')  # not JSON: skipped and reported
    lines += list(export_lines(good[30:]))
    lines[-1] = lines[-1].rstrip(b"\n")
    p = tmp_path / "x.ndjson"
    p.write_bytes(b"".join(lines))
    return p, good


@pytest.mark.parametrize("chunk", [5, 97, 1 << 16])
def test_batches_concatenate_to_the_decoded_entries(tmp_path: Path, chunk: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keeper.store.ndjson._CHUNK", chunk)
    p, good = _export(tmp_path)
    seen: list[str] = []
    got = [e for b in iter_ndjson_batches(p, lambda i, _p, exc: seen.append(i)) for e in b]
    assert got == [(i, decode(b)) for i, b in good]
    assert seen == ["30-5"]


@pytest.mark.parametrize("chunk", [5, 1 << 16])
@pytest.mark.parametrize(("after", "to", "batch"),
                         [("0-0", None, 7), ("12-0", "40-0", 5), ("55-0", None, 1000)])
def test_replay_source_batches_sized_and_cut(tmp_path: Path, chunk: int, after: str, to: str | None,
                                             batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keeper.store.ndjson._CHUNK", chunk)
    p, good = _export(tmp_path)
    lo = int(after.split("-", maxsplit=1)[0])
    hi = int(to.split("-", maxsplit=1)[0]) if to else 10**9
    want = [(i, decode(b)) for i, b in good if lo < int(i.split("-", maxsplit=1)[0]) <= hi]
    stats = SourceStats()
    batches = list(ndjson_batches(p, after=after, to=to, batch=batch, stats=stats))
    assert [e for b in batches for e in b] == want
    assert all(len(b) == batch for b in batches[:-1]) and 0 < len(batches[-1]) <= batch
    assert stats.read == len(want)
    assert (stats.first, stats.last) == (want[0][0], want[-1][0])


@pytest.mark.parametrize("chunk", [97, 1 << 16])
def test_a_line_of_another_version_leaves_the_fast_path_and_is_refused_by_name(
        tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keeper.store.ndjson._CHUNK", chunk)
    p, good = _export(tmp_path)
    newer = (b'{"id":"70-0","e":{"type":"price_updated","v":2,"event_id":"n","ts_event":1,'
             b'"symbol":"X","price":"1"}}\n')
    p.write_bytes(p.read_bytes() + b"\n" + newer)
    bad: list[tuple[str, str]] = []
    got = [e for b in iter_ndjson_batches(p, lambda i, _p, exc: bad.append((i, exc.reason))) for e in b]
    assert got == [(i, decode(b)) for i, b in good]  # the v2 line is not read as a v1 one
    assert ("70-0", "unknown_version") in bad
