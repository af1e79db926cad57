"""The band edges at scale: the merges of the levels and the compaction never lose a row."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.domain.screen import Screen


@pytest.mark.parametrize(("small", "tail"), [(4096, 64), (8, 2)])
def test_band_edges_at_scale_never_miss_a_row_below_zero(
    monkeypatch: pytest.MonkeyPatch, small: int, tail: int
) -> None:
    """Thousands of rows, long random walks: the vectorised settle, the merges of pending edges
    into the sorted arrays (forced often with tiny level sizes) and the compaction of stale
    edges never lose a row whose slack, recomputed in floats from its coefficients, is negative."""
    import keeper.domain.screen.edges as edges_mod

    monkeypatch.setattr(edges_mod, "_SMALL", small)
    monkeypatch.setattr(edges_mod, "_TAIL", tail)
    rng = np.random.default_rng(7)
    n, syms = 3000, ["A", "B", "C", "D"]
    base = np.array([100.0, 20.0, 1.0, 5000.0])
    per = rng.integers(1, 4, n)
    er = np.repeat(np.arange(n), per)
    es = np.concatenate([rng.choice(4, k, replace=False) for k in per.tolist()])
    coef = rng.normal(0, 1, er.size) / base[es]
    slack0 = rng.exponential(0.05, n)
    const = slack0 - np.bincount(er, coef * base[es], n)
    keys = [f"a{i:05d}/cross" for i in range(n)]
    sc = Screen(abs_tol=0.0, resync_every=0)
    prices = dict(zip(syms, base.tolist(), strict=True))
    sc.load_columns(keys, const, er, es, coef, symbols=syms, prices=prices)
    px = base.copy()
    removed: set[int] = set()
    for step in range(600):
        m = int(rng.integers(0, 4))
        px[m] = base[m] * (1 + rng.normal(0, 0.03))
        got = set(sc.candidates(syms[m], float(px[m])))
        if step % 50 == 49:
            gone = int(rng.integers(0, n))
            sc.remove(keys[gone])
            removed.add(gone)
        slack = const + np.bincount(er, coef * px[es], n)
        exposed = np.zeros(n, np.bool_)
        exposed[er[es == m]] = True
        for i in np.flatnonzero((slack < -1e-9) & exposed).tolist():
            if i not in removed:
                assert keys[i] in got, (step, i, slack[i])
                assert sc.check(keys[i])
    st_ = sc.stats()
    assert st_["buckets"] == n - len(removed)
    # stale edges are compacted away: each side stays within twice its live rows plus 1024
    # (and what was pushed since its last probe)
    assert st_["edges"] <= 2 * (2 * st_["entries"] + 2 * len(syms) * 1024)
    sc.resync()
    assert sc.stats()["dead_entries"] == 0


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.floats(0, 1000, allow_nan=False), max_size=400),
       batch=st.lists(st.floats(0, 1000, allow_nan=False), max_size=200),
       probes=st.lists(st.floats(-1, 1001, allow_nan=False), min_size=1, max_size=8),
       tidy=st.lists(st.booleans(), min_size=8, max_size=8))
def test_a_probe_takes_exactly_the_edges_above_it_however_many_cross_the_heap(
    keys: list[float], batch: list[float], probes: list[float], tidy: list[bool]
) -> None:
    """Single pushes (the heap; past ``_POP_ONE_BY_ONE`` crossed at once, the rest of the heap
    is filtered as an array) and a batch: each probe returns exactly the edges above it that
    an earlier probe did not, whatever level they were in, sorted into the arrays by ``tidy``
    or not."""
    from keeper.domain.screen.edges import BandEdges

    edges = BandEdges()
    left = {i: k for i, k in enumerate(keys)}
    for i, k in enumerate(keys):
        edges.push(k, i, 0)
    base = len(keys)
    if batch:
        arr = np.array(batch)
        edges.push_many(arr, np.arange(base, base + arr.size, dtype=np.int32),
                        np.zeros(arr.size, np.int32), float(arr.max()))
        left.update({base + j: k for j, k in enumerate(batch)})
    for x, tidy_first in zip(sorted(probes, reverse=True), tidy, strict=False):
        if tidy_first:
            edges.tidy()
        pairs: list[tuple[int, int]] = []
        rows, _ = edges.pop(x, pairs)
        got = [r for r, _ in pairs] + [r for a in rows for r in a.tolist()]
        assert sorted(got) == sorted(r for r, k in left.items() if k > x)
        left = {r: k for r, k in left.items() if k <= x}
        assert len(edges) == len(left)
