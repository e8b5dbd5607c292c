"""Loss curves by step: one line per variant (the mean over its runs) with a band over runs, the
floors its escape is measured from, on a linear, log or broken step axis (the paper's)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.figures import STYLE, kilo, order_variants, style, variant_colors, variant_linestyles
from symattn import keys
from symattn.convergence import TARGETS_FLOOR


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
