"""Plot one account through a replay: its buckets' health factors over time, the prices of its
markets, and a marker at every decision, coloured by what became of it (matplotlib, Agg
backend: no display needed).

Readable at a glance:

- **Time** is the time of the data the run played when its manifest carries a clock
  (``keeper demo`` plays a recorded crash at the wall clock: the axis shows the crash's times,
  ``RunManifest.clock``), else the log's own time; the axis label says which.
- **Health** is drawn on a log scale from ``HF_MIN`` to ``HF_MAX`` with the liquidation
  threshold (1) dashed; a health below ``HF_MIN`` (zero or negative: the bucket is bankrupt) is
  drawn on the floor *and* marked there with a red triangle, never passed off as 0.01. An empty
  bucket's infinite health is not drawn.
- **Decisions** are marked at the health they were taken at, one colour and shape per outcome
  (confirmed, rejected, expired, no outcome yet, not submitted: paper, paused or skipped), each
  labelled with its bucket, outcome and time; labels that would collide are moved apart.

Floats are for the screen only: every number comes from the exact Decimal values of the replay.
``account_plot`` computes what is drawn (tested without pixels); ``plot_account`` draws it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keeper.replay.explain import Explainer

__all__ = [
    "HF_MAX",
    "HF_MIN",
    "MAX_LABELS",
    "OUTCOMES",
    "STYLE",
    "AccountPlot",
    "Marker",
    "account_figure",
    "account_plot",
    "plot_account",
]

HF_MIN, HF_MAX = 0.01, 100.0

OUTCOMES = {
    "liquidation_confirmed": "confirmed",
    "liquidation_rejected": "rejected",
    "liquidation_expired": "expired",
}
STYLE = {  # outcome -> (marker, colour)
    "confirmed": ("o", "tab:green"),
    "rejected": ("X", "tab:red"),
    "expired": ("s", "tab:gray"),
    "no outcome": ("D", "tab:orange"),
    "not submitted": ("P", "tab:purple"),
}


@dataclass(frozen=True)
class Marker:
    """One decision as drawn."""

    at: datetime
    health: float
    bucket: str
    outcome: str
    """``confirmed``, ``rejected``, ``expired``, ``no outcome`` (live, nothing in the log yet) or
    ``not submitted`` (a paper, paused or skipped decision)."""
    mode: str

    @property
    def label(self) -> str:
        return f"{self.bucket}: {self.outcome} {self.at:%H:%M:%S}"


@dataclass
class AccountPlot:
    """What ``plot_account`` draws."""

    title: str
    xlabel: str
    health: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)
    """Per bucket, (time, health clipped to [HF_MIN, HF_MAX])."""
    floored: list[tuple[datetime, str, float]] = field(default_factory=list)
    """(time, bucket, true health) where the health is below ``HF_MIN`` (drawn on the floor)."""
    markers: list[Marker] = field(default_factory=list)
    prices: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)
    """Per symbol, (time, price as a percentage of its first)."""


def _clip(h: float) -> float:
    return min(max(h, HF_MIN), HF_MAX)


def account_plot(ex: Explainer, clock: Callable[[int], int] | None = None, *,
                 title: str | None = None) -> AccountPlot:
    """What to draw for the account ``ex`` followed; ``clock`` maps a log time (µs) to the time
    to show (``keeper.replay.manifest.data_time``), ``None``: log time."""

    def t(us: int) -> datetime:
        return datetime.fromtimestamp((clock(us) if clock is not None else us) / 1e6, tz=UTC)

    outcome: dict[str, str] = {}
    for step in ex.steps:
        if step.type in OUTCOMES and step.ref is not None:
            outcome.setdefault(step.ref, OUTCOMES[step.type])
    p = AccountPlot(title="", xlabel=("time of the played data (UTC), through the run's clock"
                                      if clock is not None else "log time (UTC)"))
    for step in ex.steps:
        for name, mark in step.after.items():
            if mark.health is None or not mark.health.is_finite():
                continue
            h = float(mark.health)
            p.health.setdefault(name, []).append((t(step.ts_event), _clip(h)))
            if h < HF_MIN:
                p.floored.append((t(step.ts_event), name, h))
    for step in ex.steps:
        for d in step.decided:
            hf = d.health_before
            y = _clip(float(hf)) if hf is not None and hf.is_finite() else 1.0
            what = outcome.get(d.intent_id, "no outcome") if d.mode == "live" else "not submitted"
            p.markers.append(Marker(t(step.ts_event), y, d.bucket, what, d.mode))
    for sym in sorted(ex.prices):
        pts = ex.prices[sym]
        if pts:
            first = float(pts[0][1])
            p.prices[sym] = [(t(ts), float(px) / first * 100) for ts, px in pts]
    counts: dict[str, int] = {}
    for m in p.markers:
        counts[m.outcome] = counts.get(m.outcome, 0) + 1
    tally = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no decision"
    p.title = title or f"account {ex.account} ({ex.core.profile.name}): {tally}"
    return p


def plot_account(ex: Explainer, out: Path, *, title: str | None = None,
                 clock: Callable[[int], int] | None = None) -> Path:
    """Draw what ``ex`` followed into ``out`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = account_figure(account_plot(ex, clock, title=title))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out


def account_figure(p: AccountPlot) -> Any:
    """The figure of ``p`` (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_p) = plt.subplots(2, 1, sharex=True, figsize=(12, 7.5),
                                     gridspec_kw={"height_ratios": [3, 2]})
    for name in sorted(p.health):
        pts = p.health[name]
        ax_h.step([a for a, _ in pts], [b for _, b in pts], where="post", label=f"bucket {name}")
    ax_h.axhline(1.0, color="red", linestyle="--", linewidth=1, label="liquidation threshold (1)")
    if p.floored:
        ax_h.scatter([a for a, _, _ in p.floored], [HF_MIN] * len(p.floored), marker="v", s=30,
                     color="red", zorder=4, label=f"health below {HF_MIN:g} (<= 0: bankrupt), on the floor")
    seen: set[str] = set()
    for m in p.markers:
        marker, colour = STYLE[m.outcome]
        ax_h.scatter([m.at], [m.health], marker=marker, s=70, color=colour, edgecolors="black",
                     linewidths=0.6, zorder=5, label=None if m.outcome in seen else f"decision: {m.outcome}")
        seen.add(m.outcome)
    ax_h.set_yscale("log")
    ax_h.set_ylim(HF_MIN / 1.5, HF_MAX * 1.5)
    ax_h.set_ylabel("health factor (log scale)")
    ax_h.legend(loc="upper right", fontsize=8)
    ax_h.set_title(p.title, fontsize=11)
    ax_h.grid(True, which="major", alpha=0.3)
    for sym, pts in p.prices.items():
        ax_p.plot([a for a, _ in pts], [b for _, b in pts], label=sym)
    for m in p.markers:
        ax_p.axvline(m.at, color=STYLE[m.outcome][1], linewidth=0.6, alpha=0.5)
    ax_p.set_ylabel("price (first = 100)")
    ax_p.set_xlabel(p.xlabel)
    ax_p.legend(loc="upper right", fontsize=8)
    ax_p.grid(True, alpha=0.3)
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    ax_p.xaxis.set_major_locator(locator)
    ax_p.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    fig.tight_layout()
    _labels(fig, ax_h, p.markers)  # after the layout: their places are measured on the canvas
    return fig


MAX_LABELS = 12
"""Decisions labelled with text (the first ones); the others keep their marker and colour."""


def _labels(fig: Any, ax: Any, markers: list[Marker]) -> None:
    """Label the first ``MAX_LABELS`` markers, each moved up until it overlaps no earlier one."""
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    for k, m in enumerate(markers[:MAX_LABELS]):
        dy = 8 if k % 2 == 0 else -14
        text = ax.annotate(m.label, (m.at, m.health), textcoords="offset points", xytext=(6, dy),
                           fontsize=8, bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8})
        for _ in range(40):
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                break
            dy += 12 if dy > 0 else -12
            text.set_position((6, dy))
        placed.append(text.get_window_extent(renderer))
    if len(markers) > MAX_LABELS:
        ax.text(0.01, 0.02, f"{len(markers) - MAX_LABELS} more decisions: markers only",
                transform=ax.transAxes, fontsize=8, color="dimgray")
