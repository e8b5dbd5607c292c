"""One writer per run: a process resuming a run that another live process still writes waits for
it, refuses if it does not stop, and leaves the run alone if the other one finished it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
from filelock import FileLock

pytestmark = pytest.mark.slow


def test_a_run_written_by_another_process_is_not_written_twice(run_overrides, monkeypatch):
    import symattn.pretrain as pretrain_module
    from symattn.config import RunConfig, apply_overrides
    from symattn.errors import RunStopped
    from symattn.pretrain import RunBusy, pretrain
    from symattn.tracking import open_store

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

    monkeypatch.setattr(pretrain_module, "RUN_LOCK_SECONDS", 1.0)
    with pytest.raises(RunBusy, match="still written by another process"):
        pretrain(cfg, resume=True)
    assert client.get_run(run_id).info.status == "KILLED"  # untouched

    def finish_then_release():  # the other process finishes the run and exits
        client.set_terminated(run_id, "FINISHED")
        other.release()

    monkeypatch.setattr(pretrain_module, "RUN_LOCK_SECONDS", 30.0)
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
