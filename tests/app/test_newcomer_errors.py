"""Every user error is one line on stderr naming the fix, with a non-zero exit and no traceback
(``keeper --debug`` shows it); and every command finds the log in the same data folder
(``.keeper``), says which on stderr, and says when it is empty."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from keeper.app import cli
from keeper.app.cli import build_parser
from tests.replay.scenario import record_live
from tests.replay.test_replay_verify import export


def _one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith(f"keeper {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)


@pytest.mark.parametrize("argv", [["log", "tail"], ["replay", "--verify"], ["feed", "play", "x"],
                                  ["run"]])
def test_a_redis_url_without_a_scheme_is_one_line_saying_how_to_write_it(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    if argv[0] == "feed":  # a recording to play, so that the URL is what fails
        (tmp_path / "x").write_text("")
    assert cli.main(argv) == 1
    line = _one_error(capsys, argv[0])
    assert "REDIS_URL: 'localhost:6379' is not a Redis URL: write redis://localhost:6379" in line


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    from keeper.errors import ConfigError

    with pytest.raises(ConfigError, match="not a Redis URL"):
        cli.main(["--debug", "log", "tail"])


def test_an_unexpected_error_is_one_line_naming_debug(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import keeper.app.cmd_health as cmd

    def boom(_args: object) -> int:
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(cmd, "run", boom)
    assert cli.main(["health", "x.json"]) == 1
    line = _one_error(capsys, "health")
    assert "RuntimeError: something broke" in line and "keeper --debug health" in line


def test_health_names_the_file_whose_json_is_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "scenario.json"
    bad.write_text('{"profile": "aave-v3.0", ')
    assert cli.main(["health", str(bad)]) == 1
    assert f"keeper health: error: {bad}: bad JSON" in _one_error(capsys, "health")


def test_log_import_of_a_missing_file_and_export_into_a_missing_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_redis_url: None) -> None:
    assert cli.main(["log", "--data-dir", str(tmp_path), "import", str(tmp_path / "nope.ndjson")]) == 1
    assert "no such file" in _one_error(capsys, "log")
    assert cli.main(["log", "--data-dir", str(tmp_path), "export", str(tmp_path / "a" / "b.ndjson")]) == 1
    assert "mkdir -p" in _one_error(capsys, "log")


def test_replaying_a_file_that_is_not_a_log_says_so_not_profile(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "README.md"
    f.write_text("# not a log\n")
    assert cli.main(["replay", "--ndjson", str(f), "--verify"]) == 1
    line = _one_error(capsys, "replay")
    assert "is not a keeper log export" in line and "keeper log export" in line
    assert "--profile" not in line


def test_explaining_an_account_the_log_never_named_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, _, _ = asyncio.run(record_live())
    path = asyncio.run(export(log, tmp_path))
    assert cli.main(["replay", "--ndjson", str(path), "--explain", "alicee"]) == 1
    line = _one_error(capsys, "replay")
    assert "no account 'alicee' in the replayed log" in line and "did you mean alice" in line
    assert cli.main(["replay", "--ndjson", str(path), "--plot", "nobody", "--out",
                     str(tmp_path / "p.png")]) == 1
    assert "no account 'nobody'" in _one_error(capsys, "replay")


# ---------------------------------------------------------------- one data folder


def test_every_command_that_opens_the_log_defaults_to_the_same_folder() -> None:
    def defaults(*argv: str) -> dict[str, object]:
        return vars(build_parser(only=argv[0]).parse_args(list(argv)))

    assert defaults("log", "tail")["data_dir"] == Path(".keeper")
    assert defaults("replay", "--verify")["data_dir"] == Path(".keeper")
    assert defaults("demo")["data_dir"] == Path(".keeper")
    assert defaults("feed", "play", "x")["redis_data_dir"] == Path(".keeper/redis")
    from keeper.app.config import load_config

    assert load_config(None, env={}).redis.data_dir == ".keeper/redis"  # keeper run's


def test_log_tail_replay_and_import_share_the_data_folder_and_say_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        no_redis_url: None) -> None:
    log, _, _ = asyncio.run(record_live(fillers=3))
    path = asyncio.run(export(log, tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(["log", "tail"]) == 1  # nothing there yet: said, not an empty log started
    assert "no log in .keeper/redis" in _one_error(capsys, "log")
    assert not (work / ".keeper").exists()
    assert cli.main(["log", "import", str(path)]) == 0
    assert "the log: .keeper/redis" in capsys.readouterr().err
    assert cli.main(["log", "tail", "-n", "2"]) == 0
    out = capsys.readouterr()
    assert [json.loads(x)["id"] for x in out.out.splitlines()] == [i for i, _ in log.entries[-2:]]
    assert "the log: .keeper/redis" in out.err
    assert cli.main(["replay", "--verify"]) == 0  # the run manifest beside the export came too
    out = capsys.readouterr()
    assert out.out.strip().splitlines()[-1].endswith(", 0 divergences")
    assert "keeper replay: the log: .keeper/redis" in out.err


def test_tail_of_an_empty_log_says_it_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               no_redis_url: None) -> None:
    (tmp_path / "redis").mkdir()
    assert cli.main(["log", "--data-dir", str(tmp_path), "tail"]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert "the log is empty" in out.err


def test_the_data_folder_is_ignored_by_git() -> None:
    root = Path(__file__).resolve().parents[2]
    assert ".keeper/" in (root / ".gitignore").read_text().split()
    assert not os.path.isabs(".keeper")
