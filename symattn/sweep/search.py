"""A search per cell: one Optuna study per cell of the design, TPE proposing values of one numeric
setting (e.g. each variant's learning rate), runs pruned on validation loss."""

from __future__ import annotations

import copy

import optuna
from optuna.trial import FrozenTrial

from symattn.config import RunConfig, apply_overrides
from symattn.sweep import optuna_internals as internals
from symattn.sweep.records import cell_attrs
from symattn.sweep.spec import Cell, SearchSpec, SweepSpec, cell_name


def search_study_name(spec_name: str, cell: Cell) -> str:
    return f"{spec_name}.search.{cell.id}"


def queue_searches(spec: SweepSpec, cells: list[Cell], study: optuna.Study, storage) -> int:
    """Create the search study of every cell that has none; returns how many were created."""
    searches = dict(study.user_attrs.get("searches", {}))
    added = 0
    for cell in cells:
        name = search_study_name(spec.name, cell)
        if name in searches:
            continue
        optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
        searches[name] = {
            "index": cell.index,
            "config": cell.config.model_dump(mode="json", exclude_unset=True),
        }
        added += 1
    study.set_user_attr("searches", searches)
    return added


def load_search(storage, name: str, search: SearchSpec) -> optuna.Study:
    """A search study with its pruner (Optuna keeps none in the storage; the sampler is set per ask)."""
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0, n_min_trials=1)
        if search.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    return optuna.load_study(study_name=name, storage=storage, pruner=pruner)


def ask(study: optuna.Study, search: SearchSpec, base: dict, index: int) -> FrozenTrial:
    """A new trial of a search study: its proposed value, written into the cell's config."""
    # The sampler lives only in this process: seed it by the trials so far, so each proposal is new
    # and a search replays the same proposals.
    study.sampler = optuna.samplers.TPESampler(
        seed=search.seed * 100_003 + len(study.trials), n_startup_trials=min(4, search.trials)
    )
    trial = study.ask()
    value = trial.suggest_float(search.param, search.low, search.high, log=search.log)
    cfg = RunConfig.model_validate(apply_overrides(copy.deepcopy(base), [f"{search.param}={value!r}"]))
    name = cell_name(cfg, {search.param: value})
    storage, tid = internals.storage_of(study), internals.trial_id(trial)
    internals.set_user_attrs(storage, tid, cell_attrs(cfg, name, index))
    internals.beat(storage, tid)
    return internals.reload(storage, tid)


def budget_used(study: optuna.Study) -> int:
    """Trials that count towards the budget: all but failures that were retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return sum(1 for t in trials if t.number not in retried)
