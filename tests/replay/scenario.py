"""A small crash, recorded "live": the projector drives a KeeperCore over a log and appends its
intents; a toy venue confirms each live intent and closes the position (its fill is in the log).

Accounts (all perps on ``generic-perp``, USDC collateral at $1):

- ``alice``: cross bucket, long 1 BTC at 60,000 with 3,000 USDC (liquidated in the crash);
- ``bob``: isolated ``iso-ETH`` long 10 ETH at 3,000 with 2,000 USDC (liquidated) and isolated
  ``iso-BTC`` long 0.1 BTC at 60,000 with 5,000 USDC (1.2x: survives);
- ``carol``: cross, long 0.5 BTC at 60,000 with 20,000 USDC (never liquidated);
- ``filler-NNN``: more cross and isolated accounts at assorted leverage, so there are many
  decisions on many ticks.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from keeper.domain import events as ev
from keeper.domain.codec import decode
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.domain.model import CROSS, AssetParams, MarketParams
from keeper.ports import SnapshotStore
from keeper.projector import Projector
from keeper.store.entries import parse_id
from keeper.testing import FakeClock, MemoryEventLog, MemorySnapshotStore

D = Decimal
T0 = 1_760_000_000_000_000  # µs
TICK_US = 60_000_000
PROFILE = "generic-perp"
PARAMS = KeeperParams(profile=PROFILE, mode="live")
MMF = {"BTC-USD": D("0.005"), "ETH-USD": D("0.01")}


def setup_events() -> list[ev.Event]:
    out: list[ev.Event] = [
        ev.AssetListed(event_id="asset-USDC", ts_event=T0, params=AssetParams(symbol="USDC", decimals=6)),
        ev.PriceUpdated(event_id="px-USDC-0", ts_event=T0, symbol="USDC", price=D(1)),
    ]
    for m, mmf in MMF.items():
        out.append(ev.MarketListed(event_id=f"mkt-{m}", ts_event=T0, params=MarketParams(
            symbol=m, mmf=mmf, imf=mmf * 2, liquidation_fee=D("0.01"))))
    out.append(ev.PriceUpdated(event_id="px-BTC-USD-0", ts_event=T0, symbol="BTC-USD", price=D(60000)))
    out.append(ev.PriceUpdated(event_id="px-ETH-USD-0", ts_event=T0, symbol="ETH-USD", price=D(3000)))
    return out


def open_position(acct: str, bucket: str, market: str, size: str, entry: str, collateral: str,
          n: list[int]) -> list[ev.Event]:
    n[0] += 1
    t = T0 + n[0]
    return [
        ev.Deposit(event_id=f"dep-{acct}-{bucket}", ts_event=t, account=acct, bucket=bucket,
                   asset="USDC", amount=D(collateral)),
        ev.PositionChanged(event_id=f"pos-{acct}-{bucket}-{market}", ts_event=t, account=acct,
                           bucket=bucket, market=market, size=D(size), entry_price=D(entry)),
    ]


def account_events(fillers: int = 30) -> list[ev.Event]:
    n = [0]
    out = []
    out += open_position("alice", CROSS, "BTC-USD", "1", "60000", "3000", n)
    out += open_position("bob", "iso-ETH", "ETH-USD", "10", "3000", "2000", n)
    out += open_position("bob", "iso-BTC", "BTC-USD", "0.1", "60000", "5000", n)
    out += open_position("carol", CROSS, "BTC-USD", "0.5", "60000", "20000", n)
    for i in range(fillers):
        acct = f"filler-{i:03d}"
        lev = 3 + (i * 7) % 25
        market = "BTC-USD" if i % 2 else "ETH-USD"
        price = 60000 if i % 2 else 3000
        size = D(1) if i % 2 else D(20)
        collateral = (size * price / lev).quantize(D("0.01"))
        bucket = CROSS if i % 3 else f"iso-{market.split('-', maxsplit=1)[0]}"
        out += open_position(acct, bucket, market, str(size), str(price), str(collateral), n)
        if i % 5 == 0 and bucket == CROSS:  # a second market in the cross bucket
            other = "ETH-USD" if market == "BTC-USD" else "BTC-USD"
            osize = "-5" if other == "ETH-USD" else "-0.2"
            n[0] += 1
            out.append(ev.PositionChanged(event_id=f"pos-{acct}-{bucket}-{other}", ts_event=T0 + n[0],
                                          account=acct, bucket=CROSS, market=other, size=D(osize),
                                          entry_price=D(3000 if other == "ETH-USD" else 60000)))
    return out


def crash_ticks(steps: int = 40) -> list[ev.PriceUpdated]:
    """BTC and ETH fall 0.6% and 0.8% a minute, then bounce a little."""
    out = []
    btc, eth = D(60000), D(3000)
    for i in range(1, steps + 1):
        if i < steps - 5:
            btc = (btc * D("0.994")).quantize(D("0.01"))
            eth = (eth * D("0.992")).quantize(D("0.01"))
        else:
            btc = (btc * D("1.003")).quantize(D("0.01"))
            eth = (eth * D("1.004")).quantize(D("0.01"))
        t = T0 + i * TICK_US
        out.append(ev.PriceUpdated(event_id=f"px-BTC-USD-{i}", ts_event=t, symbol="BTC-USD", price=btc))
        out.append(ev.PriceUpdated(event_id=f"px-ETH-USD-{i}", ts_event=t, symbol="ETH-USD", price=eth))
    return out


def core_factory(params: KeeperParams) -> Callable[[bytes | None], KeeperCore]:
    def make(data: bytes | None) -> KeeperCore:
        return KeeperCore(params) if data is None else KeeperCore.restore(data, params)
    return make


async def _venue_fills(log: MemoryEventLog, after: str, core: KeeperCore) -> None:
    """The toy venue: for each live intent since ``after``, submitted + confirmed + the close."""
    out: list[ev.Event] = []
    for entry_id, payload in log.entries:
        if parse_id(entry_id) <= parse_id(after):
            continue
        e = decode(payload)
        if type(e) is not ev.LiquidationIntended or e.decision.mode != "live":
            continue
        d = e.decision
        pos = core.state.accounts[d.account].buckets[d.bucket].positions.get(d.market or "")
        if pos is None:
            continue
        price = d.prices[pos.market]
        pnl = (pos.size * (price - (pos.entry_price or price))).quantize(D("0.01"))
        fee = (abs(pos.size) * price * D("0.01")).quantize(D("0.01"))
        t = e.ts_event + 1
        out += [
            ev.LiquidationSubmitted(event_id=f"sub-{d.intent_id}", ts_event=t, intent_id=d.intent_id,
                                    account=d.account, bucket=d.bucket, executor="toy"),
            ev.PositionChanged(event_id=f"fill-{d.intent_id}", ts_event=t, causation_id=d.intent_id,
                               account=d.account, bucket=d.bucket, market=pos.market, size=D(0),
                               realized_pnl=pnl - fee, settle_asset="USDC"),
            ev.LiquidationConfirmed(event_id=f"ok-{d.intent_id}", ts_event=t, intent_id=d.intent_id,
                                    account=d.account, bucket=d.bucket, venue_ref=f"v-{d.intent_id}"),
        ]
    if out:
        await log.append(out)


async def record_live(params: KeeperParams = PARAMS, fillers: int = 30, *,
                      snapshots: SnapshotStore | None = None, snapshot_after_chunk: int | None = None,
                      ticks: list[ev.PriceUpdated] | None = None, accounts: list[ev.Event] | None = None,
                      ) -> tuple[MemoryEventLog, SnapshotStore, Projector]:
    """The live run: events enter the log in small chunks; after each chunk the projector catches
    up (appending intents) and the toy venue fills what was decided. With
    ``snapshot_after_chunk`` the projector writes one snapshot after that chunk (into
    ``snapshots``)."""
    clock = FakeClock(T0)
    log = MemoryEventLog(clock)
    snaps = snapshots if snapshots is not None else MemorySnapshotStore()
    proj = Projector(log, snaps, core_factory(params), name="keeper", fmt=KeeperCore.FORMAT,
                     batch=7, snapshot_every=10**9, snapshot_interval_s=1e9, monotonic=lambda: 0.0)
    chunks: list[list[ev.Event]] = [setup_events(), account_events(fillers) if accounts is None else accounts]
    ticks = crash_ticks() if ticks is None else ticks
    chunks += [list(ticks[i:i + 2]) for i in range(0, len(ticks), 2)]
    for n, chunk in enumerate(chunks):
        clock.advance(1000)
        before = await log.last_id()
        await log.append(chunk)
        await proj.catch_up()
        assert isinstance(proj.core, KeeperCore)
        clock.advance(1000)
        await _venue_fills(log, before, proj.core)
        await proj.catch_up()
        if n == snapshot_after_chunk:
            await proj.snapshot()
    return log, snaps, proj
