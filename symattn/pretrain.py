"""One tracked pre-training run: `pretrain(cfg)` and the callback that ties the run's life to MLflow.

Invariants: a run is exactly one MLflow run (also when resumed), written by one process at a time
(its lock); a checkpoint is written only after the metrics up to its step are in the store, its
evaluation included; a NaN marks the run FAILED with the reason; Ctrl-C or SIGTERM leaves a
checkpoint and a KILLED run that `resume` continues with the uninterrupted curve, step for step; a
store with no room left (`StoreFull`) ends the run there, its last checkpoint and metrics intact.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from symattn import keys, quiet  # noqa: F401  quiet: imported for its effect
from symattn.config import RunConfig, flatten
from symattn.data.budget import epochs_warning
from symattn.data.cache import sha256_file
from symattn.data.sources import source_param
from symattn.diagnostics import coefficient_spectra
from symattn.errors import CheckpointNotWritten, NonFiniteLoss, RunError, RunStopped, one_line
from symattn.mlm import MLMPretraining, PretrainingDataModule, validation_batches
from symattn.model import count_parameters, flops_per_token
from symattn.paths import default_checkpoint_dir
from symattn.speed import apply_speed_settings
from symattn.sweep.spec import cell_name
from symattn.tracking import (
    RunTracker,
    StoreFull,
    experiment_id,
    find_resumable_run,
    open_store,
    package_versions,
    reached,
    source_tags,
    system_metrics,
)

FLUSH_SECONDS = 5.0  # metrics reach the store at least this often, and before every checkpoint
# How long a run waits for another process that still writes it to stop; the environment variable
# SYMATTN_RUN_LOCK_SECONDS sets another wait (read at each start, so a sweep's cells follow their
# worker's environment).
RUN_LOCK_SECONDS = 120.0


class RunBusy(RunError, RuntimeError):
    """Another live process still writes this run (a cell of a worker that was killed, stopping)."""


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
            if not math_finite(loss):
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


def record_escape(tracker: RunTracker, floor: float, step: int) -> None:
    """Record the run's escape from `floor` as the report measures it (`analysis.convergence.
    headline_escape`), from its whole `val/loss` curve in the store, steps logged before a resume
    included, so that the run table sorts by it: metrics at `step` (`escape/low`, `escape/censored`,
    and `escape/step` only when the step is exact) and the tag `escape` as the report prints it
    (`symattn.keys`). A censored run never shows an exact-looking `escape/step`: one that an earlier
    end of the run recorded is overwritten with NaN. Never raises but `StoreFull` (the run cannot end
    in a full store): a run's end is not to be lost to its summary."""
    from analysis.convergence import TARGETS_FLOOR, escape_metrics, floor_tag, headline_escape

    try:
        client, run_id = tracker.client, tracker.run_id
        history = client.get_metric_history(run_id, keys.VAL_LOSS)
        values = [m.value for m in history]
        if not any(math_finite(v) for v in values):
            return  # no evaluation: no curve
        escape = headline_escape([m.step for m in history], values, floor)
        metrics = escape_metrics(escape)
        if escape.censored and keys.ESCAPE_STEP in client.get_run(run_id).data.metrics:
            metrics[keys.ESCAPE_STEP] = float("nan")
        tracker.log(step, metrics)
        tracker.flush()
        tracker.set_tags({keys.ESCAPE: str(escape), keys.ESCAPE_FLOOR: floor_tag(TARGETS_FLOOR, floor)})
    except StoreFull:
        raise
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"run {tracker.run_id}: its escape was not recorded ({one_line(exc)})", stacklevel=2)


def math_finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


def _is_rank_zero() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def resolve_vocab(cfg: RunConfig, data) -> RunConfig:
    """The model's vocabulary follows the tokenizer unless set explicitly, and must then match it."""
    if "vocab_size" in cfg.model.model_fields_set and cfg.model.vocab_size != data.vocab_size:
        raise ValueError(
            f"model.vocab_size {cfg.model.vocab_size} does not match the tokenizer's vocabulary "
            f"({data.vocab_size}); remove model.vocab_size or set data.vocab_size to match"
        )
    model = cfg.model.model_copy(update={"vocab_size": data.vocab_size})
    return cfg.model_copy(update={"model": model})


def run_tags(cfg: RunConfig, data_fingerprint: str) -> dict[str, str]:
    att = cfg.model.attention
    own = cfg.tracking.tags
    cell = keys.STUDY in own  # a sweep cell: a run of the worker, the child of its study's run
    return {
        keys.KIND: keys.PRETRAIN,
        keys.ATTENTION: att.variant,
        keys.SCHEME: att.resolved_scheme,
        keys.INIT: att.resolved_init,
        keys.VARIANT: att.label,
        keys.SIZE: cfg.model.size,
        keys.SEED: str(cfg.seed),
        keys.GROUP: cfg.group_id(),
        keys.CONFIG_HASH: cfg.config_hash(),
        keys.DATA_FINGERPRINT: data_fingerprint,
        **source_tags(keys.WORK_COMMAND if cell else keys.TRAIN_COMMAND),
        **({keys.PARENT_RUN_ID: own[keys.STUDY_RUN_ID]} if keys.STUDY_RUN_ID in own else {}),
        **{f"{keys.VERSION_PREFIX}{k}": v for k, v in package_versions().items()},
        **own,
    }


def skipped_files(corpus: dict) -> dict[str, str]:
    """The corpus files its data left out as not UTF-8 (`invalid_utf8: skip`), as the run's tags: how
    many, and the first (when the corpus stats name it); none when no file was skipped. `corpus`:
    the data's corpus stats, one source's or several (`sources`)."""
    parts = corpus.get("sources") or [corpus]
    count = sum(int(part.get("invalid_utf8_skipped") or 0) for part in parts)
    if not count:
        return {}
    first = next((part["invalid_utf8_first"] for part in parts if part.get("invalid_utf8_first")), None)
    return {keys.INVALID_UTF8_SKIPPED: str(count), **({keys.INVALID_UTF8_FIRST: str(first)} if first else {})}


# The description of an experiment of standalone runs (a sweep's worker describes its study's).
STANDALONE_NOTE = (
    "Pre-training runs of `symattn train`: one MLflow run per run config and seed, named "
    "size-variant-lr-seed; a resumed run continues its own run. Runs with the same tag `group` "
    "differ only in their attention block. What each run records: symattn/README.md."
)


def corpus_name(cfg: RunConfig) -> str:
    """The run's corpus as its dataset input is named: `pypi-news`, `hf:wikitext:<config>`, or
    a local file's or folder's name; several sources joined by `+`."""
    names = []
    for source in cfg.data.source:
        if source.type == "path":
            names.append(Path(source.path).name or str(source.path))
        elif source.type == "hf":
            names.append(f"hf:{source.name}" + (f":{source.config}" if source.config else ""))
        else:
            names.append(source.name)
    return "+".join(names)


def log_dataset(tracker: RunTracker, cfg: RunConfig, data) -> None:
    """The run's packed data (the data cache entry) as its dataset input, digest its fingerprint."""
    profile = {
        "train_blocks": len(data.train),
        "val_blocks": len(data.val),
        "seq_len": data.seq_len,
        "vocab_size": data.vocab_size,
        "fingerprint": data.fingerprint,
    }
    tracker.log_dataset(corpus_name(cfg), data.fingerprint, {"uri": str(data.path)}, profile)


def run_params(cfg: RunConfig, counts: dict[str, int], floor: dict, val_floor: float) -> dict:
    """The flattened config, parameter counts and FLOPs, and the data's context-free floor: L*, the
    unigram cross-entropy, and the context-free loss of the run's own validation targets, which its
    escape is measured from (`symattn.keys`)."""
    params = flatten(cfg.to_dict())
    m = cfg.model  # the size preset expanded: the shape the run had, not `None`
    params.update(
        {
            "model.layers": m.n_layers,
            "model.hidden": m.n_hidden,
            "model.heads": m.n_heads,
            "model.intermediate": m.n_intermediate,
            "data.source": source_param(cfg.data.source),
        }
    )
    params.update(zip(keys.PARAM_COUNTS, (counts["total"], counts["non_embedding"], counts["attention"])))
    params[keys.FLOPS_PER_TOKEN] = flops_per_token(cfg.model, cfg.data.seq_len, cfg.data.mlm_probability)
    params.update(
        {
            keys.DATA_FLOOR: floor["context_free_loss"],
            keys.UNIGRAM_ENTROPY: floor["unigram_entropy"],
            keys.VAL_FLOOR: val_floor,
        }
    )
    return params


def pretrain(
    cfg: RunConfig,
    resume: Union[bool, str, None] = False,
    callbacks: Optional[list] = None,
    started_at: Optional[float] = None,
    extend_run: Optional[str] = None,
) -> dict:
    """Run (or continue) one MLM pre-training run. `resume`: False starts a new run; True continues
    the newest unfinished run of this exact config; "auto" continues one if there is one; a run id
    continues that run. `callbacks`: extra Lightning callbacks. `started_at`: the Unix time the
    run's start-up cost is counted from (default: now; `symattn train` passes its process start).
    `extend_run`: continue that run of this config (which ran to a smaller budget and did not stop
    early) to `cfg.optim.max_steps`, in the same MLflow run (`extension_run`). Returns the final
    metrics with `run_id`, `steps` and `status`.

    One writer per run: the process that writes a run holds its lock (`_lock_run`) until it ends,
    however it ends; a second process resuming the same run waits for it, and leaves a run that
    the first one finished untouched."""
    held: list = []
    try:
        return _pretrain(cfg, resume, callbacks, started_at, held, extend_run)
    finally:
        for lock in held:
            lock.release()


def _pretrain(
    cfg: RunConfig, resume, callbacks, started_at: Optional[float], held: list, extend_run=None
) -> dict:
    from symattn.data import prepare_pretraining

    if started_at is None:
        started_at = time.time()

    apply_speed_settings(threads=cfg.speed.threads, flush_denormal=cfg.speed.flush_denormal)
    data = prepare_pretraining(cfg.data)
    # A run is identified by its config as given (its group and hash, as a sweep's queue and status
    # name them), before the model's vocabulary follows the tokenizer.
    given, cfg = cfg, resolve_vocab(cfg, data)
    data.check_model(cfg.model.vocab_size, cfg.model.max_positions)
    rank_zero = _is_rank_zero()
    o = cfg.optim
    too_long = epochs_warning(
        corpus_name(cfg), o.max_steps, o.batch_size * o.accumulate * _world_size(cfg), len(data.train)
    )
    if too_long and rank_zero:
        print(too_long, file=sys.stderr)

    # The floor of what this run is measured on: its escape and early stop are relative to it.
    val_floor = round(data.evaluated_floor(validation_batches(cfg, data)), 6)
    module = MLMPretraining(cfg)
    counts = count_parameters(module.model)
    tracker, ckpt_path, resume_from = None, None, None
    run_id = os.environ.get("SYMATTN_RUN_ID")  # set by rank zero for the other DDP ranks
    if rank_zero:
        client = open_store(cfg.tracking.uri)
        note = None if keys.STUDY in cfg.tracking.tags else STANDALONE_NOTE
        exp_id = experiment_id(client, cfg.tracking.experiment, note)
        if extend_run is not None:
            ckpt = run_checkpoint_dir(cfg, extend_run)
            run_id = resume = extension_run(client, extend_run, given, cfg, ckpt / "last.ckpt")
        else:
            run_id = _pick_run(client, exp_id, given, cfg, resume)
        if run_id is not None:
            _lock_run(cfg, run_id, held)
            run = client.get_run(run_id)
            # Finished by the process we waited for (an extension: finished at its new budget).
            if run.info.status == "FINISHED" and reached(run) >= cfg.optim.max_steps:
                return _finished_result(run)
        if run_id is None and resume == "auto" and keys.CELL in cfg.tracking.tags:
            done = _finished_cell_run(client, exp_id, given, cfg)
            if done is not None:  # a sweep cell whose run another process has just finished
                return _finished_result(done)
        if run_id is None:
            tracker = RunTracker.create(
                client,
                exp_id,
                cfg.tracking.run_name or cell_name(given, {}),  # as a sweep names its cells
                {**run_tags(given, data.fingerprint), **skipped_files(data.stats.get("corpus", {}))},
                run_params(cfg, counts, data.floor, val_floor),
            )
            run_id = tracker.run_id
            _lock_run(cfg, run_id, held)
        else:
            tracker = RunTracker(client, run_id)
        log_dataset(tracker, cfg, data)
        os.environ["SYMATTN_RUN_ID"] = run_id
    ckpt_dir = run_checkpoint_dir(cfg, run_id)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / "last.ckpt"
    if resume and ckpt_path.exists():
        resume_from = str(ckpt_path)
    if tracker is not None:
        if resume_from:
            tracker.set_resume_floor()
        tracker.set_tags({keys.CHECKPOINT: str(ckpt_path)})
        tracker.set_status("RUNNING")

    o = cfg.optim
    world = _world_size(cfg)
    stop = cfg.eval.stop_below
    lifecycle = RunLifecycle(
        cfg,
        tracker,
        ckpt_path,
        o.batch_size * o.accumulate * cfg.data.seq_len * world,
        started_at,
        stop.resolve(val_floor) if stop else None,
        val_floor,
    )
    trainer = pl.Trainer(
        max_steps=o.max_steps,
        accumulate_grad_batches=o.accumulate,
        gradient_clip_val=o.grad_clip,
        precision=cfg.speed.precision,
        accelerator=cfg.speed.accelerator,
        devices=cfg.speed.devices,
        strategy=cfg.speed.strategy,
        val_check_interval=cfg.eval.every_n_steps * o.accumulate,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # each device already takes its slice of the global batch
        logger=False,
        enable_checkpointing=False,  # checkpoints are written by RunLifecycle, after the metrics
        enable_progress_bar=cfg.speed.progress_bar,
        enable_model_summary=False,
        callbacks=[lifecycle, *(callbacks or [])],
        default_root_dir=str(ckpt_dir),
    )
    datamodule = PretrainingDataModule(cfg, data)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # Batches are a function of the step: the loader restarts exactly where a checkpoint stopped.
        warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
        previous = signal.signal(signal.SIGINT, lifecycle.request_stop)
        try:
            with system_metrics(tracker, cfg.tracking.system_metrics):
                trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        except (KeyboardInterrupt, SystemExit) as exc:  # Lightning exits on Ctrl-C and SIGTERM
            raise RunStopped(
                f"run {run_id} stopped at step {trainer.global_step}; continue it with --resume {run_id}"
            ) from exc
        except StoreFull as exc:
            exc.step = lifecycle.saved_step
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
            os.environ.pop("SYMATTN_RUN_ID", None)
        if trainer.global_step % cfg.eval.every_n_steps:  # the last step is always evaluated
            trainer.validate(module, datamodule=datamodule, verbose=False)

    result = {"run_id": run_id, "steps": trainer.global_step, **module.val_metrics}
    if tracker is not None:
        try:
            lifecycle._flush()
            lifecycle.record_escape(trainer.global_step)
            _log_artifacts(tracker, cfg, module)
            if extend_run is not None:  # only once it ran to the new budget: readers trust it
                tracker.set_tags({keys.EXTENDED_TO: str(cfg.optim.max_steps)})
            tracker.set_status("FINISHED")
        except StoreFull as exc:
            exc.step = lifecycle.saved_step
            raise
    result["status"] = "FINISHED"
    return result


def _pick_run(client, exp_id: str, given: RunConfig, resolved: RunConfig, resume) -> Optional[str]:
    """The run to continue, if any. Runs made before a run's identity was its config as given carry
    the hash of the config with the vocabulary resolved: both are accepted."""
    if not resume:
        return None
    hashes = dict.fromkeys((given.config_hash(), resolved.config_hash()))
    if isinstance(resume, str) and resume != "auto":
        try:
            run = client.get_run(resume)
        except Exception:
            raise ValueError(f"no MLflow run {resume!r} in the tracking store; check the run id") from None
        if run.data.tags.get(keys.CONFIG_HASH) not in hashes:
            raise ValueError(
                f"run {resume} was made with a different config (hash {run.data.tags.get(keys.CONFIG_HASH)}, "
                f"this one {given.config_hash()}); resume it with its own config"
            )
        if run.info.status == "FINISHED":
            raise ValueError(f"run {resume} is already FINISHED; start a new run instead")
        return resume
    run_id = next(filter(None, (find_resumable_run(client, exp_id, h) for h in hashes)), None)
    if run_id is None and resume is True:
        raise ValueError("no unfinished run of this config to resume; drop --resume to start a new run")
    return run_id


def _lock_run(cfg: RunConfig, run_id: str, held: list) -> None:
    """Take the run's lock, a file beside its checkpoint (`run.lock`, an OS lock that the kernel
    releases when its process dies, SIGKILL included), waiting up to `RUN_LOCK_SECONDS` for a
    process that still writes the run; raises RunBusy if it does not stop."""
    from filelock import FileLock, Timeout

    ckpt_dir = run_checkpoint_dir(cfg, run_id)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(ckpt_dir / "run.lock")
    wait = _lock_seconds()
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise RunBusy(
            f"run {run_id} is still written by another process after {wait:g}s "
            f"(lock {lock.lock_file}); wait for it to end, or stop it"
        ) from None
    held.append(lock)


def _lock_seconds() -> float:
    """`RUN_LOCK_SECONDS`, or the wait SYMATTN_RUN_LOCK_SECONDS gives."""
    text = os.environ.get("SYMATTN_RUN_LOCK_SECONDS")
    if text is None:
        return RUN_LOCK_SECONDS
    try:
        return max(0.0, float(text))
    except ValueError:
        raise ValueError(
            f"SYMATTN_RUN_LOCK_SECONDS={text!r} is not a number of seconds; set it to one, or unset it"
        ) from None


def _finished_cell_run(client, exp_id: str, given: RunConfig, resolved: RunConfig):
    """A FINISHED run of this sweep cell's config, if any."""
    hashes = dict.fromkeys((given.config_hash(), resolved.config_hash()))
    for h in hashes:
        runs = client.search_runs(
            [exp_id],
            filter_string=f"tags.config_hash = '{h}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
        if runs:
            return runs[0]
    return None


def _finished_result(run) -> dict:
    """What `pretrain` returns for a run that was already FINISHED (and is left as it is)."""
    metrics = dict(run.data.metrics)
    return {"run_id": run.info.run_id, "steps": reached(run), **metrics, "status": "FINISHED"}


def extension_run(client, run_id: str, given: RunConfig, resolved: RunConfig, ckpt: Path) -> str:
    """Check that run `run_id` can go on to `resolved`'s larger budget: it is a run of this config
    at its first budget (its param `optim.max_steps`, which stays), it did not stop early, it has
    not reached that budget yet, its checkpoint is there (`ckpt`), and no step's rate depends on
    the budget. Under a constant schedule its steps so far are those a run given the larger budget
    would have taken, so it continues from its last checkpoint."""
    resolved.optim.check_extensible("the run")
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001  MLflow's not-found
        raise ValueError(f"no MLflow run {run_id!r} to extend in the tracking store") from None
    first = int(run.data.params.get("optim.max_steps", 0))

    def at_first_budget(cfg: RunConfig) -> str:
        return cfg.model_copy(
            update={"optim": cfg.optim.model_copy(update={"max_steps": first})}
        ).config_hash()

    if run.data.tags.get(keys.CONFIG_HASH) not in {at_first_budget(given), at_first_budget(resolved)}:
        raise ValueError(f"run {run_id} was made with another config than this one at {first:,} steps")
    if keys.STOPPED_EARLY_AT in run.data.tags:
        raise ValueError(
            f"run {run_id} stopped early at step {run.data.tags[keys.STOPPED_EARLY_AT]} (below its floor): "
            "there is nothing to extend"
        )
    if run.info.status == "FINISHED" and reached(run) >= resolved.optim.max_steps:
        return run_id  # extended already (by a process that held the run before us)
    if not ckpt.exists():
        raise ValueError(
            f"run {run_id} has no checkpoint at {ckpt}; it cannot go on without one (on another machine, "
            "give checkpoint.dir of the one that ran it)"
        )
    return run_id


def checkpoint_root(cfg: RunConfig) -> Path:
    """The folder of every run's checkpoints: `checkpoint.dir`, else the default."""
    return Path(cfg.checkpoint.dir or default_checkpoint_dir())


def run_checkpoint_dir(cfg: RunConfig, run_id: str) -> Path:
    """Where a run's checkpoints are: the checkpoint folder, its experiment, its run."""
    return checkpoint_root(cfg) / cfg.tracking.experiment / run_id


def _world_size(cfg: RunConfig) -> int:
    d = cfg.speed.devices
    return len(d) if isinstance(d, (list, tuple)) else (d if isinstance(d, int) and d > 0 else 1)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict, atomically. HF BERT parameter names: it loads into HF
    `BertForMaskedLM` (vanilla) or back into symattn's model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # a kill never leaves a half-written file under the final name


def _log_artifacts(tracker: RunTracker, cfg: RunConfig, module: MLMPretraining) -> None:
    layers = [layer.attention.self for layer in module.model.bert.encoder.layer]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(cfg.to_yaml())
        tracker.log_artifact(tmp / "config.yaml")
        diagnostics = {
            "metrics": module.val_metrics,
            "coefficient_singular_values": coefficient_spectra(layers),
        }
        (tmp / "diagnostics.json").write_text(json.dumps(diagnostics, indent=1))
        tracker.log_artifact(tmp / "diagnostics.json")
        if cfg.checkpoint.log_model:
            save_weights(module.model, tmp / "model.pt")
            tracker.log_artifact(tmp / "model.pt", "model")
