"""A study's analysis is stated before its cells run: the spec's `analysis:` block is checked against
the design, recorded in the study when it is queued, and fixed once a cell has started; a changed
block is refused in one line, or recorded under a new name as a second (exploratory) analysis. On a
real Optuna journal, through the real `symattn queue`."""

from __future__ import annotations

import copy

import optuna
import pytest
import yaml

from symattn.cli import main
from symattn.sweep.analysis_plan import pre_registered, registered
from symattn.sweep.storage import open_storage
from tests.test_sweep import overrides_to_base

PLAN = {
    "comparisons": [["symmetric", "vanilla"]],
    "secondary": [{"measure": "loss_at_step", "step": 20}],
}


@pytest.fixture
def write_spec(tmp_path, run_overrides):
    base = overrides_to_base(run_overrides)

    def write(analysis: dict | None = None) -> str:
        spec = {
            "name": "planned",
            "base": base,
            "axes": {"seed": [0, 1], "model.attention.variant": ["vanilla", "symmetric"]},
            "stores": {"optuna": str(tmp_path / "optuna.journal")},
            **({"analysis": analysis} if analysis is not None else {}),
        }
        path = tmp_path / "planned.yaml"
        path.write_text(yaml.safe_dump(spec))
        return str(path)

    return write


def study(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="planned", storage=open_storage(str(tmp_path / "optuna.journal")))


def start_a_cell(tmp_path) -> None:
    study(tmp_path).ask()  # a worker takes the first waiting cell: it is RUNNING


@pytest.mark.parametrize(
    "change, words",
    [
        ({"comparisons": [["pairwise", "vanilla"]]}, "names the arm 'pairwise', which no cell has"),
        ({"comparisons": [["vanilla", "vanilla"]]}, "with itself"),
        ({"comparisons": [["symmetric", "vanilla"], ["vanilla", "symmetric"]]}, "a pair twice"),
        ({"secondary": [{"measure": "loss_at_step", "step": 15}]}, "evaluates every 10 steps up to 20"),
        ({"secondary": [{"measure": "loss_at_step", "step": 30}]}, "evaluates every 10 steps up to 20"),
        ({"correction": "fdr"}, "correction"),
        ({"equivalence": {"hazard_ratio": 0.8}}, "hazard_ratio"),
    ],
)
def test_an_analysis_the_design_cannot_carry_is_refused_before_anything_is_written(
    write_spec, tmp_path, capsys, change, words
):
    assert main(["queue", write_spec({**PLAN, **change})]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "optuna.journal").exists()


def test_the_analysis_is_recorded_when_queued_and_fixed_once_a_cell_started(write_spec, tmp_path, capsys):
    assert main(["queue", write_spec(PLAN)]) == 0
    [(name, first)] = registered(study(tmp_path)).items()
    assert name == "primary" and pre_registered(first)
    assert first["plan"]["correction"] == "holm" and first["plan"]["endpoint"] == {
        "measure": "escape",
        "margin": 0.25,
    }

    # Before any cell ran, the block may still change: nothing has been seen.
    changed = copy.deepcopy(PLAN)
    changed["secondary"][0]["step"] = 10
    assert main(["queue", write_spec(changed)]) == 0
    assert pre_registered(registered(study(tmp_path))["primary"])

    start_a_cell(tmp_path)
    queued_again = main(["queue", write_spec(changed)])  # the same block: nothing to say
    assert queued_again == 0 and registered(study(tmp_path))["primary"]["plan"]["secondary"][0]["step"] == 10

    journal = (tmp_path / "optuna.journal").read_bytes()
    capsys.readouterr()
    assert main(["queue", write_spec(PLAN)]) == 2  # changed after a cell started: refused
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was stated before its cells ran and 1 have started since" in err
    assert (tmp_path / "optuna.journal").read_bytes() == journal  # nothing written

    # Under a new name it is a second analysis of the same runs, recorded as stated after 1 cell started.
    assert main(["queue", write_spec({**PLAN, "name": "after-the-fact"})]) == 0
    analyses = registered(study(tmp_path))
    assert sorted(analyses) == ["after-the-fact", "primary"]
    assert pre_registered(analyses["primary"]) and not pre_registered(analyses["after-the-fact"])
    assert analyses["after-the-fact"]["cells_started"] == 1


def test_a_spec_without_an_analysis_keeps_its_digest(write_spec):
    """Specs written before the block existed keep the identity they had (pinned)."""
    from symattn.sweep.spec import load_spec, spec_digest

    assert spec_digest(load_spec("experiments/quick.yaml")) == "4beed4b38f76"


def test_a_design_that_cannot_reach_its_level_is_queued_with_a_warning(write_spec, capsys):
    """Two matched groups: an exact sign test gives p = 0.5 at best, so the warning says so."""
    assert main(["queue", write_spec(PLAN)]) == 0
    err = capsys.readouterr().err
    assert "2 matched groups give an exact p of 0.5 at best" in err and "add seeds" in err
    assert main(["queue", write_spec(PLAN), "--dry-run"]) == 0
    assert "no comparison can reach p < 0.05" in capsys.readouterr().err
