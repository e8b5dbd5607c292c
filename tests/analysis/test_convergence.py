import math

import numpy as np
import pandas as pd
import pytest

from analysis import convergence as cv


# ---------------------------------------------------------------- threshold crossing

def test_crossing_interpolates_between_the_evaluations_around_it():
    result = cv.threshold_crossing([0, 10, 20, 30], [10, 8, 4, 2], 5)
    assert result.step == pytest.approx(17.5)
    assert not result.censored and result.bound == 30 and result.target == 5


def test_upward_crossing_for_a_score():
    result = cv.threshold_crossing([1000, 2000, 3000], [50, 60, 70], 65, direction="up")
    assert result.step == pytest.approx(2500)


def test_first_crossing_of_a_non_monotonic_curve():
    steps, values = [0, 10, 20, 30, 40], [10, 4, 8, 3, 2]
    # The first dip counts by default ...
    assert cv.threshold_crossing(steps, values, 5).step == pytest.approx(10 * 5 / 6)
    # ... but not when the curve must stay across for two evaluations: then 8 -> 3 is the crossing.
    assert cv.threshold_crossing(steps, values, 5, patience=2).step == pytest.approx(26)


def test_a_curve_that_never_crosses_is_censored_not_its_last_step():
    result = cv.threshold_crossing([0, 10, 20], [9, 8, 7], 5)
    assert result.censored and math.isnan(result.step)
    assert result.bound == 20
    assert str(result) == "not reached (>20)"


def test_crossing_at_the_first_evaluation_and_unsorted_input_with_gaps():
    assert cv.threshold_crossing([0, 10], [3, 2], 5).step == 0
    result = cv.threshold_crossing([20, 0, 10, 30], [4, 10, np.nan, 2], 5)
    assert result.step == pytest.approx(0 + (5 - 10) / (4 - 10) * 20)


def test_smoothing_ignores_a_single_spike():
    steps = np.arange(0, 100, 10)
    values = np.array([9, 9, 9, 1, 9, 9, 6, 4, 3, 2], dtype=float)   # one spike at step 30
    assert cv.threshold_crossing(steps, values, 5).step < 30
    smoothed = cv.threshold_crossing(steps, values, 5, window=3)
    assert smoothed.step == pytest.approx(65)


def test_patience_accepts_a_crossing_that_holds_to_the_end():
    assert cv.threshold_crossing([0, 10, 20], [9, 8, 2], 5, patience=3).step == pytest.approx(
        10 + 3 / 6 * 10)


def test_bad_direction_and_empty_curve():
    with pytest.raises(ValueError):
        cv.threshold_crossing([0, 1], [1, 2], 1, direction="sideways")
    with pytest.raises(ValueError):
        cv.threshold_crossing([], [], 1)


# ---------------------------------------------------------------- plateau escape

@pytest.mark.parametrize("escape", [400, 650, 1000])
def test_plateau_escape_on_known_curves(known, escape):
    steps, loss = known.curve_of(escape)
    assert cv.plateau_level(steps, loss) == pytest.approx(6.0)
    # 0.5 below the plateau: 50 steps after the drop starts (4 loss units over 400 steps).
    assert cv.plateau_escape(steps, loss, margin=0.5).step == pytest.approx(escape + 50)
    assert cv.plateau_escape(steps, loss, margin=1.0).step == pytest.approx(escape + 100)


def test_a_curve_that_never_leaves_its_plateau_is_censored(known):
    steps, loss = known.curve_of(None)
    assert math.isnan(cv.plateau_level(steps, loss))
    result = cv.plateau_escape(steps, loss)
    assert result.censored and result.bound == known.LAST
    # Given the level, the answer is the same: it never falls below 5.5.
    assert cv.plateau_escape(steps, loss, level=6.0).censored


def test_plateau_escape_is_robust_to_noise(known):
    steps, loss = known.curve_of(650)
    rng = np.random.default_rng(0)
    for _ in range(20):
        noisy = loss + rng.normal(0, 0.05, len(loss))
        assert cv.plateau_escape(steps, noisy).step == pytest.approx(700, abs=25)
    never = known.curve_of(None)[1]
    for _ in range(20):
        assert cv.plateau_escape(steps, never + rng.normal(0, 0.05, len(never))).censored


def test_plateau_escape_with_a_given_level(known):
    steps, loss = known.curve_of(600)
    assert cv.plateau_escape(steps, loss, margin=0.5, level=5.0).step == pytest.approx(
        600 + 150)   # 4.5 is reached 1.5/4 of the way through the drop


# ---------------------------------------------------------------- baseline targets

def test_baseline_targets(known):
    steps, loss = known.curve_of(800)
    assert cv.baseline_target(steps, loss) == pytest.approx(2.0)
    assert cv.baseline_target(steps, loss, fraction=0.9) == pytest.approx(9 - 0.9 * 7)
    # A run escaping at 400 reaches 2.7 (90% of the improvement) 330 steps later.
    s, y = known.curve_of(400)
    assert cv.steps_to_target(s, y, 2.7).step == pytest.approx(730)
    assert cv.steps_to_target(s, y, 1.0).censored


# ---------------------------------------------------------------- over the test store

def test_convergence_table_on_the_store(loaded, known):
    from analysis import frames

    runs = frames.one_run_per_cell(loaded.runs)
    table = cv.convergence_table(loaded.curves, runs, thresholds=(4.0,))
    by = table.set_index(["variant", "seed", "definition"])
    for (attention, seed), escape in known.ESCAPE.items():
        row = by.loc[(attention, seed)]
        if escape is None:
            assert row["censored"].all()
            assert (row["bound"] == known.LAST).all()
            continue
        assert row.loc["plateau_escape", "step"] == pytest.approx(escape + 50)
        assert row.loc["loss<=4", "step"] == pytest.approx(escape + 200)
        assert row.loc["baseline_final", "step"] == pytest.approx(escape + 400)
        assert row.loc["baseline_90pct", "step"] == pytest.approx(escape + 330)
    diagonal = by.loc[("pairwise-diagonal-identity", 1)]
    assert diagonal.loc["plateau_escape", "step"] == pytest.approx(known.DIAGONAL_ESCAPE + 50)
    # Still running at step 1000: it has not reached the vanilla run's final loss yet.
    assert diagonal.loc["baseline_final", "censored"]
    assert diagonal.loc["baseline_final", "bound"] == known.DIAGONAL_LAST


def test_glue_crossings_per_matched_group():
    scores = pd.DataFrame({
        "pretrain_run_id": ["p"] * 3 + ["v"] * 3 + ["s"] * 3,
        "size": "base", "seed": 1, "group": "g",
        "variant": ["pairwise"] * 3 + ["vanilla"] * 3 + ["symmetric"] * 3,
        "checkpoint_step": [10, 20, 30] * 3,
        "score": [60, 77, 80, 60, 70, 78, 60, 70, 74]})
    out = cv.glue_crossings(scores).set_index("variant")
    assert out["threshold"].unique() == pytest.approx([76.0])
    assert out.loc["pairwise", "step"] == pytest.approx(10 + 16 / 17 * 10)
    assert out.loc["vanilla", "step"] == pytest.approx(20 + 6 / 8 * 10)
    assert out.loc["symmetric", "censored"] and out.loc["symmetric", "bound"] == 30


def test_describe_definition():
    assert cv.describe_definition("baseline_90pct") == "90% of baseline's improvement"
    assert cv.describe_definition("loss<=3") == "loss \u2264 3"
    assert cv.describe_definition("glue>=95%_pairwise") == "GLUE \u2265 95% of pairwise's final"
