"""A run stopped exactly at an evaluation step, or between two reports, resumes with the curve of a
run never stopped: the evaluation of that step is neither lost nor logged twice, and the training
loss averages the same steps."""

from __future__ import annotations

import os
import signal

import pytest
import pytorch_lightning as pl

pytestmark = pytest.mark.slow


class StopAt(pl.Callback):
    """Sends `signum` to this process as the optimizer step that makes `step` begins."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.sent and trainer.global_step == self.step - 1:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def _config(run_overrides, experiment: str):
    from symattn.config import RunConfig, apply_overrides

    overrides = [
        *run_overrides,
        "optim.max_steps=30",
        "eval.every_n_steps=10",
        "checkpoint.every_n_steps=5",
        f"tracking.experiment={experiment}",
    ]
    return RunConfig.model_validate(apply_overrides({}, overrides))


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.parametrize(
    "step,signum",
    [(10, signal.SIGINT), (10, signal.SIGTERM), (7, signal.SIGINT)],
    ids=["eval-step-SIGINT", "eval-step-SIGTERM", "between-reports-SIGINT"],
)
def test_a_stopped_run_resumes_the_uninterrupted_curve(run_overrides, step, signum):
    """Stopped at an evaluation step (10) or between two reports (7), the resumed run's curves are
    the uninterrupted run's, bit for bit, each step once."""
    from symattn.errors import RunStopped
    from symattn.run.pretrain import pretrain
    from symattn.tracking.store import open_store

    cfg = _config(run_overrides, "stopped")
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[StopAt(step, signum)])
    client = open_store(cfg.tracking.uri)
    [stopped] = client.search_runs([client.get_experiment_by_name("stopped").experiment_id])
    assert stopped.info.status == "KILLED" and stopped.data.tags["stopped_at_step"] == str(step)
    resumed = pretrain(cfg, resume=True)
    assert resumed["run_id"] == stopped.info.run_id
    reference = pretrain(_config(run_overrides, "reference"))
    for key in ("val/loss", "train/loss"):
        got, want = _history(client, resumed["run_id"], key), _history(client, reference["run_id"], key)
        assert [s for s, _ in got] == [s for s, _ in want] == sorted({s for s, _ in want})
        assert got == want, key
    assert [s for s, _ in _history(client, resumed["run_id"], "val/loss")] == [10, 20, 30]
