"""One tracked pre-training run, `pretrain(cfg)`: its data, model and Lightning Trainer, in the MLflow
run that `run.identity` finds or creates, with `run.lifecycle`'s callback tying its life to it.

Invariants: a run is exactly one MLflow run (also when resumed), written by one process at a time
(its lock); a checkpoint is written only after the metrics up to its step are in the store, its
evaluation included; a NaN marks the run FAILED with the reason; Ctrl-C or SIGTERM leaves a
checkpoint and a KILLED run that `resume` continues with the uninterrupted curve, step for step; a
store with no room left (`StoreFull`) ends the run there, its last checkpoint and metrics intact.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Optional, Union

import pytorch_lightning as pl

from symattn import keys, quiet  # noqa: F401  quiet: imported for its effect
from symattn.config import RunConfig
from symattn.data.budget import epochs_warning
from symattn.errors import RunStopped
from symattn.model.bert import count_parameters
from symattn.run.checkpoints import run_checkpoint_dir
from symattn.run.identity import open_run
from symattn.run.lifecycle import RunLifecycle
from symattn.run.mlm import MLMPretraining, PretrainingDataModule, validation_batches
from symattn.run.record import corpus_name, log_artifacts
from symattn.run.speed import apply_speed_settings
from symattn.run.stored_checkpoints import fetch_newer_checkpoint
from symattn.tracking.store import StoreFull, system_metrics


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
    early) to `cfg.optim.max_steps`, in the same MLflow run (`run.identity.extension_run`). Returns the final
    metrics with `run_id`, `steps` and `status`.

    One writer per run: the process that writes a run holds its lock (`run.identity.lock_run`) until it ends,
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
    tracker, resume_from = None, None
    run_id = os.environ.get("SYMATTN_RUN_ID")  # set by rank zero for the other DDP ranks
    if rank_zero:
        counts = count_parameters(module.model)
        tracker, run_id, finished = open_run(given, cfg, data, counts, val_floor, resume, held, extend_run)
        if finished is not None:
            return finished
        resume = resume or extend_run is not None  # an extension continues its run's checkpoint
        os.environ["SYMATTN_RUN_ID"] = run_id
    ckpt_dir = run_checkpoint_dir(cfg, run_id)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / "last.ckpt"
    if resume and tracker is not None:
        fetched = fetch_newer_checkpoint(tracker.client, run_id, ckpt_path)  # e.g. of a node that died
        if fetched is not None:
            print(f"run {run_id}: resumed from its stored checkpoint at step {fetched:,}", file=sys.stderr)
    if resume and ckpt_path.exists():
        resume_from = str(ckpt_path)
    if tracker is not None:
        if resume:  # without a checkpoint too: steps the store holds are recomputed, not logged again
            tracker.set_resume_floor()
        tracker.set_tags({keys.CHECKPOINT: str(ckpt_path)})
        tracker.set_status("RUNNING")

    lifecycle = _lifecycle(cfg, tracker, ckpt_path, started_at, val_floor)
    trainer = _trainer(cfg, [lifecycle, *(callbacks or [])], ckpt_dir)
    datamodule = PretrainingDataModule(cfg, data)
    _fit(trainer, module, datamodule, lifecycle, resume_from, run_id, tracker, cfg)

    result = {"run_id": run_id, "steps": trainer.global_step, **module.val_metrics}
    if tracker is not None:
        try:
            lifecycle._flush()
            lifecycle.record_escape(trainer.global_step)
            log_artifacts(tracker, cfg, module)
            if extend_run is not None:  # only once it ran to the new budget: readers trust it
                tracker.set_tags({keys.EXTENDED_TO: str(cfg.optim.max_steps)})
            tracker.set_status("FINISHED")
        except StoreFull as exc:
            exc.step = lifecycle.saved_step
            raise
    result["status"] = "FINISHED"
    return result


def _lifecycle(cfg: RunConfig, tracker, ckpt_path: Path, started_at: float, val_floor: float) -> RunLifecycle:
    o, stop = cfg.optim, cfg.eval.stop_below
    return RunLifecycle(
        cfg,
        tracker,
        ckpt_path,
        o.batch_size * o.accumulate * cfg.data.seq_len * _world_size(cfg),
        started_at,
        stop.resolve(val_floor) if stop else None,
        val_floor,
    )


def _trainer(cfg: RunConfig, callbacks: list, ckpt_dir: Path) -> pl.Trainer:
    o = cfg.optim
    return pl.Trainer(
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
        callbacks=callbacks,
        default_root_dir=str(ckpt_dir),
    )


def _fit(
    trainer, module, datamodule, lifecycle: RunLifecycle, resume_from, run_id, tracker, cfg: RunConfig
) -> None:
    """Train to the budget, Ctrl-C asking the lifecycle to stop at the next step boundary; the last
    step is always evaluated."""
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


def _world_size(cfg: RunConfig) -> int:
    d = cfg.speed.devices
    return len(d) if isinstance(d, (list, tuple)) else (d if isinstance(d, int) and d > 0 else 1)
