"""Balance-only account events move the screen row by one term (``Screen.shift``), not a re-linearise:
the decisions and snapshots must be those of a core that checks every bucket exactly."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from tests.domain.keeper.keeper_scenarios import (
    Log,
    lending_account,
    lending_assets,
    perp_account,
    perp_market,
    record_live,
)
from tests.domain.keeper.test_keeper_batch import _exact_everywhere, _per_entry

D = Decimal
PERP = KeeperParams(profile="generic-perp", mode="live")
PAPER = KeeperParams(profile="generic-perp", mode="paper")
AAVE = KeeperParams(profile="aave-v3.3", mode="live")

# (kind, account index, amount in cents): deposits, withdrawals, borrows, repays, funding of
# either sign; amounts from a cent to more than any bucket holds, so balances cross zero too
flows = st.lists(st.tuples(st.sampled_from(["deposit", "withdraw", "borrow", "repay", "funding"]),
                           st.integers(0, 9), st.integers(1, 400_000)), max_size=40)
moves = st.lists(st.tuples(st.sampled_from(["BTC", "ETH", "WETH"]), st.integers(-300, 200)), min_size=5,
                 max_size=60)


def build(lending: bool, flow: list[tuple[str, int, int]], path: list[tuple[str, int]]) -> Log:
    log = Log()
    prices = {"BTC": D(20000), "ETH": D(2000), "WETH": D(2000)}
    if lending:
        lending_assets(log)
    else:
        perp_market(log, "BTC")
        perp_market(log, "ETH")
    log.price("USDC", "1")
    for sym, p in prices.items():
        log.price(sym, p)
    for i in range(10):
        if lending:
            lending_account(log, f"h{i}", "cross", str(1 + i % 3), str(1400 + 150 * i))
        else:
            sym = "BTC" if i % 2 else "ETH"
            size = D(i - 5 or 1) / 10
            perp_account(log, f"h{i}", "cross", sym, str(size), str(prices[sym]),
                         str(abs(size) * prices[sym] / (3 + i)))
    steps = max(len(flow), len(path))
    for k in range(steps):
        if k < len(path):
            sym, bp = path[k]
            prices[sym] = (prices[sym] * (1 + D(bp) / 10000)).quantize(D("0.01"))
            log.price(sym, prices[sym])
        if k < len(flow):
            kind, i, cents = flow[k]
            amount = D(cents) / 100
            if kind == "funding":
                log.add(ev.FundingApplied, account=f"h{i}", bucket="cross", market="BTC", asset="USDC",
                        amount=amount if cents % 2 else -amount)
            else:
                cls = {"deposit": ev.Deposit, "withdraw": ev.Withdraw, "borrow": ev.Borrow,
                       "repay": ev.Repay}[kind]
                log.add(cls, account=f"h{i}", bucket="cross", asset="USDC", amount=amount)
    return log


@settings(max_examples=40, deadline=None)
@given(lending=st.booleans(), paper=st.booleans(), flow=flows, path=moves, seed=st.integers(0, 1000))
def test_shifted_rows_decide_what_exact_checks_of_every_bucket_decide(
        lending: bool, paper: bool, flow: list[tuple[str, int, int]], path: list[tuple[str, int]],
        seed: int) -> None:
    params = AAVE if lending else PAPER if paper else PERP
    entries = record_live(build(lending, flow, path).entries, KeeperCore(params), seed)
    screened, oracle = KeeperCore(params), _exact_everywhere(params)
    assert _per_entry(screened, entries) == _per_entry(oracle, entries)
    assert screened.snapshot() == oracle.snapshot()


def test_a_withdrawal_that_breaches_is_decided_at_that_entry_through_a_shift() -> None:
    log = Log()
    perp_market(log, "BTC")
    log.price("USDC", "1")
    log.price("BTC", "20000")
    perp_account(log, "a", "cross", "BTC", "1", "20000", "1500")  # MM 1000: slack 500
    core = KeeperCore(PERP)
    for entry_id, event in log.entries:
        core.handle(entry_id, event)
    row = core.screen._row["a/cross"]
    shifts, upserts = core.screen.shifts, core.screen.upserts
    ok = log.add(ev.Withdraw, account="a", bucket="cross", asset="USDC", amount=D(499))
    assert core.handle(ok, log.entries[-1][1]) == []
    bad = log.add(ev.Withdraw, account="a", bucket="cross", asset="USDC", amount=D(2))
    out = core.handle(bad, log.entries[-1][1])
    # both moved the row by one term (no re-linearise), the second flagged it
    assert (core.screen.shifts - shifts, core.screen.upserts - upserts) == (2, 0)
    assert core.screen._row["a/cross"] == row
    assert [e.event_id for e in out] == [f"liq:a/cross@{bad}"]
    # the balance gone entirely: the asset leaves the bucket, a full re-linearise (no shift)
    gone = log.add(ev.Withdraw, account="a", bucket="cross", asset="USDC", amount=D(999))
    core.handle(gone, log.entries[-1][1])
    assert (core.screen.shifts - shifts, core.screen.upserts - upserts) == (2, 1)


def test_a_perp_core_indexes_only_buckets_with_positions_and_lets_deposits_lag() -> None:
    log = Log()
    perp_market(log, "BTC")
    log.price("USDC", "1")
    log.price("BTC", "20000")
    core = KeeperCore(PERP)
    for entry_id, event in log.entries:
        core.handle(entry_id, event)

    def add(cls: type[ev.Event], **kw: object) -> list[ev.Event]:
        entry_id = log.add(cls, **kw)  # type: ignore[arg-type]
        return core.handle(entry_id, log.entries[-1][1])

    # collateral alone: a bucket a perp profile never decides, so no row and no exposure
    add(ev.Deposit, account="a", bucket="cross", asset="USDC", amount=D(1500))
    assert "a/cross" not in core.screen and core.exposed("USDC") == set()
    add(ev.PositionChanged, account="a", bucket="cross", market="BTC", size=D(1), entry_price=D(20000))
    assert "a/cross" in core.screen and core.exposed("BTC") == {"a/cross"}
    # a deposit only raises the slack: the row lags (no re-linearise, no shift) ...
    upserts, shifts = core.screen.upserts, core.screen.shifts
    assert add(ev.Deposit, account="a", bucket="cross", asset="USDC", amount=D(500)) == []
    assert (core.screen.upserts, core.screen.shifts) == (upserts, shifts)
    assert core.screen.stats()["stale_rows"] == 1
    # ... and the price that would have breached the bucket without it (below 18500/0.95 = 19474)
    # does not: the crossed row is re-linearised from the state (2000 USDC: below 18000/0.95 = 18947)
    assert add(ev.PriceUpdated, symbol="BTC", price=D(19200)) == []
    assert core.screen.upserts == upserts + 1 and core.screen.stats()["stale_rows"] == 0
    out = add(ev.PriceUpdated, symbol="BTC", price=D(18900))
    assert [e.event_id for e in out] == [f"liq:a/cross@{log.entries[-1][0]}"]
    # the position closed: the bucket leaves the index
    add(ev.PositionChanged, account="a", bucket="cross", market="BTC", size=D(0))
    assert "a/cross" not in core.screen and core.exposed("BTC") == set()
