"""What a user browsing the MLflow UI sees, on a real sqlite store: experiments of kind model
development with a description, readable run names, source tags, a dataset input per pre-training
run, and one parent run per sweep study."""

import threading

import pytest
import yaml
from mlflow.tracking import MlflowClient

from symattn import keys
from symattn.config import apply_overrides, load_config
from symattn.errors import RunStopped
from symattn.naming import cell_name
from tests.test_pretrain import StopAt


def kind_and_note(client, name):
    tags = client.get_experiment_by_name(name).tags
    return tags.get(keys.EXPERIMENT_KIND), tags.get(keys.NOTE)


def test_a_standalone_run_is_named_sourced_and_has_its_dataset_once(run_overrides, tmp_path):
    from symattn.run.pretrain import pretrain
    from symattn.run.record import STANDALONE_NOTE

    over = run_overrides + ["model.attention.variant=pairwise", "optim.max_steps=20", "eval.every_n_steps=10"]
    cfg = load_config(None, over)
    client = MlflowClient(cfg.tracking.uri)
    client.search_experiments()  # the store, and an experiment made before: it gets its kind now
    client.create_experiment("test", artifact_location=(tmp_path / "artifacts").as_uri())
    assert kind_and_note(client, "test") == (None, None)
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[StopAt(10)])
    run_id = pretrain(cfg, resume=True)["run_id"]  # a resumed run logs no second input

    assert kind_and_note(client, "test") == (keys.CUSTOM_MODEL_DEVELOPMENT, STANDALONE_NOTE)
    run = client.get_run(run_id)
    assert run.info.run_name == cell_name(cfg, {}) == "tiny-pairwise-lr0.001-s0"
    tags = run.data.tags
    assert tags[keys.SOURCE_NAME] == "symattn train" and tags[keys.SOURCE_TYPE] == "LOCAL"
    if tags[keys.GIT_COMMIT] != "unknown":  # one value: the suite's tag also says whether it was dirty
        assert tags[keys.GIT_COMMIT].startswith(tags[keys.SOURCE_COMMIT])
    [given] = run.inputs.dataset_inputs
    assert given.dataset.name == "corpus"  # the folder the corpus was read from
    assert tags[keys.DATA_FINGERPRINT].startswith(given.dataset.digest) and len(given.dataset.digest) == 36
    assert [(t.key, t.value) for t in given.tags] == [(keys.DATASET_CONTEXT, "train")]
    # A run named in its config keeps that name.
    named = pretrain(load_config(None, over + ["tracking.run_name=mine", "optim.max_steps=5"]))
    assert client.get_run(named["run_id"]).info.run_name == "mine"


def spec_file(tmp_path, run_overrides, axes) -> str:
    base = apply_overrides({}, run_overrides)
    base["optim"]["max_steps"] = 10
    base["eval"]["every_n_steps"] = 5
    base["speed"].pop("threads", None)
    spec = {
        "name": "browse",
        "description": "a tiny study",
        "base": base,
        "axes": axes,
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "workers": {"heartbeat_seconds": 1, "grace_seconds": 10},
    }
    path = tmp_path / "browse.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_a_sweep_has_one_study_run_that_parents_its_cells(run_overrides, tmp_path):
    from analysis.mlflow_runs import load_runs
    from symattn.sweep.queue import queue
    from symattn.sweep.spec import load_spec
    from symattn.sweep.worker import work

    axes = {"model.attention.variant": ["vanilla", "pairwise"]}
    spec = load_spec(spec_file(tmp_path, run_overrides, axes))
    queue(spec)
    storage = str(tmp_path / "optuna.journal")
    assert sorted(state for _, state in work("browse", storage, "cpu")) == ["COMPLETE", "COMPLETE"]
    assert work("browse", storage, "cpu") == []  # a second worker finds the same study run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    kind, note = kind_and_note(client, "browse")
    assert kind == keys.CUSTOM_MODEL_DEVELOPMENT
    assert "`browse`: a tiny study" in note and '`model.attention.variant`: "vanilla", "pairwise"' in note

    exp_id = client.get_experiment_by_name("browse").experiment_id
    [study] = client.search_runs([exp_id], filter_string="tags.kind = 'study'")
    assert study.info.run_name == "browse" and study.info.status == "FINISHED"
    assert study.data.params == {"axis.model.attention.variant": '["vanilla", "pairwise"]'}
    assert study.data.tags[keys.STUDY] == "browse" and study.data.tags[keys.SOURCE_NAME] == "symattn work"
    spec_path = client.download_artifacts(study.info.run_id, "spec.yaml", str(tmp_path / "got"))
    assert yaml.safe_load(open(spec_path))["axes"] == axes

    cells = client.search_runs([exp_id], filter_string="tags.kind = 'pretrain'")
    assert sorted(r.info.run_name for r in cells) == ["tiny-pairwise-lr0.001-s0", "tiny-vanilla-lr0.001-s0"]
    for run in cells:
        assert run.data.tags[keys.PARENT_RUN_ID] == run.data.tags[keys.STUDY_RUN_ID] == study.info.run_id
        assert run.data.tags[keys.SOURCE_NAME] == "symattn work"
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["corpus"]
    # The analysis reads the cells' runs, not the study run.
    assert set(load_runs("browse", uri).runs["run_id"]) == {r.info.run_id for r in cells}


@pytest.mark.parametrize("store", ["sqlite", "remote"])
def test_workers_starting_at_once_end_with_one_study_run(tmp_path, monkeypatch, store):
    from symattn.tracking import store as tracking

    if store == "remote":  # no lock file: each creator keeps the oldest run and deletes its own
        monkeypatch.setattr(tracking, "sqlite_path", lambda uri: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.experiment_id(tracking.open_store(uri), "race")
    match = {keys.KIND: keys.STUDY_RUN, keys.STUDY: "race"}
    start, found = threading.Barrier(4), []

    def worker():
        client = MlflowClient(uri)
        start.wait()
        found.append(tracking.find_or_create_run(client, exp_id, match, "race", {}))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [active] = MlflowClient(uri).search_runs([exp_id])
    assert found == [active.info.run_id] * 4
