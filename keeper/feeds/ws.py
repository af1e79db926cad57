"""The websocket client shell: connect, subscribe, keep alive, reconnect, resubscribe, resync.

``WsFeed.run`` drives ``async for ws in websockets.asyncio.client.connect(...)``. That loop
retries only the *connect* (with the injected backoff as ``reconnect_delays``); a connection
that drops mid-stream ends the body with ``ConnectionClosed``, which is caught here, and the next
iteration reconnects, then sends the subscription frames again and calls ``on_connect`` (the
resync hook: fetch a snapshot, or nothing when the server resends its state itself). A server
that accepts and drops at once is not hammered: a connection that delivered no frame is followed
by the next backoff delay too.

Keepalive pings every ``ping_interval`` (a peer that stops answering is dropped after
``ping_timeout``); ``idle_timeout`` also drops a connection that is alive but silent (the
staleness watchdog marks the market stale meanwhile). ``max_queue`` bounds the frames websockets
buffers; ``on_frame`` is awaited for each frame, so a slow consumer stops the reading, and TCP
flow control stops the server: no unbounded buffer anywhere.

Cancelling the task running ``run()`` is safe: the current connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import cast

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from keeper.backoff import Backoff, delays, jittered_backoff

__all__ = ["OnConnect", "OnFrame", "WsConfig", "WsFeed"]

log = structlog.get_logger()

OnFrame = Callable[[bytes | str], Awaitable[None]]
OnConnect = Callable[[ClientConnection], Awaitable[None]]


@dataclass(frozen=True)
class WsConfig:
    """Where to connect and how. ``subscribe`` frames are sent after every (re)connect."""

    url: str
    subscribe: Sequence[str | bytes] = ()
    ping_interval: float | None = 10.0
    ping_timeout: float | None = 10.0
    open_timeout: float = 5.0
    close_timeout: float = 2.0
    idle_timeout: float | None = None
    max_queue: int = 64
    max_size: int = 1 << 22


class WsFeed:
    """One websocket source (see the module docstring). ``stats`` counts connects, drops, frames."""

    def __init__(self, config: WsConfig, on_frame: OnFrame, *, on_connect: OnConnect | None = None,
                 backoff: Backoff | None = None, name: str = "") -> None:
        self.config = config
        self.on_frame = on_frame
        self.on_connect = on_connect
        self.backoff = backoff or jittered_backoff(0.25, 30.0)
        self.name = name or config.url
        self.stats: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self._log = log.bind(feed=self.name)

    def _delays(self) -> Generator[float]:
        yield from delays(self.backoff)

    async def run(self, max_connects: int | None = None) -> None:
        """Read until cancelled (or after ``max_connects`` connections have ended)."""
        cfg = self.config
        flapping = None
        conns = connect(cfg.url, open_timeout=cfg.open_timeout, ping_interval=cfg.ping_interval,
                        ping_timeout=cfg.ping_timeout, close_timeout=cfg.close_timeout,
                        max_queue=cfg.max_queue, max_size=cfg.max_size, reconnect_delays=self._delays,
                        proxy=None)
        gen = cast(AsyncGenerator[ClientConnection, None], conns.__aiter__())
        async with contextlib.aclosing(gen) as it:
            async for ws in it:
                self.stats["connects"] += 1
                frames = await self._session(ws)
                self.connected.clear()
                if max_connects is not None and self.stats["connects"] >= max_connects:
                    return
                if frames:
                    flapping = None
                else:
                    flapping = flapping or delays(self.backoff)
                    await asyncio.sleep(next(flapping))

    async def _session(self, ws: ClientConnection) -> int:
        """One connection's life: subscribe, resync, read. Returns how many frames it gave."""
        frames = 0
        try:
            for msg in self.config.subscribe:
                await ws.send(msg)
            if self.on_connect is not None:
                await self.on_connect(ws)
            self.connected.set()
            self._log.info("ws_connected", connects=self.stats["connects"])
            idle = self.config.idle_timeout
            while True:
                async with asyncio.timeout(idle):
                    frame = await ws.recv()
                frames += 1
                self.stats["frames"] += 1
                await self.on_frame(frame)
        except ConnectionClosed as exc:
            self.stats["drops"] += 1
            self._log.warning("ws_dropped", code=exc.rcvd.code if exc.rcvd else None, frames=frames)
        except TimeoutError:
            self.stats["idle_drops"] += 1
            self._log.warning("ws_idle", idle_timeout_s=self.config.idle_timeout, frames=frames)
            await ws.close()
        return frames
