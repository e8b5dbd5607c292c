"""Validation loss at one step every run reached, paired within matched groups.

When few runs leave the plateau within the budget, escape steps are mostly censored and their
paired tests have little to decide. The loss itself is observed for every run at every
evaluation, so at the last evaluated step that every run of a comparison reached (a run stopped
early ends before the budget), each arm's loss is compared with the baseline's pair by pair:
the mean difference with its interval, the sign test and the Wilcoxon signed-rank test, each
with its n (`analysis.stats`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import figures, stats

METRIC = "val/loss"
COLUMNS = [
    "size",
    "variant",
    "step",
    "n",
    "loss_mean",
    "loss_std",
    "n_pairs",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "diff_ci_method",
    "n_lower",
    "n_higher",
    "sign_p",
    "wilcoxon_p",
]


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
    """Per size and arm: the loss at the size's common step (mean, std, n) and, against `baseline`
    in matched groups (column `group`), the paired difference (arm - baseline) and its tests."""
    rows = []
    by = ["size", "setting"] if "setting" in runs and runs["setting"].nunique() > 1 else ["size"]
    for key, part in runs.groupby(by, sort=False):
        size = key[0] if isinstance(key, tuple) else key
        step = common_step(curves, part["run_id"])
        if math.isnan(step):
            continue
        at = curves[(curves["metric"] == METRIC) & (curves["step"] == step)]
        loss = part.assign(loss=part["run_id"].map(at.drop_duplicates("run_id").set_index("run_id")["value"]))
        base = loss[loss["variant"] == baseline].drop_duplicates("group").set_index("group")["loss"]
        for variant in figures.order_variants(loss["variant"].unique()):
            arm = loss[loss["variant"] == variant]
            values = arm["loss"].to_numpy(dtype=float)
            row = {
                **dict(zip(by, key if isinstance(key, tuple) else (key,))),
                "size": size,
                "variant": variant,
                "step": int(step),
                "n": len(values),
                "loss_mean": float(values.mean()),
                "loss_std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
            }
            if variant != baseline:
                pairs = (
                    arm.drop_duplicates("group")
                    .set_index("group")["loss"]
                    .to_frame("arm")
                    .join(base.rename("base"), how="inner")
                )
                diff = (pairs["arm"] - pairs["base"]).to_numpy(dtype=float)
                low, high, method = stats.mean_interval(diff)
                lower, higher = int((diff < 0).sum()), int((diff > 0).sum())
                row.update(
                    n_pairs=len(diff),
                    diff_mean=float(diff.mean()) if len(diff) else math.nan,
                    diff_ci_low=low,
                    diff_ci_high=high,
                    diff_ci_method=method,
                    n_lower=lower,
                    n_higher=higher,
                    sign_p=stats.sign_test(lower, higher),
                    wilcoxon_p=stats.wilcoxon(diff)[1],
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def formatted(table: pd.DataFrame, baseline: str = "vanilla") -> pd.DataFrame:
    """The table as the report shows it: every interval and p-value with its method and n."""

    def diff_text(r) -> str:
        if r["variant"] == baseline or not r["n_pairs"] > 0:
            return ""
        interval = stats.interval_text(
            r["diff_ci_low"], r["diff_ci_high"], r["diff_ci_method"], int(r["n_pairs"]), "{:+.3f}"
        )
        return f"{r['diff_mean']:+.3f} {interval}"

    out = pd.DataFrame(
        {
            "size": table["size"],
            "variant": table["variant"],
            "step": table["step"].map("{:,}".format),
            "val/loss, mean ± std (n)": [
                f"{m:.3f}" + ("" if np.isnan(s) else f" ± {s:.3f}") + f" (n={n})"
                for m, s, n in zip(table["loss_mean"], table["loss_std"], table["n"])
            ],
            f"paired difference vs {baseline}, 95% interval": table.apply(diff_text, axis=1),
            "lower/higher": [
                "" if v == baseline else f"{int(lo)}/{int(hi)}"
                for v, lo, hi in zip(
                    table["variant"], table["n_lower"].fillna(0), table["n_higher"].fillna(0)
                )
            ],
            "sign test p": [
                "" if v == baseline else stats.p_text(p, int(lo + hi))
                for v, p, lo, hi in zip(
                    table["variant"], table["sign_p"], table["n_lower"].fillna(0), table["n_higher"].fillna(0)
                )
            ],
            "wilcoxon p": [
                "" if v == baseline else stats.p_text(p, int(n))
                for v, p, n in zip(table["variant"], table["wilcoxon_p"], table["n_pairs"].fillna(0))
            ],
        }
    )
    return out
