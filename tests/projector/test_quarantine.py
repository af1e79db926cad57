"""Poison never stops the keeper: bad numbers are refused at the door, and an entry that still
fails while applied is dead-lettered with its error while the projector carries on, the same
way live and in replay (issue: one bad entry stopped the daemon for good)."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from keeper.domain import events as ev
from keeper.domain import state as st
from keeper.domain.codec import decode, encode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import MarketParams
from keeper.errors import DecodeError
from keeper.projector import ProjectionCore, Projector
from keeper.replay.replay import replay_batches
from keeper.replay.source import log_batches
from keeper.store.redis_log import RedisEventLog
from keeper.testing import MemoryEventLog, MemorySnapshotStore
from tests.domain.keeper.keeper_scenarios import Log, perp_account, perp_market

D = Decimal
_PRICE = b'{"type":"price_updated","event_id":"x","ts_event":1,"symbol":"BTC-USD","price":"%s"}'
_DEPOSIT = (b'{"type":"deposit","event_id":"x","ts_event":1,"account":"a","bucket":"cross",'
            b'"asset":"USDC","amount":"%s"}')


@pytest.mark.parametrize(("payload", "reason"), [
    (_PRICE % b"1e400", "invalid_price"),
    (_PRICE % (b"9" * 100_000), "invalid_price"),
    (_PRICE % b"1e-400", "invalid_price"),
    (_DEPOSIT % b"1E+400", "invalid_field"),
    (_DEPOSIT % (b"7" * 100_000), "invalid_field"),
    (_DEPOSIT % b"1e-31", "invalid_field"),
    (b'{"type":"position_changed","event_id":"x","ts_event":1,"account":"a","bucket":"c",'
     b'"market":"M","size":"-1e25","entry_price":"1"}', "invalid_field"),
    (b'{"type":"funding_applied","event_id":"x","ts_event":1,"account":"a","bucket":"c",'
     b'"market":"M","asset":"USDC","amount":"-1e30"}', "invalid_field"),
    (b'{"type":"market_listed","event_id":"x","ts_event":1,"params":{"symbol":"M","mmf":"1e400"}}',
     "invalid_field"),
    (b'{"type":"feed_stale","event_id":"x","ts_event":1700000000000000000000,"symbol":"M"}',
     "invalid_field"),
    (b'{"type":"feed_stale","event_id":"x","ts_event":-5,"symbol":"M"}', "invalid_field"),
])
def test_numbers_out_of_range_are_refused_at_the_door(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(payload)
    assert err.value.reason == reason
    assert len(str(err.value)) < 400  # a 100,000-digit number is not echoed whole


def test_the_limits_leave_real_numbers_alone() -> None:
    for text in ("0.000000001234", "64123.45", "1e15", "3.2e-12"):
        assert isinstance(decode(_PRICE % text.encode()), ev.PriceUpdated)
    for text in ("0.000001", "123456789012345.123456789", "1e20"):
        assert isinstance(decode(_DEPOSIT % text.encode()), ev.Deposit)
    with pytest.raises(ValueError, match="price must be in"):
        ev.PriceUpdated(event_id="p", ts_event=1, symbol="B", price=D("1e16"))


def breach_log() -> Log:
    """Two accounts; BTC falls and breaches the first one after a poison entry."""
    log = Log()
    perp_market(log, "BTC-USD")
    log.price("USDC", "1")
    log.price("BTC-USD", "100")
    perp_account(log, "a", "cross", "BTC-USD", "10", "100", "100")
    perp_account(log, "b", "cross", "BTC-USD", "1", "100", "100")
    return log


def forced_price(price: str) -> ev.PriceUpdated:
    """A tick whose price bypassed the checks (a bug elsewhere, or a future check missing)."""
    tick = ev.PriceUpdated(event_id="forced", ts_event=1_700_000_000_500_000, symbol="BTC-USD",
                           price=D(1))
    msgspec.structs.force_setattr(tick, "price", D(price))
    return tick


def test_an_entry_that_raises_is_quarantined_and_the_core_decides_after_it() -> None:
    log = breach_log()
    n = len(log.entries)
    entries = [*log.entries, (f"{n + 1}-0", forced_price("1e400"))]
    log.entries = entries
    log.price("BTC-USD", "92")  # breaches "a" (equity 20, MM 46)
    params = KeeperParams(profile="generic-perp", mode="live")

    batch_core = KeeperCore(params)
    batched = batch_core.handle_batch(log.entries)
    one_core = KeeperCore(params)
    single = [e for entry_id, event in log.entries for e in one_core.handle(entry_id, event)]

    for core, out in ((batch_core, batched), (one_core, single)):
        assert core.quarantined_total == 1
        (entry_id, event, error) = core.take_quarantined()[0]
        assert entry_id == f"{n + 1}-0" and event.event_id == "forced" and "ValueError" in error
        assert core.take_quarantined() == []
        assert core.offset == log.entries[-1][0]
        assert [i.decision.account for i in out if isinstance(i, ev.LiquidationIntended)] == ["a"]
    assert [encode(e) for e in batched] == [encode(e) for e in single]


async def test_the_projector_dead_letters_an_entry_the_fold_cannot_take_and_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    log, snaps = MemoryEventLog(), MemorySnapshotStore()
    events: list[ev.Event] = [ev.Deposit(event_id=f"d{i}", ts_event=i + 1, account="a", bucket="cross",
                                         asset="USDC", amount=D(i + 1)) for i in range(5)]
    await log.append(events)
    real_apply = st.apply

    def failing(state: st.State, entry_id: str, event: ev.Event) -> st.State:
        if event.event_id == "d2":
            raise ArithmeticError("boom")
        return real_apply(state, entry_id, event)

    monkeypatch.setattr(st, "apply", failing)

    def factory(data: bytes | None) -> ProjectionCore:
        return ProjectionCore() if data is None else ProjectionCore.restore(data)

    p = Projector(log, snaps, factory, batch=2)
    assert await p.catch_up() == 5
    assert p.quarantined == 1
    assert isinstance(p.core, ProjectionCore)
    assert p.core.state.accounts["a"].buckets["cross"].balances["USDC"] == D(1 + 2 + 4 + 5)
    assert p.core.offset == await log.last_id()
    dead = await log.dead_letters()
    assert [(d.source, d.reason) for d in dead] == [("projector", "apply_failed")]
    assert "ArithmeticError: boom" in dead[0].detail
    assert decode(dead[0].payload).event_id == "d2"

    again = Projector(log, MemorySnapshotStore(), factory)  # a restart that applies it all again
    await again.catch_up()
    assert again.quarantined == 1
    assert len(await log.dead_letters()) == 1  # dead-lettered once per entry


async def test_an_old_log_holding_1e400_replays_and_runs_the_same(redis_url: str) -> None:
    """A log written before the limits (raw, as `keeper log import` used to accept it): the
    entry is dead-lettered on read, the projector carries on and decides the breach after it, and
    a replay of the same log decides the same."""
    log = await RedisEventLog.connect(redis_url, shard="poison")
    try:
        scenario = breach_log()
        good = [encode(e) for _, e in scenario.entries]
        poison = _PRICE.replace(b'"x"', b'"bad"') % b"1e400"
        tail = ev.PriceUpdated(event_id="p92", ts_event=1_700_000_001_000_000, symbol="BTC-USD",
                               price=D("92"))
        await log.append_raw([*good, poison, encode(tail)])
        params = KeeperParams(profile="generic-perp", mode="live")

        def factory(data: bytes | None) -> KeeperCore:
            return KeeperCore(params) if data is None else KeeperCore.restore(data, params)

        p = Projector(log, MemorySnapshotStore(), factory, fmt=KeeperCore.FORMAT)
        await p.catch_up()
        assert p.core is not None and p.core.offset == await log.last_id()
        dead = await log.dead_letters()
        assert [d.reason for d in dead] == ["invalid_price"]
        entries = [e for e in await log.read(count=100) if isinstance(e.event, ev.LiquidationIntended)]
        assert [e.event.decision.account for e in entries] == ["a"]  # type: ignore[attr-defined]

        replayed = KeeperCore(params)
        batches = [b async for b in log_batches(log)]
        result = replay_batches(replayed, batches)
        assert [msgspec.json.encode(i.decision) for _, i in result.derived] == \
            [msgspec.json.encode(e.event.decision) for e in entries]  # type: ignore[attr-defined]
    finally:
        await log.client.delete(log.key, log.ids_key, log.dead_key, log.deadref_key)
        await log.close()


def test_params_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="mmf out of range"):
        MarketParams(symbol="M", mmf=D("1e400"))
