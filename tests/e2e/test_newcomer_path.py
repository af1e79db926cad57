"""The newcomer's path end to end, as the README tells it, each step a ``keeper`` process in a
fresh folder: a demo without ``--export``, ``keeper log export`` of its log (found in the one
data folder, with the run manifest), ``keeper replay --verify`` of that file with zero
divergences, then ``--explain`` and ``--plot`` of an account the demo liquidated (the plot on
the crash's own time), and ``--until`` a time of the crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STEP_TIMEOUT_S = 120


def _keeper(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "keeper.app.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"keeper {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc


@pytest.mark.timeout(4 * STEP_TIMEOUT_S)
def test_demo_then_export_verify_explain_and_plot_a_liquidated_account(tmp_path: Path,
                                                                       data_dir: Path) -> None:
    env = {**os.environ, "KEEPER_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    demo = _keeper(tmp_path, env, "demo", "--accounts", "200", "--tick-ms", "5", "--no-progress",
                   "--start", "2025-10-10T20:45:00Z", "--end", "2025-10-10T21:45:00Z")
    assert "sound                     yes" in demo.stdout
    assert "status page at http://127.0.0.1:" in demo.stderr  # the demo says where to look
    assert (tmp_path / ".keeper" / "redis").is_dir()

    export = _keeper(tmp_path, env, "log", "export", "run.ndjson")
    assert "the log: .keeper/redis" in export.stderr
    manifest = json.loads((tmp_path / "run.ndjson.manifest.json").read_text())
    assert {c["params"]["profile"] for c in manifest["cores"]} == {"generic-perp", "aave-v3.3"}
    assert manifest["clock"], "the demo's clock: log times to the crash's"

    verify = _keeper(tmp_path, env, "replay", "--ndjson", "run.ndjson", "--verify")
    last = verify.stdout.strip().splitlines()[-1]
    assert last.startswith("verify: ") and last.endswith(" decisions, 0 divergences")
    assert int(last.split()[1]) > 0

    lines = [json.loads(x) for x in (tmp_path / "run.ndjson").read_text().splitlines()]
    confirmed = next(x["e"] for x in lines if x.get("e", {}).get("type") == "liquidation_confirmed")
    account = confirmed["account"]
    explain = _keeper(tmp_path, env, "replay", "--ndjson", "run.ndjson", "--explain", account)
    assert f"account {account}" in explain.stdout and "rule:" in explain.stdout
    assert f"confirmed {confirmed['intent_id']}" in explain.stdout

    _keeper(tmp_path, env, "replay", "--ndjson", "run.ndjson", "--plot", account, "--out", "account.png")
    png = (tmp_path / "account.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 30_000

    until = _keeper(tmp_path, env, "replay", "--ndjson", "run.ndjson", "--verify",
                    "--until", "2025-10-10T21:15:00Z")
    assert "the played data's time" in until.stderr
    assert "stopped: until" in until.stdout and until.stdout.strip().endswith(", 0 divergences")
