"""``keeper compare --log``: the keeper's figures read back from a recorded run at the reference
venue equal the venue's own, beside the perfect keeper's on the book and path the log holds."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from keeper.app import cli
from keeper.domain import codec
from keeper.domain import events as ev
from keeper.replay.measure import book_and_path, measure
from keeper.sim.ideal import ideal_run
from keeper.sim.venue import Venue
from keeper.store.ndjson import export_lines
from tests.sim.helpers import CRASH_PATH, crash_book, decision

D = Decimal


class _Run:
    """A keeper's run written as its log would hold it: the venue's book and effects (its own
    payloads), the prices as one frame a tick (and an asset feed between), intents and outcomes."""

    def __init__(self) -> None:
        self.now = 0
        self.venue = Venue(lambda: self.now)
        self.venue.set_marks(CRASH_PATH[0].ts_us, CRASH_PATH[0].prices)
        self.venue.load(crash_book())
        self.log: list[ev.Event] = [codec.decode(p) for _, p in self.venue.events_after(0, 10_000)]

    def tick(self, k: int) -> None:
        t = CRASH_PATH[k]
        self.now = t.ts_us
        self.venue.set_marks(t.ts_us, t.prices)
        items = sorted(t.prices.items())
        for i, (m, p) in enumerate(items):
            self.log.append(ev.PriceUpdated(event_id=f"venue:{m}:{t.ts_us}", ts_event=t.ts_us, symbol=m,
                                            price=p, publish_time=t.ts_us, source="venue",
                                            frame_more=i < len(items) - 1))
            base = m.split("-")[0]  # the asset feed's frame, interleaved with the market's
            self.log.append(ev.PriceUpdated(event_id=f"assets:{base}:{t.ts_us}", ts_event=t.ts_us + 1,
                                            symbol=base, price=p, publish_time=t.ts_us + 1, source="assets"))

    def liquidate(self, iid: str, account: str, bucket: str, action: str = "close_position", *,
                  mode: str = "live", amid: tuple[ev.Event, ...] = (), **kw: Any) -> None:
        d = msgspec.structs.replace(decision(iid, account, bucket, action, **kw), mode=mode)
        self.log.append(ev.LiquidationIntended(event_id=iid, ts_event=self.now, decision=d))
        if mode != "live":
            return
        r = self.venue.liquidate(d)
        if r.status != "accepted":
            self.log.append(ev.LiquidationRejected(event_id=f"out:{iid}", ts_event=self.now, intent_id=iid,
                                                   account=account, bucket=bucket, reason=r.reason or ""))
            return
        effects = [codec.decode(p) for p in r.events]
        self.log.extend([effects[0], *amid, *effects[1:]])  # entries arriving amid its events
        self.log.append(ev.LiquidationConfirmed(event_id=f"out:{iid}", ts_event=self.now, intent_id=iid,
                                                account=account, bucket=bucket, venue_ref=r.ref))


def _recorded_run() -> _Run:
    run = _Run()
    run.tick(0)
    run.tick(1)  # dave is liquidatable from here (55000); the keeper is a tick late
    run.tick(2)
    other = ev.LiquidationSubmitted(event_id="sub:x", ts_event=0, intent_id="x")
    run.liquidate("d1", "dave", "iso-BTC-USD", market="BTC-USD", size=D(1), amid=(other,))
    run.liquidate("a1", "alice", "cross", market="BTC-USD", size=D("0.1"))  # healthy at 50300
    run.liquidate("p1", "alice", "cross", mode="paper", market="BTC-USD", size=D("0.1"))
    run.tick(3)
    run.liquidate("a2", "alice", "cross", market="BTC-USD", size=D("0.1"))
    later = ev.PriceUpdated(event_id="late", ts_event=0, symbol="ETH", price=D(1), source="assets")
    run.liquidate("c1", "carol", "lend-ETH", "repay_seize", repay_asset="USDC", repay_amount=D(1000),
                  seize_asset="ETH", seize_amount=D("0.4375"), amid=(later,))
    run.tick(3)  # the asset feed's ETH at 1 was held until carol's liquidation was valued, then set
    run.tick(4)
    return run


def test_the_keepers_figures_from_its_log_are_the_venues_own() -> None:
    run = _recorded_run()
    m = measure(run.log, "test")
    st = run.venue.stats
    # dave at 50300: pnl -9700, fee 503, cover 9203, worth -8700 before: nothing lost to it;
    # alice at 50200: cover 30.20, her 20 lost; carol at 2400: the 50 bonus
    assert (st.accepted, st.bad_debt, st.collateral_lost) == (3, D(9203) + D("30.2"), D(20) + D(50))
    assert (m.liquidations, m.bad_debt, m.collateral_lost) == (st.accepted, st.bad_debt, st.collateral_lost)
    assert (m.intents, m.rejected_healthy, m.price_moved_share) == (4, 1, 0.25)  # the paper intent is not one
    assert m.accounts == 4


def test_the_perfect_keeper_runs_on_the_book_and_the_ticks_the_log_holds() -> None:
    run = _recorded_run()
    book, path = book_and_path(run.log)
    assert [t.prices for t in path] == [t.prices for t in CRASH_PATH[:4]] + [CRASH_PATH[3].prices,
                                                                            CRASH_PATH[4].prices]
    assert [t.ts_us for t in path[:4]] == [t.ts_us for t in CRASH_PATH[:4]]
    assert len(book) == len(crash_book())
    m = measure(run.log)
    assert m.ideal == ideal_run(crash_book(), path)
    # tests/sim/test_ideal.py: dave at 55000 (bad debt 4550), alice at 50200 (30.20), carol twice
    assert (m.ideal.bad_debt, m.ideal.collateral_lost) == (D("4580.2"), D(120))
    assert m.bad_debt_ratio == float((D(9203) + D("30.2")) / D("4580.2"))


def _write(events: list[ev.Event], path: Path) -> Path:
    path.write_bytes(b"".join(export_lines((f"{i + 1}-0", codec.encode(e)) for i, e in enumerate(events))))
    return path


def test_compare_log_prints_keeper_against_perfect_keeper(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    log = _write(_recorded_run().log, tmp_path / "run.ndjson")
    assert cli.main(["compare", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert "bad debt (USD)                    9,233.20          4,580.20" in out
    assert "collateral lost (USD)                70.00            120.00" in out
    assert "bad debt, keeper / perfect: 2.02" in out
    assert "1 of 4 live intents rejected as healthy at the venue's price (25.00%)" in out


def test_compare_log_refuses_a_log_without_a_book(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _write([e for e in _recorded_run().log if isinstance(e, ev.PriceUpdated)], tmp_path / "p.ndjson")
    assert cli.main(["compare", "--log", str(log)]) == 1
    assert "--log" in capsys.readouterr().err
    assert cli.main(["compare", "--log", str(tmp_path / "none.ndjson")]) == 1
