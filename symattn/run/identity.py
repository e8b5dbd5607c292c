"""How a pre-training run is found, locked, resumed and extended: a run is identified by its config
as given (its hash), written by one process at a time (an OS lock beside its checkpoint), and a
run that ran to a smaller budget under a constant schedule may go on, in the same MLflow run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from symattn import keys
from symattn.config import RunConfig
from symattn.errors import RunError
from symattn.naming import cell_name
from symattn.run.checkpoints import run_checkpoint_dir
from symattn.run.record import STANDALONE_NOTE, log_dataset, run_params, run_tags, skipped_files
from symattn.run.stored_checkpoints import fetch_newer_checkpoint
from symattn.tracking.store import RunTracker, experiment_id, find_resumable_run, open_store, reached

# How long a run waits for another process that still writes it to stop; the environment variable
# SYMATTN_RUN_LOCK_SECONDS sets another wait (read at each start, so a sweep's cells follow their
# worker's environment).
RUN_LOCK_SECONDS = 120.0


class RunBusy(RunError, RuntimeError):
    """Another live process still writes this run (a cell of a worker that was killed, stopping)."""


def open_run(
    given: RunConfig, cfg: RunConfig, data, counts: dict, val_floor: float, resume, held: list, extend_run
):
    """Rank zero's run: the one to continue (`resume`, `extend_run`) or a new one, locked (`held`),
    its dataset logged. Returns (tracker, run_id, None), or (None, run_id, what `pretrain` returns)
    for a run that another process has FINISHED meanwhile, which is left as it is."""
    client = open_store(cfg.tracking.uri)
    note = None if keys.STUDY in cfg.tracking.tags else STANDALONE_NOTE
    exp_id = experiment_id(client, cfg.tracking.experiment, note)
    if extend_run is not None:
        ckpt = run_checkpoint_dir(cfg, extend_run)
        run_id = resume = extension_run(client, extend_run, given, cfg, ckpt / "last.ckpt")
    else:
        run_id = pick_run(client, exp_id, given, cfg, resume)
    if run_id is not None:
        lock_run(cfg, run_id, held)
        run = client.get_run(run_id)
        # Finished by the process we waited for (an extension: finished at its new budget).
        if run.info.status == "FINISHED" and reached(run) >= cfg.optim.max_steps:
            return None, run_id, finished_result(run)
    if run_id is None and resume == "auto" and keys.CELL in cfg.tracking.tags:
        done = finished_cell_run(client, exp_id, given, cfg)
        if done is not None:  # a sweep cell whose run another process has just finished
            return None, done.info.run_id, finished_result(done)
    if run_id is None:
        tracker = RunTracker.create(
            client,
            exp_id,
            cfg.tracking.run_name or cell_name(given, {}),  # as a sweep names its cells
            {**run_tags(given, data.fingerprint), **skipped_files(data.stats.get("corpus", {}))},
            run_params(cfg, counts, data.floor, val_floor),
        )
        run_id = tracker.run_id
        lock_run(cfg, run_id, held)
    else:
        tracker = RunTracker(client, run_id)
    log_dataset(tracker, cfg, data)
    return tracker, run_id, None


def pick_run(client, exp_id: str, given: RunConfig, resolved: RunConfig, resume) -> Optional[str]:
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


def lock_run(cfg: RunConfig, run_id: str, held: list) -> None:
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


def finished_cell_run(client, exp_id: str, given: RunConfig, resolved: RunConfig):
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


def finished_result(run) -> dict:
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
    fetch_newer_checkpoint(client, run_id, ckpt)  # stored by a run on another machine (checkpoint.upload)
    if not ckpt.exists():
        raise ValueError(
            f"run {run_id} has no checkpoint at {ckpt} nor in the store; it cannot go on without one (on "
            "another machine, give checkpoint.dir of the one that ran it)"
        )
    return run_id
