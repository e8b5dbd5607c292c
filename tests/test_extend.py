"""A study continued to a larger budget (`symattn extend`): every cell that ran to its budget goes
on in its own MLflow run from its last checkpoint, and its curve equals, step for step, that of a
run given the larger budget from the start; a cell that stopped early is left as it is; a study
whose steps would change (a decaying schedule, a warm-up that follows the budget) is refused in
one line with nothing queued. Real tiny runs, a real worker, a real Optuna journal."""

from __future__ import annotations

import pytest
import yaml
from mlflow.tracking import MlflowClient

from symattn import keys
from symattn.cli import main
from symattn.config import RunConfig, apply_overrides
from symattn.run.pretrain import pretrain
from tests.test_sweep import overrides_to_base

pytestmark = pytest.mark.slow

METRICS = ("train/loss", "val/loss", "train/lr", "train/accuracy", "val/accuracy")


def spec(tmp_path, run_overrides, **optim) -> str:
    base = overrides_to_base(run_overrides)
    base["optim"].update({"max_steps": 40, "schedule": "constant", "warmup_steps": 5, **optim})
    base["eval"]["every_n_steps"] = 10
    base["checkpoint"]["every_n_steps"] = 10
    path = tmp_path / "ext.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "ext",
                "base": base,
                "axes": {"model.attention.variant": ["vanilla", "symmetric", "pairwise"]},
                "stores": {"optuna": str(tmp_path / "optuna.journal")},
                "workers": {"per_device": 2, "heartbeat_seconds": 1, "grace_seconds": 30},
            }
        )
    )
    return str(path)


def history(client, run_id: str, key: str) -> list:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_an_extended_study_continues_each_cell_to_the_curve_of_a_longer_run(tmp_path, run_overrides, capsys):
    journal = str(tmp_path / "optuna.journal")
    assert main(["run", spec(tmp_path, run_overrides), "--devices", "cpu", "--no-figures"]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("ext").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([exp_id], f"tags.{keys.KIND} = 'pretrain'")}
    assert len(runs) == 3
    stopped = runs["tiny-pairwise-lr0.001-s0"].info.run_id  # as a cell stopped below its floor is marked
    client.set_tag(stopped, keys.STOPPED_EARLY_AT, "30")
    capsys.readouterr()

    assert main(["extend", "ext", "--max-steps", "80", "--storage", journal, "--devices", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "study ext: 2 cells go on to 80 steps (1 stopped early: left as they are)" in said
    after = {r.info.run_name: r for r in client.search_runs([exp_id], f"tags.{keys.KIND} = 'pretrain'")}
    assert set(after) == set(runs)  # no second run
    assert after["tiny-pairwise-lr0.001-s0"].info.end_time == runs["tiny-pairwise-lr0.001-s0"].info.end_time
    for name in ("tiny-vanilla-lr0.001-s0", "tiny-symmetric-lr0.001-s0"):
        run = after[name]
        assert run.info.run_id == runs[name].info.run_id and run.info.status == "FINISHED"
        assert run.data.tags[keys.EXTENDED_TO] == "80" and run.data.params["optim.max_steps"] == "40"
        # The same run given 80 steps from the start, in a store of its own.
        (tmp_path / name).mkdir()
        config = yaml.safe_load(
            open(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / name)))
        )
        given = ["optim.max_steps=80", f"tracking.uri=sqlite:///{tmp_path / 'reference.db'}"]
        reference = RunConfig.model_validate(
            apply_overrides(config, [*given, f"checkpoint.dir={tmp_path / name}"])
        )
        whole = pretrain(reference)
        ref_client = MlflowClient(reference.tracking.uri)
        for key in METRICS:
            assert history(client, run.info.run_id, key) == history(ref_client, whole["run_id"], key), (
                name,
                key,
            )
        assert history(client, run.info.run_id, "val/loss")[-1][0] == 80

    # Everything ran to its budget or stopped: extending again to a smaller budget is refused.
    assert main(["extend", "ext", "--max-steps", "60", "--storage", journal, "--devices", "cpu"]) == 2
    assert "--max-steps 60 does not extend cell" in capsys.readouterr().err


@pytest.mark.parametrize(
    "optim, budget, words",
    [
        ({"schedule": "linear"}, "20", "optim.schedule linear decays"),
        ({"warmup_steps": None}, "20", "warm-up follows"),
        ({}, "25", "a budget off that grid ends with an evaluation a longer run would not make"),
    ],
)
def test_a_study_whose_steps_depend_on_its_budget_is_refused_with_nothing_queued(
    tmp_path, run_overrides, capsys, optim, budget, words
):
    path = spec(tmp_path, run_overrides, max_steps=10, **optim)
    assert main(["run", path, "--devices", "cpu", "--no-figures"]) == 0
    journal = tmp_path / "optuna.journal"
    before = journal.read_bytes()
    capsys.readouterr()
    assert main(["extend", "ext", "--max-steps", budget, "--storage", str(journal), "--devices", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    assert journal.read_bytes() == before
