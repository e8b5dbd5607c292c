import math

import pandas as pd
import pytest

from analysis import convergence, glue, paper_results


@pytest.fixture(scope="module")
def paper():
    return paper_results.paper_frames()


def test_paper_glue_scores_match_the_published_ones(paper):
    table = glue.glue_table(paper.glue).set_index(["size", "variant"])
    assert round(table.loc[("base", "pairwise"), "score"], 2) == 79.36  # abstract
    assert round(table.loc[("base", "vanilla"), "score"], 2) == 78.74  # abstract
    # "Plain symmetric attention loses 3.9 GLUE points".
    loss = table.loc[("base", "vanilla"), "score"] - table.loc[("base", "symmetric"), "score"]
    assert round(loss, 1) == 3.9
    assert (table["n_seeds"] == 5).all()
    assert set(table.index.get_level_values("size")) == {"base", "small"}


def test_aggregation_agrees_with_the_hf_combined_score(paper):
    scores = glue.task_scores(paper.glue).set_index(["size", "variant", "finetune_seed"])
    combined = paper.glue[paper.glue["metric"] == "combined_score"].pivot_table(
        index=["size", "variant", "finetune_seed"], columns="task", values="value"
    )
    for task in ("mrpc", "qqp", "stsb"):
        pd.testing.assert_series_equal(scores[task], combined[task] * 100, check_names=False)


def test_score_leaves_wnli_out_and_counts_mnli_twice(paper):
    scores = glue.task_scores(paper.glue)
    manual = scores[glue.SCORE_COLUMNS].mean(axis=1)
    pd.testing.assert_series_equal(scores["score"], manual, check_names=False)
    assert "wnli" not in glue.SCORE_COLUMNS and len(glue.SCORE_COLUMNS) == 9
    assert {"mnli-m", "mnli-mm"} <= set(glue.SCORE_COLUMNS)


def test_a_missing_task_leaves_no_score(paper):
    partial = paper.glue[paper.glue["task"] != "rte"]
    scores = glue.task_scores(partial)
    assert scores["rte"].isna().all() and scores["score"].isna().all()


def test_paper_crossings(paper):
    scores = glue.scores_over_checkpoints(paper.glue_checkpoints)
    final = scores[(scores["variant"] == "pairwise") & (scores["checkpoint_step"] == 200_000)]
    assert final["score"].iloc[0] == pytest.approx(79.052139, abs=1e-5)  # authors' notebook
    out = convergence.glue_crossings(scores).set_index("variant")
    assert out.loc["pairwise", "threshold"] == pytest.approx(0.95 * 79.052139, abs=1e-5)
    assert out.loc["pairwise", "step"] == pytest.approx(33_000, abs=500)  # "near 33K"
    assert out.loc["vanilla", "step"] == pytest.approx(66_000, abs=1000)  # "near 66K"
    assert out.loc["vanilla", "step"] / out.loc["pairwise", "step"] == pytest.approx(2.0, abs=0.05)
    assert out.loc["symmetric", "censored"] and math.isnan(out.loc["symmetric", "step"])
    assert out.loc["symmetric", "bound"] == 200_000


def test_glue_from_the_store(loaded, known):
    table = glue.glue_table(loaded.glue).set_index("variant")
    for variant, by_step in known.SCORES.items():
        assert table.loc[variant, "score"] == pytest.approx(by_step[2000] + 0.5)
        assert table.loc[variant, "score_std"] == pytest.approx(math.sqrt(0.5))
        assert table.loc[variant, "wnli"] == pytest.approx(50)
    scores = glue.scores_over_checkpoints(loaded.glue_checkpoints)
    out = convergence.glue_crossings(scores).set_index("variant")
    threshold = 0.95 * (known.SCORES["pairwise"][2000] + 0.5)
    assert out.loc["pairwise", "step"] == pytest.approx(500 + (threshold - 60) / 17 * 500)
    assert out.loc["vanilla", "step"] == pytest.approx(1000 + (threshold - 70) / 8.5 * 1000)
    assert out.loc["symmetric", "censored"]
