"""Fine-tuning scores (GLUE, or the offline proxy score) over pre-training checkpoints, per
variant, with the convergence threshold and each run's first crossing of it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.figures import kilo, order_variants, style, variant_colors, variant_linestyles
from analysis.glue import variant_curves


def _curve_label(variant: str, curve: pd.DataFrame, per_seed: bool) -> str:
    """What a variant's line and band are, with n: `pairwise: mean ± std over 2 runs × 3
    fine-tuning seeds (n=6)`."""

    def span(column) -> str:
        low, high = int(curve[column].min()), int(curve[column].max())
        return f"{low}" if low == high else f"{low}\u2013{high}"

    runs = int(curve["n_runs"].max())
    run_text = f"{runs} pre-training run" + ("s" if runs > 1 else "")
    if not per_seed:
        what = f"{run_text} (each the mean of its fine-tuning seeds)"
    else:
        seeds = span("n_seeds")
        what = f"{run_text} \u00d7 {seeds} fine-tuning seed" + ("" if seeds == "1" else "s")
    if curve["n"].max() == 1:
        return f"{variant} ({what})"
    return f"{variant}: mean \u00b1 std over {what}, n={span('n')}"


def glue_over_checkpoints(
    scores: pd.DataFrame,
    crossings: pd.DataFrame | None = None,
    title: str | None = None,
    reference: str = "pairwise",
    fraction: float = 0.95,
    colors: dict | None = None,
    seed_scores: pd.DataFrame | None = None,
    ylabel: str = "GLUE score",
) -> Figure:
    """A score over pre-training checkpoints, as in the paper's figure, per variant: the mean with
    a \u00b11 std band over pre-training runs \u00d7 fine-tuning seeds (`seed_scores`, rows of
    `glue.task_scores`; else over the runs of `scores`, one row per run and checkpoint), a marker
    at each real checkpoint; the convergence threshold (`fraction` of the reference variant's final
    score); each run's first crossing (a dot on the threshold, its step written when its variant
    has one run) and, for a run that never crosses, an open `>` at its last checkpoint. The
    legend, below the plot, gives every n."""
    per_seed = seed_scores is not None
    curves = variant_curves(seed_scores if per_seed else scores, by=("variant",))
    variants = order_variants(curves["variant"])
    colors = colors or variant_colors(variants)
    styles = variant_linestyles(colors)
    with style():
        fig = Figure(figsize=(6.4, 5.2), layout="constrained")
        ax = fig.subplots()
        for variant in variants:
            curve = curves[curves["variant"] == variant]
            steps, mean, std = (curve[c].to_numpy(dtype=float) for c in ("checkpoint_step", "mean", "std"))
            label = _curve_label(variant, curve, per_seed)
            ax.plot(steps, mean, color=colors[variant], ls=styles[variant], marker="o", ms=4, label=label)
            if (curve["n"] > 1).any():
                ax.fill_between(steps, mean - std, mean + std, color=colors[variant], alpha=0.2, linewidth=0)
        low = np.nanmin(np.concatenate([curves["mean"] - curves["std"].fillna(0), curves["mean"]]))
        ymin = low - 1
        if crossings is not None and len(crossings):
            _threshold_marks(ax, crossings, reference, fraction, colors, ymin)
            ax.set_ylim(bottom=ymin)
        ax.xaxis.set_major_formatter(FuncFormatter(kilo))
        ax.set_xlabel("Pre-training steps (checkpoint)")
        ax.set_ylabel(ylabel)
        fig.legend(loc="outside lower center", ncols=1)
        if title:
            ax.set_title(title)
    return fig


def _threshold_marks(
    ax, crossings: pd.DataFrame, reference: str, fraction: float, colors: dict, ymin
) -> None:
    """Threshold lines, each run's first crossing (or an open `>` at its last checkpoint), and
    legend keys in grey: a mark's colour is its variant's."""
    thresholds = sorted(set(crossings["threshold"]))
    values = ", ".join(f"{t:.2f}" for t in thresholds) if len(thresholds) <= 3 else _value_range(thresholds)
    # One threshold per matched group; the legend names the rule once.
    group = "" if len(thresholds) == 1 else " in each matched group"
    for i, threshold in enumerate(thresholds):
        label = f"threshold: {fraction:.0%} of {reference}'s final score{group} ({values})"
        ax.axhline(threshold, color="#d62728", ls="--", lw=1.1, label=None if i else label)
    runs_of = crossings.groupby("variant")["pretrain_run_id"].nunique()
    exact = crossings[crossings["status"] == "reached"]
    for row in exact.itertuples():
        color = colors.get(row.variant, "0.4")
        ax.plot([row.step], [row.threshold], "o", color=color, mec="k", mew=0.6, zorder=4)
        ax.plot([row.step, row.step], [ymin, row.threshold], ":", color=color)
        if runs_of[row.variant] == 1:  # several runs' step labels would overlap
            ax.annotate(
                kilo(round(row.step, -2)),
                (row.step, ymin),
                xytext=(3, 3),
                textcoords="offset points",
                color=color,
                fontsize=8,
            )
    never = crossings[crossings["status"] == "not reached"]
    for row in never.itertuples():
        color = colors.get(row.variant, "0.4")
        ax.plot([row.bound], [row.threshold], ">", ms=7, mfc="none", color=color, zorder=4)
    if len(exact):
        label = "a run's first crossing, interpolated between checkpoints"
        ax.plot([], [], "o", color="0.6", mec="k", mew=0.6, label=label)
    if len(never):
        ax.plot(
            [],
            [],
            ">",
            ms=7,
            mfc="none",
            color="0.4",
            label="a run below the threshold at its last checkpoint",
        )


def _value_range(values) -> str:
    return f"{min(values):.2f}\u2013{max(values):.2f}"
