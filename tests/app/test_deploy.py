"""Deploy files: every role has a process type and a compose service, Redis keeps an AOF, the
systemd unit restarts and reads secrets from an environment file."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from keeper.app.config import load_config

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("feeds", "ingest", "projector", "keeper", "executor", "admin")


def test_procfile_has_one_process_type_per_role_with_a_loadable_config():
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, cmd = line.partition(":")
            entries[name.strip()] = cmd.strip()
    retention = entries.pop("retention")
    assert tuple(entries) == ROLES
    for role, cmd in entries.items():
        m = re.fullmatch(r"keeper run --role (\w+) --config (\S+)", cmd)
        assert m and m[1] == role, cmd
        load_config(ROOT / m[2], env={})
    # and retention as its own process: passes until SIGTERM, trimming, with the same config
    m = re.fullmatch(r"keeper log archive --config (\S+) --follow --trim", retention)
    assert m, retention
    load_config(ROOT / m[1], env={})
    from keeper.app.cmd_log import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(retention.split()[2:])
    assert args.follow and args.trim and args.config == m[1]


def test_compose_runs_redis_with_aof_on_a_volume_and_every_role():
    text = (ROOT / "deploy" / "compose.yaml").read_text()
    assert re.search(r"image: redis:7\n", text)
    assert '"--appendonly", "yes"' in text and '"--appendfsync", "everysec"' in text
    assert "redis-data:/data" in text
    for role in ROLES:
        assert re.search(rf'\n  {role}:\n    <<: \*keeper\n    command: \["run", "--role", "{role}", '
                         r'"--config", "config/default.toml"\]', text), role
    assert "REDIS_URL: redis://redis:6379/0" in text
    assert "\t" not in text  # YAML forbids tabs for indentation


def test_dockerfile_builds_from_python_slim_with_redis_tools():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    build, _, run = text.partition("\nFROM python:3.11-slim\n")
    # a build stage with a C compiler makes the wheel (setup.py compiles the hot modules) ...
    assert "FROM python:3.11-slim AS build" in build and "gcc" in build
    assert "COPY pyproject.toml setup.py README.md ./" in build and "pip wheel" in build
    # ... and the running image installs it, without the compiler
    assert "COPY --from=build /wheels /wheels" in run and "pip install --no-cache-dir /wheels/*.whl" in run
    assert "redis-tools" in run and "gcc" not in run
    assert 'ENTRYPOINT ["keeper"]' in run


def test_systemd_unit_restarts_and_takes_secrets_from_an_environment_file(tmp_path):
    text = (ROOT / "deploy" / "keeper.service").read_text()
    for line in ("Restart=always", "EnvironmentFile=/etc/keeper/keeper.env", "KillSignal=SIGTERM"):
        assert f"\n{line}\n" in text
    assert re.search(r"\nExecStart=\S+/keeper run --config \S+\.toml\n", text)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is absent: the unit's syntax is not verified")
    keeper_bin = shutil.which("keeper") or str(ROOT / ".venv" / "bin" / "keeper")
    unit = tmp_path / "keeper.service"
    unit.write_text(text.replace("/opt/keeper/.venv/bin/keeper", keeper_bin))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=30,
                         check=False)
    assert res.returncode == 0, res.stderr


def test_operations_guide_covers_start_stop_upgrade_restore():
    text = (ROOT / "deploy" / "OPERATIONS.md").read_text()
    for heading in ("## Start", "## Stop", "## Upgrade", "## Restore from the log"):
        assert heading in text
    for command in ("keeper replay --ndjson", "--verify", "keeper log", "export", "import"):
        assert command in text
