"""The Lightning callback by which a running cell reports its progress to its trial (the attributes
of `progress`): its MLflow run id when training starts, the step and validation loss at each
evaluation, the step with its time every few seconds in between, and its error in a line if it
fails. A search trial also reports the loss to its pruner and stops when pruned."""

from __future__ import annotations

import time
from typing import Optional

from symattn import keys
from symattn.sweep.progress import (
    ERROR,
    REPORT_SECONDS,
    RUN_ID,
    STEP,
    STEP_TIME,
    TRAIN_START,
    VAL_LOSS,
    error_line,
)


class TrialReport:
    """Picklable (it travels to the cell's process); the Lightning callback is built there.
    `search`: a search trial's `SearchSpec` as a dict, for its pruner."""

    def __init__(
        self, storage_url: str, study_name: str, trial_id: int, search: Optional[dict] = None
    ) -> None:
        self.storage_url, self.study_name, self.trial_id, self.search = (
            storage_url,
            study_name,
            trial_id,
            search,
        )

    def failed(self, exc: BaseException) -> None:
        """Record the cell's error on its trial (`ERROR`), for its worker and `symattn status`. Never
        raises: without it the worker still records the exit code."""
        from symattn.sweep import optuna_internals as internals
        from symattn.sweep.storage import open_storage

        try:
            internals.set_user_attrs(open_storage(self.storage_url), self.trial_id, {ERROR: error_line(exc)})
        except Exception:  # noqa: BLE001  reclaimed meanwhile, or the store is gone
            pass

    def callback(self):
        import os

        import optuna
        import pytorch_lightning as pl

        from symattn.sweep import optuna_internals as internals
        from symattn.sweep.search import load_search
        from symattn.sweep.spec import SearchSpec
        from symattn.sweep.storage import open_storage

        storage, tid = open_storage(self.storage_url), self.trial_id
        search = SearchSpec.model_validate(self.search) if self.search else None
        study = load_search(storage, self.study_name, search) if search else None

        def record(attrs: dict) -> None:
            try:
                internals.set_user_attrs(storage, tid, attrs)
            except internals.UpdateFinishedTrialError:
                pass  # reclaimed by another worker: this worker stops the cell at its next heartbeat

        class _Report(pl.Callback):
            evals, reported = 0, 0.0

            def on_fit_start(self, trainer, pl_module) -> None:
                if os.environ.get("SYMATTN_RUN_ID"):
                    record({RUN_ID: os.environ["SYMATTN_RUN_ID"]})

            def on_train_start(self, trainer, pl_module) -> None:
                self.reported = time.time()
                record({TRAIN_START: [trainer.global_step, self.reported]})

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                now = time.time()  # reads the clock only: no effect on the run
                if now - self.reported >= REPORT_SECONDS:
                    self.reported = now
                    record({STEP: trainer.global_step, STEP_TIME: now})

            def on_validation_end(self, trainer, pl_module) -> None:
                if trainer.sanity_checking or keys.VAL_LOSS not in pl_module.val_metrics:
                    return
                loss, step = float(pl_module.val_metrics[keys.VAL_LOSS]), trainer.global_step
                self.reported = time.time()
                record({STEP: step, VAL_LOSS: loss, STEP_TIME: self.reported})
                if study is None:  # a grid cell: its curve in optuna-dashboard, nothing pruned on it
                    try:
                        storage.set_trial_intermediate_value(tid, step, loss)
                    except internals.UpdateFinishedTrialError:
                        pass
                    return
                trial = internals.live_trial(study, tid)
                trial.report(loss, step)
                self.evals += 1
                if self.evals > search.warmup_evals and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}")

        return _Report()
