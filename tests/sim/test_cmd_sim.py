"""``keeper sim`` as a process: the URL on stdout's first line, a working venue, clean exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEPER_SIM_SECRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "keeper.app.cli", "sim", "--port", "0", *args]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_prints_url_first_serves_and_exits_0_on_sigterm() -> None:
    proc = subprocess.Popen(_cmd("--accounts", "50", "--hold"), env=_env(KEEPER_SIM_SECRET="s"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            health = msgspec.json.decode(r.read())
        assert health["ticks_played"] == 0 and health["ticks_total"] == 1801 and health["seq"] > 50
        with urllib.request.urlopen(f"{url}/stats", timeout=5) as r:
            assert msgspec.json.decode(r.read())["accounts"] == 50
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def test_exit_after_play_runs_the_whole_path(tmp_path: Path) -> None:
    prices = tmp_path / "p.csv"
    prices.write_text("ts_us,symbol,price\n0,BTCUSDT,60000\n0,ETHUSDT,3000\n1000000,BTCUSDT,59000\n")
    out = _run(_cmd("--accounts", "20", "--prices", str(prices), "--speed", "0", "--exit-after-play"),
               _env(KEEPER_SIM_SECRET="s"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("http://127.0.0.1:")
    assert "sim.path_played" in out.stderr


def test_missing_secret_or_prices_file_is_a_named_error() -> None:
    out = _run(_cmd("--accounts", "5"), _env())
    assert out.returncode == 1 and "KEEPER_SIM_SECRET" in out.stderr and out.stdout == ""
    out = _run(_cmd("--prices", "/nonexistent.csv"), _env(KEEPER_SIM_SECRET="s"))
    assert out.returncode == 1 and "--prices" in out.stderr
