"""The figures of escape as a time to event (`analysis.survival`): Kaplan-Meier curves per arm, and
the hazard ratios of the stated comparisons with their intervals, or why a comparison has none."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from analysis import survival
from analysis.figures import kilo, order_variants, style, variant_colors

HR_TICKS = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)


def survival_plot(arms: dict[str, survival.Arm], title: str, colors: dict | None = None) -> Figure:
    """Fraction of each arm's runs still on the plateau against the step, with its 95% band
    (log-log); a tick marks each run censored (not escaped by its last evaluation); the legend
    gives each arm's escapes, n and median."""
    order = order_variants(list(arms))
    colors = colors or variant_colors(order)
    with style():
        fig = Figure(figsize=(6.8, 4.4), layout="constrained")
        ax = fig.subplots()
        for label in order:
            arm = arms[label]
            color = colors.get(label, "0.4")
            times = np.concatenate([[0.0], arm.times])
            survival_ = np.concatenate([[1.0], arm.survival])
            median = "not reached" if math.isnan(arm.median) else f"median {arm.median:,.0f}"
            ax.step(
                times,
                survival_,
                where="post",
                color=color,
                label=f"{label}: {arm.escaped} of {arm.n} escaped, {median}",
            )
            if np.isfinite(arm.low).any():
                low = np.concatenate([[1.0], arm.low])
                high = np.concatenate([[1.0], arm.high])
                ax.fill_between(times, low, high, step="post", color=color, alpha=0.12, lw=0)
            if len(arm.censored):  # where runs stopped without escaping
                at = np.searchsorted(arm.times, arm.censored, side="right") - 1
                ax.plot(arm.censored, arm.survival[at], "|", color=color, ms=9, mew=1.5)
        ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
        ax.set_ylim(-0.02, 1.04)
        ax.set_xlabel("step")
        ax.set_ylabel("fraction of runs still on the plateau")
        ax.xaxis.set_major_formatter(kilo)
        ax.set_title(title)
        ax.legend(loc="lower left")
    return fig


def hazard_forest(comparisons: list[survival.Comparison], adjusted: list[float], title: str) -> Figure:
    """One row per stated comparison: the hazard ratio of escaping (above 1: the arm leaves the
    plateau sooner) with its interval on a log axis, an arrow where the interval has no end, and
    beside it the counts, the p-value and its adjusted value, or why there is no ratio."""
    rows = len(comparisons)
    finite = [v for c in comparisons for v in (c.low, c.high, c.hazard_ratio) if 0 < v < math.inf]
    low, high = (min([*finite, 1.0]), max([*finite, 1.0])) if finite else (1.0, 1.0)
    xlim = (low / 2.0, high * 2.0)
    with style():
        fig = Figure(figsize=(10.5, 0.75 * rows + 1.5), layout="constrained")
        ax, side = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": (1, 1.5)})
        for y, (c, p_adj) in enumerate(zip(comparisons, adjusted)):
            if c.decided == 0:
                ax.text(1.0, y, "no ratio", ha="center", va="center", color="0.4", fontsize=8, style="italic")
                side.text(
                    0,
                    y,
                    f"no matched group decided which escaped first (0 of {c.groups})",
                    va="center",
                    fontsize=8,
                )
                continue
            point = min(max(c.hazard_ratio, xlim[0]), xlim[1])
            lo, hi = max(c.low, xlim[0]), min(c.high, xlim[1])
            ax.plot([lo, hi], [y, y], color="0.2", lw=1.4)
            ax.plot(point, y, "o", color="0.2", mfc="white" if not 0 < c.hazard_ratio < math.inf else "0.2")
            for end, edge, marker in ((c.low, xlim[0], "<"), (c.high, xlim[1], ">")):
                if end <= edge if marker == "<" else end >= edge:
                    ax.plot(edge, y, marker, color="0.2", ms=6)
            hr = "∞" if math.isinf(c.hazard_ratio) else f"{c.hazard_ratio:.2g}"
            interval = f"[{_end(c.low)}, {_end(c.high)}] {c.interval.split(' (')[0]}"
            side.text(
                0,
                y,
                f"HR {hr} {interval}\n{c.arm} first in {c.won}, {c.reference} in {c.lost} of {c.decided} "
                f"decided groups (of {c.groups}); p {c.p:.3g}, adjusted {p_adj:.3g}",
                va="center",
                fontsize=8,
            )
        ax.axvline(1.0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ticks = [t for t in HR_TICKS if xlim[0] <= t <= xlim[1]]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_yticks(range(rows), [f"{c.arm} vs {c.reference}" for c in comparisons])
        ax.set_ylim(rows - 0.5, -0.5)
        ax.set_xlabel("hazard ratio of escaping (> 1: sooner)")
        side.axis("off")
        fig.suptitle(title)
    return fig


def _end(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.2g}"
