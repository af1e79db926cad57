"""``/at-risk?limit=N`` is the N buckets of lowest exact health, whatever the screen's headroom
(slack in dollars) says: a big bucket at health 4.39 has more dollars of slack than many small
ones at 5.41, and ranked by headroom it fell outside the prefix that was checked exactly."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from keeper.app.metrics import Metrics
from keeper.app.status import Status
from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS, AssetParams, MarketParams

D = Decimal
T0 = 1_760_000_000_000_000


def _core(smalls: int) -> KeeperCore:
    core = KeeperCore(KeeperParams(profile="generic-perp", mode="paper"))
    events: list[ev.Event] = [
        ev.AssetListed(event_id="usdc", ts_event=T0, params=AssetParams(symbol="USDC", decimals=6)),
        ev.MarketListed(event_id="btc", ts_event=T0, params=MarketParams(symbol="BTC-USD", mmf=D("0.01"))),
        ev.PriceUpdated(event_id="p-usdc", ts_event=T0, symbol="USDC", price=D(1)),
        ev.PriceUpdated(event_id="p-btc", ts_event=T0, symbol="BTC-USD", price=D(100)),
    ]

    def bucket(account: str, size: str, collateral: str) -> list[ev.Event]:
        return [ev.Deposit(event_id=f"d-{account}", ts_event=T0, account=account, bucket=CROSS,
                           asset="USDC", amount=D(collateral)),
                ev.PositionChanged(event_id=f"p-{account}", ts_event=T0, account=account, bucket=CROSS,
                                   market="BTC-USD", size=D(size), entry_price=D(100))]

    # health = equity / (1% of the notional): 541 / 100 = 5.41 with $441 of slack each...
    for i in range(smalls):
        events += bucket(f"small-{i:03d}", "100", "541")
    # ...and 4,390 / 1,000 = 4.39 with $3,390 of slack: lower health, more headroom
    events += bucket("big", "1000", "4390")
    for n, e in enumerate(events, start=1):
        core.handle(f"{n}-0", e)
    return core


def _status(*cores: KeeperCore) -> Status:
    daemon: Any = SimpleNamespace(cores=lambda: list(cores), metrics=Metrics())
    return Status(daemon, None)  # type: ignore[arg-type]


async def test_limit_one_is_the_lowest_exact_health_not_the_least_headroom() -> None:
    core = _core(smalls=80)
    assert core.screen.headroom("big/cross") > core.screen.headroom("small-000/cross")
    [row] = await _status(core).at_risk(1)
    assert (row["account"], row["health"]) == ("big", D("4.39"))


async def test_the_n_lowest_in_order_across_cores_each_bucket_once() -> None:
    a, b = _core(smalls=5), _core(smalls=5)
    rows = await _status(a, b).at_risk(3)
    assert [(r["account"], r["health"]) for r in rows] == [
        ("big", D("4.39")), ("small-000", D("5.41")), ("small-001", D("5.41"))]


async def test_the_ranking_is_kept_until_the_core_applies_another_entry() -> None:
    core = _core(smalls=3)
    status = _status(core)
    first = await status.ranking(core)
    assert await status.ranking(core) is first
    core.handle("999-0", ev.PriceUpdated(event_id="p-btc-2", ts_event=T0 + 1, symbol="BTC-USD",
                                         price=D(99)))
    again = await status.ranking(core)
    assert again is not first and again[0]["health"] < first[0]["health"]
