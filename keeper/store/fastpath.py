"""A raw, pipelined Redis connection for the log's hot paths (append and XREAD).

redis-py packs commands in pure Python (asyncio client), which caps a batch writer well below
what Redis accepts (``docs/performance.md``). This connection packs each command with
``hiredis.pack_command`` and parses replies with ``hiredis.Reader`` inside an
``asyncio.Protocol``: no task per connection, no per-reply Python parsing, and any number of
commands in flight (Redis answers in order, so replies are matched to a FIFO of futures).

Contract:
- ``call(*args)`` sends one command and returns its reply as hiredis gives it (bytes, int,
  list, None). An error reply is raised as ``ReplyError`` (the message as Redis sent it).
- A connection that fails (refused, reset, closed by the server, a protocol error, or a reply
  not back within ``timeout``) fails every command in flight with ``ConnectionError`` and is
  dropped; the next ``call`` connects again. A timed-out connection is always dropped, since
  its late reply would otherwise be matched to the next command.
- ``pipeline(commands)`` sends several commands in one write on one connection (so a ``WAIT``
  after a write covers that write) and returns every reply in order, error replies as
  ``ReplyError`` objects, not raised; connection errors are raised as for ``call``.
- Blocking commands (XREAD BLOCK) must not be sent here: they would hold up every command
  queued behind them.
- ``close()`` closes the socket; the object stays usable (the next ``call`` reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import structlog

__all__ = ["RawRedis", "ReplyError"]

log = structlog.get_logger()


class ReplyError(Exception):
    """An error reply from Redis (``NOSCRIPT ...``, ``WRONGTYPE ...``, ``ERR ...``)."""


class _Protocol(asyncio.Protocol):
    """Feeds bytes to a hiredis reader and resolves the oldest waiting future per reply."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport quacks like asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if not waiters:  # a reply nobody asked for: the stream is out of step
                    raise hiredis.ProtocolError("unexpected reply")
                fut = waiters.popleft()
                if not fut.done():  # cancelled by its caller: the reply is dropped
                    fut.set_result(reply)
        except hiredis.ProtocolError as exc:
            self.fail(ConnectionError(f"redis protocol error: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def fail(self, exc: BaseException) -> None:
        self.lost = exc
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def eof_received(self) -> bool:
        # The server closed its side: no reply can come any more (the transport closes next).
        self.fail(ConnectionError("redis connection closed by the server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"redis connection lost: {exc or 'closed by the server'}"))


class RawRedis:
    """One TCP (or unix socket) connection; see the module docstring for the contract."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, *, path: str | None = None,
                 username: str | None = None, password: str | None = None, db: int = 0,
                 connect_timeout: float = 5.0, timeout: float = 30.0) -> None:
        self.host, self.port, self.path = host, port, path
        self.username, self.password, self.db = username, password, db
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self._proto: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> RawRedis | None:
        """A connection for ``redis://[user:pass@]host[:port][/db]`` or ``unix://path[?db=n]``;
        None for what it does not speak (``rediss://`` TLS, other options): use redis-py then."""
        u = urlsplit(url)
        query = parse_qs(u.query)
        if set(query) - {"db"}:
            return None
        user = unquote(u.username) if u.username else None
        password = unquote(u.password) if u.password else None
        if u.scheme == "unix":
            db = int(query.get("db", ["0"])[0])
            return cls(path=unquote(u.path), username=user, password=password, db=db, **kw)
        if u.scheme != "redis":
            return None
        db = int(u.path.lstrip("/") or query.get("db", ["0"])[0])
        return cls(u.hostname or "127.0.0.1", u.port or 6379, username=user, password=password,
                   db=db, **kw)

    @property
    def connected(self) -> bool:
        p = self._proto
        return p is not None and p.lost is None and p.transport is not None \
            and not p.transport.is_closing()

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (asyncio.run again): start afresh
            self._drop()
            self._loop = loop
            self._connecting = asyncio.Lock()
        assert self._connecting is not None
        async with self._connecting:
            if self.connected:
                assert self._proto is not None
                return self._proto
            self._drop()
            if self.path is not None:
                coro = loop.create_unix_connection(_Protocol, self.path)
            else:
                coro = loop.create_connection(_Protocol, self.host, self.port)
            _, proto = await asyncio.wait_for(coro, self.connect_timeout)
            self._proto = proto
            try:
                hello: list[tuple[Any, ...]] = []
                if self.password is not None:
                    hello.append(("AUTH", self.username, self.password) if self.username
                                 else ("AUTH", self.password))
                if self.db:
                    hello.append(("SELECT", self.db))
                for cmd in hello:
                    await self._send(proto, cmd)
            except BaseException:
                self._drop()
                raise
            return proto

    def _drop(self) -> None:
        p, self._proto = self._proto, None
        if p is not None and p.transport is not None:
            p.fail(ConnectionError("redis connection closed"))
            with contextlib.suppress(RuntimeError):  # its event loop is closed: nothing to free
                p.transport.abort()

    async def _send(self, proto: _Protocol, args: tuple[Any, ...]) -> Any:
        assert proto.transport is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        proto.waiters.append(fut)
        proto.transport.write(hiredis.pack_command(args))
        try:
            reply = await asyncio.wait_for(fut, self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            # The reply may still come and would be taken for the next command's: drop it all.
            if self._proto is proto:
                self._drop()
            raise
        if isinstance(reply, hiredis.ReplyError):
            raise ReplyError(str(reply))
        return reply

    async def call(self, *args: Any) -> Any:
        """Send one command, return its reply; see the module docstring for errors."""
        proto = self._proto
        if proto is None or proto.lost is not None or self._loop is not asyncio.get_running_loop():
            proto = await self._connect()
        return await self._send(proto, args)

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write on one connection; their replies in order (error
        replies as ``ReplyError`` objects, not raised); see the module docstring."""
        proto = self._proto
        if proto is None or proto.lost is not None or self._loop is not asyncio.get_running_loop():
            proto = await self._connect()
        assert proto.transport is not None
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        proto.waiters.extend(futs)
        proto.transport.write(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        try:
            _, pending = await asyncio.wait(futs, timeout=self.timeout)
        except asyncio.CancelledError:
            self._abandon(proto, futs)
            raise
        if pending:  # late replies would be taken for the next commands': drop the connection
            self._abandon(proto, futs)
            raise TimeoutError(f"redis did not reply within {self.timeout}s")
        # hiredis hands error replies over as (unraised) ReplyError objects; an exception set
        # on a future failed the connection, and every command with it
        errors = [f.exception() for f in futs]  # (retrieved: none is logged as unretrieved)
        for e in errors:
            if e is not None:
                raise e
        out = [f.result() for f in futs]
        return [ReplyError(str(r)) if isinstance(r, hiredis.ReplyError) else r for r in out]

    def _abandon(self, proto: _Protocol, futs: list[asyncio.Future[Any]]) -> None:
        """A pipeline given up (timeout, cancelled): its futures cancelled, its connection
        dropped."""
        for f in futs:
            if not f.done():
                f.cancel()
            elif not f.cancelled():
                f.exception()
        if self._proto is proto:
            self._drop()

    async def close(self) -> None:
        """Close the socket (waits for the close to be seen, so no transport is left behind)."""
        p, self._proto = self._proto, None
        if p is not None and p.transport is not None and self._loop is asyncio.get_running_loop():
            p.transport.close()
            await asyncio.sleep(0)  # let connection_lost run
        elif p is not None:
            self._proto = p
            self._drop()
