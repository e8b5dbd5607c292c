"""Every call into Optuna's private API, in one place (written against Optuna 5, which
`pyproject.toml` pins). A queue needs what Optuna's public API does not give: a waiting trial
taken by exactly one worker, attributes written to a trial another process runs, a trial failed
on another process's behalf. Storages give all three atomically; the study and trial objects hide
the storage and the trial's id behind underscores."""

from __future__ import annotations

import time
from typing import Callable, Iterator, Optional

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from symattn.sweep.trial_params import recorded_distributions


def trial_id(trial: FrozenTrial | optuna.trial.Trial) -> int:
    """A trial's id in its storage (its `number` counts within the study)."""
    return trial._trial_id


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def beat(storage, tid: int) -> None:
    """Record that the trial's worker is alive; raises UpdateFinishedTrialError once it was failed
    (reclaimed) by another worker."""
    storage.set_trial_system_attr(tid, "heartbeat", time.time())


def last_beat(trial: FrozenTrial) -> float:
    return trial.system_attrs.get("heartbeat") or trial.datetime_start.timestamp()


def pop_waiting(
    study: optuna.Study, ready: Callable[[FrozenTrial], bool] = lambda t: True
) -> Optional[FrozenTrial]:
    """Take the first waiting trial that is `ready`; the storage hands each trial to exactly one caller."""
    storage = study._storage
    for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if not ready(trial):
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                beat(storage, trial._trial_id)
                _set_fixed_params(study, trial)
                return storage.get_trial(trial._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def _set_fixed_params(study: optuna.Study, trial: FrozenTrial) -> None:
    """A trial enqueued with fixed params but without them as params (a retry: `Study.enqueue_trial`
    keeps the values only) gets them, with the distribution the study's newest trial with each
    param has. Params only show the design: one the storage refuses (a distribution the study has
    since changed) is left out."""
    fixed = trial.system_attrs.get("fixed_params") or {}
    missing = {name: value for name, value in fixed.items() if name not in trial.params}
    if not missing:
        return
    storage = study._storage
    known = recorded_distributions(storage.get_all_trials(study._study_id, deepcopy=False))
    for name, value in missing.items():
        if name in known:
            try:
                storage.set_trial_param(
                    trial._trial_id, name, known[name].to_internal_repr(value), known[name]
                )
            except (ValueError, UpdateFinishedTrialError):
                pass


def fail_stale(
    study: optuna.Study,
    grace_seconds: float,
    outcome: Optional[Callable[[FrozenTrial], tuple[TrialState, Optional[float]]]] = None,
) -> Iterator[tuple[FrozenTrial, TrialState]]:
    """End the running trials whose heartbeat is older than `grace_seconds`, as `outcome(trial)`
    says (a state and a value; default: FAIL); yields each one this caller ended, with its state
    (another worker may end it first)."""
    storage, now = study._storage, time.time()
    for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if now - last_beat(trial) < grace_seconds:
            continue
        state, value = outcome(trial) if outcome is not None else (TrialState.FAIL, None)
        try:
            values = None if value is None else [value]
            if storage.set_trial_state_values(trial._trial_id, state=state, values=values):
                yield trial, state
        except UpdateFinishedTrialError:
            pass


def set_user_attrs(storage, tid: int, attrs: dict) -> None:
    for key, value in attrs.items():
        storage.set_trial_user_attr(tid, key, value)


def finish(storage, tid: int, state: TrialState, value: Optional[float] = None) -> None:
    """End a trial that another process ran."""
    storage.set_trial_state_values(tid, state=state, values=None if value is None else [value])


def live_trial(study: optuna.Study, tid: int) -> optuna.trial.Trial:
    """The running trial `tid` as a `Trial` (to report to and ask its pruner) in a process other
    than the one that asked for it."""
    return optuna.trial.Trial(study, tid)


def reload(storage, tid: int) -> FrozenTrial:
    return storage.get_trial(tid)
