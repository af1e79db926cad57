"""Restraint after a rejection: a bucket the venue refused is not decided again at every tick,
but after a backoff of log time that doubles with each rejection in a row (issue: during a 10 s
halt the keeper resubmitted on every tick, up to 328 times per account)."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

import msgspec

from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from tests.domain.keeper.keeper_scenarios import Log, perp_account, perp_market

D = Decimal
SECOND = 1_000_000


def underwater() -> Log:
    log = Log()
    perp_market(log, "BTC-USD")
    log.price("USDC", "1")
    log.price("BTC-USD", "100")
    perp_account(log, "a", "cross", "BTC-USD", "10", "100", "100")
    return log


class Venue:
    """Feeds a core a tick every 100 ms of log time and echoes each intent back with the
    outcome the test wants; counts the intents."""

    def __init__(self, core: KeeperCore, log: Log) -> None:
        self.core = core
        self.n = 0
        self.ts = log.ts
        self.intents: list[tuple[int, ev.LiquidationIntended]] = []
        for entry_id, event in log.entries:
            self.feed(entry_id, event, "reject")
        self.n = len(log.entries)

    def feed(self, entry_id: str, event: ev.Event, outcome: str) -> None:
        for out in self.core.handle(entry_id, event):
            assert isinstance(out, ev.LiquidationIntended)
            self.intents.append((self.ts, out))
            d = out.decision
            self.n += 1
            self.core.handle(f"{self.n}-0", out)
            self.n += 1
            cls = ev.LiquidationRejected if outcome == "reject" else ev.LiquidationConfirmed
            self.core.handle(f"{self.n}-0", cls(event_id=f"out:{d.intent_id}", ts_event=self.ts,
                                                intent_id=d.intent_id, account=d.account,
                                                bucket=d.bucket))

    def tick(self, price: str, outcome: str = "reject") -> None:
        self.ts += SECOND // 10
        self.n += 1
        self.feed(f"{self.n}-0", ev.PriceUpdated(event_id=f"t{self.n}", ts_event=self.ts,
                                                  symbol="BTC-USD", price=D(price)), outcome)


def test_rejections_back_off_doubling_in_log_time() -> None:
    params = KeeperParams(profile="generic-perp", mode="live")
    v = Venue(KeeperCore(params), underwater())
    start = v.ts
    for _ in range(100):  # 10 s of ticks, every one rejected
        v.tick("90")
    times = [(t - start) / SECOND for t, _ in v.intents]
    # decided at once, then 1 s, 2 s and 4 s after each rejection: 4 in 10 s, not 100
    assert len(times) == 4, times
    gaps = [b - a for a, b in pairwise(times)]
    assert [round(g, 1) for g in gaps] == [1.0, 2.0, 4.0]
    assert v.core.skipped["rejected_backoff"] > 90


def test_the_backoff_is_capped_and_reset_by_a_healthy_bucket() -> None:
    params = KeeperParams(profile="generic-perp", mode="live", reject_backoff_us=SECOND,
                          reject_backoff_max_us=2 * SECOND)
    v = Venue(KeeperCore(params), underwater())
    for _ in range(100):
        v.tick("90")
    gaps = [round((b - a) / SECOND, 1) for (a, _), (b, _) in pairwise(v.intents)]
    assert gaps[:2] == [1.0, 2.0] and set(gaps[2:]) == {2.0}  # capped at 2 s
    for _ in range(25):  # healthy past the backoff: the episode is over
        v.tick("200")
    assert "a/cross" not in v.core._rejected
    before = len(v.intents)
    v.tick("90")
    assert len(v.intents) == before + 1, "a new episode is decided at once"


def test_a_confirmation_resets_the_count_and_a_restored_core_keeps_the_backoff() -> None:
    params = KeeperParams(profile="generic-perp", mode="live")
    v = Venue(KeeperCore(params), underwater())
    for _ in range(12):  # rejected at 0 and 1 s: the next try waits 2 s
        v.tick("90")
    assert len(v.intents) == 2
    restored = KeeperCore.restore(v.core.snapshot(), params)
    assert restored._rejected == v.core._rejected
    twin = Venue.__new__(Venue)
    twin.core, twin.n, twin.ts, twin.intents = restored, v.n, v.ts, list(v.intents)
    for venue in (v, twin):
        for _ in range(25):
            venue.tick("90")
    assert [msgspec.json.encode(i.decision) for _, i in v.intents] == \
        [msgspec.json.encode(i.decision) for _, i in twin.intents]
    v.tick("89", outcome="confirm")  # no decision due yet: the next one is confirmed
    while len(v.intents) == len(twin.intents):
        v.tick("89", outcome="confirm")
    assert "a/cross" not in v.core._rejected
