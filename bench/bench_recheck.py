"""Health re-check after one market moves: the numpy screen against a full pure-Python rescan.

Book: 1,000,000 accounts (one cross bucket each) over 100 markets, 1-5 positions per account
(markets drawn by popularity: BTC 26% and ETH 16% of positions, a Zipf tail for the rest),
notionals log-normal, the margin buffer above maintenance log-normal around 30% of gross
notional so a slice of the book sits near liquidation. Collateral (USDC at 1) is folded into each
bucket's constant, so USDC ticks are not part of this run. Generated with numpy and loaded with
``Screen.load_columns`` (no Python ``Bucket`` objects).

Ticks: markets drawn by popularity, each a move of 0.1-2% (either sign) from the market's base
price, so the book does not drift into mass liquidation. Timed: ``Screen.candidates`` only (the
update, the flag and the sorted keys).

Reference: a pure-Python rescan of every account (equity and maintenance from positions, in
floats), timed on 100,000 accounts and scaled x10; ``recheck_full_scan_ratio`` is that over the
median incremental tick. Figures: ``bench <name> <value> <unit>``.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not
from keeper.domain.screen import Screen

ACCOUNTS = 1_000_000
MARKETS = 100
TICKS = 4_000
SAMPLE = 100_000
SEED = 20240805


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def popularity(rng: np.random.Generator) -> np.ndarray:
    tail = 1.0 / np.arange(1, MARKETS - 1) ** 1.1
    tail = tail / tail.sum() * 0.58
    w = np.concatenate([[0.26, 0.16], tail])
    del rng
    return w / w.sum()


def make_book(rng: np.random.Generator) -> dict[str, np.ndarray]:
    pop = popularity(rng)
    price = np.exp(rng.uniform(np.log(0.05), np.log(70_000), MARKETS))
    price[0], price[1] = 60_000.0, 3_000.0
    mmf = rng.choice([0.004, 0.005, 0.01, 0.02, 0.025], MARKETS)
    mmf[0], mmf[1] = 0.004, 0.005
    npos = rng.integers(1, 6, ACCOUNTS)
    row = np.repeat(np.arange(ACCOUNTS), npos)
    mkt = rng.choice(MARKETS, row.size, p=pop)
    # one entry per (account, market): drop the duplicates the draw made
    uniq = np.unique(row.astype(np.int64) * MARKETS + mkt)
    row, mkt = uniq // MARKETS, uniq % MARKETS
    notional = np.exp(rng.normal(np.log(10_000), 1.2, row.size))
    side = np.where(rng.random(row.size) < 0.5, -1.0, 1.0)
    size = side * notional / price[mkt]
    entry = price[mkt] * (1 + rng.normal(0, 0.03, row.size))
    upnl = np.bincount(row, size * (price[mkt] - entry), ACCOUNTS)
    gross = np.bincount(row, notional, ACCOUNTS)
    mm = np.bincount(row, notional * mmf[mkt], ACCOUNTS)
    # margin buffer above maintenance, as a share of gross notional: log-normal around 30%
    # (about 1 account in 300 is within 2% of liquidation); none starts past it
    buffer = np.maximum(np.exp(rng.normal(np.log(0.3), 1.0, ACCOUNTS)), 0.001)
    collateral = mm + buffer * gross - upnl
    const = collateral - np.bincount(row, size * entry, ACCOUNTS)
    coef = size - np.abs(size) * mmf[mkt]
    return {"price": price, "mmf": mmf, "pop": pop, "row": row, "mkt": mkt, "size": size,
            "entry": entry, "collateral": collateral, "const": const, "coef": coef}


Book = list[tuple[float, list[tuple[int, float, float, float]]]]


def python_rescan(accounts: Book, px: list[float]) -> int:
    """The pure-Python reference: equity and maintenance of every account, in floats."""
    n = 0
    for coll, positions in accounts:
        eq = coll
        mm = 0.0
        for m, size, entry, mmf in positions:
            p = px[m]
            eq += size * (p - entry)
            mm += abs(size) * p * mmf
        if eq < mm:
            n += 1
    return n


def main() -> None:
    rng = np.random.default_rng(SEED)
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    book = make_book(rng)
    t_gen = time.perf_counter() - t0
    symbols = [f"M{i:02d}" for i in range(MARKETS)]
    symbols[0], symbols[1] = "BTC", "ETH"
    prices = {s: float(p) for s, p in zip(symbols, book["price"], strict=True)}
    rss1 = rss_bytes()
    t0 = time.perf_counter()
    keys = [f"acct{i:07d}/cross" for i in range(ACCOUNTS)]
    sc = Screen()
    sc.load_columns(keys, book["const"], book["row"], book["mkt"], book["coef"],
                    symbols=symbols, prices=prices)
    t_build = time.perf_counter() - t0
    gc.collect()
    rss2 = rss_bytes()
    st = sc.stats()
    print(f"# book: {ACCOUNTS} accounts, {book['row'].size} positions, {MARKETS} markets, "
          f"generated in {t_gen:.2f} s")
    print(f"bench recheck_build_s {t_build:.3f} s")
    print(f"bench recheck_bytes_per_account {st['bytes'] / ACCOUNTS:.1f} B")
    print(f"# screen arrays {st['bytes'] / 2**20:.1f} MiB; process RSS growth: book arrays "
          f"{(rss1 - rss0) / 2**20:.0f} MiB, screen build (arrays + keys + dict) "
          f"{(rss2 - rss1) / 2**20:.0f} MiB")

    # ------------------------------------------------------------------ ticks
    base = book["price"]
    pop_entries = np.bincount(book["mkt"], minlength=MARKETS) / book["mkt"].size
    tick_mkt = rng.choice(MARKETS, TICKS, p=pop_entries)
    tick_move = rng.uniform(0.001, 0.02, TICKS) * np.where(rng.random(TICKS) < 0.5, -1, 1)
    gc.disable()
    times: list[float] = []
    hot: list[float] = []
    flagged: list[int] = []
    for m, mv in zip(tick_mkt.tolist(), tick_move.tolist(), strict=True):
        p = float(base[m]) * (1 + mv)
        t = time.perf_counter()
        got = sc.candidates(symbols[m], p)
        dt = time.perf_counter() - t
        times.append(dt)
        flagged.append(len(got))
        if m == 0:
            hot.append(dt)
    gc.enable()
    times_ms = np.array(times) * 1e3
    p50 = float(np.percentile(times_ms, 50))
    p99 = float(np.percentile(times_ms, 99))
    per_mkt = np.bincount(book["mkt"], minlength=MARKETS)
    print(f"bench recheck_p50_ms {p50:.3f} ms")
    print(f"bench recheck_p99_ms {p99:.3f} ms")
    print(f"bench recheck_hot_market_p50_ms {statistics.median(hot) * 1e3:.3f} ms")
    print(f"# hot market BTC holds {per_mkt[0] / ACCOUNTS:.0%} of accounts; "
          f"typical (median-popularity) market {int(np.median(per_mkt))} positions")
    print(f"bench recheck_candidates_per_tick {statistics.mean(flagged):.1f} buckets")
    t = time.perf_counter()
    sc.resync()
    print(f"bench recheck_numpy_full_rescan_ms {(time.perf_counter() - t) * 1e3:.1f} ms")

    # ------------------------------------------------------------------ the pure-Python reference
    sample = book["row"] < SAMPLE
    rows, mk = book["row"][sample].tolist(), book["mkt"][sample].tolist()
    sz, en = book["size"][sample].tolist(), book["entry"][sample].tolist()
    mmf = book["mmf"].tolist()
    accounts: Book = [
        (c, []) for c in book["collateral"][:SAMPLE].tolist()]
    for r, m, s, e in zip(rows, mk, sz, en, strict=True):
        accounts[r][1].append((m, s, e, mmf[m]))
    px = base.tolist()
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        python_rescan(accounts, px)
        runs.append((time.perf_counter() - t) * ACCOUNTS / SAMPLE)
    full_ms = statistics.median(runs) * 1e3
    print(f"# pure-Python full rescan: {full_ms:.0f} ms per tick (100,000 accounts timed, scaled x10)")
    print(f"bench recheck_full_scan_ratio {full_ms / p50:.0f} x")


if __name__ == "__main__":
    main()
