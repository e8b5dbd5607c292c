"""A study's stated analysis, computed first in its report, as stated: escape as a time to event,
compared within matched groups, p-values adjusted over the comparisons; its wording decided by
code; every per-run value written beside the table. On a real sqlite store, through the real
`symattn figures`."""

import json
import math

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import survival, wording
from analysis.cli import main
from symattn import keys
from symattn.sweep.analysis_plan import AnalysisPlan
from symattn.tracking.store import experiment_id
from tests.analysis.conftest import matched_group


def comparison(won: int, lost: int, groups: int = 6, p: float = 0.69) -> survival.Comparison:
    hr = won / lost if lost else math.inf
    return survival.Comparison(
        "symmetric", "vanilla", groups, won, lost, p, 0.0, hr, 0.2, 6.0, survival.EXACT
    )


@pytest.mark.parametrize("p", [0.69, 0.2, 0.051, 1.0])
def test_a_result_that_is_not_significant_never_reads_as_no_effect(p):
    text = wording.escape_verdict(comparison(4, 2, p=p), p, 0.05, "holm", 3)
    assert "no difference detected" in text
    assert not any(phrase in text for phrase in wording.FORBIDDEN)
    assert "4 and vanilla in 2 of 6 decided groups" in text and f"p = {p:.3g}" in text  # its n and p
    assert "[0.2, 6]" in text  # and its interval


def test_a_significant_result_says_its_direction_and_an_equivalence_needs_a_stated_margin():
    assert "left the plateau sooner than vanilla" in wording.escape_verdict(
        comparison(6, 0, p=0.03), 0.03, 0.05, "none", 1
    )
    narrow = survival.Comparison("symmetric", "vanilla", 40, 20, 20, 0.9, 0.0, 1.0, 0.8, 1.25, survival.WALD)
    assert "no difference detected" in wording.escape_verdict(narrow, 0.9, 0.05, "holm", 1)
    assert "equivalent within a hazard ratio of 1.5" in wording.escape_verdict(
        narrow, 0.9, 0.05, "holm", 1, 1.5
    )
    assert "no difference detected" in wording.escape_verdict(
        narrow, 0.9, 0.05, "holm", 1, 1.2
    )  # wider than the margin


def stated_store(folder, seeds) -> MlflowClient:
    """A store with a study run whose analysis is stated (as `symattn queue` records it and a
    worker logs it), and matched groups of `seeds` whose symmetric run leaves the plateau before
    vanilla's, but in the group of seed 5, where it never does."""
    folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp_id = experiment_id(client, "stated")
    study_run = client.create_run(exp_id, tags={keys.KIND: keys.STUDY_RUN, keys.STUDY: "stated"}).info.run_id
    plan = AnalysisPlan.model_validate(
        {
            "comparisons": [["symmetric", "vanilla"], ["pairwise", "vanilla"]],
            "secondary": [{"measure": "loss_at_step", "step": 300}],
        }
    )
    registration = {"plan": plan.model_dump(mode="json"), "digest": plan.digest(), "registered_at": 0.0}
    (folder / keys.ANALYSES_ARTIFACT).write_text(
        json.dumps({"primary": {**registration, "cells_started": 0}})
    )
    client.log_artifact(study_run, str(folder / keys.ANALYSES_ARTIFACT))
    for seed in seeds:
        escapes = {"symmetric": None} if seed == 5 else {}
        matched_group(client, exp_id, seed=seed, study="stated", parent=study_run, escapes=escapes)
    client.set_terminated(study_run)
    return client


@pytest.fixture
def stated_study(tmp_path):
    return stated_store(tmp_path / "store", range(6))


def test_the_stated_analysis_comes_first_and_everything_else_is_exploratory(stated_study, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["figures", "stated", "--tracking-uri", stated_study.tracking_uri, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    first = text.index("Analysis 'primary' (stated before any cell ran: pre-registered)")
    assert first < text.index("Exploratory (not stated in advance)") < text.index("Escape")
    # symmetric first in 5 of 6 groups (in the sixth it never escaped: vanilla first); pairwise in
    # 6 of 6. Holm over the two comparisons keeps pairwise's exact p of 0.031 from reading as
    # significant at 0.05: both say "no difference detected".
    table = pd.read_csv(out / "analysis_primary.csv")
    escape = table[table["endpoint"] == "escape_0.25"].set_index("arm")
    assert escape.loc["symmetric", ["arm_first", "reference_first", "decided"]].tolist() == [5, 1, 6]
    assert escape.loc["pairwise", ["arm_first", "reference_first", "decided"]].tolist() == [6, 0, 6]
    assert escape.loc["symmetric", "p"] == pytest.approx(14 / 64)
    assert escape.loc["pairwise", "p"] == pytest.approx(2 / 64)
    assert escape.loc["pairwise", "p_adjusted"] == pytest.approx(4 / 64)
    assert escape.loc["symmetric", "p_adjusted"] == pytest.approx(14 / 64)
    for arm in ("symmetric", "pairwise"):
        assert escape.loc[arm, "verdict"].startswith(
            f"{arm} vs vanilla: no difference detected at level 0.05"
        )
    assert escape.loc["pairwise", "interval"] == survival.EXACT and math.isinf(
        escape.loc["pairwise", "hr_high"]
    )
    # every run's values beside the table, each censored or not
    runs = pd.read_csv(out / "analysis_primary_runs.csv")
    assert len(runs) == 18 and runs["escaped"].sum() == 17
    censored = runs[~runs["escaped"]].iloc[0]
    assert censored["arm"] == "symmetric" and censored["time"] == 1000  # at its last evaluation
    assert {"survival_primary.png", "hazard_ratios_primary.png"} <= {p.name for p in out.iterdir()}
    md = (out / "analysis_primary.md").read_text()
    row = next(
        line for line in md.splitlines() if line.startswith("| escape_0.25 ") and "| pairwise " in line
    )
    assert [c.strip() for c in row.split("|")][4:8] == ["6", "6", "6", "0"]  # counts read as counts
    assert "\n- pairwise vs vanilla: no difference detected" in md  # each verdict below the table
    secondary = table[table["endpoint"] == "loss at step 300"]
    assert len(secondary) == 2 and secondary["correction"].tolist() == ["holm over 2"] * 2


@pytest.mark.slow
def test_the_export_regenerates_the_analysis_and_parts_of_a_study_merge_into_one(stated_study, tmp_path):
    whole = tmp_path / "whole"
    assert main(["figures", "stated", "--tracking-uri", stated_study.tracking_uri, "--out", str(whole)]) == 0
    again = tmp_path / "again"
    assert main(["figures", "stated", "--from-export", str(whole / "export"), "--out", str(again)]) == 0
    # The same study run on two machines: each part's report exports its runs; the exports merge.
    parts = []
    for k, seeds in enumerate((range(3), range(3, 6))):
        client = stated_store(tmp_path / f"machine{k}", seeds)
        out = tmp_path / f"part{k}"
        assert main(["figures", "stated", "--tracking-uri", client.tracking_uri, "--out", str(out)]) == 0
        parts += ["--from-export", str(out / "export")]
    merged = tmp_path / "merged"
    assert main(["figures", "stated", *parts, "--out", str(merged)]) == 0
    expected = pd.read_csv(whole / "analysis_primary.csv")
    for folder in (again, merged):
        got = pd.read_csv(folder / "analysis_primary.csv")
        pd.testing.assert_frame_equal(got, expected)
        assert (folder / "survival_primary.png").exists()
    key = ["arm", "seed"]
    runs = [
        pd.read_csv(f / "analysis_primary_runs.csv").drop(columns=["run_id"]).sort_values(key)
        for f in (whole, merged)
    ]
    pd.testing.assert_frame_equal(*(r.reset_index(drop=True) for r in runs))


def test_a_verdict_says_when_its_n_could_never_reach_the_level():
    """Six groups and Holm over three comparisons: the smallest adjusted p is 3 x 2/64 = 0.094, so
    "no difference detected" must say that the design could not have detected one."""
    from analysis.preregistered import smallest_adjusted_p

    smallest = smallest_adjusted_p(6, 3, "holm")
    assert smallest == pytest.approx(6 / 64)
    text = wording.escape_verdict(comparison(6, 0, p=2 / 64), smallest, 0.05, "holm", 3, None, smallest)
    assert "could not reach p < 0.05 after holm over 3 comparisons (smallest possible 0.0938)" in text
    reachable = smallest_adjusted_p(6, 1, "holm")
    assert "could not reach" not in wording.escape_verdict(
        comparison(4, 2, p=0.69), 0.69, 0.05, "holm", 1, None, reachable
    )


def test_runs_that_depart_from_the_stated_design_make_the_analysis_exploratory():
    from analysis.preregistered import Result, departures, header

    stated = pd.Timestamp("2026-01-02", tz="UTC")
    registration = {"registered_at": stated.timestamp(), "cells": ["a", "b"], "cells_started": 0}
    runs = pd.DataFrame(
        {
            "start_time": [stated + pd.Timedelta(hours=1)] * 2,
            keys.CELL: ["a", "b"],
            keys.EXTENDED_TO: [None, None],
        }
    )
    assert departures(registration, runs) == []
    late = runs.assign(**{keys.CELL: ["a", "c"], keys.EXTENDED_TO: [8000.0, None]})
    late.loc[0, "start_time"] = stated - pd.Timedelta(hours=1)
    said = departures(registration, late)
    assert said == [
        "1 runs started before it was stated",
        "1 runs are of cells it was not stated for (added or changed since)",
        "1 runs were extended past the budget it was stated for",
    ]
    plan = AnalysisPlan.model_validate({"comparisons": [["symmetric", "vanilla"]]}).model_dump(mode="json")
    result = Result("primary", {**registration, "plan": plan}, *(pd.DataFrame(),) * 3)
    result.departures = said
    assert not result.pre_registered and "exploratory" in header(result)


def test_a_failed_run_is_left_out_and_said_and_an_unconfirmed_crossing_is_censored():
    from analysis.preregistered import _event, _left_out
    from symattn.convergence import PROVISIONAL, Convergence

    table = pd.DataFrame(
        {
            "run_name": ["v0", "s0", "s1"],
            "state": ["FINISHED", "FAILED", "FINISHED"],
            "time": [400.0, 300.0, math.nan],
        }
    )
    usable, notes = _left_out(table)
    assert usable["run_name"].tolist() == ["v0"]
    assert notes == ["left out, FAILED: s0", "left out, no validation curve or floor: s1"]
    crossing = Convergence(math.nan, 1000.0, status=PROVISIONAL, low=900.0, high=math.inf)
    assert _event(crossing, 1000.0) == (900.0, False)  # censored where it crossed, not escaped


def test_a_study_as_it_stood_at_a_step_censors_what_came_after(stated_study, tmp_path, capsys):
    """`--until`: an extended study as at its first budget. Vanilla leaves the plateau at step 400
    and symmetric at 300 in these runs: as they stood at step 300, neither had left it."""
    out = tmp_path / "figures"
    args = ["figures", "stated", "--tracking-uri", stated_study.tracking_uri, "--out", str(out)]
    assert main([*args, "--until", "300"]) == 0
    assert capsys.readouterr().out.count("As the runs stood at step 300") == 1
    runs = pd.read_csv(out / "analysis_primary_runs.csv")
    assert runs["time"].max() == 300
    assert not runs[runs["arm"].isin(["vanilla", "symmetric"])]["escaped"].any()
    from symattn.cli import main as symattn

    assert symattn([*args, "--until", "0"]) == 2  # a step is a positive count, refused in a line


def test_as_at_cuts_curves_and_undoes_what_happened_later():
    from analysis.frames import Frames, as_at

    start = pd.Timestamp("2026-01-01", tz="UTC")
    runs = pd.DataFrame(
        {
            "run_id": ["a", "b"],
            keys.STOPPED_EARLY_AT: [250.0, 900.0],
            "start_time": [start, start],
            "end_time": [start + pd.Timedelta(minutes=5), start + pd.Timedelta(minutes=50)],
        }
    )
    curves = pd.DataFrame(
        {"run_id": ["a", "a", "b", "b"], "metric": "val/loss", "step": [100, 200, 200, 900], "value": 6.0}
    )
    cut = as_at(Frames(runs, curves), 300)
    assert cut.curves["step"].max() == 200 and len(cut.curves) == 3
    assert cut.runs[keys.STOPPED_EARLY_AT].tolist()[0] == 250.0 and pd.isna(
        cut.runs[keys.STOPPED_EARLY_AT][1]
    )
    assert cut.runs["end_time"].notna().tolist() == [True, False]  # b went on: no wall-clock at 300
