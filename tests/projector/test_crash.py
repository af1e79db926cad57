"""SIGKILL in the middle of a batch, restart: the same state as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import redis

from keeper.domain import events as ev
from keeper.domain.state import State, apply, decode_state, encode_state
from keeper.store.entries import parse_id
from keeper.store.redis_log import RedisEventLog

ROOT = Path(__file__).resolve().parents[2]
N = 20_000


def history() -> list[ev.Event]:
    out: list[ev.Event] = []
    for i in range(N):
        acct = f"a{i % 97}"
        if i % 5 == 0:
            out.append(ev.PriceUpdated(event_id=f"p{i}", ts_event=i, symbol="ETH-USD",
                                       price=Decimal(3000 + (i % 50))))
        elif i % 5 == 1:
            out.append(ev.PositionChanged(event_id=f"q{i}", ts_event=i, account=acct, bucket="iso",
                                          market="ETH-USD", size=Decimal(i % 7) - 3,
                                          entry_price=Decimal(3000), realized_pnl=Decimal("-1.5")))
        else:
            out.append(ev.Deposit(event_id=f"d{i}", ts_event=i, account=acct, bucket="cross",
                                  asset="USDC", amount=Decimal(i % 13 + 1)))
    return out


def worker(url: str, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.projector.crash_worker", url, str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


async def test_sigkill_mid_batch_then_restart_ends_with_the_uninterrupted_state(
        redis_url: str, tmp_path: Path) -> None:
    events = history()
    log = await RedisEventLog.connect(redis_url)
    try:
        for i in range(0, N, 2000):
            await log.append(events[i:i + 2000])
        ids = [e.id for e in await log.read("0-0", N + 10)]
    finally:
        await log.close()
    expected = State()
    for entry_id, event in zip(ids, events, strict=True):
        apply(expected, entry_id, event)

    out = tmp_path / "state.bin"
    client = redis.Redis.from_url(redis_url)
    try:
        proc = worker(redis_url, out)
        deadline = time.monotonic() + 60
        # Kill once at least two snapshots exist, while it is still folding.
        while time.monotonic() < deadline:
            offset = client.hget("keeper:{0}:snap:projector", "offset")
            if offset is not None and parse_id(offset.decode()) > parse_id(ids[3000]):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the worker finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        assert not out.exists()

        proc = worker(redis_url, out)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        assert "restored_from=None" not in stdout, "the restart did not use the snapshot"
    finally:
        client.close()
    got = decode_state(out.read_bytes())
    assert got.applied == N  # none applied twice, none lost
    assert encode_state(got) == encode_state(expected)
