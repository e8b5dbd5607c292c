import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import stats


def test_bootstrap_ci():
    values = np.array([10.0, 12.0, 11.0, 13.0, 9.0])
    low, high = stats.bootstrap_ci(values)
    assert low < values.mean() < high
    assert values.min() <= low and high <= values.max()
    assert stats.bootstrap_ci(values) == (low, high)                 # seeded: reproducible
    assert stats.bootstrap_ci([4.0, 4.0, 4.0]) == (4.0, 4.0)
    assert all(math.isnan(x) for x in stats.bootstrap_ci([1.0]))     # one run: no interval
    assert all(math.isnan(x) for x in stats.bootstrap_ci([1.0, np.nan]))


def test_censored_median():
    assert stats.censored_median([1, 2, 3], [False, False, False]) == 2
    assert stats.censored_median([1, 2, 9], [False, False, True]) == 2   # censored ranks last
    assert stats.censored_median([1, 2, 3, 9], [False, False, False, True]) == 2.5
    assert math.isnan(stats.censored_median([1, 9], [False, True]))      # half censored


def _table():
    # Matched groups a-d; variant x is faster than vanilla except where censored.
    return pd.DataFrame({
        "definition": "d", "group": list("abcd") * 2,
        "variant": ["vanilla"] * 4 + ["x"] * 4,
        "step": [100, 200, 300, np.nan, 50, 120, np.nan, 150],
        "bound": [1000] * 8,
        "censored": [False, False, False, True, False, False, True, False]})


def test_summarize_reports_censoring():
    summary = stats.summarize(_table(), by=("definition", "variant")).set_index("variant")
    x = summary.loc["x"]
    assert x["n"] == 4 and x["n_censored"] == 1
    assert x["mean"] == pytest.approx(np.mean([50, 120, 150]))
    assert x["std"] == pytest.approx(np.std([50, 120, 150], ddof=1))
    assert x["ci_low"] <= x["mean"] <= x["ci_high"]
    assert x["median"] == pytest.approx(135)
    assert x["mean_lower_bound"] == pytest.approx(np.mean([50, 120, 1000, 150]))
    assert not math.isnan(summary.loc["vanilla", "mean_lower_bound"])   # d is censored


def test_paired_differences_ratios_and_wilcoxon():
    out = stats.paired_vs_baseline(_table(), by=("definition",)).iloc[0]
    assert out["variant"] == "x" and out["n_pairs"] == 4
    assert out["n_both_reached"] == 2                          # groups a, b
    assert out["n_variant_censored"] == 1                      # c
    assert out["n_baseline_censored"] == 1                     # d
    # a, b faster; d faster (150 before vanilla's bound); c slower (bound 1000 > 300).
    assert out["n_faster"] == 3 and out["n_slower"] == 1
    assert out["diff_mean"] == pytest.approx(np.mean([-50, -80]))
    assert out["ratio"] == pytest.approx(math.sqrt(0.5 * 0.6))
    expected = scipy_stats.wilcoxon([-50, -80])
    assert out["wilcoxon_p"] == pytest.approx(expected.pvalue)


def test_paired_on_the_store(loaded, known):
    from analysis import convergence, frames

    runs = frames.one_run_per_cell(loaded.runs)
    table = convergence.convergence_table(loaded.curves, runs)
    paired = stats.paired_vs_baseline(table).set_index(["definition", "variant"])
    pairwise = paired.loc[("plateau_escape", "pairwise")]
    ratios = [(known.ESCAPE[("pairwise", s)] + 50) / (known.ESCAPE[("vanilla", s)] + 50)
              for s in (1, 2, 3)]
    assert pairwise["ratio"] == pytest.approx(np.exp(np.mean(np.log(ratios))))
    assert pairwise["n_faster"] == 3
    assert pairwise["wilcoxon_p"] == pytest.approx(0.25)          # exact test, n = 3
    symmetric = paired.loc[("plateau_escape", "symmetric")]
    assert symmetric["n_both_reached"] == 2 and symmetric["n_variant_censored"] == 1
    assert symmetric["n_slower"] == 1                              # never escaped; vanilla did
    summary = stats.summarize(table).set_index(["definition", "variant"])
    assert summary.loc[("plateau_escape", "symmetric"), "n_censored"] == 1
    assert summary.loc[("plateau_escape", "vanilla"), "mean"] == pytest.approx(950)
