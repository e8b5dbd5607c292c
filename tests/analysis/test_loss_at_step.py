"""The paired loss comparison at the last step every run reached."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis import loss_at_step


def _curves(losses: dict[str, list[tuple[int, float]]]) -> pd.DataFrame:
    rows = [
        {"run_id": run, "metric": "val/loss", "step": step, "value": value}
        for run, points in losses.items()
        for step, value in points
    ]
    rows.append({"run_id": "v0", "metric": "train/loss", "step": 900, "value": 1.0})  # not a val point
    return pd.DataFrame(rows)


def test_losses_are_compared_at_the_last_step_all_reached_pair_by_pair():
    runs = pd.DataFrame(
        {
            "run_id": [f"{v}{g}" for g in range(6) for v in ("v", "p")],
            "variant": ["vanilla", "pairwise"] * 6,
            "group": [f"g{g}" for g in range(6) for _ in range(2)],
            "size": "tiny",
        }
    )
    losses = {}
    for g in range(6):
        # vanilla stopped early at step 200 in group 0: the common step is 200
        losses[f"v{g}"] = [(100, 6.0), (200, 6.0 - 0.01 * g)] + ([] if g == 0 else [(300, 5.0)])
        losses[f"p{g}"] = [(100, 6.1), (200, 6.1 - 0.01 * g), (300, 6.1)]
    table = loss_at_step.loss_table(_curves(losses), runs)
    assert list(table["variant"]) == ["vanilla", "pairwise"]
    vanilla, pairwise = table.iloc[0], table.iloc[1]
    assert vanilla["step"] == pairwise["step"] == 200
    assert vanilla["n"] == 6 and math.isnan(vanilla["diff_mean"])
    assert pairwise["n_pairs"] == 6 and pairwise["diff_mean"] == pytest.approx(0.1)
    assert (pairwise["n_higher"], pairwise["n_lower"]) == (6, 0)
    assert pairwise["sign_p"] == pytest.approx(2 / 2**6)
    shown = loss_at_step.formatted(table)
    assert "(t-interval, n=6)" in shown.iloc[1, 4] and "n=6, smallest possible 0.031" in shown.iloc[1, 6]


def test_few_pairs_give_no_p_value_and_a_run_without_losses_gives_no_step():
    runs = pd.DataFrame(
        {"run_id": ["a", "b"], "variant": ["vanilla", "symmetric"], "group": ["g", "g"], "size": "tiny"}
    )
    table = loss_at_step.loss_table(_curves({"a": [(100, 6.0)], "b": [(100, 6.2)]}), runs)
    assert loss_at_step.formatted(table).iloc[1]["sign test p"] == "n too small for p < 0.05 (n=1)"
    assert loss_at_step.loss_table(_curves({"a": [(100, 6.0)]}), runs).empty


def test_a_difference_too_small_to_print_is_a_tie_left_out_of_the_tests(tmp_path):
    runs = pd.DataFrame(
        {
            "run_id": [f"{v}{g}" for g in range(7) for v in ("v", "s")],
            "variant": ["vanilla", "symmetric"] * 7,
            "group": [f"g{g}" for g in range(7) for _ in range(2)],
            "size": "tiny",
        }
    )
    # Symmetric is 0.1 above vanilla in six groups and 0.0002 above it in group 0, which prints
    # as +0.000: a tie, not "higher".
    losses = {}
    for g in range(7):
        losses[f"v{g}"] = [(100, 6.0 + 0.01 * g)]
        losses[f"s{g}"] = [(100, 6.0 + 0.01 * g + (0.0002 if g == 0 else 0.1))]
    table = loss_at_step.loss_table(_curves(losses), runs)
    symmetric = table.set_index("variant").loc["symmetric"]
    assert (symmetric["n_lower"], symmetric["n_higher"], symmetric["n_ties"]) == (0, 6, 1)
    assert symmetric["sign_n"] == symmetric["wilcoxon_n"] == 6  # the ties dropped
    assert symmetric["sign_p"] == pytest.approx(2 / 2**6)
    assert symmetric["n_both_exact"] == 7  # the mean difference is over every pair
    shown = loss_at_step.formatted(table).set_index("variant").loc["symmetric"]
    assert shown["lower/higher/tied"] == "0/6/1"
    assert shown["sign test p"] == "0.0312 (n=6, smallest possible 0.031)"
    assert "(t-interval, n=7)" in shown["paired difference vs vanilla, 95% interval"]
    assert "±0.0005" in loss_at_step.NOTE and "ties" in loss_at_step.NOTE

    from analysis import arms_report

    written = []
    arms_report.loss_section(_curves(losses), runs.assign(setting=""), tmp_path, written, "vanilla")
    assert loss_at_step.NOTE.strip() in (tmp_path / "loss_at_step.md").read_text()
