"""The demo's daemon in a process of its own, apart from the demo driver, and the driver's handle.

Why: the driver (playing the ticks, polling the venue, building the book and, at the end, the
perfect keeper's run) and the daemon share nothing but Redis and the venue; in one process they
share one event loop and one heap, so the driver's requests and the collector walking the driver's
book delay the daemon's ticks. As a child the daemon has its own loop, heap and core.

The child (``python -m keeper.app.demo_daemon --venue-url U --redis-url R [--log-level L] [--sizing S]``, the
venue's HMAC secret in ``KEEPER_HMAC_SECRET``) runs ``DemoDaemon`` on
``demo_config`` and speaks one JSON object per line: on stdout first
``{"admin_port": p}`` once every role is up, then one status line per command read from stdin:

- ``status``: ``{"applied": [per core], "busy": n, "skipped": {profile: {reason: n}}, "running": b}``;
- ``freeze``: the book is loaded: ``gc.freeze()`` (the collector stops walking the long-lived
  state; ``../shared/PERF_NOTES.md``), then the status;
- ``stop`` (or stdin closed): the daemon stops gracefully; the last status, then exit 0.

Its logs (JSON) go to stderr, which the parent sends to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import msgspec

from keeper.app.config import FeedSource, load_config
from keeper.app.daemon import Daemon
from keeper.app.heap import settle_heap
from keeper.domain.decide import KeeperParams

__all__ = ["LENDING_PROFILE", "MARKETS", "PERP_PROFILE", "SECRET_ENV", "DaemonProcess", "DemoDaemon",
           "Handle", "InlineDaemon", "daemon_status", "demo_config", "main", "settle", "wait_book"]

MARKETS = ("BTC", "ETH", "SOL")
LENDING_PROFILE = "aave-v3.3"
PERP_PROFILE = "generic-perp"

SECRET_ENV = "KEEPER_HMAC_SECRET"  # noqa: S105 (the variable's name, not a secret)


def daemon_status(daemon: Any, task: asyncio.Task[None] | None = None) -> dict[str, Any]:
    """What the driver polls: events applied per core, open intents, candidates not decided, and
    whether every role still runs."""
    cores = daemon.cores()
    return {"applied": [c.state.applied for c in cores], "busy": sum(len(c.state.busy) for c in cores),
            "skipped": {c.profile.name: dict(sorted(c.skipped.items())) for c in cores},
            "running": task is None or not task.done()}


class DaemonProcess:
    """The driver's handle on the child (module docstring); the same questions as an in-process
    ``Daemon``: ``status()``, ``freeze()``, ``admin_port``; ``stop()`` ends it (bounded)."""

    def __init__(self, venue_url: str, redis_url: str, secret: str, log_file: Path, *,
                 log_level: str = "warning", sizing: str | None = None) -> None:
        self.args = ["--venue-url", venue_url, "--redis-url", redis_url, "--log-level", log_level,
                     *(["--sizing", sizing] if sizing else [])]
        self.secret = secret
        self.log_file = log_file
        self.admin_port: int | None = None
        self.last: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._log: Any = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        """The child runs and says its roles do."""
        return self._proc is not None and self._proc.returncode is None and self.last.get("running", True)

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start the child; returns once its roles are up (its first line)."""
        self._log = self.log_file.open("wb")
        env = {**os.environ, SECRET_ENV: self.secret, "PYTHONUNBUFFERED": "1"}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "keeper.app.demo_daemon", *self.args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=self._log, env=env)
        first = await self._line(timeout_s)
        self.admin_port = first.get("admin_port")

    async def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self._proc.stdout.readline(), timeout_s)
        except TimeoutError:
            raise RuntimeError(f"the demo's daemon did not answer in {timeout_s} s "
                               f"(see {self.log_file})") from None
        if not raw:
            code = await self._proc.wait()
            raise RuntimeError(f"the demo's daemon ended (exit {code}; see {self.log_file})")
        out = json.loads(raw)
        return out if isinstance(out, dict) else {}

    async def _ask(self, command: str, timeout_s: float = 30.0) -> dict[str, Any]:
        async with self._lock:
            assert self._proc is not None
            assert self._proc.stdin is not None
            self._proc.stdin.write(command.encode() + b"\n")
            await self._proc.stdin.drain()
            self.last = await self._line(timeout_s)
            return self.last

    async def status(self) -> dict[str, Any]:
        """``daemon_status`` of the child."""
        return await self._ask("status")

    async def freeze(self) -> dict[str, Any]:
        """``gc.freeze()`` in the child (once its book is loaded), then its status."""
        return await self._ask("freeze")

    async def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Stop the daemon gracefully (its last status), else kill it after ``timeout_s``."""
        proc, last = self._proc, self.last
        if proc is not None and proc.returncode is None:
            try:
                last = await self._ask("stop", timeout_s)
                await asyncio.wait_for(proc.wait(), timeout_s)
            except (RuntimeError, TimeoutError, BrokenPipeError, ConnectionResetError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return last


class DemoDaemon(Daemon):
    """The daemon without the per-window liquidation caps (``[guards]`` has no "none"): the demo
    is there to show a crash liquidated in full, and the core's cap check costs time in
    proportion to the decisions in its window (a crash tick decides hundreds at once)."""

    def params(self, profile: str) -> KeeperParams:
        return msgspec.structs.replace(super().params(profile), cap_count=None, cap_notional=None)


def demo_config(venue_url: str, redis_url: str, secret: str, sizing: str | None = None) -> Any:
    """The daemon's config for the demo: live, the venue's feeds and executor, admin on any port;
    ``sizing``: ``[keeper] sizing`` (None: the configuration's default)."""
    env = {"KEEPER_HMAC_SECRET": secret}
    base = load_config(None, env=env, register_secrets=True)
    ws = venue_url.replace("http://", "ws://")
    prices = {f"{m}-USD": f"{m}USDT" for m in MARKETS}
    assets = {m: f"{m}USDT" for m in MARKETS}
    r = msgspec.structs.replace
    return r(base,
             keeper=r(base.keeper, profile=PERP_PROFILE, mode="live", sizing=sizing or base.keeper.sizing),
             redis=r(base.redis, url=redis_url),
             snapshots=r(base.snapshots, interval_s=5.0),
             feeds=r(base.feeds, staleness_ms=10_000, max_jump=Decimal("0.5"),
                     sources=(FeedSource(kind="binance", name="venue", url=f"{ws}/prices", symbols=prices),
                              FeedSource(kind="binance", name="venue-assets", url=f"{ws}/prices",
                                         symbols=assets)),
                     accounts_url=f"{ws}/accounts", fixed_prices={"USDC": Decimal(1)}),
             execution=r(base.execution, executor="sim", url=venue_url, intent_ttl_s=30.0),
             guards=r(base.guards, max_liquidations=1_000_000, max_notional=Decimal(10) ** 12),
             admin=r(base.admin, port=0))


class Handle(Protocol):
    """The driver's view of the daemon, in this process or a child (``DaemonProcess``)."""

    admin_port: int | None

    async def start(self) -> None: ...
    async def status(self) -> dict[str, Any]: ...
    async def freeze(self) -> dict[str, Any]: ...
    async def stop(self) -> dict[str, Any]: ...

    @property
    def running(self) -> bool: ...


class InlineDaemon:
    """``DemoDaemon`` on the driver's own event loop (``DemoOptions.daemon_process`` False)."""

    def __init__(self, cfg: Any) -> None:
        self.daemon = DemoDaemon(cfg, consumer="demo-executor", extra_profiles=(LENDING_PROFILE,),
                                 block_ms=50)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.admin_port: int | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.daemon.run(self._stop))
        started = asyncio.ensure_future(self.daemon.started.wait())
        await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            started.cancel()
            await self._task
        self.admin_port = self.daemon.admin_port

    async def status(self) -> dict[str, Any]:
        return daemon_status(self.daemon, self._task)

    async def freeze(self) -> dict[str, Any]:
        settle_heap("the demo's book loaded")
        return await self.status()

    async def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return await self.status()


async def wait_book(daemon: Handle, want: int, timeout_s: float = 90.0) -> None:
    """Until the keeper has applied the venue's whole book (``want`` events; and the first prices)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and daemon.running:
        applied = (await daemon.status())["applied"]
        if applied and all(a >= want for a in applied):
            return
        await asyncio.sleep(0.1)
    if not daemon.running:
        raise RuntimeError("the demo's daemon ended while loading the venue's book")
    raise TimeoutError(f"the keeper did not load the venue's book ({want} events) in {timeout_s} s")


async def settle(daemon: Handle, timeout_s: float = 20.0) -> None:
    """Until no intent is open and the log has stopped growing for a moment."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    last = -1
    while time.monotonic() < deadline and daemon.running and quiet < 4:
        status = await daemon.status()
        applied = sum(status["applied"])
        quiet = quiet + 1 if (applied == last and status["busy"] == 0) else 0
        last = applied
        await asyncio.sleep(0.25)


async def _serve(venue_url: str, redis_url: str, secret: str, sizing: str | None) -> None:
    cfg = demo_config(venue_url, redis_url, secret, sizing)
    daemon = DemoDaemon(cfg, consumer="demo-executor", extra_profiles=(LENDING_PROFILE,), block_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    started = asyncio.ensure_future(daemon.started.wait())
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        await task  # raises what the daemon raised
        return
    say({"admin_port": daemon.admin_port})
    try:
        while True:
            command = (await reader.readline()).decode().strip()
            if command in ("stop", ""):
                break
            if command == "freeze":
                settle_heap("the demo's book loaded")
            say(daemon_status(daemon, task))
    finally:
        stop.set()
        await task
    say(daemon_status(daemon, task))


def main(argv: list[str] | None = None) -> int:
    """The child's entry point (module docstring)."""
    from keeper.app.logging import configure_logging

    ap = argparse.ArgumentParser(prog="python -m keeper.app.demo_daemon", description=__doc__.splitlines()[0])
    ap.add_argument("--venue-url", required=True)
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    ap.add_argument("--sizing", default=None, choices=["least", "largest"])
    args = ap.parse_args(argv)
    configure_logging("json", args.log_level, stream=sys.stderr)
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        print(f"{SECRET_ENV} is not set: the venue's HMAC secret", file=sys.stderr)
        return 1
    asyncio.run(_serve(args.venue_url, args.redis_url, secret, args.sizing))  # the loop `keeper run` uses
    return 0


if __name__ == "__main__":
    sys.exit(main())
