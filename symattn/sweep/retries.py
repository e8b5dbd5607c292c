"""A cell that did not succeed on its first try: queued again (`retry`) within its retries, and the
cells of a worker that stopped sending heartbeats reclaimed (`reclaim_stale`): COMPLETE where its
run had FINISHED, else failed and retried from its run's last checkpoint."""

from __future__ import annotations

import logging
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from symattn import keys
from symattn.sweep import optuna_internals as internals
from symattn.sweep.progress import PROGRESS, RUN_ID
from symattn.sweep.records import FAILURE, finished_run
from symattn.sweep.search import trial_value
from symattn.sweep.worker_output import say

log = logging.getLogger("symattn.sweep")


def retry(study: optuna.Study, trial: FrozenTrial, max_retries: int, why: str, count: bool = True) -> None:
    """Enqueue the cell again. `count`: the try counts as an attempt (False: the cell had not
    failed: it was stopped with its worker, by Ctrl-C or SIGTERM, or its run was busy)."""
    attempt = int(trial.user_attrs.get("attempt", 1))
    if count and attempt > max_retries:
        log.warning("cell %s failed %d times (%s); not retried", trial.user_attrs.get("name"), attempt, why)
        return
    # A finished trial takes no more attributes: the copy records what it retries and why.
    attrs = {**trial.user_attrs, "attempt": attempt + count, "retry_of": trial.number, "retry_reason": why}
    for progress in PROGRESS:  # the retry reports its own
        attrs.pop(progress, None)
    study.enqueue_trial(trial.params, user_attrs=attrs)


def reclaim_stale(
    study: optuna.Study, grace_seconds: float, max_retries: int, client=None, search=None
) -> int:
    """End the running cells whose worker stopped sending heartbeats: a cell whose MLflow run is
    FINISHED (its worker died after the run ended, or its cell finished it after the worker died)
    is COMPLETE, as its worker would have recorded it (`client`: the MLflow store to look in;
    `search`: the `SearchSpec` of a search study, whose trials take its objective's value);
    any other fails, and its retry is enqueued (it resumes the run)."""

    def outcome(trial: FrozenTrial):
        try:
            run = finished_run(client, trial) if client is not None else None
        except Exception as exc:  # noqa: BLE001  not found: retried, and the retry finds it
            log.debug("cell %s: its run not looked up (%s)", trial.user_attrs.get("name"), exc)
            run = None
        if run is None:
            note_failure(study, trial, "its worker stopped sending heartbeats")
            return TrialState.FAIL, None
        try:
            value = cell_value(client, run, search)
        except Exception as exc:  # noqa: BLE001  its retry finds the run, and records why it has no value
            log.debug("cell %s: no value (%s)", trial.user_attrs.get("name"), exc)
            note_failure(study, trial, "its worker stopped sending heartbeats")
            return TrialState.FAIL, None
        internals.set_user_attrs(
            internals.storage_of(study), internals.trial_id(trial), {RUN_ID: run.info.run_id}
        )
        return TrialState.COMPLETE, value

    n = 0
    for trial, state in internals.fail_stale(study, grace_seconds, outcome):
        name = trial.user_attrs.get("name")
        if state == TrialState.COMPLETE:
            say(f"{name}: its worker stopped beating after its run FINISHED: COMPLETE")
        else:
            say(f"{name}: its worker stopped beating; retried, from its run's last checkpoint")
            retry(study, trial, max_retries, "worker stopped sending heartbeats")
        n += 1
    return n


def note_failure(study: optuna.Study, trial: FrozenTrial, why: str) -> None:
    """Record why a trial that another worker ran fails, before it is failed (a finished trial
    takes no more attributes); another worker may have ended it first."""
    try:
        internals.set_user_attrs(internals.storage_of(study), internals.trial_id(trial), {FAILURE: why})
    except internals.UpdateFinishedTrialError:
        pass


def cell_value(client, run, search=None) -> Optional[float]:
    """A finished pre-training cell's trial value: its final validation loss, or, in a search study,
    what the search's objective makes of its run (`search.trial_value`)."""
    if search is None:
        return run.data.metrics.get(keys.VAL_LOSS)
    return trial_value(search, client, run)
