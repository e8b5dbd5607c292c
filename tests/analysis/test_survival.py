"""Escape as a time to event (analysis/survival.py): Kaplan-Meier curves and medians, the stratified
log-rank test and the stratified Cox hazard ratio through statsmodels, on data whose answers are
known; and the hazard ratio interval's coverage on simulated censored data with a known ratio."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import survival


def test_kaplan_meier_steps_and_its_median_are_those_counted_by_hand():
    # 5 runs: escapes at 100, 300, 500; two never escaped by their last evaluation, 1,000
    arm = survival.kaplan_meier([100, 300, 500, 1000, 1000], [True, True, True, False, False])
    assert list(arm.times) == [100, 300, 500, 1000]
    assert arm.survival == pytest.approx([0.8, 0.6, 0.4, 0.4])
    assert arm.median == 500 and arm.escaped == 3 and arm.n == 5
    assert arm.median_low <= 500 <= arm.median_high
    assert math.isinf(arm.median_high)  # the band's upper end never falls to 0.5 by step 1,000


def test_an_arm_that_never_escaped_has_no_median():
    arm = survival.kaplan_meier([3000, 3000, 2800], [False, False, False])
    assert list(arm.survival) == [1.0, 1.0] and math.isnan(arm.median) and math.isinf(arm.median_high)


def pairs(rows) -> pd.DataFrame:
    """(group, arm time, arm escaped, reference time, reference escaped) -> the long table."""
    out = []
    for g, ta, ea, tr, er in rows:
        out += [
            {"group": g, "arm": "symmetric", "time": ta, "escaped": ea},
            {"group": g, "arm": "vanilla", "time": tr, "escaped": er},
        ]
    return pd.DataFrame(out)


def test_with_one_run_per_arm_and_group_the_log_rank_is_the_sign_statistic_and_cox_gives_won_over_lost():
    table = pairs(
        [
            ("s0", 1000, True, 2000, True),  # won
            ("s1", 1500, True, 3000, False),  # won: vanilla censored after symmetric escaped
            ("s2", 2500, True, 1200, True),  # lost
            ("s3", 3000, False, 3000, False),  # both censored: undecided
            ("s4", 3000, False, 2000, False),  # vanilla censored first (a shorter run): undecided
            ("s5", 800, True, 900, True),  # won
        ]
    )
    c = survival.compare(table, "symmetric", "vanilla")
    assert (c.groups, c.won, c.lost, c.decided) == (6, 3, 1, 4)
    assert c.chi2 == pytest.approx((3 - 1) ** 2 / 4)  # statsmodels' stratified log-rank
    assert c.p == pytest.approx(0.625)  # exact two-sided sign test, 3 of 4
    assert c.hazard_ratio == pytest.approx(3.0, rel=1e-4)  # statsmodels' stratified Cox: won / lost
    assert c.interval == survival.EXACT and c.low < 3 < c.high  # 4 decided groups: exact interval
    assert "4 decided of 6 groups" in c.test_method


def test_all_decided_groups_one_way_give_an_unbounded_ratio_and_a_one_sided_exact_interval():
    table = pairs([(f"s{i}", 1000 + i, True, 2000, True) for i in range(6)])
    c = survival.compare(table, "symmetric", "vanilla")
    assert (c.won, c.lost) == (6, 0) and c.p == pytest.approx(2 / 2**6)
    assert math.isinf(c.hazard_ratio) and math.isinf(c.high) and c.low > 1
    assert c.interval == survival.EXACT


def test_no_decided_group_gives_no_test():
    c = survival.compare(pairs([("s0", 3000, False, 3000, False)]), "symmetric", "vanilla")
    assert c.decided == 0 and math.isnan(c.p) and math.isnan(c.hazard_ratio) and c.interval == ""


def _simulated(rng, groups: int, hazard_ratio: float, budget: float) -> pd.DataFrame:
    """Matched groups of one run per arm: each group has its own speed (a frailty); escape times
    are exponential, the arm's hazard `hazard_ratio` times the reference's; runs stop at `budget`."""
    frailty = rng.lognormal(0, 0.5, groups)
    arm = rng.exponential(1 / hazard_ratio, groups) * frailty
    ref = rng.exponential(1.0, groups) * frailty
    rows = [
        (g, min(a, budget), a <= budget, min(r, budget), r <= budget)
        for g, (a, r) in enumerate(zip(arm, ref))
    ]
    return pairs(rows)


@pytest.mark.slow
@pytest.mark.parametrize("groups, method", [(30, survival.WALD), (6, survival.EXACT)])
def test_the_hazard_ratio_interval_covers_the_true_ratio_at_its_level(groups, method):
    """400 simulated studies with a true hazard ratio of 2 and about a fifth of the runs censored.
    With enough decided groups the Wald interval's coverage is within two standard errors of 95%;
    with the study's six the exact interval is used, which may only over-cover."""
    rng = np.random.default_rng(7)
    sims, true, covered, used = 400, 2.0, 0, []
    for _ in range(sims):
        c = survival.compare(_simulated(rng, groups, true, budget=1.5), "symmetric", "vanilla")
        used.append(c.interval)
        covered += c.decided > 0 and c.low <= true <= c.high
    coverage, se = covered / sims, math.sqrt(0.95 * 0.05 / sims)
    share = used.count(method) / sims
    print(
        f"\n{groups} groups: {method} interval in {share:.0%} of {sims} studies; coverage {coverage:.3f} (nominal 0.95, SE {se:.3f})"
    )
    assert share > 0.9
    if method == survival.WALD:
        assert abs(coverage - 0.95) <= 2 * se
    else:
        assert coverage >= 0.95 - 2 * se
