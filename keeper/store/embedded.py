"""A private ``redis-server`` owned by this process (the default when ``REDIS_URL`` is unset).

Contract: ``start()`` launches ``redis-server`` bound to 127.0.0.1 on a free port (or the given
one) with AOF on (``appendfsync`` configurable) and its data under ``data_dir``; it returns the
URL once ``PING`` answers. ``stop()`` sends SIGTERM (redis' clean shutdown, AOF flushed) and waits; ``kill()``
sends SIGKILL (fault tests). After either, ``start()`` restarts on the same port and data folder,
so data survives per the AOF policy. No binary found -> ``EmbeddedRedisError`` naming the fix.

One server a folder: a started server writes ``server.json`` (pid, port, URL) into its folder and
removes it when stopped. ``running_in(folder)`` finds a live server another process started there
(its pid alive, answering PING, serving that very folder); ``open_redis`` then uses that server
instead of starting a second one on the same files (``keeper log tail`` while ``keeper run``
runs), and ``start()`` refuses such a folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import redis
import redis.exceptions
import structlog

from keeper.errors import EmbeddedRedisError

__all__ = ["SERVER_FILE", "EmbeddedRedis", "find_binary", "find_redis_server", "free_port", "open_redis",
           "running_in"]

log = structlog.get_logger()

_FIX = "install it: sudo apt-get install redis-server, or set KEEPER_REDIS_SERVER"
_START_TIMEOUT_S = 10.0
SERVER_FILE = "server.json"
"""In a running server's folder: its pid, port and URL (removed when it stops)."""
_STOP_TIMEOUT_S = 10.0


def find_binary(name: str, binary: str | None, env_var: str, fallbacks: Callable[[], list[str]],
                fix: str) -> str:
    """The ``name`` binary: ``binary``, else ``$env_var``, else ``name`` on PATH, else
    ``fallbacks()``: the first that is an executable file. ``EmbeddedRedisError`` naming what was
    tried and ``fix`` when none is."""
    candidates: list[str] = []
    if binary:
        candidates.append(binary)
    elif env := os.environ.get(env_var):
        candidates.append(env)
    else:
        found = shutil.which(name)
        if found:
            candidates.append(found)
        candidates += fallbacks()
    for c in candidates:
        p = Path(c)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    tried = ", ".join(candidates) or "(nothing)"
    raise EmbeddedRedisError(f"no {name} binary found (tried {tried}); {fix}")


def find_redis_server(binary: str | None = None) -> str:
    """The redis-server binary: ``binary``, else $KEEPER_REDIS_SERVER, else PATH, else /usr/sbin, /usr/bin."""
    return find_binary("redis-server", binary, "KEEPER_REDIS_SERVER",
                       lambda: ["/usr/sbin/redis-server", "/usr/bin/redis-server"], _FIX)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A private redis-server on loopback. See the module docstring for the contract.

    ``password`` (optional) starts it with ``--requirepass`` (used by tests of authenticated
    ``REDIS_URL``s); the URL then carries the password. ``extra_args`` go on its command line
    after the others (``keeper.store.cluster`` starts cluster nodes with them).
    ``running_servers`` holds the servers this process started and has not stopped (a forced
    exit stops them: they run in their own session, so nothing else would).
    """

    running_servers: ClassVar[set[EmbeddedRedis]] = set()

    def __init__(self, data_dir: Path, port: int | None = None, *, appendfsync: str = "everysec",
                 binary: str | None = None, password: str | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise EmbeddedRedisError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        # absolute: redis-server chdirs into --dir before it opens --logfile
        self.data_dir = Path(data_dir).resolve()
        self.port = port if port is not None else 0
        self.appendfsync = appendfsync
        self.binary = binary
        self.password = password
        self.extra_args = tuple(extra_args)
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=5, socket_connect_timeout=1)

    def start(self) -> str:
        """Start (or restart) the server; return its URL once it answers PING."""
        if self.running():
            return self.url
        if self._proc is not None:  # it died: a restart on the same port and data folder
            self._reap()
        other = running_in(self.data_dir)
        if other is not None:
            raise EmbeddedRedisError(f"{self.data_dir} is in use by another redis-server ({other}): "
                                     "stop the keeper that runs it, or use its URL (--redis-url)")
        exe = find_redis_server(self.binary)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
                "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.data_dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        try:
            # Its own session: a SIGTERM or Ctrl-C aimed at the keeper's process group must not
            # stop Redis under the keeper's feet; the keeper stops it last, after its snapshot.
            self._proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True)
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot run {exe}: {exc}; {_FIX}") from exc
        self.pid = self._proc.pid
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                logtail = self._log_tail()
                self._reap()
                raise EmbeddedRedisError(f"redis-server exited at start (port {self.port}): {err}{logtail}")
            try:
                with self._client() as c:
                    if c.ping():
                        break
            except redis.exceptions.BusyLoadingError:
                pass
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise EmbeddedRedisError(f"redis-server did not answer PING within {_START_TIMEOUT_S}s")
            time.sleep(0.02)
        log.info("embedded_redis_started", port=self.port, pid=self.pid, dir=str(self.data_dir),
                 appendfsync=self.appendfsync)
        info = self.data_dir / SERVER_FILE
        info.write_text(json.dumps({"pid": self.pid, "port": self.port, "url": self.url}) + "\n")
        info.chmod(0o600)
        EmbeddedRedis.running_servers.add(self)
        return self.url

    def _log_tail(self) -> str:
        p = self.data_dir / "redis.log"
        try:
            return p.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _reap(self) -> None:
        EmbeddedRedis.running_servers.discard(self)
        info = self.data_dir / SERVER_FILE
        try:
            if self.pid is not None and json.loads(info.read_text()).get("pid") == self.pid:
                info.unlink()
        except (OSError, ValueError, AttributeError):
            pass
        if self._proc is not None:
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        self.pid = None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Clean shutdown: SIGTERM (redis flushes the AOF and exits), SIGKILL after a timeout."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM is redis' own clean shutdown (fsync the AOF, exit 0); a SHUTDOWN command
            # would do the same but redis-py retries the dropped connection for seconds.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("embedded_redis_stopped", port=self.port, pid=self.pid)
        self._reap()

    def kill(self) -> None:
        """SIGKILL, no flush: what a crash looks like."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.info("embedded_redis_killed", port=self.port, pid=self.pid)
        self._reap()

    def flushall(self) -> None:
        with self._client() as c:
            c.flushall()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def open_redis(url: str | None, data_dir: Path, *, appendfsync: str = "everysec"
                     ) -> tuple[str, EmbeddedRedis | None]:
    """Resolve where the log lives.

    ``url`` (``redis://`` or ``rediss://``, password included) is used as is and nothing is owned:
    returns ``(url, None)``. ``None`` starts a private EmbeddedRedis under ``data_dir`` and
    returns ``(its url, server)``: the caller owns it and must ``stop()`` it on exit.
    """
    if url:
        return url, None
    live = running_in(data_dir)
    if live is not None:  # another process runs this folder's server: use it, start no second one
        log.info("embedded_redis_attached", dir=str(data_dir))
        return live, None
    server = EmbeddedRedis(data_dir, appendfsync=appendfsync)
    server.start()
    return server.url, server


def running_in(data_dir: Path) -> str | None:
    """The URL of a live redis-server serving ``data_dir`` (its ``server.json``: pid alive, PING
    answered, its ``dir`` that folder), else None."""
    folder = Path(data_dir).resolve()
    try:
        info = json.loads((folder / SERVER_FILE).read_text())
        pid, port, url = int(info["pid"]), int(info["port"]), str(info["url"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1,
                                  decode_responses=True) as c:
            served = c.config_get("dir").get("dir")
    except redis.exceptions.RedisError:
        return None
    return url if served is not None and Path(served).resolve() == folder and port > 0 else None
