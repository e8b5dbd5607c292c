"""What a running cell reports to its trial, so that `symattn status` reads a study from the Optuna
store alone (MLflow is not imported): the cell's MLflow run id when training starts, the step and
validation loss at each evaluation. A search trial also reports the loss to its pruner and stops
when pruned."""

from __future__ import annotations

from typing import Optional

from symattn import keys

# A cell's progress, as user attributes of its trial (beside those named in `records`).
RUN_ID, STEP, VAL_LOSS = "mlflow_run_id", "step", "val_loss"


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
            evals = 0

            def on_fit_start(self, trainer, pl_module) -> None:
                if os.environ.get("SYMATTN_RUN_ID"):
                    record({RUN_ID: os.environ["SYMATTN_RUN_ID"]})

            def on_validation_end(self, trainer, pl_module) -> None:
                if trainer.sanity_checking or keys.VAL_LOSS not in pl_module.val_metrics:
                    return
                loss, step = float(pl_module.val_metrics[keys.VAL_LOSS]), trainer.global_step
                record({STEP: step, VAL_LOSS: loss})
                if study is None:
                    return
                trial = internals.live_trial(study, tid)
                trial.report(loss, step)
                self.evals += 1
                if self.evals > search.warmup_evals and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}")

        return _Report()
