"""``keeper demo --window`` plays the window it names (every window of the data, at its own bars
and span) or refuses in one line; it was ignored for every window but 2025-10-10 (the synthetic
crash played, exit 0). The demo keeps its log in the data folder's ``redis/``: it replaces a log
an earlier demo wrote there, never another."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from keeper.app import cli, datadir
from keeper.app.demo import window_data, window_span, window_ticks
from keeper.errors import ConfigError


@pytest.fixture(autouse=True)
def _own_logging() -> Iterator[None]:
    """``keeper demo`` configures logging onto this test's captured stderr: undo it after."""
    old = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**old)
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


@pytest.mark.parametrize(("window", "markets"), [
    ("2020-03-12", {"BTC-USD", "ETH-USD"}), ("2021-05-19", {"BTC-USD", "ETH-USD"}),
    ("2022-06", {"BTC-USD", "ETH-USD"}), ("2022-11", {"BTC-USD", "ETH-USD"}),
    ("2024-08-05", {"BTC-USD", "ETH-USD", "SOL-USD"}), ("2025-10-10", {"BTC-USD", "ETH-USD", "SOL-USD"}),
])
def test_every_window_plays_its_own_bars_over_its_own_span(data_dir: Path, window: str,
                                                           markets: set[str]) -> None:
    w = window_data(data_dir, window)
    t0, t1 = window_span(w, None, None)
    ticks = window_ticks(w, t0, t1)
    assert set(ticks[0].prices) == markets
    assert t0 <= ticks[0].ts_us and ticks[-1].ts_us < t1 <= t0 + 6 * 3600 * 1_000_000
    assert len(ticks) == 4 * sum(1 for ts in w.bars if t0 <= ts < t1)


def test_the_default_window_keeps_its_hand_chosen_span(data_dir: Path) -> None:
    w = window_data(data_dir, "2025-10-10")
    assert window_span(w, None, None) == (1_760_119_200_000_000, 1_760_140_800_000_000)  # 18:00-00:00


@pytest.mark.parametrize(("argv", "needle"), [
    (["--window", "1999-01"], "no window '1999-01'"),
    (["--window", "2022-06", "--start", "2030-01-01T00:00:00Z", "--end", "2030-01-02T00:00:00Z"],
     "no bar of the window 2022-06"),
])
def test_a_window_it_cannot_play_is_one_line(data_dir: Path, tmp_path: Path, argv: list[str], needle: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["demo", *argv, "--shared-data", str(data_dir), "--data-dir", str(tmp_path),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert needle in err.strip().splitlines()[-1]


def test_a_named_window_without_its_data_is_refused_not_replaced_by_the_synthetic_crash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["demo", "--window", "2022-06", "--shared-data", str(tmp_path), "--data-dir",
                   str(tmp_path / "d"), "--no-progress"])
    assert rc == 1
    assert "--window 2022-06: no recorded data" in capsys.readouterr().err


def test_the_demo_replaces_its_own_log_and_refuses_another(tmp_path: Path) -> None:
    redis = datadir.redis_dir(tmp_path)
    datadir.fresh_demo_log(redis)  # a fresh folder
    (redis / "appendonlydir").mkdir()
    datadir.fresh_demo_log(redis)  # an earlier demo's log: replaced
    assert not (redis / "appendonlydir").exists()
    (redis / "appendonlydir").mkdir()
    datadir.claim_for_run(redis)  # keeper run wrote there since
    with pytest.raises(ConfigError, match="holds a log keeper demo did not write"):
        datadir.fresh_demo_log(redis)
    assert (redis / "appendonlydir").exists()
