"""Plot one account through a replay: its buckets' health factors over log time, the prices of
its markets, and a marker at every decision (matplotlib, Agg backend: no display needed).

Health factors are drawn on a log scale, clipped to [0.01, 100] (an empty bucket's infinite
health is not drawn); the liquidation threshold (1) is a dashed line. Floats are for the screen
only: every number in the figure comes from the exact Decimal values of the replay.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from keeper.replay.explain import Explainer

HF_MIN, HF_MAX = 0.01, 100.0


def _t(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, tz=UTC)


def plot_account(ex: Explainer, out: Path, *, title: str | None = None) -> Path:
    """Draw what ``ex`` followed into ``out`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_p) = plt.subplots(2, 1, sharex=True, figsize=(11, 7),
                                     gridspec_kw={"height_ratios": [3, 2]})
    try:
        series: dict[str, tuple[list[datetime], list[float]]] = {}
        for step in ex.steps:
            for name, mark in step.after.items():
                if mark.health is None or not mark.health.is_finite():
                    continue
                ts, hs = series.setdefault(name, ([], []))
                ts.append(_t(step.ts_event))
                hs.append(min(max(float(mark.health), HF_MIN), HF_MAX))
        for name in sorted(series):
            ts, hs = series[name]
            ax_h.step(ts, hs, where="post", label=f"bucket {name}")
        ax_h.axhline(1.0, color="red", linestyle="--", linewidth=1, label="liquidation threshold")
        decided = [(s, d) for s in ex.steps for d in s.decided]
        for step, d in decided:
            hf = d.health_before
            y = min(max(float(hf), HF_MIN), HF_MAX) if hf is not None and hf.is_finite() else 1.0
            ax_h.scatter([_t(step.ts_event)], [y], marker="x", s=80, color="black", zorder=5)
            ax_h.annotate(f"{d.bucket} ({d.mode})", (_t(step.ts_event), y), textcoords="offset points",
                          xytext=(4, 6), fontsize=8)
        ax_h.set_yscale("log")
        ax_h.set_ylabel("health factor")
        ax_h.legend(loc="best", fontsize=8)
        ax_h.set_title(title or f"account {ex.account} ({ex.core.profile.name}): "
                       f"{len(decided)} decision(s)")
        for sym in sorted(ex.prices):
            pts = ex.prices[sym]
            if not pts:
                continue
            first = float(pts[0][1])
            ax_p.plot([_t(t) for t, _ in pts], [float(p) / first * 100 for _, p in pts], label=sym)
        for step, _ in decided:
            ax_p.axvline(_t(step.ts_event), color="black", linewidth=0.6, alpha=0.5)
        ax_p.set_ylabel("price (first = 100)")
        ax_p.set_xlabel("log time (UTC)")
        ax_p.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out
