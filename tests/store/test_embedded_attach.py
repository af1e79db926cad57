"""One redis-server a data folder: with every command on the same folder (``.keeper/redis``), a
command run while a keeper serves that folder uses the running server instead of starting a
second one on the same AOF (``keeper log tail`` during ``keeper run``); a stale record of a
server that is gone is ignored."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from keeper.app import cli
from keeper.errors import EmbeddedRedisError
from keeper.store.embedded import SERVER_FILE, EmbeddedRedis, open_redis, running_in
from keeper.store.redis_log import RedisEventLog
from tests.replay.scenario import setup_events


def test_a_command_uses_the_server_already_running_on_its_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    folder = tmp_path / "redis"
    server = EmbeddedRedis(folder)  # what keeper run started
    server.start()
    try:
        assert running_in(folder) == server.url
        url, owned = asyncio.run(open_redis(None, folder))
        assert (url, owned) == (server.url, None)
        with pytest.raises(EmbeddedRedisError, match="in use by another redis-server"):
            EmbeddedRedis(folder).start()

        async def write() -> None:
            lg = await RedisEventLog.connect(server.url)
            try:
                await lg.append(setup_events())
            finally:
                await lg.close()

        asyncio.run(write())
        assert cli.main(["log", "--data-dir", str(tmp_path), "tail", "-n", "1"]) == 0
        [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        assert json.loads(line)["e"]["type"] == "price_updated"
        assert server.running(), "the command did not stop the keeper's server"
    finally:
        server.stop()
    assert not (folder / SERVER_FILE).exists()
    assert running_in(folder) is None


def test_a_record_left_by_a_server_that_is_gone_is_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    folder.mkdir()
    (folder / SERVER_FILE).write_text(json.dumps({"pid": 2**22 + os.getpid() % 1000, "port": 1,
                                                  "url": "redis://127.0.0.1:1/0"}))
    assert running_in(folder) is None
    server = EmbeddedRedis(folder)
    server.start()
    try:
        assert running_in(folder) == server.url
    finally:
        server.stop()
