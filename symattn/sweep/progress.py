"""What a running cell reports to its trial, so that `symattn status` reads a study from the Optuna
store alone (MLflow is not imported): the cell's MLflow run id when training starts, the step and
validation loss at each evaluation, and the step with its time every few seconds in between; a cell
that fails reports its error in a line. A search trial also reports the loss to its pruner and
stops when pruned.

From these a reader computes a cell's step rate and ETA, and a study's ETA (`cell_eta`,
`study_eta`: pure functions of the reported attributes, no clock of their own)."""

from __future__ import annotations

import time
from typing import Optional

from symattn import keys

# A cell's progress, as user attributes of its trial (beside those named in `records`): its run id,
# the last step and when it was reported (Unix time), the last validation loss, and the step and
# time at which this attempt's training began (what its step rate counts from); and the error it
# failed with, in a line (`error_line`).
RUN_ID, STEP, VAL_LOSS = "mlflow_run_id", "step", "val_loss"
STEP_TIME, TRAIN_START, ERROR = "step_time", "train_start", "error"
PROGRESS = (RUN_ID, STEP, VAL_LOSS, STEP_TIME, TRAIN_START, ERROR)  # a retry reports its own
REPORT_SECONDS = 5.0  # the step is reported at most this often between evaluations


def cell_rate(attrs: dict) -> Optional[float]:
    """A running cell's training steps per second since this attempt began, from what it reported;
    None before it has reported a step past its start."""
    start, step, at = attrs.get(TRAIN_START), attrs.get(STEP), attrs.get(STEP_TIME)
    if not start or step is None or at is None:
        return None
    step0, time0 = start
    if step <= step0 or at <= time0:
        return None
    return (step - step0) / (at - time0)


def cell_eta(attrs: dict, total: Optional[int], now: float) -> Optional[float]:
    """Seconds until a running cell reaches `total` steps at its rate so far (counted from its last
    report, never below 0); None when unknown."""
    rate = cell_rate(attrs)
    if rate is None or not total:
        return None
    return max(0.0, (total - attrs[STEP]) / rate - (now - attrs[STEP_TIME]))


def study_eta(cells: list[dict]) -> tuple[Optional[float], str]:
    """Seconds until no cell is waiting or running, and why it is unknown (else "").

    `cells`: one dict per cell with `state` (WAITING, RUNNING, COMPLETE, PRUNED, FAIL), `kind`
    (pre-training or fine-tuning: each is measured on its own), and as known `seconds` (a finished
    cell's duration), `elapsed` (a running cell's time so far), `eta` (a running cell's `cell_eta`)
    and `estimate` (a running cell's whole duration at its rate). A cell of a kind takes the mean
    duration of the finished cells of that kind, else the mean estimate of its running ones; the
    work left is shared by the running cells (one per busy slot), and is at least the longest
    running cell's."""
    left = [c for c in cells if c["state"] in ("WAITING", "RUNNING")]
    if not left:
        return 0.0, ""
    running = [c for c in left if c["state"] == "RUNNING"]
    if not running:
        return None, "no cell is running"
    per_cell = {}
    for kind in {c["kind"] for c in cells}:
        done = [c["seconds"] for c in cells if c["kind"] == kind and c.get("seconds") is not None]
        guesses = [c["estimate"] for c in running if c["kind"] == kind and c.get("estimate") is not None]
        measured = done or guesses
        per_cell[kind] = sum(measured) / len(measured) if measured else None
    work, longest = 0.0, 0.0
    for c in left:
        if c.get("eta") is not None:
            rest = c["eta"]
        elif per_cell[c["kind"]] is not None:
            rest = max(0.0, per_cell[c["kind"]] - (c.get("elapsed") or 0.0))
        else:
            return None, f"no {c['kind']} cell measured yet"
        work += rest
        if c["state"] == "RUNNING":
            longest = max(longest, rest)
    return max(work / len(running), longest), ""


def duration(seconds: Optional[float]) -> str:
    """`7s`, `4m05s`, `1h02m`; `?` for None."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_text(attrs: dict, total: Optional[int], now: float) -> str:
    """A running cell's progress in a few words: `step 1,200/3,000, val/loss 6.1234, 4.1 steps/s,
    ETA 7m20s` (what is not yet reported is left out; `ETA ?` until a rate is measured)."""
    parts = [f"step {attrs.get(STEP, 0):,}" + (f"/{total:,}" if total else "")]
    if attrs.get(VAL_LOSS) is not None:
        parts.append(f"{keys.VAL_LOSS} {attrs[VAL_LOSS]:.4f}")
    rate = cell_rate(attrs)
    if rate is not None:
        parts.append(f"{rate:.1f} steps/s")
    parts.append(f"ETA {duration(cell_eta(attrs, total, now))}")
    return ", ".join(parts)


def error_line(exc: BaseException, limit: int = 500) -> str:
    """An exception in a line: its type and the first line of its message (`NonFiniteLoss: training
    loss became nan by step 12; lower optim.lr or enable grad_clip`), at most `limit` characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
