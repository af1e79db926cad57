"""Helpers of the sharded-daemon fault test and bench: real ``keeper run --shards`` processes on
a cluster against the reference venue, a book and a price path written as the feeds writer
would (``ShardedLog``), and the checks (outcomes per intent, the venue's acceptances, a
verified replay of each shard's log)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from keeper.app.config import load_config
from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.replay.replay import replay_batches
from keeper.replay.verify import Verifier, VerifyReport
from keeper.store.leases import ShardLeases
from keeper.store.redis_log import RedisEventLog
from keeper.store.slotconn import RedisClient

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sharded-secret"
OUTCOMES = (ev.LiquidationConfirmed, ev.LiquidationRejected, ev.LiquidationExpired)
D = Decimal


def keeper_env(url: str, venue_url: str, shards: int, ttl_ms: int) -> dict[str, str]:
    """The environment of a ``keeper run`` in the sharded mode, live at the reference venue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_") or k == "KEEPER_PURE"}
    env.update(PYTHONPATH=str(ROOT), REDIS_URL=url, KEEPER_VENUE_SECRET=SECRET,
               KEEPER_KEEPER__SHARDS=str(shards), KEEPER_KEEPER__SHARDED="true",
               KEEPER_KEEPER__MODE="live",
               KEEPER_KEEPER__LEASE_TTL_MS=str(ttl_ms), KEEPER_EXECUTION__EXECUTOR="sim",
               KEEPER_EXECUTION__URL=venue_url, KEEPER_ADMIN__ENABLED="false",
               KEEPER_SNAPSHOTS__INTERVAL_S="1.0", KEEPER_LOG__FORMAT="json",
               KEEPER_REDIS__BLOCK_MS="100")
    return env


def params(env: dict[str, str]) -> KeeperParams:
    """The keeper params the processes run with (the same config, loaded here)."""
    return load_config(None, env=env, register_secrets=False).keeper_params()


class KeeperProc:
    """A ``keeper run --role keeper --role executor`` process; its JSON log lines in a file."""

    def __init__(self, proc: asyncio.subprocess.Process, out: Path) -> None:
        self.proc = proc
        self.out = out

    @classmethod
    async def spawn(cls, env: dict[str, str], out: Path, *, admin: bool = False) -> KeeperProc:
        """``admin``: the admin role too (``KEEPER_ADMIN__*`` in ``env`` say where)."""
        roles = ["--role", "keeper", "--role", "executor"] + (["--role", "admin"] if admin else [])
        with out.open("wb") as f:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "keeper", "run", *roles,
                env=env, cwd=str(out.parent), stdout=f, stderr=asyncio.subprocess.STDOUT)
        return cls(proc, out)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                d = json.loads(line)
                if isinstance(d, dict):
                    out.append(d)
        return out

    def count(self, event: str) -> int:
        return sum(1 for d in self.lines() if d.get("event") == event)

    @property
    def tag(self) -> str:
        """What its lease holder name contains (``...-<pid>-<start ms>``)."""
        return f"-{self.proc.pid}-"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def price_events(tag: str, ts: int, marks: dict[str, Decimal], assets: list[str]) -> list[ev.Event]:
    out: list[ev.Event] = [ev.PriceUpdated(event_id=f"{tag}-{m}", ts_event=ts, symbol=m, price=p)
                           for m, p in sorted(marks.items())]
    for a in assets:
        p = D(1) if a == "USDC" else marks[f"{a}-USD"]
        out.append(ev.PriceUpdated(event_id=f"{tag}-{a}", ts_event=ts, symbol=a, price=p))
    return out


async def owners(client: RedisClient, shards: list[str]) -> dict[str, str]:
    leases = ShardLeases(client)
    out = {}
    for s in shards:
        held = await leases.holder_of(s)
        if held is not None:
            out[s] = held.holder
    return out


async def shard_entries(client: RedisClient, shard: str) -> list[tuple[str, ev.Event]]:
    log = RedisEventLog(client, shard=shard)
    try:
        return [(e.id, e.event) for e in await log.read("0-0", 1_000_000)]
    finally:
        await log.close()


def open_intents(entries: list[tuple[str, ev.Event]]) -> tuple[set[str], Counter[str]]:
    """The live intents of a shard's log and how many outcomes each has."""
    live = {e.decision.intent_id for _, e in entries
            if isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live"}
    done = Counter(e.intent_id for _, e in entries if isinstance(e, OUTCOMES))
    return live, done


def verify(entries: list[tuple[str, ev.Event]], p: KeeperParams) -> VerifyReport:
    """``keeper replay --verify`` of one shard's log: the same core re-derives every decision."""
    v = Verifier()
    replay_batches(KeeperCore(p), [entries], after=v.after)
    return v.finish()


def now_us() -> int:
    return time.time_ns() // 1000
