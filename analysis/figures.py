"""Figures in one style, drawn from the tidy frames; saved as PNG and PDF.

Figures are `matplotlib.figure.Figure` objects built without pyplot: no global figure state, any
backend (Agg in scripts, inline in notebooks).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis.convergence import TARGETS_FLOOR, describe_definition
from analysis.glue import variant_curves
from symattn import keys
from symattn.variants import VARIANTS

STYLE = {
    "figure.figsize": (6.4, 4.2),
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "pdf.fonttype": 42,  # embed TrueType: text stays text in the PDF
}
# The paper's variants keep the paper's colours; other variants take the rest, in order.
COLORS = {"pairwise": "#3b75af", "symmetric": "#519e3e", "vanilla": "#ef8636"}
OTHER_COLORS = [
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
    "#2f4858",
    "#b07aa1",
    "#4e9f9f",
]
VARIANT_ORDER = list(VARIANTS)  # the registry's order: vanilla, symmetric, pairwise, ...
# A label derived from a variant (`vanilla-qk32`, `pairwise-scaled`: a control or an option of it)
# takes its variant's hue, lighter or darker, and a dashed line; its k-th such label (by name) the
# k-th of these, so that every label of a report has its own colour and line.
DERIVED_SHADES = (("white", 0.45), ("black", 0.35), ("white", 0.7), ("black", 0.55))
DERIVED_LINESTYLES = ("--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))


def base_variant(label: str) -> str:
    """The variant a label derives from (`vanilla-qk32` -> `vanilla`); the label itself when it is
    not one of a registered variant."""
    head = str(label).split("-", 1)[0]
    return head if head in VARIANTS else str(label)


def order_variants(variants) -> list[str]:
    """The paper's variants first (vanilla, symmetric, pairwise), then the registry's others, each
    followed by the labels derived from it (by name); then any other label, by name."""
    unique = list(dict.fromkeys(v for v in variants if isinstance(v, str)))
    bases = [v for v in VARIANT_ORDER if any(base_variant(u) == v for u in unique)]
    ordered = []
    for base in bases:
        ordered += [base] if base in unique else []
        ordered += sorted(u for u in unique if u != base and base_variant(u) == base)
    return ordered + sorted(u for u in unique if u not in ordered)


def _derived_rank(variants) -> dict[str, int]:
    """Each derived label's place among the labels derived from its variant (0, 1, ...)."""
    rank, seen = {}, {}
    for v in order_variants(variants):
        base = base_variant(v)
        if base != v:
            rank[v] = seen.get(base, 0)
            seen[base] = rank[v] + 1
    return rank


def _shade(color: str, toward: str, amount: float) -> str:
    rgb = np.array(matplotlib.colors.to_rgb(color))
    target = np.ones(3) if toward == "white" else np.zeros(3)
    return matplotlib.colors.to_hex(rgb + (target - rgb) * amount)


def variant_colors(variants) -> dict[str, str]:
    """A colour per label: the paper's variants the paper's colours, other variants the next of
    `OTHER_COLORS`, and a label derived from a variant a shade of its variant's (`DERIVED_SHADES`)."""
    ordered = order_variants(variants)
    rank = _derived_rank(ordered)
    others = iter(OTHER_COLORS * 4)
    base_colors = {}
    for v in ordered:
        base = base_variant(v)
        if base not in base_colors:
            base_colors[base] = COLORS.get(base) or next(others)
    return {
        v: _shade(base_colors[base_variant(v)], *DERIVED_SHADES[rank[v] % len(DERIVED_SHADES)])
        if v in rank
        else base_colors[v]
        for v in ordered
    }


def variant_linestyles(variants) -> dict:
    """Solid for a variant, dashed (`DERIVED_LINESTYLES`) for a label derived from one."""
    rank = _derived_rank(variants)
    return {
        v: DERIVED_LINESTYLES[rank[v] % len(DERIVED_LINESTYLES)] if v in rank else "-"
        for v in order_variants(variants)
    }


def kilo(x, _pos=None) -> str:
    """Step ticks as the paper writes them: 25K, 200K."""
    return f"{x / 1000:g}K" if abs(x) >= 1000 else f"{x:g}"


@contextmanager
def style():
    with matplotlib.rc_context(STYLE):
        yield


def save(fig: Figure, out_dir, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with style():
        for path in paths:
            fig.savefig(path, bbox_inches="tight")
    return paths


def _legend_beside(fig: Figure, legend) -> None:
    """Widen the figure by `legend`'s width, so that the axes keep their size and the legend stays
    inside the figure: any renderer shows it (a notebook's inline image too), not only a tight save."""
    width = fig.get_figwidth()
    fig.draw_without_rendering()
    extra = legend.get_window_extent().width / fig.dpi + 0.15
    fig.set_figwidth(width + extra)
    if fig.get_layout_engine() is None:  # broken axes: placed by hand, kept where they were
        fig.subplots_adjust(
            left=fig.subplotpars.left * width / (width + extra),
            right=fig.subplotpars.right * width / (width + extra),
        )


def _broken_axes(fig: Figure, segments) -> list:
    """Side-by-side axes sharing y, one per x segment, with diagonal break marks between them."""
    widths = [hi - lo for lo, hi in segments]
    axes = fig.subplots(
        1, len(segments), sharey=True, width_ratios=widths, gridspec_kw={"wspace": 0.06}, squeeze=False
    )[0]
    marks = dict(
        marker=[(-1, -1.5), (1, 1.5)],
        markersize=10,
        linestyle="none",
        color="k",
        mec="k",
        mew=1,
        clip_on=False,
    )
    for i, (ax, (lo, hi)) in enumerate(zip(axes, segments)):
        ax.set_xlim(lo, hi)
        if i > 0:
            ax.spines.left.set_visible(False)
            ax.tick_params(left=False)
            ax.plot([0, 0], [0, 1], transform=ax.transAxes, **marks)
        if i < len(segments) - 1:
            ax.spines.right.set_visible(False)
            ax.plot([1, 1], [0, 1], transform=ax.transAxes, **marks)
    return list(axes)


def loss_curves(
    curves: pd.DataFrame,
    runs: pd.DataFrame,
    metric: str = keys.VAL_LOSS,
    size: str | None = None,
    log_steps: bool = False,
    segments=None,
    band: str = "minmax",
    ylim=None,
    title: str | None = None,
    ylabel: str = "Evaluation loss",
    colors: dict | None = None,
    floors=(),
    margin: float | None = None,
    expected_floors=(),
    floor_label: str = TARGETS_FLOOR,
) -> Figure:
    """One line per variant (mean over its seeds) with a band over seeds (`minmax` or `std`).
    `segments` [(lo, hi), ...] breaks the step axis, as in the paper's figures; `log_steps` puts
    steps on a log scale (the plateau and its escape are spread over orders of magnitude).
    `floors`: the context-free floor the runs' escape is measured from (the loss of a model that
    ignores context on their validation targets; one line each), with the escape level floor -
    `margin` when given (`floor_label` names the floor where it is not that); `expected_floors`:
    the data's L* (its expectation over masks), drawn lighter. The legend, beside the plot, says
    what each line and band is; a variant's mean stops where its shortest run stops."""
    meta = runs[["run_id", "variant", "size"]]
    if size is not None:
        meta = meta[meta["size"] == size]
    data = curves[curves["metric"] == metric].merge(meta, on="run_id")
    colors = colors or variant_colors(data["variant"])
    styles = variant_linestyles(colors)
    bands = {"minmax": "min\u2013max", "std": "\u00b11 std"}
    with style():
        fig = Figure(figsize=STYLE["figure.figsize"], layout=None if segments else "constrained")
        axes = _broken_axes(fig, segments) if segments else [fig.subplots()]
        ran_on = False
        for variant in order_variants(data["variant"]):
            wide = data[data["variant"] == variant].pivot_table(
                index="step", columns="run_id", values="value"
            )
            # A mean over fewer runs than the variant has (one stopped early, or was killed) jumps
            # where a run ends: the mean and band stop at the last step every run reached, and the
            # runs that went on are drawn on their own, thin.
            last_common = wide.apply(pd.Series.last_valid_index).min()
            common = wide.loc[:last_common].interpolate(limit_area="inside")
            mean = common.mean(axis=1)
            n = wide.shape[1]
            label = f"{variant} (1 run)" if n == 1 else f"{variant}: mean of {n} runs, band {bands[band]}"
            beyond = wide.loc[last_common:].dropna(axis=1, thresh=2)
            ran_on = ran_on or (n > 1 and beyond.shape[1] > 0)
            for ax in axes:
                ax.plot(mean.index, mean.to_numpy(), color=colors[variant], ls=styles[variant], label=label)
                if n > 1:
                    low, high = (
                        (common.min(axis=1), common.max(axis=1))
                        if band == "minmax"
                        else (mean - common.std(axis=1), mean + common.std(axis=1))
                    )
                    ax.fill_between(
                        mean.index,
                        low.to_numpy(),
                        high.to_numpy(),
                        color=colors[variant],
                        alpha=0.2,
                        linewidth=0,
                    )
                    for run in beyond:
                        run_curve = beyond[run].dropna()
                        ax.plot(
                            run_curve.index,
                            run_curve.to_numpy(),
                            color=colors[variant],
                            ls=styles[variant],
                            lw=0.8,
                            alpha=0.7,
                        )
        if ran_on:
            axes[-1].plot([], [], color="0.4", lw=0.8, label="thin: a run past its variant's shortest")
        for floor in sorted(set(expected_floors)):
            for ax in axes:
                ax.axhline(
                    floor,
                    color="0.6",
                    ls="-.",
                    lw=0.9,
                    label=f"L* of the data = {floor:.2f}" if ax is axes[-1] else None,
                )
        floors = sorted(set(floors))
        for i, floor in enumerate(floors):
            for ax in axes:
                labelled = ax is axes[-1] and i == 0
                ax.axhline(
                    floor,
                    color="0.25",
                    ls="--",
                    lw=1.0,
                    label=(f"{floor_label} = " + ", ".join(f"{f:.2f}" for f in floors) if labelled else None),
                )
                if margin:
                    ax.axhline(
                        floor - margin,
                        color="0.25",
                        ls=":",
                        lw=1.0,
                        label=f"escape level: {margin:g} below it" if labelled else None,
                    )
        for ax in axes:
            if log_steps:
                ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(kilo))
            if ylim is not None:
                ax.set_ylim(*ylim)
        if segments:
            fig.supxlabel("Steps")
        else:
            axes[0].set_xlabel("Steps")
        axes[0].set_ylabel(ylabel)
        # Beside the plot: inside, a legend this long hides the plateau or the escape.
        _legend_beside(fig, axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0))
        if title:
            fig.suptitle(title)
    return fig


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
