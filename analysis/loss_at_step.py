"""Validation loss at one step every run reached, paired within matched groups.

When few runs leave the plateau within the budget, escape steps are mostly censored and their
paired tests have little to decide. The loss itself is observed for every run at every
evaluation, so at the last evaluated step that every run of a comparison reached (a run stopped
early ends before the budget), each arm's loss is compared with the baseline's pair by pair:
the mean difference with its interval, the sign test and the Wilcoxon signed-rank test, each
with its n (`analysis.stats`). The table prints losses to 3 decimals, so a pair closer than
`TIE_TOLERANCE` (which prints as +0.000) is a tie, neither lower nor higher: both tests drop it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import figures, stats

METRIC = "val/loss"
TIE_TOLERANCE = 0.0005  # nats: half the last printed digit
NOTE = (
    f"A pair whose losses differ by less than \u00b1{TIE_TOLERANCE} nats (printed as +0.000) is tied: "
    "neither lower nor higher. The sign and Wilcoxon tests drop the ties; their n is the pairs they "
    "used. The mean difference and its interval are over every pair."
)


def common_step(curves: pd.DataFrame, run_ids) -> float:
    """The last step at which every run in `run_ids` has a validation loss (NaN if none)."""
    val = curves[(curves["metric"] == METRIC) & curves["run_id"].isin(list(run_ids))]
    if val.empty:
        return math.nan
    steps = val.groupby("run_id")["step"].apply(set)
    if len(steps) < len(set(run_ids)):
        return math.nan
    shared = set.intersection(*steps)
    return float(max(shared)) if shared else math.nan


def loss_table(curves: pd.DataFrame, runs: pd.DataFrame, baseline: str = "vanilla") -> pd.DataFrame:
    """Per size (and setting, in a grid) and arm: the loss at their common step (mean, std, n)
    and, against `baseline` in matched groups (column `group`), the paired difference (arm -
    baseline) and its tests, as `stats.paired_vs_baseline` makes them of exact values."""
    by = ["size", "setting"] if "setting" in runs and runs["setting"].nunique() > 1 else ["size"]
    observed = []
    for _, part in runs.groupby(by, sort=False):
        step = common_step(curves, part["run_id"])
        if math.isnan(step):
            continue
        at = curves[(curves["metric"] == METRIC) & (curves["step"] == step)].drop_duplicates("run_id")
        loss = part["run_id"].map(at.set_index("run_id")["value"])
        observed.append(part[[*by, "variant", "group"]].assign(step=int(step), loss=loss.to_numpy()))
    if not observed:
        return pd.DataFrame(columns=[*by, "variant", "step", "n", "loss_mean", "loss_std"])
    data = pd.concat(observed, ignore_index=True)
    keys_ = [*by, "step", "variant"]
    summary = data.groupby(keys_, sort=False)["loss"].agg(n="count", loss_mean="mean", loss_std="std")
    paired = stats.paired_vs_baseline(
        data, baseline, value="loss", by=(*by, "step"), tie_tolerance=TIE_TOLERANCE
    )
    table = summary.reset_index()
    if len(paired):
        # For losses, "faster" (smaller) is lower.
        paired = paired.drop(columns="baseline").rename(
            columns={"n_faster": "n_lower", "n_slower": "n_higher"}
        )
        table = table.merge(paired, on=keys_, how="left")
    order = {v: i for i, v in enumerate(figures.order_variants(table["variant"].unique()))}
    return table.sort_values(
        [*by, "variant"], key=lambda c: c.map(order) if c.name == "variant" else c, kind="stable"
    ).reset_index(drop=True)


def formatted(table: pd.DataFrame, baseline: str = "vanilla") -> pd.DataFrame:
    """The table as the report shows it: every interval and p-value with its method and n."""
    others = table["variant"] != baseline
    lower, higher, ties = table.get("n_lower"), table.get("n_higher"), table.get("n_ties")

    def diff_text(r) -> str:
        if r["variant"] == baseline or not r.get("n_both_exact", 0) > 0:
            return ""
        n = int(r["n_both_exact"])
        interval = stats.interval_text(
            r["diff_ci_low"], r["diff_ci_high"], r["ratio_ci_method"], n, "{:+.3f}"
        )
        return f"{r['diff_mean']:+.3f} {interval}"

    keep = [c for c in ("size", "setting") if c in table]
    out = table[keep].copy()
    out["variant"] = table["variant"]
    out["step"] = table["step"].map("{:,}".format)
    out["val/loss, mean ± std (n)"] = [
        f"{m:.3f}" + ("" if np.isnan(s) else f" ± {s:.3f}") + f" (n={n})"
        for m, s, n in zip(table["loss_mean"], table["loss_std"], table["n"])
    ]
    if lower is None:  # no arm had a matched baseline run
        return out
    out[f"paired difference vs {baseline}, 95% interval"] = table.apply(diff_text, axis=1)
    out["lower/higher/tied"] = [
        f"{int(lo)}/{int(hi)}/{int(t)}" if o else "" for o, lo, hi, t in zip(others, lower, higher, ties)
    ]
    out["sign test p"] = [
        stats.p_text(p, int(n)) if o else "" for o, p, n in zip(others, table["sign_p"], table["sign_n"])
    ]
    out["wilcoxon p"] = [
        stats.p_text(p, int(n)) if o else ""
        for o, p, n in zip(others, table["wilcoxon_p"], table["wilcoxon_n"])
    ]
    return out
