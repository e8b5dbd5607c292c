"""Statistics of a measure (steps to convergence, a GLUE score) over seeds of a matched design.

Censored observations (a run that never converged) are never averaged as if their bound were a
step: means, stds and CIs use the runs that converged, the counts of censored runs travel with
them, the median treats censored runs as slower than any converged one, and paired comparisons
count the pairs whose order a censored run still decides.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

N_BOOT = 10_000
LEVEL = 0.95


def bootstrap_ci(values, statistic=np.mean, n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` (applied along axis 1 of resamples).
    NaN for fewer than two values: one run gives no interval."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    resampled = statistic(values[rng.integers(0, len(values), (n_boot, len(values)))], axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return float(low), float(high)


def censored_median(steps, censored) -> float:
    """Median with censored runs ranked last (their true steps exceed every bound seen);
    NaN ("not reached") when half or more of the runs are censored."""
    steps = np.asarray(steps, dtype=float)
    censored = np.asarray(censored, dtype=bool)
    if len(steps) == 0 or censored.sum() * 2 >= len(steps):
        return math.nan
    return float(np.median(np.where(censored, np.inf, steps)))


def summarize(table: pd.DataFrame, value: str = "step", by=("size", "definition", "variant"),
              **bootstrap) -> pd.DataFrame:
    """Per group of `by`: n runs, n censored, and over converged runs mean, std, bootstrap CI of the
    mean; the censored-aware median; and the mean with censored runs at their bounds, which is a
    lower bound on the true mean (NaN when no run is censored)."""
    rows = []
    by = [c for c in by if c in table]
    censored = table["censored"] if "censored" in table else pd.Series(False, index=table.index)
    for key, part in table.assign(_censored=censored.astype(bool)).groupby(by, sort=False):
        done = part.loc[~part["_censored"], value].to_numpy(dtype=float)
        low, high = bootstrap_ci(done, **bootstrap)
        n_censored = int(part["_censored"].sum())
        bounded = part[value].where(~part["_censored"], part.get("bound"))
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "n": len(part), "n_censored": n_censored,
                     "mean": float(done.mean()) if len(done) else math.nan,
                     "std": float(done.std(ddof=1)) if len(done) > 1 else math.nan,
                     "ci_low": low, "ci_high": high,
                     "median": censored_median(part[value], part["_censored"]),
                     "mean_lower_bound": float(bounded.mean()) if n_censored else math.nan})
    return pd.DataFrame(rows)


def _wilcoxon(differences) -> tuple[float, float]:
    differences = np.asarray(differences, dtype=float)
    # One pair gives no test (scipy would answer p = 1); identical pairs give no signed ranks.
    if len(differences) < 2 or np.all(differences == 0):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # small-sample notes; the p-value says enough
        result = scipy_stats.wilcoxon(differences)
    return float(result.statistic), float(result.pvalue)


def paired_vs_baseline(table: pd.DataFrame, baseline: str = "vanilla", value: str = "step",
                       by=("size", "definition"), match_on: str = "group", **bootstrap
                       ) -> pd.DataFrame:
    """Each variant against the baseline within matched groups.

    Over pairs where both runs converged: the mean difference (variant - baseline) and the
    geometric-mean ratio (variant / baseline), each with a bootstrap CI, and the Wilcoxon
    signed-rank test of the differences. Over all pairs: how many the variant wins or loses,
    counting a censored run as slower when its bound already exceeds the other's step, and how
    many pairs had a censored variant, a censored baseline, or both (order unknown)."""
    by = [c for c in by if c in table]
    data = table.assign(censored=table.get("censored", False),
                        bound=table.get("bound", table[value]))
    rows = []
    for key, part in data.groupby(by, sort=False):
        base = part[part["variant"] == baseline].drop_duplicates(match_on).set_index(match_on)
        for variant, runs in part[part["variant"] != baseline].groupby("variant", sort=False):
            pairs = runs.drop_duplicates(match_on).set_index(match_on).join(
                base[[value, "bound", "censored"]], how="inner", rsuffix="_base")
            v, b = pairs[value], pairs[f"{value}_base"]
            vc, bc = pairs["censored"].astype(bool), pairs["censored_base"].astype(bool)
            both = ~vc & ~bc
            diff = (v - b)[both].to_numpy(dtype=float)
            log_ratio = np.log((v / b)[both].to_numpy(dtype=float))
            faster = (both & (v < b)) | (~vc & bc & (v <= pairs["bound_base"]))
            slower = (both & (v > b)) | (vc & ~bc & (pairs["bound"] >= b))
            d_low, d_high = bootstrap_ci(diff, **bootstrap)
            r_low, r_high = bootstrap_ci(log_ratio, **bootstrap)
            statistic, p_value = _wilcoxon(diff)
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                         "variant": variant, "baseline": baseline, "n_pairs": len(pairs),
                         "n_both_reached": int(both.sum()),
                         "n_variant_censored": int((vc & ~bc).sum()),
                         "n_baseline_censored": int((bc & ~vc).sum()),
                         "n_both_censored": int((vc & bc).sum()),
                         "n_faster": int(faster.sum()), "n_slower": int(slower.sum()),
                         "diff_mean": float(diff.mean()) if len(diff) else math.nan,
                         "diff_ci_low": d_low, "diff_ci_high": d_high,
                         "ratio": float(np.exp(log_ratio.mean())) if len(diff) else math.nan,
                         "ratio_ci_low": math.exp(r_low) if not math.isnan(r_low) else math.nan,
                         "ratio_ci_high": math.exp(r_high) if not math.isnan(r_high) else math.nan,
                         "wilcoxon_statistic": statistic, "wilcoxon_p": p_value})
    return pd.DataFrame(rows)
