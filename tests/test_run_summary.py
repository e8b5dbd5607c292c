"""What a run records to be browsed like the study: its escape step as summary metrics and a tag
when it ends (as the report computes it), its cell's design values as Optuna params, and MLflow's
source tags on fine-tuning runs. Real MLflow sqlite stores, real Optuna storages, real training."""

import math

import pytest
import yaml
from mlflow.tracking import MlflowClient

from symattn import keys
from symattn.config import load_config
from symattn.errors import RunStopped
from tests.test_finetune import pretrained  # noqa: F401  fixture
from tests.test_pretrain import StopAt
from tests.test_sweep_finetune import spec_path  # noqa: F401  fixture

# A floor the tiny run's curve (5.3 at step 5, 4.6 at step 40) leaves within its 60 steps: the real
# one (about 4.06) takes far longer. The run logs it as its floor, so the analysis reads it too.
EASY_FLOOR = 5.05


def history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def report_escape(uri: str, experiment: str, run_id: str):
    """The report's headline row of the run: `convergence_table` over the frames `symattn figures`
    reads, with the floors it uses."""
    from analysis.convergence import convergence_table
    from analysis.mlflow_runs import load_runs
    from analysis.report import data_floors
    from symattn.convergence import MARGINS, escape_definition

    frames = load_runs(experiment, uri)
    table = convergence_table(frames.curves, frames.runs, data_floors(frames.runs))
    [row] = table[
        (table["run_id"] == run_id) & (table["definition"] == escape_definition(MARGINS[0]))
    ].itertuples()
    return row


def test_a_run_records_its_escape_censored_when_cut_and_exact_once_it_left(run_overrides, monkeypatch):
    from symattn.data.pretraining import PretrainingData
    from symattn.run.pretrain import pretrain

    monkeypatch.setattr(PretrainingData, "evaluated_floor", lambda self, batches: EASY_FLOOR)
    over = run_overrides + ["eval.every_n_steps=5", "optim.max_steps=60", "checkpoint.every_n_steps=5"]
    cfg = load_config(None, over)
    client = MlflowClient(cfg.tracking.uri)

    # Cut (Ctrl-C) at step 17, before it leaves the floor (its last evaluation: step 15): censored,
    # and no `escape/step` at all.
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[StopAt(17)])
    [run] = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "KILLED" and float(run.data.params[keys.VAL_FLOOR]) == EASY_FLOOR
    assert keys.ESCAPE_STEP not in run.data.metrics
    assert run.data.metrics[keys.ESCAPE_CENSORED] == 1.0 and run.data.metrics[keys.ESCAPE_LOW] == 15.0
    assert run.data.tags[keys.ESCAPE] == "not reached (>15)"
    cut = report_escape(cfg.tracking.uri, "test", run_id)
    assert cut.censored and cut.status == "not reached" and cut.low == 15.0

    # Resumed to the end: its whole curve (the steps before the cut included) has an exact escape,
    # the very step the report computes.
    assert pretrain(cfg, resume=True)["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in history(client, run_id, keys.VAL_LOSS)] == list(range(5, 61, 5))
    row = report_escape(cfg.tracking.uri, "test", run_id)
    assert not row.censored and 15 < row.step < 60
    assert history(client, run_id, keys.ESCAPE_STEP) == [(60, pytest.approx(row.step))]
    assert history(client, run_id, keys.ESCAPE_LOW) == [(17, 15.0), (60, pytest.approx(row.step))]
    assert history(client, run_id, keys.ESCAPE_CENSORED) == [(17, 1.0), (60, 0.0)]
    assert run.data.tags[keys.ESCAPE] == f"{row.step:,.0f}"
    # The run table sorts by it.
    [found] = client.search_runs([run.info.experiment_id], filter_string=f"metrics.`{keys.ESCAPE_STEP}` < 60")
    assert found.info.run_id == run_id


def test_a_censored_end_overwrites_an_exact_looking_step_of_an_earlier_end(tmp_path):
    from symattn.run.record import record_escape
    from symattn.tracking.store import RunTracker, experiment_id, open_store

    client = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = RunTracker.create(client, experiment_id(client, "t"), "r", {}, {})
    tracker.log(10, {keys.ESCAPE_STEP: 10.0})  # as if an earlier end had found an exact step
    for step, loss in zip(range(10, 60, 10), (6.0, 5.9, 5.9, 5.8, 5.85)):
        tracker.log(step, {keys.VAL_LOSS: loss})
    tracker.flush()
    record_escape(tracker, 6.0, 50)  # never 0.25 below 6.0
    metrics = client.get_run(tracker.run_id).data.metrics
    assert math.isnan(metrics[keys.ESCAPE_STEP]) and metrics[keys.ESCAPE_CENSORED] == 1.0
    assert metrics[keys.ESCAPE_LOW] == 50.0
    assert client.get_run(tracker.run_id).data.tags[keys.ESCAPE] == "not reached (>50)"


def test_masked_accuracy_counts_the_targets_whose_score_is_the_top_one():
    import torch

    from symattn.run.mlm import _correct_and_masked

    gen = torch.Generator().manual_seed(0)
    labels = torch.full((4, 16), -100)
    chosen = torch.rand(4, 16, generator=gen) < 0.3
    labels[chosen] = torch.randint(0, 7, (int(chosen.sum()),), generator=gen)
    logits = torch.randn(int(chosen.sum()), 7, generator=gen)  # one row per masked position, in order
    correct, masked = _correct_and_masked(logits, labels)
    expected = int((logits.argmax(-1) == labels[chosen]).sum())
    assert 0 < expected < int(chosen.sum())  # a test that can tell right from wrong rows
    assert (int(correct), int(masked)) == (expected, int(chosen.sum()))
    # Nothing masked: nothing counted.
    none = _correct_and_masked(torch.zeros(0, 7), torch.full((2, 3), -100))
    assert (int(none[0]), int(none[1])) == (0, 0)


# --- the design as Optuna params -----------------------------------------------------------------


def _design_spec(tmp_path, run_overrides, seeds=(0, 1)):
    from symattn.sweep.spec import load_spec
    from tests.test_sweep import overrides_to_base

    base = overrides_to_base(run_overrides)
    base["checkpoint"]["keep"] = [20]
    spec = {
        "name": "design",
        "base": base,
        "axes": {
            "seed": list(seeds),
            "optim.betas": [[0.9, 0.98], [0.9, 0.999]],
            "model.attention.variant": ["vanilla", "pairwise"],
        },
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "finetune": {"tasks": ["sst2"], "seeds": [1, 2], "config": {"max_steps": 3}},
    }
    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_spec(path)


def test_queued_cells_carry_their_design_values_as_params_of_one_distribution(run_overrides, tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.search_space import intersection_search_space

    from symattn.sweep import optuna_internals as internals
    from symattn.sweep.design import expand
    from symattn.sweep.queue import queue
    from symattn.sweep.records import cell_attrs
    from symattn.sweep.retries import retry
    from symattn.sweep.storage import open_storage

    spec = _design_spec(tmp_path, run_overrides)
    storage = open_storage(str(tmp_path / "optuna.journal"))
    # A study queued before trials had params: its trial stays as it was, and valid.
    first = expand(spec)[0]
    old = optuna.create_study(study_name="design", storage=storage, direction="minimize")
    old.enqueue_trial({}, user_attrs=cell_attrs(first.config, first.name, first.index))
    assert queue(spec).added == 8 - 1 + 8 * 2  # the pre-training cells but the old one, 2 seeds each

    study = optuna.load_study(study_name="design", storage=storage)
    trials = study.trials
    assert trials[0].params == {} and all(t.state == optuna.trial.TrialState.WAITING for t in trials)
    by_name = {t.user_attrs["name"]: t for t in trials[1:]}
    cell = by_name["tiny-pairwise-lr0.001-s1-betas" + expand(spec)[7].name.rsplit("-betas", 1)[1]]
    assert cell.params == {"seed": 1, "optim.betas": "[0.9, 0.999]", "model.attention.variant": "pairwise"}
    finetune = by_name[f"{cell.user_attrs['name']}-step20-sst2-ft2"]
    assert finetune.params == {**cell.params, "task": "sst2", "finetune_seed": 2, "checkpoint_step": 20}
    # One distribution per param across the study: Optuna's samplers and importance see them all.
    for name in ("seed", "optim.betas", "model.attention.variant", "task", "checkpoint_step"):
        having = [t.distributions[name] for t in trials if name in t.params]
        assert len(having) == (16 if name in ("task", "checkpoint_step") else 23) and set(having) == {
            having[0]
        }
    assert cell.distributions["model.attention.variant"] == CategoricalDistribution(["vanilla", "pairwise"])
    assert cell.distributions["seed"] == IntDistribution(0, 1)
    # As samplers and importance read the study once its trials are complete.
    finished = [
        optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=1.0) for t in trials
    ]
    assert set(intersection_search_space(finished[1:9])) == {"seed", "optim.betas", "model.attention.variant"}
    frame = study.trials_dataframe()
    assert {"params_seed", "params_model.attention.variant", "params_task", "params_checkpoint_step"} <= set(
        frame.columns
    )

    # A worker's retry is enqueued with the values only: it gets its params back when it is taken.
    taken = internals.pop_waiting(study, lambda t: t.number == cell.number)
    internals.finish(internals.storage_of(study), internals.trial_id(taken), optuna.trial.TrialState.FAIL)
    retry(study, taken, max_retries=3, why="test")
    again = internals.pop_waiting(study, lambda t: t.user_attrs.get("retry_of") == cell.number)
    assert again.params == cell.params and again.distributions == cell.distributions

    # Queued again with a new seed: the new cells only, the seed's range widened to hold it.
    assert queue(_design_spec(tmp_path, run_overrides, seeds=(0, 1, 2))).added == 4 + 4 * 2
    newest = optuna.load_study(study_name="design", storage=storage).trials[-1]
    assert newest.params["seed"] == 2 and newest.distributions["seed"] == IntDistribution(0, 2)
    assert queue(_design_spec(tmp_path, run_overrides, seeds=(0, 1, 2))).added == 0


# --- fine-tuning runs: MLflow's source tags; a sweep's fine-tuning trials: params and run id ----


def _assert_sourced(tags, command):
    assert tags[keys.SOURCE_NAME] == command and tags[keys.SOURCE_TYPE] == keys.LOCAL_SOURCE
    assert tags[keys.GIT_COMMIT]
    if tags[keys.GIT_COMMIT] != "unknown":
        assert tags[keys.GIT_COMMIT].startswith(tags[keys.SOURCE_COMMIT])


def test_a_finetune_run_names_its_source(pretrained):  # noqa: F811  the imported fixture
    from symattn.finetune.run import finetune
    from symattn.finetune.source import run_sources
    from tests.test_finetune import _cfg

    client = MlflowClient(pretrained["uri"])
    [result] = finetune(
        client, run_sources(client, pretrained["run_id"], [20]), ["sst2"], [1], _cfg(pretrained)
    )
    _assert_sourced(client.get_run(result["run_id"]).data.tags, "symattn finetune")


def test_a_sweeps_finetune_cells_are_sourced_and_their_trials_carry_params_and_run_id(spec_path, tmp_path):  # noqa: F811
    import optuna

    from symattn.sweep.progress import RUN_ID
    from symattn.sweep.queue import queue
    from symattn.sweep.spec import load_spec
    from symattn.sweep.storage import open_storage
    from symattn.sweep.worker import work
    from tests.test_sweep_finetune import STUDY

    raw = yaml.safe_load(spec_path.read_text())
    raw["finetune"].update(seeds=[3], steps=[20])
    raw["finetune"]["config"]["max_steps"] = 10
    spec_path.write_text(yaml.safe_dump(raw))
    queue(load_spec(spec_path))
    storage = str(tmp_path / "optuna.journal")
    assert [state for _, state in work(STUDY, storage, "cpu")] == ["COMPLETE", "COMPLETE"]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    pre, ft = optuna.load_study(study_name=STUDY, storage=open_storage(storage)).trials
    assert pre.params == {"model.attention.variant": "vanilla"}
    assert ft.params == {**pre.params, "task": "sst2", "finetune_seed": 3, "checkpoint_step": 20}
    finetune_run = client.get_run(ft.user_attrs[RUN_ID])
    assert finetune_run.data.tags[keys.KIND] == keys.FINETUNE
    assert finetune_run.data.tags[keys.PARENT_RUN_ID] == pre.user_attrs[RUN_ID]
    _assert_sourced(finetune_run.data.tags, "symattn work")
    # Its pre-training cell's run ended with its escape recorded: 20 steps stay on the floor.
    pretrain_run = client.get_run(pre.user_attrs[RUN_ID])
    assert pretrain_run.data.tags[keys.ESCAPE] == "not reached (>20)"
    assert pretrain_run.data.metrics[keys.ESCAPE_CENSORED] == 1.0


def test_a_run_records_the_codes_commit_wherever_its_stores_are(run_overrides, tmp_path, monkeypatch):
    """SYMATTN_HOME moves the stores, not the code: a run's commit is the package checkout's."""
    import subprocess

    from mlflow.tracking import MlflowClient

    from symattn import paths
    from symattn.config import load_config
    from symattn.run.pretrain import pretrain
    from symattn.tracking import store as tracking

    checkout = paths.code_checkout()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True)
    monkeypatch.setenv("SYMATTN_HOME", str(tmp_path))  # not a git checkout
    cfg = load_config(None, run_overrides + ["optim.max_steps=2"])
    tags = MlflowClient(cfg.tracking.uri).get_run(pretrain(cfg)["run_id"]).data.tags
    assert tags[keys.SOURCE_COMMIT] == head.stdout.strip()
    assert tags[keys.GIT_COMMIT].removesuffix("-dirty") == head.stdout.strip()

    monkeypatch.setattr(tracking, "code_checkout", lambda: None)  # an installed package
    tags = tracking.source_tags("symattn train")
    assert tags[keys.GIT_COMMIT] == "not a git checkout" and keys.SOURCE_COMMIT not in tags
