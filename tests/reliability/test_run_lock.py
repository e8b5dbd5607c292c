"""One writer per run: a process resuming a run that another live process still writes waits for
it, refuses if it does not stop, and leaves the run alone if the other one finished it. A sweep cell
refused so is queued again without using up an attempt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from tests.conftest import REPO
from tests.processes import end_tree, until

pytestmark = pytest.mark.slow


def test_a_run_written_by_another_process_is_not_written_twice(run_overrides, monkeypatch):
    import symattn.run.identity as identity_module
    from symattn.config import RunConfig, apply_overrides
    from symattn.errors import RunStopped
    from symattn.run.identity import RunBusy
    from symattn.run.pretrain import pretrain
    from symattn.tracking.store import open_store

    spec = importlib_stop_at()
    cfg = RunConfig.model_validate(
        apply_overrides({}, [*run_overrides, "optim.max_steps=20", "eval.every_n_steps=10"])
    )
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[spec(10, signal.SIGINT)])
    client = open_store(cfg.tracking.uri)
    [run] = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    run_id = run.info.run_id
    before = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
    ckpt = Path(run.data.tags["checkpoint"])
    other = FileLock(ckpt.parent / "run.lock", thread_local=False)  # held as by the run's writer
    other.acquire()

    monkeypatch.setattr(identity_module, "RUN_LOCK_SECONDS", 1.0)
    with pytest.raises(RunBusy, match="still written by another process"):
        pretrain(cfg, resume=True)
    assert client.get_run(run_id).info.status == "KILLED"  # untouched

    def finish_then_release():  # the other process finishes the run and exits
        client.set_terminated(run_id, "FINISHED")
        other.release()

    monkeypatch.setattr(identity_module, "RUN_LOCK_SECONDS", 30.0)
    timer = threading.Timer(1.0, finish_then_release)
    timer.start()
    result = pretrain(cfg, resume=True)
    timer.join()
    assert result["run_id"] == run_id and result["status"] == "FINISHED"
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and "stopped_at_step" in after.data.tags
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")) == before
    # and a sweep cell finds its finished run rather than starting a second one
    cell = cfg.model_copy(
        update={"tracking": cfg.tracking.model_copy(update={"tags": {"study": "test", "cell": "c"}})}
    )
    assert pretrain(cell, resume="auto")["run_id"] == run_id
    assert len(client.search_runs([client.get_experiment_by_name("test").experiment_id])) == 1


def importlib_stop_at():
    """StopAt of the evaluation-step test (tests are imported by path, not as a package)."""
    import importlib.util

    path = Path(__file__).with_name("test_resume_at_evaluation.py")
    spec = importlib.util.spec_from_file_location("_resume_at_evaluation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StopAt


def test_a_cell_whose_run_another_process_writes_is_retried_without_using_an_attempt(
    run_overrides, tmp_path, monkeypatch
):
    """Two writers on one run: a `symattn train` of a cell's config writes the cell's run (as a cell
    of a worker that died would) while a real worker takes the cell, with no retry to spare. Each
    try of the cell finds the run locked and is queued again, uncounted; once the other process
    finishes the run, the cell is COMPLETE on its first attempt, and the run was written once."""
    import optuna

    from symattn.sweep.cell_server import context
    from symattn.sweep.queue import queue
    from symattn.sweep.records import cell_config
    from symattn.sweep.spec import load_spec
    from symattn.sweep.status import status_rows
    from symattn.sweep.storage import open_storage
    from symattn.sweep.worker import work
    from symattn.tracking.store import open_store
    from tests.test_sweep import overrides_to_base

    base = overrides_to_base(run_overrides)
    base["optim"]["max_steps"] = 400  # the other writer trains while the worker tries the cell
    base["eval"]["every_n_steps"] = 100
    base["checkpoint"]["every_n_steps"] = 100
    spec = {
        "name": "busy",
        "base": base,
        "axes": {"model.attention.variant": ["vanilla"]},
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "workers": {"heartbeat_seconds": 1, "grace_seconds": 60, "max_retries": 0},
    }
    (tmp_path / "busy.yaml").write_text(yaml.safe_dump(spec))
    queue(load_spec(tmp_path / "busy.yaml"))
    storage = str(tmp_path / "optuna.journal")
    [trial] = optuna.load_study(study_name="busy", storage=open_storage(storage)).trials
    cell = cell_config(trial, "cpu", 1).model_dump(mode="json", exclude_unset=True)  # the cell's tags too
    (tmp_path / "cell.yaml").write_text(yaml.safe_dump(cell))
    context()  # the cells' server, its imports loaded: the worker's first try comes within seconds
    other = subprocess.Popen(
        [sys.executable, "-m", "symattn", "train", str(tmp_path / "cell.yaml")],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")

        def locked_by_the_other() -> bool:  # its run's lock is taken before this tag is set
            exp = client.get_experiment_by_name("busy")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            return bool(runs) and "checkpoint" in runs[0].data.tags

        until(locked_by_the_other, "run held by the other process", proc=other)
        monkeypatch.setenv("SYMATTN_RUN_LOCK_SECONDS", "1")  # each try of the cell waits 1 s for the lock

        done = work("busy", storage, "cpu")
        out = other.communicate(timeout=300)[0]
    finally:
        end_tree(other)
    assert other.returncode == 0, out[-3000:]
    assert done == [(trial.user_attrs["name"], "COMPLETE")]
    trials = optuna.load_study(study_name="busy", storage=open_storage(storage)).trials
    busy = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert busy, "the cell never found its run busy: the other process ended first"
    for t in busy:
        assert "RunBusy: run" in t.user_attrs["failure"] and t.user_attrs["failure"].endswith("(exit code 6)")
    assert all(t.user_attrs["attempt"] == 1 for t in trials)
    [row] = status_rows("busy", storage)
    assert row["state"] == "COMPLETE" and row["attempts"] == 1
    exp = client.get_experiment_by_name("busy")
    [run] = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'pretrain'")
    assert run.info.status == "FINISHED" and row["run_id"] == run.info.run_id
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(5, 401, 5))  # written once, by the other process
