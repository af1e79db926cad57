"""An intent re-derived after a restart or a takeover (snapshot + tail) on prices that are old by
the wall clock by then is not withheld when the log already holds it, live: the append drops it
as a duplicate, and no ``withheld:`` expiry (a second outcome of an intent already sent) or
``FeedStale`` is recorded. A new intent on the same prices is still withheld."""

from __future__ import annotations

from keeper.app.freshness import FreshnessGuard
from keeper.app.stamping import StampingLog
from keeper.domain import events as ev
from keeper.store.redis_log import RedisEventLog
from tests.app.test_stale_prices import NOW, OLD, _core, _crash


async def test_a_recorded_live_intent_re_derived_on_old_prices_is_a_duplicate_not_withheld(
        redis_url: str) -> None:
    core = _core(OLD)
    [intent] = _crash(core, OLD + 1)
    assert isinstance(intent, ev.LiquidationIntended) and intent.decision.mode == "live"
    log = await RedisEventLog.connect(redis_url)
    try:
        await log.append([intent])  # recorded live by the previous owner, before the prices aged
        guard = FreshnessGuard(5_000_000, lambda: core.state, fixed={"USDC"}, now_us=lambda: NOW)
        stamping = StampingLog(log, guard=guard)
        assert await stamping.append([intent]) == [None]
        assert [e.event for e in await log.read()] == [intent] and guard.withheld == 0
        # never recorded: withheld as before (the intent, the market stale, the expiry)
        log2 = await RedisEventLog.connect(redis_url, shard="1")
        try:
            await StampingLog(log2, guard=guard).append([intent])
            kinds = [type(e.event).__name__ for e in await log2.read()]
            assert kinds == ["LiquidationIntended", "FeedStale", "LiquidationExpired"]
        finally:
            await log2.close()
    finally:
        await log.close()
