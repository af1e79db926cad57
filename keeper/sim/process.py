"""The reference venue in its own process (``keeper sim`` as a child), and a client for it.

Why a process: the venue broadcasts every price to its websockets and applies liquidations; run
in the keeper's event loop it competes with the keeper for the same core and the same loop, and
the keeper's tick-to-intent latency measures the venue's work as much as its own. As a child
process it gets the machine's other core, as a real venue would be elsewhere.

``VenueProcess.start`` writes nothing itself: the caller gives the price file (NDJSON, see
``write_path``), the child is started with ``--hold`` (prices wait for ``play()``), and the
first line of its stdout is its URL (``keeper sim``'s contract). Its logs go to ``log_file``.
``stop()`` sends SIGTERM and waits (bounded), then kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from keeper.sim.prices import Tick

__all__ = ["SECRET_ENV", "VenueProcess", "write_path"]

SECRET_ENV = "KEEPER_SIM_SECRET"  # noqa: S105 (the variable's name, not a secret)


def write_path(path: Sequence[Tick], file: Path) -> None:
    """Write ``path`` as the NDJSON ``keeper sim --prices`` reads (prices as exact strings)."""
    with file.open("wb") as f:
        for t in path:
            f.write(msgspec.json.encode({"ts_us": t.ts_us,
                                         "prices": {k: str(v) for k, v in sorted(t.prices.items())}}))
            f.write(b"\n")


class VenueProcess:
    """A ``keeper sim`` child process serving ``prices_file`` with a book of ``accounts``."""

    def __init__(self, secret: str, prices_file: Path, *, accounts: int, seed: int, speed: float,
                 log_file: Path, timestamps: str = "wall") -> None:
        self.secret = secret
        self.args = ["sim", "--port", "0", "--accounts", str(accounts), "--seed", str(seed),
                     "--prices", str(prices_file), "--speed", repr(speed), "--hold",
                     "--timestamps", timestamps, "--secret-env", SECRET_ENV]
        self.log_file = log_file
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._log: Any = None

    async def start(self, timeout_s: float = 60.0) -> str:
        """Start the child and return its URL once it listens (the book is loaded by then)."""
        self._log = self.log_file.open("wb")
        env = {**os.environ, SECRET_ENV: self.secret, "PYTHONUNBUFFERED": "1"}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "keeper.app.cli", *self.args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=self._log, env=env)
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), timeout_s)
        except TimeoutError:
            await self.stop()
            raise
        url = line.decode().strip()
        if not url.startswith("http://"):
            await self.stop()
            raise RuntimeError(f"keeper sim did not start (see {self.log_file}): {url!r}")
        self.url = url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return url

    async def _get(self, path: str) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(f"{self.url}{path}") as resp:
            resp.raise_for_status()
            out = msgspec.json.decode(await resp.read())
        return out if isinstance(out, dict) else {}

    async def healthz(self) -> dict[str, Any]:
        """``seq`` (events so far), ``ticks_played``, ``ticks_total``, ``played``."""
        return await self._get("/healthz")

    async def stats(self) -> dict[str, Any]:
        """The venue's ``GET /stats`` (accepted, rejected by reason, accepted_by_intent, ...)."""
        return await self._get("/stats")

    async def play(self) -> None:
        """Start playing the price path."""
        assert self._session is not None
        async with self._session.post(f"{self.url}/play") as resp:
            resp.raise_for_status()

    async def set_marks(self, ts_us: int, prices: dict[str, Decimal]) -> None:
        """Move the venue's marks now (``POST /marks``): they are broadcast on ``/prices``."""
        assert self._session is not None
        body = msgspec.json.encode({"ts_us": ts_us, "prices": {k: str(v) for k, v in prices.items()}})
        async with self._session.post(f"{self.url}/marks", data=body) as resp:
            resp.raise_for_status()

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then kill; returns the exit code."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    code = await asyncio.wait_for(proc.wait(), timeout_s)
                except TimeoutError:
                    proc.kill()
                    code = await proc.wait()
            else:
                code = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code
