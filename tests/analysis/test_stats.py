import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import stats


def test_intervals_say_their_method_t_below_ten_bootstrap_from_ten():
    values = np.array([10.0, 12.0, 11.0, 13.0, 9.0])
    low, high, method = stats.mean_interval(values)
    assert method == "t"
    expected = scipy_stats.t.interval(0.95, 4, loc=values.mean(), scale=scipy_stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    many = np.arange(20, dtype=float)
    low, high, method = stats.mean_interval(many)
    assert method == "bootstrap" and low < many.mean() < high
    assert stats.mean_interval(many) == (low, high, method)  # seeded: reproducible
    assert stats.mean_interval([4.0, 4.0, 4.0]) == (4.0, 4.0, "t")
    one = stats.mean_interval([1.0, np.nan])  # one value: no interval
    assert math.isnan(one[0]) and one[2] == ""
    assert stats.interval_text(*one, 1) == "none: n=1"
    assert stats.interval_text(1.0, 2.0, "t", 3, "{:.2f}") == "[1.00, 2.00] (t-interval, n=3)"


def test_no_scipy_warning_is_left_to_silence(recwarn):
    stats.mean_interval([1.0, 1.0, 2.0])
    stats.mean_interval(np.r_[np.ones(12), 2.0])
    stats.wilcoxon([-1.0, -1.0, 0.0, 2.0, -3.0, -5.0])
    stats.sign_test(5, 1)
    assert not [w for w in recwarn if "scipy" in str(w.filename)]


def test_p_values_say_their_n_and_the_smallest_p_it_allows():
    assert stats.min_p(3) == 0.25 and stats.min_p(6) == pytest.approx(1 / 32)
    assert stats.p_text(0.25, 3) == "n too small for p < 0.05 (n=3)"
    assert stats.p_text(0.5, 5) == "n too small for p < 0.05 (n=5)"
    assert stats.p_text(0.03125, 6) == "0.0312 (n=6, smallest possible 0.031)"
    assert stats.sign_test(6, 0) == pytest.approx(1 / 32)
    assert stats.sign_test(3, 3) == 1.0 and math.isnan(stats.sign_test(0, 0))


def test_censored_median():
    inf = math.inf
    assert stats.censored_median([1, 2, 3], [1, 2, 3]) == 2
    assert stats.censored_median([1, 2, 9], [1, 2, inf]) == 2  # not reached ranks last
    assert stats.censored_median([1, 2, 3, 9], [1, 2, 3, inf]) == 2.5
    assert math.isnan(stats.censored_median([1, 9], [1, inf]))  # half not reached
    assert stats.censored_median([0, 5, 6], [3, 5, 6]) == 5  # at or before step 3
    assert math.isnan(stats.censored_median([1, 4, 6], [1, inf, 6]))  # provisional at 4


def test_median_text_says_what_the_bounds_say():
    inf = math.inf
    assert stats.median_text(*stats.median_bounds([3000], [inf])) == "> 3,000"  # never reached
    assert stats.median_text(*stats.median_bounds([1, 9], [1, inf])) == "> 5"
    assert stats.median_text(*stats.median_bounds([0, 0, 6], [300, 400, 6])) == "\u2264 300"
    assert stats.median_text(*stats.median_bounds([1, 4, 6], [1, 5, 6])) == "between 4 and 5"
    assert stats.median_text(*stats.median_bounds([2422], [2422])) == "2,422"
    assert stats.median_text(*stats.median_bounds([], [])) == ""


def _table():
    # Matched groups a-d; variant x is faster than vanilla except where censored.
    return pd.DataFrame(
        {
            "definition": "d",
            "group": list("abcd") * 2,
            "variant": ["vanilla"] * 4 + ["x"] * 4,
            "step": [100, 200, 300, np.nan, 50, 120, np.nan, 150],
            "bound": [1000] * 8,
            "censored": [False, False, False, True, False, False, True, False],
        }
    )


def test_summarize_reports_censoring():
    summary = stats.summarize(_table(), by=("definition", "variant")).set_index("variant")
    x = summary.loc["x"]
    assert x["n"] == 4 and x["n_censored"] == 1 and x["n_exact"] == 3
    assert x["mean"] == pytest.approx(np.mean([50, 120, 150]))
    assert x["std"] == pytest.approx(np.std([50, 120, 150], ddof=1))
    assert x["ci_low"] <= x["mean"] <= x["ci_high"] and x["ci_method"] == "t" and x["ci_n"] == 3
    assert x["median"] == pytest.approx(135)


def test_paired_differences_ratios_and_tests():
    out = stats.paired_vs_baseline(_table(), by=("definition",)).iloc[0]
    assert out["variant"] == "x" and out["n_pairs"] == 4
    assert out["n_both_exact"] == 2  # groups a, b
    # a, b faster; d faster (150 before vanilla's bound); c slower (bound 1000 > 300).
    assert out["n_faster"] == 3 and out["n_slower"] == 1 and out["n_undecided"] == 0
    assert out["diff_mean"] == pytest.approx(np.mean([-50, -80]))
    assert out["ratio"] == pytest.approx(math.sqrt(0.5 * 0.6))
    assert out["ratio_ci_method"] == "t" and out["ratio_ci_n"] == 2
    expected = scipy_stats.wilcoxon([-50, -80])
    assert out["wilcoxon_p"] == pytest.approx(expected.pvalue) and out["wilcoxon_n"] == 2
    assert out["sign_n"] == 4 and out["sign_p"] == pytest.approx(scipy_stats.binomtest(3, 4).pvalue)
    assert out["sign_min_p"] == pytest.approx(2 / 16)


def test_left_censored_and_provisional_steps_never_enter_a_ratio_as_exact():
    table = pd.DataFrame(
        {
            "definition": "d",
            "group": list("abcd") * 2,
            "variant": ["vanilla"] * 4 + ["x"] * 4,
            "step": [400, 400, 400, 400, 100, 500, 300, 200],
            "status": ["reached"] * 4 + ["at or before", "provisional", "provisional", "reached"],
            "censored": [False] * 4 + [True, True, True, False],
            "bound": [1000] * 4 + [1000, 600, 1000, 1000],
            "low": [400] * 4 + [0, 500, 300, 200],
            "high": [400] * 4 + [100, math.inf, math.inf, 200],
        }
    )
    out = stats.paired_vs_baseline(table, by=("definition",)).iloc[0]
    assert out["n_both_exact"] == 1 and out["ratio"] == pytest.approx(0.5)
    # a: at or before 100 < 400, faster; b: at or after 500 > 400, slower; c: undecided.
    assert (out["n_faster"], out["n_slower"], out["n_undecided"]) == (2, 1, 1)
    summary = stats.summarize(table, by=("definition", "variant")).set_index("variant")
    assert summary.loc["x", "n_exact"] == 1 and summary.loc["x", "mean"] == 200
    assert summary.loc["x", "n_at_or_before"] == 1 and summary.loc["x", "n_provisional"] == 2


def test_paired_on_the_store(loaded, known):
    from analysis import convergence, frames, report

    runs = frames.one_run_per_cell(loaded.runs)
    table = convergence.convergence_table(loaded.curves, runs, report.data_floors(runs))
    paired = stats.paired_vs_baseline(table).set_index(["definition", "variant"])
    pairwise = paired.loc[("escape_0.5", "pairwise")]
    ratios = [(known.ESCAPE[("pairwise", s)] + 50) / (known.ESCAPE[("vanilla", s)] + 50) for s in (1, 2, 3)]
    assert pairwise["ratio"] == pytest.approx(np.exp(np.mean(np.log(ratios))))
    assert pairwise["n_faster"] == 3
    assert pairwise["wilcoxon_p"] == pytest.approx(0.25)  # exact test, n = 3
    assert pairwise["sign_p"] == pytest.approx(0.25)
    symmetric = paired.loc[("escape_0.5", "symmetric")]
    assert symmetric["n_both_exact"] == 2
    assert symmetric["n_slower"] == 1  # never escaped; vanilla did
    summary = stats.summarize(table).set_index(["definition", "variant"])
    assert summary.loc[("escape_0.5", "symmetric"), "n_censored"] == 1
    assert summary.loc[("escape_0.5", "vanilla"), "mean"] == pytest.approx(950)


def test_two_runs_across_at_the_same_first_evaluation_are_a_tie():
    table = pd.DataFrame(
        {
            "definition": "d",
            "group": ["a", "a"],
            "variant": ["vanilla", "x"],
            "step": [0, 0],
            "status": ["at or before", "at or before"],
            "censored": [True, True],
            "bound": [3000, 3000],
            "low": [0, 0],
            "high": [0, 0],
        }
    )
    out = stats.paired_vs_baseline(table, by=("definition",)).iloc[0]
    assert (out["n_faster"], out["n_slower"], out["n_undecided"]) == (0, 0, 1) and out["sign_n"] == 0


def test_pairing_raises_no_pandas_warning_and_its_numbers_stay():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' deprecations (join suffixes) fail the test
        out = stats.paired_vs_baseline(_table(), by=("definition",)).iloc[0].to_dict()
    # The values the pairing gave before it was rewritten.
    assert {k: out[k] for k in ("definition", "variant", "baseline", "ratio_ci_method")} == {
        "definition": "d",
        "variant": "x",
        "baseline": "vanilla",
        "ratio_ci_method": "t",
    }
    expected = {
        "n_pairs": 4,
        "n_both_exact": 2,
        "n_faster": 3,
        "n_slower": 1,
        "n_undecided": 0,
        "diff_mean": -65.0,
        "diff_ci_low": -255.5930710426204,
        "diff_ci_high": 125.59307104262041,
        "ratio": 0.5477225575051662,
        "ratio_ci_low": 0.1719943044492659,
        "ratio_ci_high": 1.7442438048202502,
        "ratio_ci_n": 2,
        "sign_n": 4,
        "sign_p": 0.625,
        "sign_min_p": 0.125,
        "wilcoxon_n": 2,
        "wilcoxon_statistic": 0.0,
        "wilcoxon_p": 0.5,
        "wilcoxon_min_p": 0.5,
    }
    assert {k: out[k] for k in expected} == pytest.approx(expected, rel=1e-12)
