"""Replay equals live, whatever the path: hypothesis draws crash paths, the projector records
them live, and a replay from the beginning (and from a snapshot taken mid-run) re-derives
exactly the recorded decisions."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore
from keeper.projector import unwrap_snapshot
from keeper.replay.replay import replay_async
from keeper.replay.source import log_batches
from keeper.replay.verify import Verifier
from keeper.store.entries import parse_id
from keeper.testing import MemorySnapshotStore
from tests.replay.scenario import PARAMS, T0, TICK_US, record_live

D = Decimal

moves = st.lists(st.tuples(st.integers(-40, 15), st.integers(-50, 20)), min_size=4, max_size=24)


def path_of(steps: list[tuple[int, int]]) -> list[ev.PriceUpdated]:
    """Per step, BTC and ETH move by the drawn number of tenths of a percent."""
    btc, eth = D(60000), D(3000)
    out = []
    for i, (db, de) in enumerate(steps, 1):
        btc = max((btc * (1 + D(db) / 1000)).quantize(D("0.01")), D(1))
        eth = max((eth * (1 + D(de) / 1000)).quantize(D("0.01")), D(1))
        t = T0 + i * TICK_US
        out.append(ev.PriceUpdated(event_id=f"px-BTC-USD-{i}", ts_event=t, symbol="BTC-USD", price=btc))
        out.append(ev.PriceUpdated(event_id=f"px-ETH-USD-{i}", ts_event=t, symbol="ETH-USD", price=eth))
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=moves, cut=st.integers(2, 10))
async def test_replay_rederives_exactly_what_was_recorded(steps: list[tuple[int, int]], cut: int) -> None:
    snaps = MemorySnapshotStore()
    log, _, _ = await record_live(fillers=12, ticks=path_of(steps), snapshots=snaps,
                                  snapshot_after_chunk=min(cut, 1 + len(steps) // 2))
    v = Verifier()
    full = await replay_async(KeeperCore(PARAMS), log_batches(log), after=v.after)
    report = v.finish()
    assert report.ok, report.first.describe() if report.first else ""
    assert report.decisions == full.recorded

    found = await snaps.load("keeper")
    assert found is not None
    offset, blob = found
    core = KeeperCore.restore(unwrap_snapshot(KeeperCore.FORMAT, blob), PARAMS)
    tail_v = Verifier(offset)
    tail = await replay_async(core, log_batches(log, after=offset), after=tail_v.after)
    assert tail_v.finish().ok
    assert [(t, e.decision) for t, e in tail.derived] == [
        (t, e.decision) for t, e in full.derived if parse_id(t) > parse_id(offset)]
