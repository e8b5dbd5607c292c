"""Fine-tuning cells of a sweep: queued with the pre-training cells, run once the checkpoints
they need exist, exactly once per (checkpoint, task, seed), even across a killed worker."""

import signal
import subprocess
import sys

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from symattn.sweep.queue import queue
from symattn.sweep.spec import load_spec
from symattn.sweep.status import status_rows
from symattn.sweep.worker import work
from tests.processes import end_tree, heartbeats_stale, until
from tests.test_finetune import _glue
from tests.test_sweep import overrides_to_base

STUDY = "ft-sweep"


@pytest.fixture
def spec_path(tmp_path, run_overrides):
    base = overrides_to_base(run_overrides)
    base["checkpoint"]["keep"] = [10, 20]
    spec = {
        "name": STUDY,
        "base": base,
        "axes": {"model.attention.variant": ["vanilla"]},
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "workers": {"heartbeat_seconds": 1, "grace_seconds": 8},
        "finetune": {
            "tasks": ["sst2"],
            "seeds": [1, 2],
            "config": {"glue_dir": str(_glue(tmp_path / "glue")), "max_steps": 120, "batch_size": 4},
        },
    }
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def finetune_runs(tmp_path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(STUDY)
    return client.search_runs([exp.experiment_id], filter_string="tags.kind = 'finetune'")


def test_finetune_cells_wait_for_their_checkpoints_and_run_once(spec_path, tmp_path):
    spec = load_spec(spec_path)
    assert queue(spec).added == 1 + 2 * 2  # one pre-training cell, 2 kept steps x 1 task x 2 seeds
    assert queue(spec).added == 0
    storage = str(tmp_path / "optuna.journal")
    rows = status_rows(STUDY, storage)
    assert [r["cell"] for r in rows][1:] == [
        f"{rows[0]['cell']}-step{step}-sst2-ft{seed}" for step in (10, 20) for seed in (1, 2)
    ]
    assert [r["progress"] for r in rows] == ["0/20"] + ["-"] * 4

    done = work(STUDY, storage, "cpu")
    assert [state for _, state in done] == ["COMPLETE"] * 5
    assert done[0][0] == rows[0]["cell"]  # the pre-training cell first: the others need its weights
    pretrain_id = status_rows(STUDY, storage)[0]["run_id"]
    runs = finetune_runs(tmp_path)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    combos = {(r.data.tags["checkpoint_step"], r.data.tags["finetune_seed"]) for r in runs}
    assert combos == {("10", "1"), ("10", "2"), ("20", "1"), ("20", "2")}
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == pretrain_id and r.data.tags["study"] == STUDY
        assert r.info.run_name.endswith(f"-sst2-ft{r.data.tags['finetune_seed']}")
        assert "eval/accuracy" in r.data.metrics
    assert work(STUDY, storage, "cpu") == []  # nothing runs twice


def test_a_step_the_pretraining_does_not_keep_is_refused_before_queuing(spec_path, tmp_path):
    raw = yaml.safe_load(spec_path.read_text())
    raw["finetune"]["steps"] = [10, 15]
    spec_path.write_text(yaml.safe_dump(raw))
    out = subprocess.run(
        [sys.executable, "-m", "symattn", "queue", str(spec_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "finetune.steps 15 is not kept by cell" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "optuna.journal").exists()


@pytest.mark.slow
def test_a_killed_worker_leaves_exactly_one_finetune_run_per_cell(spec_path, tmp_path):
    queue(load_spec(spec_path))
    storage = str(tmp_path / "optuna.journal")
    cmd = [sys.executable, "-m", "symattn", "work", STUDY, "--devices", "cpu", "--storage", storage]
    worker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study = optuna.load_study(
        study_name=STUDY,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)),
    )
    try:

        def finetune_cell_running() -> bool:
            trials = study.get_trials(deepcopy=False)
            return any(t.user_attrs.get("kind") == "finetune" and t.state.name == "RUNNING" for t in trials)

        until(finetune_cell_running, "fine-tuning cell", proc=worker)  # the store exists by then
        until(
            lambda: any(r.info.status == "RUNNING" for r in finetune_runs(tmp_path)), "its run", proc=worker
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        until(lambda: heartbeats_stale(study, 8), "stale heartbeat", timeout=60)  # grace_seconds
    finally:
        end_tree(worker)
    done = work(STUDY, storage, "cpu")
    assert {state for _, state in done} == {"COMPLETE"}
    rows = status_rows(STUDY, storage)
    assert {r["state"] for r in rows} == {"COMPLETE"}
    runs = finetune_runs(tmp_path)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    cells = [r.data.tags["cell"] for r in finished]
    assert len(finished) == 4 and len(set(cells)) == 4  # one per (checkpoint, task, seed)
    killed = [r for r in runs if r not in finished]
    assert {r.info.status for r in killed} <= {"KILLED"}  # the dead worker's run, stopped with it
    # The killed cell either stopped with its worker (its run KILLED, or not yet made) and ran again,
    # its second attempt; or it finished its run as it stopped, and the next worker recorded that
    # run (COMPLETE, one attempt, not run again).
    attempts = max(r["attempts"] for r in rows)
    assert (attempts, len(done)) in ((2, 4), (1, 3)) and len(killed) <= attempts - 1
