import math

import numpy as np
import pandas as pd
import pytest

from analysis import convergence as tables_cv
from symattn import convergence as cv

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


def test_across_at_the_first_evaluation_is_at_or_before_it_not_an_exact_step():
    result = cv.threshold_crossing([100, 200, 300], [3, 2, 1], 5)
    assert result.status == cv.AT_OR_BEFORE and result.censored
    assert result.step == 100 and (result.low, result.high) == (0, 100)
    assert str(result) == "\u2264 100 (across at the first evaluation)"


def test_unsorted_input_with_gaps():
    result = cv.threshold_crossing([20, 0, 10, 30], [4, 10, np.nan, 2], 5)
    assert result.step == pytest.approx(0 + (5 - 10) / (4 - 10) * 20)


def test_patience_needs_its_full_window_else_the_crossing_is_provisional():
    steps = [0, 10, 20, 30, 40]
    # Crossed between 20 and 30; with patience 3 the window 30, 40, (50) is not complete.
    result = cv.threshold_crossing(steps, [9, 8, 7, 3, 2], 5, patience=3)
    assert result.status == cv.PROVISIONAL and result.censored
    assert result.step == pytest.approx(25) and result.low == pytest.approx(25)
    assert result.high == math.inf
    assert str(result) == "25 (provisional)"
    # One more evaluation across confirms it, at the same step.
    confirmed = cv.threshold_crossing(steps + [50], [9, 8, 7, 3, 2, 2], 5, patience=3)
    assert confirmed.status == cv.REACHED and confirmed.step == pytest.approx(25)
    # Patience 1 needs no window.
    assert cv.threshold_crossing(steps, [9, 8, 7, 3, 2], 5).status == cv.REACHED
    with pytest.raises(ValueError):
        cv.threshold_crossing(steps, [9, 8, 7, 3, 2], 5, patience=0)


def test_smoothing_ignores_a_single_spike():
    steps = np.arange(0, 100, 10)
    values = np.array([9, 9, 9, 1, 9, 9, 6, 4, 3, 2], dtype=float)  # one spike at step 30
    assert cv.threshold_crossing(steps, values, 5).step < 30
    smoothed = cv.threshold_crossing(steps, values, 5, window=3)
    assert smoothed.step == pytest.approx(65)


def test_patience_accepts_a_crossing_that_holds_to_the_end():
    assert cv.threshold_crossing([0, 10, 20], [9, 8, 2], 5, patience=3).step == pytest.approx(10 + 3 / 6 * 10)


def test_bad_direction_and_empty_curve():
    with pytest.raises(ValueError):
        cv.threshold_crossing([0, 1], [1, 2], 1, direction="sideways")
    with pytest.raises(ValueError):
        cv.threshold_crossing([], [], 1)


# ---------------------------------------------------------------- plateau escape


@pytest.mark.parametrize("escape", [400, 650, 1000])
def test_escape_from_the_data_floor_on_known_curves(known, escape):
    steps, loss = known.curve_of(escape)
    # The loss falls 1 per 100 steps once it leaves the floor (6).
    assert cv.plateau_escape(steps, loss, known.FLOOR).step == pytest.approx(escape + 25)
    assert cv.plateau_escape(steps, loss, known.FLOOR, margin=0.5).step == pytest.approx(escape + 50)
    assert cv.plateau_escape(steps, loss, known.FLOOR, margin=1.0).step == pytest.approx(escape + 100)


def test_a_curve_that_never_leaves_the_floor_is_censored(known):
    steps, loss = known.curve_of(None)
    result = cv.plateau_escape(steps, loss, known.FLOOR)
    assert result.status == cv.NOT_REACHED and result.bound == known.LAST
    assert str(result) == f"not reached (>{known.LAST:,})"


def test_straight_through_the_plateau_is_reached_not_censored():
    # No flat stretch at all: the first descent runs on below the floor. The per-curve level
    # finds no plateau and so never counted this run as escaped; the data's floor does.
    steps = np.arange(50, 2001, 50, dtype=float)
    loss = 9.0 - 1.8 * np.log(steps / 50)  # the same slope all the way on a log-step axis
    assert math.isnan(cv.plateau_level(steps, loss))
    assert cv.plateau_escape(steps, loss, "curve").censored
    result = cv.plateau_escape(steps, loss, 6.0)
    assert result.status == cv.REACHED
    assert result.step == pytest.approx(50 * math.exp(3.25 / 1.8), rel=0.02)


def test_a_flat_start_before_the_first_descent_is_not_an_escape():
    # Flat at the initial loss (log V) for a while, then the first descent onto the floor, and no
    # escape. The per-curve level takes the early flat stretch for the plateau and reports the
    # first descent as an escape; measured from the floor the run is censored.
    steps = np.arange(20, 3001, 20, dtype=float)
    loss = np.where(steps < 300, 8.3, np.maximum(6.0, 8.3 - (steps - 300) / 150 * 2.3))
    by_curve = cv.plateau_escape(steps, loss, "curve")
    assert by_curve.status == cv.REACHED and by_curve.step < 600
    assert cv.plateau_escape(steps, loss, 6.0).status == cv.NOT_REACHED


def test_a_curve_below_the_level_from_its_first_evaluation_is_at_or_before_it(known):
    steps, loss = known.curve_of(400)
    late = steps >= 800  # evaluation started after the escape
    result = cv.plateau_escape(steps[late], loss[late], known.FLOOR)
    assert result.status == cv.AT_OR_BEFORE and result.step == 800


def test_an_escape_in_the_last_evaluations_is_provisional(known):
    steps, loss = known.curve_of(900)
    short = steps <= 950  # 925 is crossed, 950 is the last evaluation: patience 3 not met
    result = cv.plateau_escape(steps[short], loss[short], known.FLOOR, window=1)
    assert result.status == cv.PROVISIONAL and result.step == pytest.approx(925)


def test_escape_is_robust_to_noise(known):
    steps, loss = known.curve_of(650)
    rng = np.random.default_rng(0)
    for _ in range(20):
        noisy = loss + rng.normal(0, 0.05, len(loss))
        assert cv.plateau_escape(steps, noisy, known.FLOOR).step == pytest.approx(675, abs=25)
    never = known.curve_of(None)[1]
    for _ in range(20):
        noisy = never + rng.normal(0, 0.05, len(never))
        assert cv.plateau_escape(steps, noisy, known.FLOOR).censored


def test_the_per_curve_level_on_request(known):
    steps, loss = known.curve_of(600)
    assert cv.plateau_level(steps, loss) == pytest.approx(6.0)
    assert cv.plateau_escape(steps, loss, "curve", margin=0.5).step == pytest.approx(650)
    with pytest.raises(ValueError):
        cv.plateau_escape(steps, loss, "each")


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
    from analysis import frames, report

    runs = frames.one_run_per_cell(loaded.runs)
    floors = report.data_floors(runs)
    assert (floors == known.FLOOR).all()
    table = tables_cv.convergence_table(loaded.curves, runs, floors, thresholds=(4.0,))
    by = table.set_index(["variant", "seed", "definition"]).sort_index()
    for (attention, seed), escape in known.ESCAPE.items():
        row = by.loc[(attention, seed)]
        if escape is None:
            assert row["censored"].all() and (row["status"] == cv.NOT_REACHED).all()
            assert (row["bound"] == known.LAST).all()
            continue
        assert row.loc["escape_0.25", "step"] == pytest.approx(known.expected_escape(attention, seed))
        assert row.loc["escape_0.5", "step"] == pytest.approx(escape + 50)
        assert row.loc["loss<=4", "step"] == pytest.approx(escape + 200)
        assert row.loc["baseline_final", "step"] == pytest.approx(escape + 400)
        assert row.loc["baseline_90pct", "step"] == pytest.approx(escape + 330)
    diagonal = by.loc[("pairwise-diagonal-identity", 1)]
    assert diagonal.loc["escape_0.5", "step"] == pytest.approx(known.DIAGONAL_ESCAPE + 50)
    # Still running at step 1000: it has not reached the vanilla run's final loss yet.
    assert diagonal.loc["baseline_final", "censored"]
    assert diagonal.loc["baseline_final", "bound"] == known.DIAGONAL_LAST
    # Without a floor there is no escape row (never a per-curve level by default).
    bare = tables_cv.convergence_table(loaded.curves, runs)
    assert not bare["definition"].str.startswith("escape").any()


def test_glue_crossings_per_matched_group():
    scores = pd.DataFrame(
        {
            "pretrain_run_id": ["p"] * 3 + ["v"] * 3 + ["s"] * 3,
            "size": "base",
            "seed": 1,
            "group": "g",
            "variant": ["pairwise"] * 3 + ["vanilla"] * 3 + ["symmetric"] * 3,
            "checkpoint_step": [10, 20, 30] * 3,
            "score": [60, 77, 80, 60, 70, 78, 60, 70, 74],
        }
    )
    out = tables_cv.glue_crossings(scores).set_index("variant")
    assert out["threshold"].unique() == pytest.approx([76.0])
    assert out.loc["pairwise", "step"] == pytest.approx(10 + 16 / 17 * 10)
    assert out.loc["vanilla", "step"] == pytest.approx(20 + 6 / 8 * 10)
    assert out.loc["symmetric", "censored"] and out.loc["symmetric", "bound"] == 30


def test_describe_definition():
    assert tables_cv.describe_definition("escape_0.25") == "escape: floor \u2212 0.25"
    assert tables_cv.describe_definition("baseline_90pct") == "90% of baseline's improvement"
    assert tables_cv.describe_definition("loss<=3") == "loss \u2264 3"
    assert tables_cv.describe_definition("glue>=95%_pairwise") == "GLUE \u2265 95% of pairwise's final"
    assert (
        tables_cv.describe_definition("offline>=95%_pairwise")
        == "offline proxy score \u2265 95% of pairwise's final"
    )
