"""Plots readable at a glance: ``replay --plot`` shows the crash's time (the run's clock), marks
a health below the axis (negative: bankrupt) instead of drawing it at 0.01, colours and labels
each decision by its outcome with labels that do not overlap; ``compare`` writes one large
figure per window, its values on the bars, its title whole, named after the window."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib.pyplot as plt

from keeper.domain.decide import KeeperParams
from keeper.replay import manifest as mf
from keeper.replay.compare import Window, compare, comparison_figure, human, plot_comparison
from keeper.replay.explain import BucketMark, Step
from keeper.replay.plot import HF_MIN, account_figure, account_plot, plot_account

D = Decimal
LOG_T0 = 1_796_000_000_000_000  # the wall clock of the run (2026)
CRASH_T0 = 1_760_130_000_000_000  # 2025-10-10T21:00:00Z, the data it played


def _mark(h: str) -> dict[str, BucketMark]:
    return {"cross": BucketMark(D(h), None, None, D(h) < 1)}


def _decision(n: int, mode: str = "live") -> Any:
    return SimpleNamespace(intent_id=f"liq:a/cross@{n}-0", bucket="cross", mode=mode, health_before=D("0.97"))


def _explainer() -> Any:
    steps = [Step("1-0", LOG_T0, "price_updated", "", _mark("1.5"), _mark("1.5"))]
    # five decisions one second apart at the same health, then what became of each
    outcomes = ["liquidation_confirmed", "liquidation_rejected", "liquidation_expired", None, None]
    for k in range(5):
        steps.append(Step(f"{k + 2}-0", LOG_T0 + (k + 1) * 1_000_000, "price_updated", "", _mark("1.5"),
                          _mark("0.97"), [_decision(k + 2, "paper" if k == 4 else "live")]))
    for k, kind in enumerate(outcomes):
        if kind is not None:
            steps.append(Step(f"{k + 10}-0", LOG_T0 + 7_000_000, kind, "", _mark("0.97"), _mark("0.97"),
                              ref=f"liq:a/cross@{k + 2}-0"))
    steps.append(Step("20-0", LOG_T0 + 8_000_000, "price_updated", "", _mark("0.97"), _mark("-0.4")))
    prices = {"BTC-USD": [(LOG_T0, D(60000)), (LOG_T0 + 8_000_000, D(54000))]}
    return SimpleNamespace(account="a", steps=steps, prices=prices,
                           core=SimpleNamespace(profile=SimpleNamespace(name="generic-perp")))


def _clock() -> Any:
    m = mf.live_manifest(KeeperParams(profile="generic-perp"), source="x")
    m.clock = [(LOG_T0, CRASH_T0), (LOG_T0 + 10_000_000, CRASH_T0 + 600_000_000)]  # 10 s played 10 min
    return lambda us: mf.data_time(m, us)


def test_the_time_axis_is_the_played_crashs_through_the_runs_clock() -> None:
    p = account_plot(_explainer(), _clock())
    assert p.markers[0].at == datetime(2025, 10, 10, 21, 1, tzinfo=UTC)  # 1 s of log = 1 min of data
    assert "played data" in p.xlabel
    assert account_plot(_explainer()).markers[0].at.year == 2026  # no clock: log time, said so
    assert account_plot(_explainer()).xlabel == "log time (UTC)"


def test_a_health_below_the_axis_is_marked_not_drawn_as_001() -> None:
    p = account_plot(_explainer(), _clock())
    assert p.health["cross"][-1][1] == HF_MIN
    [(_, bucket, h)] = p.floored
    assert (bucket, h) == ("cross", -0.4)


def test_each_decision_says_what_became_of_it_and_labels_do_not_overlap(tmp_path: Path) -> None:
    p = account_plot(_explainer(), _clock())
    assert [m.outcome for m in p.markers] == ["confirmed", "rejected", "expired", "no outcome",
                                              "not submitted"]
    assert p.markers[1].label == "cross: rejected 21:02:00"
    assert "1 confirmed" in p.title and "1 rejected" in p.title
    fig = account_figure(p)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        boxes = [t.get_window_extent() for t in ax.texts]
        assert len(boxes) == 5
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("bankrupt" in x for x in legend) and "decision: rejected" in legend
    finally:
        plt.close(fig)
    assert plot_account(_explainer(), tmp_path / "a.png", clock=_clock()).stat().st_size > 20_000


def _comparison() -> Any:
    times = [CRASH_T0 + k * 300_000_000 for k in range(4)]
    bars = [[("60000", "60100", "59000", "59500")], [("59500", "59600", "50000", "52000")],
            [("52000", "53000", "45000", "46000")], [("46000", "50000", "45500", "49000")]]
    w = Window("2099-01", "test bars " + "with a long source name " * 6, ["BTC-USD"], times, bars)
    return compare(w, 60, profile="generic-perp", seed=3)


def test_compare_is_one_readable_figure_per_window_with_its_values(tmp_path: Path) -> None:
    res = _comparison()
    fig = comparison_figure(res)
    try:
        fig.canvas.draw()
        w, h = fig.get_size_inches() * 110
        assert w >= 1300 and h >= 800  # not a 1620x252 strip
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        iso = res.isolated.totals()
        assert human(float(iso["bad_debt"]), True) in texts and f"{iso['liquidations']:,}" in texts
        for t in [fig._suptitle, *fig.texts]:  # the title and the model's words: whole, inside
            box = t.get_window_extent()
            assert box.x0 >= 0 and box.x1 <= fig.bbox.width, t.get_text()
    finally:
        plt.close(fig)
    assert plot_comparison(res, tmp_path / "compare-2099-01.png").stat().st_size > 20_000
    assert human(1_234_567, True) == "$1.23M" and human(42, False) == "42"
