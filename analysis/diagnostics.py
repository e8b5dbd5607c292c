"""Attention diagnostics of pre-training runs: their values at step 0 (before any training) per
arm, and their course over steps.

Runs log `diag/layer{i}/{name}` (`symattn.model.diagnostics.attention_stats`) on the first validation
batch at step 0 and at every evaluation: `entropy` of a query's attention over the keys,
`self_mass` (the attention a token puts on its own position) and `logit_sd` (the spread of a
query's scaled logits over the keys). Tables and figures use their mean over layers; the initial
table has each layer too. Runs made before step-0 diagnostics were logged have none at step 0 and
are left out of the initial table, with a note.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis import figures, tables
from symattn import keys

QUANTITIES = ("self_mass", "entropy", "logit_sd")
LABELS = {
    "self_mass": "self mass (attention on its own position)",
    "entropy": "attention entropy (nats)",
    "logit_sd": "logit spread over keys (sd)",
}
# What `mlflow_runs.load_runs` reads for them (glob patterns).
METRICS = tuple(f"{keys.DIAG_PREFIX}layer*/{q}" for q in QUANTITIES)
_METRIC = re.compile(rf"^{re.escape(keys.DIAG_PREFIX)}layer(\d+)/({'|'.join(QUANTITIES)})$")
MEAN = "mean"  # the `layer` of a mean over layers


def layer_values(curves: pd.DataFrame) -> pd.DataFrame:
    """The diagnostics rows of a curves frame: `run_id, quantity, layer, step, value`."""
    parts = curves["metric"].astype(str).str.extract(_METRIC)
    found = parts[0].notna()
    out = curves.loc[found, ["run_id", "step", "value"]].assign(
        quantity=parts.loc[found, 1], layer=parts.loc[found, 0].astype(int)
    )
    return out[["run_id", "quantity", "layer", "step", "value"]].reset_index(drop=True)


def layer_means(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run, quantity and step, the mean over the run's layers (`run_id, quantity, step,
    value`), only at steps where every one of its layers has a value."""
    return _mean_over_layers(layer_values(curves))


def _mean_over_layers(values: pd.DataFrame) -> pd.DataFrame:
    if values.empty:
        return pd.DataFrame(columns=["run_id", "quantity", "step", "value"])
    layers = values.groupby(["run_id", "quantity"])["layer"].transform("nunique")
    grouped = values.assign(_layers=layers).groupby(["run_id", "quantity", "step"], sort=False)
    means = grouped.agg(value=("value", "mean"), n=("layer", "nunique"), layers=("_layers", "first"))
    means = means[means["n"] == means["layers"]].reset_index()
    return means[["run_id", "quantity", "step", "value"]]


def initial_table(curves: pd.DataFrame, runs: pd.DataFrame, by=("size", "setting", "variant")) -> tuple:
    """The step-0 diagnostics per arm (`by`): one row for the mean over layers (`layer` "mean")
    and one per layer, each with n runs and, per quantity, the mean and std (ddof=1) over runs.
    Returns (table, the ids of `runs` without step-0 diagnostics, left out)."""
    by = [c for c in by if c in runs]
    values = layer_values(curves)
    values = values[(values["step"] == 0) & values["run_id"].isin(runs["run_id"])]
    means = _mean_over_layers(values)
    missing = [r for r in runs["run_id"] if r not in set(values["run_id"])]
    if values.empty:
        return pd.DataFrame(columns=[*by, "layer", "n"]), missing
    per_run = pd.concat(
        [means.assign(layer=MEAN), values.assign(layer=values["layer"].astype(str))], ignore_index=True
    )
    wide = per_run.pivot_table(index=["run_id", "layer"], columns="quantity", values="value").reset_index()
    wide = wide.merge(runs[["run_id", *by]], on="run_id")
    present = [q for q in QUANTITIES if q in wide]
    rows = []
    for key, part in wide.groupby([*by, "layer"], sort=False, dropna=False):
        row = dict(zip([*by, "layer"], key))
        row["n"] = len(part)
        for q in present:
            row[q] = part[q].mean()
            row[f"{q}_std"] = part[q].std(ddof=1) if part[q].count() > 1 else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    layer_rank = table["layer"].map(lambda layer: -1 if layer == MEAN else int(layer))
    table = table.assign(_layer=layer_rank).sort_values("_layer", kind="stable")
    table = tables._sorted(table, keys=[k for k in by if k != "variant"])
    return table.drop(columns="_layer"), missing


def _sig(mean, std, n) -> str:
    """`0.524 ± 0.012 (n=6)`: three significant digits, whatever the quantity's scale."""
    if pd.isna(mean):
        return ""
    spread = "" if pd.isna(std) else f" \u00b1 {std:.2g}"
    return f"{mean:#.3g}{spread} (n={n})"


def initial_formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The initial table as `mean ± std (n=runs)` per quantity; layer "mean" is over layers."""
    keep = [c for c in ("size", "setting", "variant") if c in table and (c != "setting" or table[c].any())]
    out = table[keep].copy()
    out["layer"] = table["layer"].map(lambda layer: "mean of layers" if layer == MEAN else f"layer {layer}")
    for q in QUANTITIES:
        if q in table:
            out[LABELS[q]] = [_sig(m, s, n) for m, s, n in zip(table[q], table[f"{q}_std"], table["n"])]
    return out


def diagnostics_plot(
    curves: pd.DataFrame,
    runs: pd.DataFrame,
    title: str | None = None,
    colors: dict | None = None,
) -> Figure:
    """One panel per quantity (self mass, entropy, logit spread; mean over layers) against step:
    per arm, the mean over its runs where all of them have values, and each run thin.
    Colours and line styles are the loss figure's (`figures.variant_colors`)."""
    means = layer_means(curves).merge(runs[["run_id", "variant"]], on="run_id")
    variants = figures.order_variants(means["variant"])
    colors = colors or figures.variant_colors(variants)
    styles = figures.variant_linestyles(colors)
    present = [q for q in QUANTITIES if q in set(means["quantity"])]
    with figures.style():
        fig = Figure(figsize=(4.0 * len(present), 3.6), layout="constrained")
        axes = fig.subplots(1, max(len(present), 1), squeeze=False)[0]
        for ax, quantity in zip(axes, present):
            part = means[means["quantity"] == quantity]
            for variant in variants:
                wide = part[part["variant"] == variant].pivot_table(
                    index="step", columns="run_id", values="value"
                )
                if wide.empty:
                    continue
                color, ls = colors[variant], styles[variant]
                for run in wide:
                    one = wide[run].dropna()
                    ax.plot(one.index, one.to_numpy(), color=color, ls=ls, lw=0.6, alpha=0.35)
                # Over the steps every run has (an older run starts without step 0; runs end early).
                first = wide.apply(pd.Series.first_valid_index).max()
                last = wide.apply(pd.Series.last_valid_index).min()
                mean = wide.loc[first:last].interpolate(limit_area="inside").mean(axis=1)
                n = wide.shape[1]
                label = f"{variant} (1 run)" if n == 1 else f"{variant}: mean of {n} runs"
                ax.plot(mean.index, mean.to_numpy(), color=color, ls=ls, lw=1.8, label=label)
            ax.xaxis.set_major_formatter(FuncFormatter(figures.kilo))
            ax.set_xlabel("Steps")
            ax.set_title(LABELS[quantity], fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        if any(" runs" in label for label in labels):
            handles.append(axes[0].plot([], [], color="0.4", lw=0.6, alpha=0.6)[0])
            labels.append("thin: each run")
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3))
        if title:
            fig.suptitle(title + "\nattention diagnostics (mean over layers) on the first validation batch")
    return fig
