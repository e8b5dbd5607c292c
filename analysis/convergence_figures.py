"""Steps to convergence drawn per arm: every run's step (or what is known of it) with the mean of
the exact ones (`convergence_plot`), and the paired ratios against the baseline as a forest plot
(`forest_plot`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis.convergence import describe_definition
from analysis.figures import kilo, order_variants, style, variant_colors

# How each kind of inexact observation is drawn (see `convergence` statuses).
_INEXACT_MARKS = {
    "not reached": (">", "not reached (drawn at its last evaluation)", "bound"),
    "at or before": ("<", "at or before its first evaluation (drawn there)", "step"),
    "provisional": ("s", "provisional: crossed in the last evaluations", "step"),
}


def convergence_plot(
    table: pd.DataFrame,
    summary: pd.DataFrame | None = None,
    definitions=None,
    title: str | None = None,
    colors: dict | None = None,
) -> Figure:
    """Steps to convergence per variant, one panel per definition: a dot per run with an exact
    step; open markers for runs known only by an interval (not reached: `>` at the last
    evaluation; at or before the first evaluation: `<`; provisional: a square); and, where
    `summary` has one, the mean of the exact runs with its interval (method and n in the legend)."""
    definitions = list(definitions or dict.fromkeys(table["definition"]))
    variants = order_variants(table["variant"])
    colors = colors or variant_colors(variants)
    status = (
        table["status"]
        if "status" in table
        else table["censored"].map({True: "not reached", False: "reached"})
    )
    table = table.assign(_status=status)
    ncols = min(len(definitions), 3)
    nrows = -(-len(definitions) // ncols)
    drawn_marks, drawn_intervals = set(), set()
    with style():
        fig = Figure(figsize=(3.6 * ncols, 0.5 * len(variants) * nrows + 1.6 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
        rng = np.random.default_rng(0)  # fixed jitter: the same figure each time
        for ax, definition in zip(axes, definitions):
            part = table[table["definition"] == definition]
            for y, variant in enumerate(variants):
                runs = part[part["variant"] == variant]
                jitter = rng.uniform(-0.12, 0.12, len(runs))
                exact = (runs["_status"] == "reached").to_numpy()
                ax.scatter(
                    runs["step"][exact], y + jitter[exact], s=18, color=colors[variant], alpha=0.8, zorder=3
                )
                drawn_marks.update(["reached"] if exact.any() else [])
                for kind, (marker, _, column) in _INEXACT_MARKS.items():
                    these = (runs["_status"] == kind).to_numpy()
                    if these.any():
                        ax.scatter(
                            runs[column][these],
                            y + jitter[these],
                            s=30,
                            marker=marker,
                            facecolors="none",
                            edgecolors=colors[variant],
                            zorder=3,
                        )
                        drawn_marks.add(kind)
                if summary is not None:
                    row = summary[(summary["definition"] == definition) & (summary["variant"] == variant)]
                    # A mean of one run would only repeat its dot.
                    if len(row) and row["n_exact"].iloc[0] > 1:
                        m, lo, hi, method = row[["mean", "ci_low", "ci_high", "ci_method"]].iloc[0]
                        drawn = not np.isnan(lo)
                        ax.errorbar(
                            m,
                            y - 0.3,
                            xerr=[[m - lo], [hi - m]] if drawn else None,
                            fmt="D",
                            color="k",
                            ms=4,
                            capsize=3,
                            lw=1,
                            zorder=4,
                        )
                        drawn_intervals.add(method if drawn else "")
            ax.set_title(describe_definition(definition))
            ax.xaxis.set_major_formatter(FuncFormatter(kilo))
            ax.xaxis.set_major_locator(MaxNLocator(5))
            # From zero, so that ratios of steps read as ratios of lengths; room on the right for
            # markers at the last evaluation.
            ax.set_xlim(0, max(ax.dataLim.x1, 1) * 1.06)
            ax.set_yticks(range(len(variants)), variants)
            ax.set_xlabel("Steps")
        axes[0].set_ylim(len(variants) - 0.4, -0.6)  # first variant on top
        for ax in axes[len(definitions) :]:
            ax.set_visible(False)
        keys = []
        if "reached" in drawn_marks:
            keys.append(Line2D([], [], ls="none", marker="o", color="0.4", label="run (exact step)"))
        for kind, (marker, label, _) in _INEXACT_MARKS.items():
            if kind in drawn_marks:
                keys.append(Line2D([], [], ls="none", marker=marker, mfc="none", color="0.4", label=label))
        methods = sorted(m for m in drawn_intervals if m)
        if methods:
            names = {"t": "t-interval (n < 10)", "bootstrap": "percentile bootstrap (n \u2265 10)"}
            keys.append(
                Line2D(
                    [],
                    [],
                    ls="-",
                    marker="D",
                    color="k",
                    ms=4,
                    label="mean of exact runs, 95% " + " or ".join(names[m] for m in methods),
                )
            )
        if "" in drawn_intervals:
            keys.append(Line2D([], [], ls="none", marker="D", color="k", ms=4, label="mean of exact runs"))
        fig.legend(handles=keys, loc="outside lower center", ncols=min(len(keys), 2))
        if title:
            fig.suptitle(title)
    return fig


FOREST_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 5, 10, 20)


def forest_plot(rows: pd.DataFrame, title: str | None = None, colors: dict | None = None) -> Figure:
    """Paired ratios of steps against the baseline (`tables.forest_rows`), one panel per
    definition, one row per arm: the geometric-mean ratio over matched pairs where both steps are
    exact, with its interval (an open dot where one pair gives no interval), on a log axis with a
    line at 1; beside each row, its label: the ratio, its interval with method and n, the pairs,
    faster/slower/undecided and the sign test, or why there is no ratio."""
    definitions = list(dict.fromkeys(rows["definition"]))
    variants = order_variants(rows["variant"])
    colors = colors or variant_colors(variants)
    baseline = rows["baseline"].iloc[0] if len(rows) else "vanilla"
    drawn = rows[rows["ratio"].notna()]
    ends = pd.concat([drawn["ratio"], drawn["ci_low"], drawn["ci_high"]]).dropna()
    ends = ends[ends > 0]
    low, high = (min(ends.min(), 1.0), max(ends.max(), 1.0)) if len(ends) else (1.0, 1.0)
    pad = max(np.log(high / low) * 0.08, np.log(1.3))
    xlim = (low * np.exp(-pad), high * np.exp(pad))
    ticks = [t for t in FOREST_TICKS if xlim[0] <= t <= xlim[1]]
    while len(ticks) > 7:  # thin out, keeping 1
        ticks = [t for i, t in enumerate(ticks) if t == 1 or i % 2 == ticks.index(1) % 2]
    panel_heights = [0.5 * max(1, (rows["definition"] == d).sum()) + 0.6 for d in definitions]
    with style():
        fig = Figure(figsize=(10.5, sum(panel_heights) + 1.4), layout="constrained")
        grid = fig.subplots(
            len(definitions),
            2,
            squeeze=False,
            sharey="row",
            gridspec_kw={"width_ratios": (1, 1.45), "height_ratios": panel_heights},
        )
        for (ax, side), definition in zip(grid, definitions):
            part = rows[rows["definition"] == definition].set_index("variant")
            labels = [v for v in variants if v in part.index]
            for y, variant in enumerate(labels):
                r = part.loc[variant]
                color = colors.get(variant, "0.4")
                if pd.notna(r["ratio"]):
                    has_interval = pd.notna(r["ci_low"])
                    ax.errorbar(
                        r["ratio"],
                        y,
                        xerr=[[r["ratio"] - r["ci_low"]], [r["ci_high"] - r["ratio"]]]
                        if has_interval
                        else None,
                        fmt="o",
                        color=color,
                        mfc=color if has_interval else "white",
                        ms=6,
                        capsize=3,
                        lw=1.4,
                        zorder=3,
                    )
                else:
                    ax.text(
                        1.0,
                        y,
                        "no ratio",
                        ha="center",
                        va="center",
                        color="0.4",
                        fontsize=8,
                        style="italic",
                        bbox=dict(fc="white", ec="none", pad=1),
                        zorder=3,
                    )
                side.text(0, y, r["text"], va="center", fontsize=8, color="0.4" if r["why"] else "0.1")
            ax.axvline(1.0, color="0.3", ls="--", lw=1.0, zorder=1)
            ax.set_xscale("log")
            ax.set_xlim(*xlim)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.set_xticks([], minor=True)
            ax.set_yticks(range(len(labels)), labels)
            ax.set_ylim(len(labels) - 0.5, -0.5)  # first arm on top
            ax.set_title(describe_definition(definition), loc="left")
            ax.grid(axis="y", visible=False)
            side.set_xlim(0, 1)
            side.axis("off")
        grid[-1, 0].set_xlabel(
            f"steps, arm / {baseline} (log scale; < 1: faster)\ngeometric mean over matched pairs\n"
            "where both steps are exact, 95% interval"
        )
        if title:
            fig.suptitle(title)
    return fig
