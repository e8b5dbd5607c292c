"""The Lightning callback that ties a pre-training run's life to its MLflow run: it reports the
training metrics, writes the resumable checkpoint only after the metrics up to its step (its
evaluation included) are in the store, keeps the weights of chosen steps, stops the run once it
has stayed below its stop level, and records how the run ended (FINISHED; KILLED with a checkpoint
that resumes the same curve; FAILED with its reason) and its escape from the floor."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from symattn import keys
from symattn.config import RunConfig
from symattn.data.cache import sha256_file
from symattn.errors import CheckpointNotWritten, NonFiniteLoss, one_line
from symattn.run.checkpoints import checkpoint_root, save_weights
from symattn.run.mlm import MLMPretraining
from symattn.run.record import record_escape
from symattn.run.stored_checkpoints import upload_checkpoint, upload_kept, uploads
from symattn.tracking.store import RunTracker, StoreFull

FLUSH_SECONDS = 5.0  # metrics reach the store at least this often, and before every checkpoint


class RunLifecycle(pl.Callback):
    """Reports training metrics, writes checkpoints, and records how the run ended.

    It also reports what the run cost besides training: `time/startup_s`, seconds from `started_at`
    (the process start for `symattn train`, a sweep cell's launch by its worker) to the first step, and
    `time/tracking_share`, the fraction of the training loop's wall time spent in tracking calls.
    """

    def __init__(
        self,
        cfg: RunConfig,
        tracker: Optional[RunTracker],
        ckpt_path: Path,
        tokens_per_step: int,
        started_at: float,
        stop_level: Optional[float] = None,
        floor: Optional[float] = None,
    ) -> None:
        self.cfg, self.tracker, self.ckpt_path = cfg, tracker, ckpt_path
        self.upload = tracker is not None and uploads(cfg)  # checkpoints to the store too
        self.stop_level = stop_level  # eval.stop_below's loss level, resolved against the data's floor
        self.floor = floor  # the run's escape is measured from it (`record_escape`)
        self.evals_below = 0  # consecutive evaluations below it (kept in checkpoints)
        self.saved_step: Optional[int] = None  # the step of the run's last checkpoint, once known
        self.tokens_per_step = tokens_per_step
        self.started_at = started_at
        self.first_batch = True
        self.fit_start = 0.0
        self.tracking_start = 0.0
        self.last_step = -1
        self.last_flush = time.monotonic()
        self.window_start = time.perf_counter()
        self.window_first_step = 0
        self.excluded_seconds = 0.0  # validation time inside the current throughput window
        self.val_start = 0.0
        self.at_boundary = True  # the last finished micro-batch completed an optimizer step
        self.stop_requested = False  # set by Ctrl-C; honoured at the next optimizer-step boundary
        # At an evaluation step the checkpoint (and a requested stop) waits until the evaluation is
        # in the store: a checkpoint written before it would resume past an evaluation never made.
        self.pending_checkpoint = False

    def _log(self, step: int, metrics: dict) -> None:
        if self.tracker is not None:
            self.tracker.log(step, metrics)

    def _flush(self) -> None:
        if self.tracker is not None:
            self.tracker.flush()
        self.last_flush = time.monotonic()

    def save_checkpoint(self, trainer: pl.Trainer) -> None:
        self._flush()  # metrics first: a resumed run drops the steps the store already holds
        tmp = self.ckpt_path.with_suffix(".tmp")
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # full state: optimizer, loops, scheduler
            if trainer.is_global_zero:
                os.replace(tmp, self.ckpt_path)  # atomic: a kill never leaves a half-written checkpoint
            self.saved_step = trainer.global_step
        except OSError as exc:  # a full disk, a read-only folder
            tmp.unlink(missing_ok=True)
            resume = f"--resume {self.tracker.run_id}" if self.tracker is not None else "--resume"
            raise CheckpointNotWritten(
                f"cannot write the checkpoint {self.ckpt_path} ({exc.strerror or one_line(exc)}); the "
                f"previous one stands: free space or fix the folder, then continue with {resume}"
            ) from exc
        # Outside the write's `try`: an upload that fails is not a checkpoint that was not written.
        if self.upload and trainer.is_global_zero:
            upload_checkpoint(self.tracker, self.ckpt_path, trainer.global_step)

    def keep_weights(self, trainer: pl.Trainer, pl_module: MLMPretraining, step: int) -> None:
        """Keep the weights at `step` (HF BERT names, no optimizer state) beside the resumable
        checkpoint, and register them on the run: the tag `keys.kept_checkpoint(step)` holds their
        path and sha256. A resumed run that passes the step again writes the same file and tag."""
        if not trainer.is_global_zero:
            return
        path = self.ckpt_path.parent / "kept" / f"step-{step:07d}.pt"
        save_weights(pl_module.model, path)
        if self.tracker is not None:
            # relative to the checkpoint folder, so that it resolves on another machine too
            root = checkpoint_root(self.cfg)
            record = {
                "path": path.relative_to(root).as_posix(),
                "root": str(root.resolve()),
                "sha256": sha256_file(path),
            }
            if self.upload:
                record["artifact"] = upload_kept(self.tracker, path)
            self.tracker.set_tags({keys.kept_checkpoint(step): json.dumps(record)})

    def on_train_start(self, trainer, pl_module) -> None:
        if self.ckpt_path.exists():  # a resumed run: restored from it
            self.saved_step = trainer.global_step
        if trainer.global_step == 0 and self.cfg.checkpoint.keeps(0):
            self.keep_weights(trainer, pl_module, 0)
        if trainer.global_step == 0 and self.cfg.eval.diagnostics:
            self._log(0, pl_module.diagnostics_now())
        self.last_step = trainer.global_step
        self.window_first_step = trainer.global_step
        self.window_start = self.fit_start = time.perf_counter()
        self.tracking_start = self.tracker.seconds if self.tracker is not None else 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.at_boundary = False
        if self.first_batch:
            self.first_batch = False
            self._log(trainer.global_step, {keys.STARTUP_S: time.time() - self.started_at})

    def on_train_end(self, trainer, pl_module) -> None:
        if self.tracker is not None:
            share = (self.tracker.seconds - self.tracking_start) / max(
                time.perf_counter() - self.fit_start, 1e-9
            )
            self._log(trainer.global_step, {keys.TRACKING_SHARE: share})

    def on_train_batch_end(self, trainer, pl_module: MLMPretraining, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.last_step:  # inside gradient accumulation
            return
        self.last_step, self.at_boundary = step, True
        if step % self.cfg.tracking.log_every_n_steps == 0:
            loss = pl_module.pop_train_window()
            if not math.isfinite(loss):
                raise NonFiniteLoss(
                    f"training loss became {loss} by step {step}; lower optim.lr or enable grad_clip"
                )
            now = time.perf_counter()
            seconds = now - self.window_start - self.excluded_seconds
            metrics = {
                keys.TRAIN_LOSS: loss,
                keys.TRAIN_ACCURACY: pl_module.pop_train_accuracy(),
                keys.TRAIN_LR: pl_module.last_lr,
                keys.TRAIN_TOKENS: step * self.tokens_per_step,
                keys.TRAIN_TOKENS_PER_S: (step - self.window_first_step)
                * self.tokens_per_step
                / max(seconds, 1e-9),
            }
            if pl_module.last_grad_norm is not None:
                metrics[keys.TRAIN_GRAD_NORM] = pl_module.last_grad_norm
            self._log(step, metrics)
            self.window_start, self.window_first_step, self.excluded_seconds = now, step, 0.0
        if self.cfg.checkpoint.keeps(step):
            self.keep_weights(trainer, pl_module, step)
        if self.pending_checkpoint:  # the evaluation it waited for did not run
            self.pending_checkpoint = False
            self.save_checkpoint(trainer)
        evaluates = trainer.state.fn == TrainerFn.FITTING and step % self.cfg.eval.every_n_steps == 0
        if step % self.cfg.checkpoint_every == 0:
            if not pl_module.train_window_finite():
                raise NonFiniteLoss(
                    f"training loss became non-finite by step {step}; lower optim.lr or enable grad_clip"
                )
            if evaluates:
                self.pending_checkpoint = True  # written once its evaluation is logged
            else:
                self.save_checkpoint(trainer)
        elif time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self._flush()
        if self.stop_requested and not evaluates:
            raise KeyboardInterrupt

    def request_stop(self, signum, frame) -> None:
        if self.stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop_requested = True

    def on_validation_start(self, trainer, pl_module) -> None:
        self.val_start = time.perf_counter()
        # A stop inside an evaluation leaves the last checkpoint: the resumed run evaluates again.
        self.at_boundary = False

    def on_validation_end(self, trainer, pl_module: MLMPretraining) -> None:
        self.excluded_seconds += time.perf_counter() - self.val_start
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == TrainerFn.FITTING
        self.at_boundary = fitting
        self._log(trainer.global_step, pl_module.val_metrics)
        if self.stop_level is not None and fitting:
            below = pl_module.val_metrics[keys.VAL_LOSS] < self.stop_level
            self.evals_below = self.evals_below + 1 if below else 0
            if self.evals_below >= self.cfg.eval.stop_below.evaluations:
                trainer.should_stop = True
                if self.tracker is not None:
                    self.tracker.set_tags({keys.STOPPED_EARLY_AT: trainer.global_step})
        if not fitting:
            return
        # Saved here, the checkpoint holds the step with its evaluation done (and logged): Lightning
        # resumes after the evaluation, neither losing nor repeating it.
        if self.pending_checkpoint:
            self.pending_checkpoint = False
            self.save_checkpoint(trainer)
        if self.stop_requested:
            raise KeyboardInterrupt

    def record_escape(self, step: int) -> None:
        """The run's escape from its floor, recorded at its last step `step` however it ends (after
        its metrics are flushed): see `record_escape`."""
        if self.tracker is not None and self.floor is not None:
            record_escape(self.tracker, self.floor, step)

    def state_dict(self) -> dict:
        return {"evals_below": self.evals_below}

    # The training window (losses and accuracy since the last report): a run stopped between two
    # reports resumes it, so the next report averages the same steps as without the stop.
    WINDOW = ("window_loss", "window_steps", "window_correct", "window_masked")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["symattn_train_window"] = {k: getattr(pl_module, k) for k in self.WINDOW}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for k, v in checkpoint.get("symattn_train_window", {}).items():
            setattr(pl_module, k, v)

    def load_state_dict(self, state_dict: dict) -> None:
        self.evals_below = state_dict.get("evals_below", 0)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            # Only a step boundary makes a consistent checkpoint; otherwise the last one stands.
            if self.at_boundary:
                self.save_checkpoint(trainer)
            else:
                self._flush()
            if self.tracker is not None:
                self.record_escape(trainer.global_step)
                self.tracker.set_tags({keys.STOPPED_AT_STEP: trainer.global_step})
                self.tracker.set_status("KILLED")
            return
        if isinstance(exception, StoreFull):
            # Nothing else is written, so the store keeps the run as it was (RUNNING) unless this
            # small update still fits; `--resume` continues it either way.
            try:
                if self.tracker is not None:
                    self.tracker.set_tags({keys.FAILURE_REASON: f"StoreFull: {exception.reason}"})
                    self.tracker.set_status("FAILED")
            except StoreFull:
                pass
            return
        self._flush()
        if self.tracker is not None:
            self.record_escape(trainer.global_step)
        if type(exception).__name__ == "TrialPruned":  # a search trial stopped by its pruner
            if self.tracker is not None:
                self.tracker.set_tags({keys.PRUNED_AT_STEP: trainer.global_step})
                self.tracker.set_status("KILLED")
            return
        if self.tracker is not None:
            self.tracker.set_tags(
                {keys.FAILURE_REASON: f"{type(exception).__name__}: {one_line(exception)}"[:5000]}
            )
            self.tracker.set_status("FAILED")
