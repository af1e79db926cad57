"""The public scenario vectors through the real command, checked by the shared checker."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_public_scenarios_all_pass_through_keeper_health(vectors_dir: Path) -> None:
    public = vectors_dir / "public"
    n = len(list(public.glob("*.json")))
    cmd = f"{shlex.quote(sys.executable)} -m keeper.app.cli health --json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(vectors_dir / "check_scenarios.py"), "--cmd", cmd, str(public)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{n} passed, 0 failed"
    assert n >= 22
