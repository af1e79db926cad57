"""``keeper log import``: the whole file is checked before anything is written, bad lines are
refused (or dead-lettered with ``--skip-bad``), and an interrupted import resumes.

The library tests run against the in-memory log and the Redis log (the session's private
server); the CLI tests go through ``keeper.app.cli.main``.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from keeper.app.cli import main
from keeper.domain.codec import encode
from keeper.domain.events import Deposit
from keeper.errors import LogError, LogUnavailable
from keeper.jsonlimits import MAX_LINE_BYTES
from keeper.store.ndjson import export_lines, export_log
from keeper.store.ndjson_import import import_log, import_ndjson
from keeper.store.redis_log import RedisEventLog
from keeper.testing import FakeClock, MemoryEventLog


def dep(i: int) -> bytes:
    return encode(Deposit(event_id=f"d{i}", ts_event=i, account="a", bucket="cross", asset="USDC",
                          amount=Decimal(i + 1)))


def eid(i: int) -> str:
    return f"{1_000 + i}-0"


def entries(n: int) -> list[tuple[str, bytes]]:
    return [(eid(i), dep(i)) for i in range(n)]


def write(path: Path, lines: Sequence[bytes]) -> Path:
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def export(path: Path, items: Sequence[tuple[str, bytes]]) -> Path:
    return write(path, list(export_lines(items)))


@pytest_asyncio.fixture(params=["memory", "redis"], loop_scope="function")
async def log(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryEventLog(FakeClock(1_700_000_000_000_000))
        return
    lg = await RedisEventLog.connect(request.getfixturevalue("redis_url"), shard="imp")
    try:
        yield lg
    finally:
        await lg.close()


class Interrupted:
    """A log whose connection is cut at the ``cut``-th ``import_entries`` call."""

    def __init__(self, log: Any, cut: int) -> None:
        self.log = log
        self.cut = cut
        self.calls = 0

    async def read_raw(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                       ) -> list[tuple[str, bytes]]:
        return list(await self.log.read_raw(after, count, block_ms))

    async def import_entries(self, items: Sequence[tuple[str, bytes]]) -> int:
        self.calls += 1
        if self.calls == self.cut:
            raise LogUnavailable("import: redis unreachable: connection reset (test)")
        return int(await self.log.import_entries(items))

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes,
                          ref: str = "") -> bool:
        return bool(await self.log.dead_letter(source, reason, detail, payload, ref))


async def everything(log: Any) -> list[tuple[str, bytes]]:
    return list(await log.read_raw("0-0", 100_000))


# ---------------------------------------------------------------- all or nothing


async def test_out_of_order_entry_id_imports_nothing_and_names_the_line(log: Any, tmp_path: Path) -> None:
    """The fault campaign's file: 1,000 entries, the 501st with an id below the 500th."""
    items = entries(1_000)
    items[500] = ("1-0", items[500][1])
    p = export(tmp_path / "x.ndjson", items)
    with pytest.raises(LogError) as info:
        await import_log(log, p)
    assert str(info.value) == (f"{p}:501: entry id 1-0 is not above {eid(499)} of line 500 "
                               "(entry ids must increase); nothing imported")
    assert await everything(log) == []


async def test_duplicate_event_id_imports_nothing(log: Any, tmp_path: Path) -> None:
    items = entries(5)
    items.append(("2000-0", dep(2)))
    p = export(tmp_path / "x.ndjson", items)
    with pytest.raises(LogError, match=rf"^{p}:6: event id 'd2' is also on line 3; nothing imported$"):
        await import_log(log, p)
    assert await everything(log) == []


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"id":"1003-0","e":{"type":"price_updated","event_id":"q","ts_event":1,"symbol":"X",'
     b'"price":"0"}}\n', "invalid_price"),  # decode() range-checks
    (b'{"id":"1003-0","b64":"/w=="}\n', "bad_json"),
    (b"not json at all\n", "bad_line"),
    (b'{"id":"1003-0","b64":"%%%"}\n', "bad_line"),  # not base64
    (b'{"id":"0-0","e":{}}\n', "bad_line"),  # Redis refuses 0-0
    (b'{"id":"01-5","e":{}}\n', "bad_line"),  # Redis would store it as 1-5
    (b'{"id":"1003","e":{}}\n', "bad_line"),
    (b'{"id":"1003-0","e":' + b"[" * 100_000 + b"}\n", "too_deep"),
    (b'{"id":"1003-0","e":"' + b"x" * MAX_LINE_BYTES + b'"}\n', "too_large"),
])
async def test_a_bad_line_refuses_the_file_naming_it(log: Any, tmp_path: Path, line: bytes,
                                                     reason: str) -> None:
    lines = list(export_lines(entries(3)))
    p = write(tmp_path / "x.ndjson", [*lines, line, *export_lines([(eid(9), dep(9))])])
    with pytest.raises(LogError) as info:
        await import_log(log, p)
    msg = str(info.value)
    assert msg.startswith(f"{p}:4: {reason}: ")
    assert msg.endswith("--skip-bad imports the other lines and dead-letters this one)") or \
        msg.endswith("--keep-bad imports it verbatim)")
    assert "\n" not in msg and len(msg) < 600
    assert await everything(log) == []


async def test_skip_bad_imports_the_rest_and_dead_letters_each_bad_line(log: Any, tmp_path: Path) -> None:
    bad_price = (b'{"type":"price_updated","event_id":"q","ts_event":1,"symbol":"X","price":"-1"}')
    lines = [*export_lines(entries(2)),
             b"garbage\n",
             *export_lines([(eid(5), bad_price)]),
             b'{"id":"1006-0","e":"' + b"x" * (MAX_LINE_BYTES + 1) + b'"}\n',
             b"\n",
             *export_lines([(eid(7), dep(7))])]
    p = write(tmp_path / "x.ndjson", lines)
    summary = await import_ndjson(log, p, bad="skip")
    assert (summary.imported, summary.present, summary.dead_lettered) == (3, 0, 3)
    assert await everything(log) == [*entries(2), (eid(7), dep(7))]
    dead = await log.dead_letters()
    assert [(d.source, d.reason) for d in dead] == [("import", "bad_line"), ("import", "invalid_price"),
                                                    ("import", "too_large")]
    assert [d.detail.split(": ")[0] for d in dead] == [f"{p}:3", f"{p}:4", f"{p}:5"]
    assert dead[0].payload == b"garbage" and dead[1].payload == bad_price


async def test_keep_bad_imports_undecodable_payloads_verbatim(log: Any, tmp_path: Path) -> None:
    items = [*entries(2), (eid(2), b"{broken"), (eid(3), b"\xff\x00"), (eid(4), dep(4))]
    p = export(tmp_path / "x.ndjson", items)
    summary = await import_ndjson(log, p, bad="keep")
    assert (summary.imported, summary.kept) == (5, 2)
    assert await everything(log) == items


async def test_keep_bad_still_refuses_a_line_that_is_no_export_line(log: Any, tmp_path: Path) -> None:
    p = write(tmp_path / "x.ndjson", [*export_lines(entries(2)), b"garbage\n"])
    with pytest.raises(LogError, match=rf"^{p}:3: bad_line: "):
        await import_log(log, p, bad="keep")
    assert await everything(log) == []


# ---------------------------------------------------------------- resuming


async def test_an_interrupted_import_resumes_where_it_stopped(log: Any, tmp_path: Path) -> None:
    items = entries(2_500)
    p = export(tmp_path / "x.ndjson.gz", items)
    with pytest.raises(LogUnavailable):
        await import_log(Interrupted(log, cut=2), p)  # the first batch of 1,000 went in
    assert len(await everything(log)) == 1_000
    summary = await import_ndjson(log, p)
    assert (summary.imported, summary.present) == (1_500, 1_000)
    assert await everything(log) == items
    again = await import_ndjson(log, p)  # a finished import: nothing left to do
    assert (again.imported, again.present) == (0, 2_500)
    assert len(await everything(log)) == 2_500


async def test_a_resumed_skip_bad_import_dead_letters_each_line_once(log: Any, tmp_path: Path) -> None:
    items = entries(1_500)
    lines = list(export_lines(items))
    lines.insert(300, b"garbage\n")  # line 301: the first batch is written before it
    lines.insert(1_201, b'{"id":"1200-5","b64":"/w=="}\n')
    p = write(tmp_path / "x.ndjson", lines)
    with pytest.raises(LogUnavailable):
        await import_log(Interrupted(log, cut=2), p, bad="skip")
    assert len(await everything(log)) == 300
    summary = await import_ndjson(log, p, bad="skip")
    assert (summary.imported, summary.present) == (1_200, 300)
    assert await everything(log) == items
    assert [d.detail.split(": ")[0] for d in await log.dead_letters()] == [f"{p}:301", f"{p}:1202"]


async def test_a_log_holding_anything_else_is_refused_and_left_untouched(log: Any, tmp_path: Path) -> None:
    p = export(tmp_path / "x.ndjson", entries(10))
    await log.import_entries([*entries(3)[:2], (eid(2), dep(99))])  # same ids, another payload
    with pytest.raises(LogError, match=rf"^{p}: the log is not empty and its entry {eid(2)} is not line 3 "):
        await import_log(log, p)
    other = export(tmp_path / "short.ndjson", entries(2))
    with pytest.raises(LogError, match=rf"^{other}: the log is not empty and its entry {eid(2)} is not in"):
        await import_log(log, other)
    assert len(await everything(log)) == 3


# ---------------------------------------------------------------- files that cannot be read


async def test_missing_or_broken_files_are_named(log: Any, tmp_path: Path) -> None:
    with pytest.raises(LogError, match=rf"^{tmp_path / 'nope.ndjson'}: no such file$"):
        await import_log(log, tmp_path / "nope.ndjson")
    notgz = tmp_path / "x.ndjson.gz"
    notgz.write_bytes(b"plain text\n")
    with pytest.raises(LogError, match=rf"^{notgz}: cannot read: "):
        await import_log(log, notgz)
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(gzip.compress(b"".join(export_lines(entries(200))))[:-40])
    with pytest.raises(LogError, match=rf"^{cut}: cannot read: "):
        await import_log(log, cut)
    assert await everything(log) == []


# ---------------------------------------------------------------- the command


def test_cli_import_refuses_in_one_line_and_imports_nothing(
        redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = entries(1_000)
    items[500] = ("1-0", items[500][1])
    p = export(tmp_path / "x.ndjson", items)
    assert main(["log", "--redis-url", redis_url, "--shard", "cli", "import", str(p)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"keeper log: error: {p}:501: entry id 1-0 is not above ")
    assert err.count("\n") == 1 and "Traceback" not in err

    async def length() -> int:
        lg = await RedisEventLog.connect(redis_url, shard="cli")
        try:
            return await lg.length()
        finally:
            await lg.close()

    assert asyncio.run(length()) == 0


def test_cli_skip_bad_says_what_it_did(redis_url: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path / "x.ndjson", [*export_lines(entries(4)), b"garbage\n"])
    assert main(["log", "--redis-url", redis_url, "--shard", "cli", "import", "--skip-bad", str(p)]) == 0
    assert capsys.readouterr().err == f"imported 4 entries from {p} (1 bad lines dead-lettered)\n"
    assert main(["log", "--redis-url", redis_url, "--shard", "cli", "dead"]) == 0
    assert f"\tbad_line\timport\t{p}:5: " in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["import", "{tmp}/missing.ndjson"],
     "{tmp}/missing.ndjson: no such file (give the path of an export: keeper log export FILE)"),
    (["export", "{tmp}/no/such/dir/x.ndjson"],
     "{tmp}/no/such/dir/x.ndjson: cannot write: folder {tmp}/no/such/dir does not exist "
     "(create it first: mkdir -p {tmp}/no/such/dir)"),
])
def test_cli_missing_file_or_folder_is_one_line_before_any_redis(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    # port 1: nothing listens there; the command must not get as far as connecting
    args = [a.format(tmp=tmp_path) for a in argv]
    assert main(["log", "--redis-url", "redis://127.0.0.1:1/0", *args]) == 1
    assert capsys.readouterr().err == f"keeper log: error: {message.format(tmp=tmp_path)}\n"


async def test_export_into_a_missing_folder_is_a_log_error(log: Any, tmp_path: Path) -> None:
    await log.import_entries(entries(2))
    with pytest.raises(LogError, match="does not exist"):
        await export_log(log, tmp_path / "no" / "x.ndjson")
