"""Checkpoints in the MLflow store (`checkpoint.upload`): a run stopped on one machine resumes on
another from its stored checkpoint, and its kept weights are fetched there, each file checked
against its sha256. A sqlite store stands in for the server here (the same artifact calls);
tests/test_multi_machine.py runs them through a real `mlflow server`."""

import shutil

import pytest
from mlflow.tracking import MlflowClient

from symattn.config import load_config
from symattn.data.cache import sha256_file
from symattn.errors import RunStopped
from symattn.run.pretrain import pretrain
from symattn.run.stored_checkpoints import stored_checkpoint, uploads
from tests.test_pretrain import StopAt, client_of, history

KEEP = ["checkpoint.keep=[0, 20, 40]", "checkpoint.every_n_steps=10"]


def artifacts(client: MlflowClient, run_id: str, folder: str) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run_id, folder))


def test_a_run_stopped_here_resumes_elsewhere_from_its_stored_checkpoint(
    run_overrides, tmp_path, monkeypatch
):
    over = run_overrides + KEEP
    whole = pretrain(load_config(None, over + ["tracking.experiment=whole"]))
    cfg = load_config(None, over + ["tracking.experiment=parts", "checkpoint.upload=true"])
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[StopAt(25)])
    client = client_of(cfg)
    [run] = client.search_runs([client.get_experiment_by_name("parts").experiment_id])
    run_id = run.info.run_id
    record = stored_checkpoint(run)
    assert record["step"] == 25 and record["artifact"] == "checkpoint/step-0000025/last.ckpt"
    # only the checkpoint in force stays in the store: those of steps 10 and 20 were replaced
    assert artifacts(client, run_id, "checkpoint") == ["checkpoint/step-0000025"]
    assert artifacts(client, run_id, "kept") == ["kept/step-0000000.pt", "kept/step-0000020.pt"]

    # Another machine: none of this one's checkpoint folder.
    shutil.rmtree(tmp_path / "checkpoints")
    resumed = pretrain(cfg, resume=True)
    assert resumed["run_id"] == run_id
    for key in ("train/loss", "val/loss", "train/accuracy"):
        assert history(cfg, run_id, key) == history(cfg, whole["run_id"], key), key  # step for step, once
    assert stored_checkpoint(client.get_run(run_id))["step"] == 40

    # Its kept weights, from a third home with no checkpoint folder: fetched, sha256 checked.
    from symattn.finetune.source import run_sources
    from symattn.tracking.store import kept_checkpoints

    shutil.rmtree(tmp_path / "checkpoints")
    monkeypatch.setenv("SYMATTN_HOME", str(tmp_path / "third"))
    sources = run_sources(client, run_id, "all")
    third = tmp_path / "third" / "checkpoints" / "parts" / run_id / "kept"
    assert [s.weights for s in sources] == [third / f"step-{s:07d}.pt" for s in (0, 20, 40)]
    whole_kept = kept_checkpoints(client.get_run(whole["run_id"]))  # the same weights as uninterrupted
    assert [sha256_file(s.weights) for s in sources] == [whole_kept[s]["sha256"] for s in (0, 20, 40)]
    assert not [p for p in third.iterdir() if p.name.startswith(".")]  # no download left behind


def test_a_node_that_comes_back_resumes_from_the_newer_stored_checkpoint(run_overrides, tmp_path, capsys):
    over = run_overrides + ["checkpoint.every_n_steps=10", "checkpoint.upload=true"]
    whole = pretrain(load_config(None, over + ["tracking.experiment=whole"]))
    cfg = load_config(None, over + ["tracking.experiment=parts"])
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[StopAt(12)])
    [ckpt] = (tmp_path / "checkpoints" / "parts").glob("*/last.ckpt")
    stale = ckpt.read_bytes()  # the node's disk at step 12; then another node takes the run to 25
    with pytest.raises(RunStopped):
        pretrain(cfg, resume=True, callbacks=[StopAt(25)])
    ckpt.write_bytes(stale)  # back on the first node, whose disk still holds step 12
    capsys.readouterr()
    run_id = pretrain(cfg, resume=True)["run_id"]
    assert f"run {run_id}: resumed from its stored checkpoint at step 25" in capsys.readouterr().err
    assert [s for s, _ in history(cfg, run_id, "time/startup_s")] == [0, 12, 25]
    assert history(cfg, run_id, "train/loss") == history(cfg, whole["run_id"], "train/loss")


def test_a_changed_artifact_is_refused_and_takes_no_name(run_overrides, tmp_path, monkeypatch):
    from symattn.finetune.source import run_sources

    cfg = load_config(
        None, run_overrides + ["checkpoint.keep=[20]", "optim.max_steps=20", "checkpoint.upload=true"]
    )
    run_id = pretrain(cfg)["run_id"]
    stored = next((tmp_path / "mlartifacts").rglob("kept/step-0000020.pt"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))  # changed in the store after it was logged
    shutil.rmtree(tmp_path / "checkpoints")
    monkeypatch.setenv("SYMATTN_HOME", str(tmp_path / "third"))
    with pytest.raises(ValueError, match="kept/step-0000020.pt of run .* does not match its recorded sha256"):
        run_sources(client_of(cfg), run_id, [20])
    kept = tmp_path / "third" / "checkpoints" / "test" / run_id / "kept"
    assert list(kept.iterdir()) == []


def test_without_any_checkpoint_a_resumed_run_logs_no_step_twice(run_overrides, tmp_path):
    """A run whose checkpoint is nowhere (a node gone, uploads off) starts again from step 0 in the
    same run: the steps the store holds are recomputed, not logged a second time."""
    over = run_overrides + ["checkpoint.every_n_steps=10"]
    whole = pretrain(load_config(None, over + ["tracking.experiment=whole"]))
    cfg = load_config(None, over + ["tracking.experiment=parts"])
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[StopAt(25)])
    shutil.rmtree(tmp_path / "checkpoints")
    run_id = pretrain(cfg, resume=True)["run_id"]
    for key in ("train/loss", "val/loss"):
        assert history(cfg, run_id, key) == history(cfg, whole["run_id"], key), key


@pytest.mark.parametrize(
    "uri, upload, expected",
    [
        ("sqlite:///mlflow.db", "auto", False),  # one machine's store: its checkpoints are on its disk
        ("http://mlflow.internal:5000", "auto", True),
        ("https://mlflow.example.org", "auto", True),
        ("http://mlflow.internal:5000", "false", False),
        ("sqlite:///mlflow.db", "true", True),
    ],
)
def test_uploads_follow_the_store_unless_set(uri, upload, expected):
    assert uploads(load_config(None, [f"tracking.uri={uri}", f"checkpoint.upload={upload}"])) is expected


def test_a_bad_upload_setting_is_refused():
    with pytest.raises(ValueError, match="checkpoint.upload"):
        load_config(None, ["checkpoint.upload=sometimes"])


def test_a_run_extended_on_another_machine_goes_on_from_its_stored_checkpoint(run_overrides, tmp_path):
    constant = ["optim.schedule=constant", "optim.warmup_steps=5", "checkpoint.upload=true"]
    longer = pretrain(load_config(None, run_overrides + constant + ["tracking.experiment=whole"]))
    short = run_overrides + constant + ["optim.max_steps=20", "tracking.experiment=parts"]
    run_id = pretrain(load_config(None, short))["run_id"]
    shutil.rmtree(tmp_path / "checkpoints")  # extended elsewhere
    cfg = load_config(None, [*short, "optim.max_steps=40"])
    assert pretrain(cfg, extend_run=run_id)["steps"] == 40
    assert history(cfg, run_id, "train/loss") == history(cfg, longer["run_id"], "train/loss")
