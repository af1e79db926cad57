"""The private redis-server outlives signals aimed at the keeper's process group."""

from __future__ import annotations

import os
from pathlib import Path

from keeper.store.embedded import EmbeddedRedis


def test_embedded_redis_runs_in_its_own_session_and_under_an_absolute_dir(tmp_path: Path,
                                                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    server = EmbeddedRedis(Path("relative/data"))
    server.start()
    try:
        assert server.pid is not None
        assert os.getsid(server.pid) != os.getsid(0)
        assert server.data_dir.is_absolute()
        assert (tmp_path / "relative/data/redis.log").exists()
    finally:
        server.stop()
