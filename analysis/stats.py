"""Statistics of a measure (steps to convergence, a GLUE score) over seeds of a matched design,
stated with what their n can support.

- Only exact observations are averaged. A run that never converged, was already across at its
  first evaluation, or crossed too late to confirm (`convergence` statuses) has an interval, not a
  step: its counts travel with the mean, and it still decides a paired comparison when its
  interval lies wholly on one side of the other run's.
- Intervals of a mean: for n < 10 a t-interval (scipy.stats.t); for n >= 10 the percentile
  bootstrap (scipy.stats.bootstrap), whose coverage at small n is far below nominal (about 75% at
  n = 3). Every interval carries its method and n.
- Paired tests: the exact sign test over every decided pair (scipy.stats.binomtest), and the
  Wilcoxon signed-rank test over the pairs where both runs have exact steps; both drop ties (equal
  values, or closer than a stated tolerance) and count them apart. Every p-value carries
  its n and the smallest p that n can give (2 / 2^n, two-sided); below `MIN_PAIRS_FOR_5PCT` pairs
  no test can reach p < 0.05, and tables say so instead of printing a p.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

LEVEL = 0.95
BOOTSTRAP_MIN_N = 10  # below this, the percentile bootstrap under-covers badly
N_RESAMPLES = 10_000
MIN_PAIRS_FOR_5PCT = 6  # 2 / 2^6 = 0.031 is the first smallest-p below 0.05
T_INTERVAL, BOOTSTRAP = "t", "bootstrap"


def min_p(n: int) -> float:
    """The smallest two-sided p-value an exact sign or signed-rank test of n pairs can give."""
    return 2.0 / 2.0**n if n > 0 else math.nan


def mean_interval(values, level: float = LEVEL, seed: int = 0) -> tuple[float, float, str]:
    """(low, high, method) of a `level` interval for the mean of `values` (NaNs dropped):
    a t-interval below `BOOTSTRAP_MIN_N` values, else the percentile bootstrap. No interval
    (NaN, NaN, "") for fewer than two values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 2:
        return math.nan, math.nan, ""
    method = T_INTERVAL if n < BOOTSTRAP_MIN_N else BOOTSTRAP
    if np.all(values == values[0]):  # no spread: both methods give the point (scipy would warn)
        return float(values[0]), float(values[0]), method
    if method == T_INTERVAL:
        low, high = scipy_stats.t.interval(level, n - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    else:
        result = scipy_stats.bootstrap(
            (values,),
            np.mean,
            confidence_level=level,
            n_resamples=N_RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low, high = result.confidence_interval
    return float(low), float(high), method


def _observations(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """`table` with `_exact`, `_low`, `_high`: the interval in which each run's true value lies
    (tables without intervals are exact where not censored, and censored above their `bound`)."""
    censored = table["censored"].astype(bool) if "censored" in table else pd.Series(False, index=table.index)
    exact = ~censored
    low = table["low"] if "low" in table else table[value].where(exact, table.get("bound"))
    high = table["high"] if "high" in table else table[value].where(exact, math.inf)
    return table.assign(_exact=exact, _low=low.astype(float), _high=high.astype(float))


def median_bounds(low, high) -> tuple[float, float]:
    """Bounds of the median of values known only as intervals [low, high] (equal when exact): the
    medians of the lower and of the upper ends (NaN, NaN with no value)."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if len(low) == 0:
        return math.nan, math.nan
    return float(np.median(low)), float(np.median(high))


def censored_median(low, high) -> float:
    """The median when every placement of the inexact values inside their intervals gives the same
    one, else NaN (not determined, e.g. when half the runs never converged)."""
    lower, upper = median_bounds(low, high)
    return lower if lower == upper else math.nan


def median_text(lower: float, upper: float, fmt: str = "{:,.0f}") -> str:
    """A median, or what its bounds say of it: "> 3,000" when the middle runs never got there."""
    if math.isnan(lower):
        return ""
    if lower == upper:
        return fmt.format(lower)
    if math.isinf(upper):
        return "> " + fmt.format(lower)
    return "≤ " + fmt.format(upper) if lower <= 0 else f"between {fmt.format(lower)} and {fmt.format(upper)}"


def summarize(
    table: pd.DataFrame, value: str = "step", by=("size", "definition", "variant"), level: float = LEVEL
) -> pd.DataFrame:
    """Per group of `by`: n runs, how many are exact (`n_exact`) and how many are not
    (`n_censored`: never reached, at or before the first evaluation, provisional); over exact runs
    the mean, std and an interval of the mean with its method; the median where the inexact
    runs cannot move it, and its bounds (`median_low`, `median_high`) where they can."""
    rows = []
    by = [c for c in by if c in table]
    data = _observations(table, value)
    status = data["status"] if "status" in data else pd.Series("", index=data.index)
    for key, part in data.assign(_status=status).groupby(by, sort=False):
        done = part.loc[part["_exact"], value].to_numpy(dtype=float)
        low, high, method = mean_interval(done, level)
        rows.append(
            {
                **dict(zip(by, key if isinstance(key, tuple) else (key,))),
                "n": len(part),
                "n_exact": len(done),
                "n_censored": len(part) - len(done),
                "n_not_reached": int((part["_status"] == "not reached").sum()),
                "n_at_or_before": int((part["_status"] == "at or before").sum()),
                "n_provisional": int((part["_status"] == "provisional").sum()),
                "mean": float(done.mean()) if len(done) else math.nan,
                "std": float(done.std(ddof=1)) if len(done) > 1 else math.nan,
                "ci_low": low,
                "ci_high": high,
                "ci_method": method,
                "ci_n": len(done),
                "median": censored_median(part["_low"], part["_high"]),
                **dict(zip(("median_low", "median_high"), median_bounds(part["_low"], part["_high"]))),
            }
        )
    return pd.DataFrame(rows)


def sign_test(n_faster: int, n_slower: int) -> float:
    """Exact two-sided sign test of faster/slower counts (ties left out); NaN with no pair."""
    n = n_faster + n_slower
    return float(scipy_stats.binomtest(n_faster, n, 0.5).pvalue) if n else math.nan


def wilcoxon(differences) -> tuple[float, float]:
    """(statistic, p) of the Wilcoxon signed-rank test (exact where scipy can be); NaN for fewer
    than two non-zero differences, where there is nothing to rank."""
    differences = np.asarray(differences, dtype=float)
    if np.count_nonzero(differences) < 2:
        return math.nan, math.nan
    result = scipy_stats.wilcoxon(differences)
    return float(result.statistic), float(result.pvalue)


def paired_vs_baseline(
    table: pd.DataFrame,
    baseline: str = "vanilla",
    value: str = "step",
    by=("size", "definition"),
    match_on: str = "group",
    level: float = LEVEL,
    tie_tolerance: float = 0.0,
) -> pd.DataFrame:
    """Each variant against the baseline within matched groups.

    Every pair is decided faster or slower when it can be: by the exact steps, or by intervals
    that do not overlap (a variant that converged at step s against a baseline that never did up
    to a later step is faster). A pair of exact values closer than `tie_tolerance` (or equal), or
    of bounds that only touch, is a tie (`n_ties`, counted among `n_undecided`). Over decided
    pairs: the exact sign test, ties dropped. Over pairs where both steps are exact: the mean
    difference (variant - baseline), the geometric-mean ratio (variant / baseline) with an
    interval on the mean log-ratio (`mean_interval`), and the Wilcoxon test, whose ranks drop
    the ties too; each test's n is the pairs it used."""
    by = [c for c in by if c in table]
    data = _observations(table, value)
    rows = []
    for key, part in data.groupby(by, sort=False):
        base = part[part["variant"] == baseline].drop_duplicates(match_on).set_index(match_on)
        for variant, runs in part[part["variant"] != baseline].groupby("variant", sort=False):
            pairs = (
                runs.drop_duplicates(match_on)
                .set_index(match_on)
                .join(base[[value, "_exact", "_low", "_high"]].add_suffix("_base"), how="inner")
            )
            if pairs.empty:  # no matched baseline run: nothing to compare
                continue
            v, b = pairs[value].astype(float), pairs[f"{value}_base"].astype(float)
            both = pairs["_exact"] & pairs["_exact_base"]
            close = both & (((v - b).abs() < tie_tolerance) | (v == b))
            faster = (both & ~close & (v < b)) | (~both & (pairs["_high"] <= pairs["_low_base"]))
            slower = (both & ~close & (v > b)) | (~both & (pairs["_low"] >= pairs["_high_base"]))
            # Two bounds that only touch (both across at the same first evaluation) decide nothing.
            touch = faster & slower
            faster, slower = faster & ~touch, slower & ~touch
            diff = (v - b)[both].to_numpy(dtype=float)
            ranked = np.where(np.abs(diff) < tie_tolerance, 0.0, diff)  # ties: zeros, which it drops
            log_ratio = np.log((v / b)[both].to_numpy(dtype=float))
            d_low, d_high, _ = mean_interval(diff, level)
            r_low, r_high, r_method = mean_interval(log_ratio, level)
            statistic, w_p = wilcoxon(ranked)
            n_faster, n_slower = int(faster.sum()), int(slower.sum())
            n_sign = n_faster + n_slower
            n_wilcoxon = int(np.count_nonzero(ranked))
            rows.append(
                {
                    **dict(zip(by, key if isinstance(key, tuple) else (key,))),
                    "variant": variant,
                    "baseline": baseline,
                    "n_pairs": len(pairs),
                    "n_both_exact": int(both.sum()),
                    "n_faster": n_faster,
                    "n_slower": n_slower,
                    "n_undecided": len(pairs) - n_sign,
                    "n_ties": int((close | touch).sum()),
                    "diff_mean": float(diff.mean()) if len(diff) else math.nan,
                    "diff_ci_low": d_low,
                    "diff_ci_high": d_high,
                    "ratio": float(np.exp(log_ratio.mean())) if len(diff) else math.nan,
                    "ratio_ci_low": math.exp(r_low) if not math.isnan(r_low) else math.nan,
                    "ratio_ci_high": math.exp(r_high) if not math.isnan(r_high) else math.nan,
                    "ratio_ci_method": r_method,
                    "ratio_ci_n": len(log_ratio),
                    "sign_n": n_sign,
                    "sign_p": sign_test(n_faster, n_slower),
                    "sign_min_p": min_p(n_sign),
                    "wilcoxon_n": n_wilcoxon,
                    "wilcoxon_statistic": statistic,
                    "wilcoxon_p": w_p,
                    "wilcoxon_min_p": min_p(n_wilcoxon),
                }
            )
    return pd.DataFrame(rows)


def p_text(p: float, n: int) -> str:
    """A p-value as a table shows it: with its n and the smallest p that n allows, or the reason
    there is none."""
    if n < MIN_PAIRS_FOR_5PCT:
        return f"n too small for p < 0.05 (n={n})"
    if p is None or math.isnan(p):
        return f"no test (n={n})"
    return f"{p:.3g} (n={n}, smallest possible {min_p(n):.2g})"


def interval_text(low: float, high: float, method: str, n: int, fmt: str = "{:,.0f}") -> str:
    """`[a, b] (t-interval, n=3)` for a `LEVEL` interval, or `none: n=1` where n gives none."""
    if not method or math.isnan(low):
        return f"none: n={n}"
    label = "t-interval" if method == T_INTERVAL else "percentile bootstrap"
    return f"[{fmt.format(low)}, {fmt.format(high)}] ({label}, n={n})"
