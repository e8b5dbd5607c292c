"""A cell's design values as its trial's Optuna params, so that Optuna's views of a study
(optuna-dashboard's plots, `study.trials_dataframe()`, `optuna.importance`) show the design: a
pre-training cell's value of each axis of the spec (`seed`, `model.attention.variant`, ...), and a
fine-tuning cell's too, with its task, fine-tuning seed and checkpoint step (`keys.TASK`,
`keys.FINETUNE_SEED`, `keys.CHECKPOINT_STEP`). Set when the cell is queued; MLflow-free.

Optuna compares a param's distributions across the trials of a study, so every trial gets the same
one per param: an integer or float range over the axis's values when they are all numbers, else
the categories of its values (lists and mappings as JSON strings). Queuing a study again keeps the
distributions its trials already have where they hold the spec's values, and widens them where they
do not (a new seed); older trials keep theirs, and trials queued before params existed keep none.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial

from symattn import keys
from symattn.sweep.finetune_cells import FinetuneCell
from symattn.sweep.spec import Cell, SweepSpec


def param_value(value: Any) -> Any:
    """A design value as an Optuna param value: lists and mappings as JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def distribution(values: Iterable[Any], recorded: BaseDistribution | None = None) -> BaseDistribution:
    """One param's distribution over `values` (param values); `recorded`, the one the study's trials
    have so far, is kept if it holds them all, else widened to hold them if it is of the same kind."""
    values = list(dict.fromkeys(values))
    if all(isinstance(v, int) and _number(v) for v in values):
        new: BaseDistribution = IntDistribution(min(values), max(values))
    elif all(_number(v) for v in values):
        new = FloatDistribution(float(min(values)), float(max(values)))
    else:
        new = CategoricalDistribution(values)
    if recorded is None or type(recorded) is not type(new):
        return new
    if all(_holds(recorded, v) for v in values):
        return recorded
    if isinstance(new, CategoricalDistribution):
        return CategoricalDistribution(list(dict.fromkeys([*recorded.choices, *values])))
    return type(new)(min(recorded.low, new.low), max(recorded.high, new.high))


def _holds(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    return dist.low <= value <= dist.high


def recorded_distributions(trials: Iterable[FrozenTrial]) -> dict[str, BaseDistribution]:
    """Each param's distribution in the newest trial that has it (each queuing widens, never narrows)."""
    found: dict[str, BaseDistribution] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        found.update(trial.distributions)
    return found


def cell_params(cell: Cell) -> dict[str, Any]:
    return {key: param_value(value) for key, value in cell.axes.items()}


def finetune_params(cell: FinetuneCell) -> dict[str, Any]:
    return {
        **cell_params(cell.pretrain),
        keys.TASK: cell.config.task,
        keys.FINETUNE_SEED: cell.config.seed,
        keys.CHECKPOINT_STEP: cell.step,
    }


def study_distributions(
    spec: SweepSpec, finetune_cells: list[FinetuneCell], recorded: dict[str, BaseDistribution]
) -> dict[str, BaseDistribution]:
    """The distribution of every param of the study's cells (`recorded`: what its trials have)."""
    values: dict[str, list] = {key: [param_value(v) for v in axis] for key, axis in spec.axes.items()}
    if finetune_cells:
        values[keys.TASK] = [c.config.task for c in finetune_cells]
        values[keys.FINETUNE_SEED] = [c.config.seed for c in finetune_cells]
        values[keys.CHECKPOINT_STEP] = [c.step for c in finetune_cells]
    return {name: distribution(vals, recorded.get(name)) for name, vals in values.items()}


def waiting_trial(
    params: dict[str, Any], distributions: dict[str, BaseDistribution], user_attrs: dict
) -> FrozenTrial:
    """A queued cell's trial with its params: what `Study.enqueue_trial` makes (the params as fixed
    values too), with each param's distribution."""
    return create_trial(
        state=TrialState.WAITING,
        params=params,
        distributions={name: distributions[name] for name in params},
        user_attrs=user_attrs,
        system_attrs={"fixed_params": params},
    )
