"""EmbeddedRedis: start/stop/kill/restart with AOF, the missing-binary message, password URLs."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import redis

from keeper.errors import EmbeddedRedisError, LogUnavailable
from keeper.store.embedded import EmbeddedRedis, find_redis_server, free_port, open_redis
from keeper.store.redis_log import RedisEventLog


def _count(url: str) -> int:
    with redis.Redis.from_url(url, socket_timeout=5) as c:
        return int(c.dbsize())


def _fill(url: str, n: int) -> None:
    with redis.Redis.from_url(url, socket_timeout=5) as c:
        for i in range(n):
            c.set(f"k{i}", i)


def test_stop_then_start_keeps_data(tmp_path: Path) -> None:
    s = EmbeddedRedis(tmp_path / "r")
    url = s.start()
    try:
        assert s.running() and s.pid and url == f"redis://127.0.0.1:{s.port}/0"
        _fill(url, 50)
        port = s.port
        s.stop()
        assert not s.running() and s.pid is None
        assert s.start() == url and s.port == port
        assert _count(url) == 50
        assert any((tmp_path / "r").glob("**/*.aof"))  # AOF on, in data_dir
    finally:
        s.stop()


def test_kill_then_restart_keeps_fsynced_data(tmp_path: Path) -> None:
    s = EmbeddedRedis(tmp_path / "r", appendfsync="always")
    url = s.start()
    try:
        _fill(url, 30)
        pid = s.pid
        s.kill()
        assert not s.running()
        with pytest.raises(redis.exceptions.ConnectionError):
            _count(url)
        s.start()
        assert s.pid != pid
        assert _count(url) == 30
        s.flushall()
        assert _count(url) == 0
    finally:
        s.stop()


def test_no_binary_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EmbeddedRedisError, match=r"apt-get install redis-server.*KEEPER_REDIS_SERVER"):
        EmbeddedRedis(tmp_path, binary=str(tmp_path / "nope")).start()
    monkeypatch.setenv("KEEPER_REDIS_SERVER", str(tmp_path / "also-nope"))
    with pytest.raises(EmbeddedRedisError, match="also-nope"):
        find_redis_server()


def test_bad_appendfsync_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="appendfsync"):
        EmbeddedRedis(tmp_path, appendfsync="sometimes")


async def test_open_redis_owns_a_server_without_url(tmp_path: Path) -> None:
    url, server = await open_redis(None, tmp_path / "own")
    assert server is not None
    try:
        log = await RedisEventLog.connect(url)
        try:
            assert await log.length() == 0
        finally:
            await log.close()
    finally:
        server.stop()
    given, none = await open_redis("redis://127.0.0.1:1/0", tmp_path)
    assert given == "redis://127.0.0.1:1/0" and none is None


async def test_redis_url_with_password(tmp_path: Path) -> None:
    """A REDIS_URL with a password (a server started raw with --requirepass) is used as is."""
    port = free_port()
    proc = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                             "--requirepass", "s3cret", "--save", "", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                with redis.Redis(port=port, password="s3cret", socket_timeout=1) as c:
                    c.ping()
                break
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.02)
        with pytest.raises(LogUnavailable, match="connect"):  # no password: refused, wrapped
            await RedisEventLog.connect(f"redis://127.0.0.1:{port}/0")
        url, owned = await open_redis(f"redis://:s3cret@127.0.0.1:{port}/0", tmp_path)
        assert owned is None
        log = await RedisEventLog.connect(url)
        try:
            assert await log.append_encoded([("a", b'{"x":1}')]) != [None]
            assert await log.length() == 1
        finally:
            await log.close()
    finally:
        proc.terminate()
        proc.wait(10)


async def test_unreachable_server_is_log_unavailable() -> None:
    with pytest.raises(LogUnavailable):
        await RedisEventLog.connect(f"redis://127.0.0.1:{free_port()}/0")
