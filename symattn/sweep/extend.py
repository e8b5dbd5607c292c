"""A study continued to a larger budget: `symattn extend STUDY --max-steps N`.

Under a constant schedule the escape step does not depend on the budget, so a study whose runs
were censored by it can go on longer. Every pre-training cell whose run ran to its budget (neither
stopped early below its floor nor failed) is queued again as an extension of itself: the same cell
and Optuna params, its config's `optim.max_steps` raised to N, `extend_run` its MLflow run and
`extend_from` the budget that run reached. A worker continues that run from its last checkpoint
(`symattn.run.identity.extension_run`): no new cell, no second run, and a curve that equals the one a run
given N steps from the start would have drawn. Everything is checked before anything is queued.
A search study is not extended: its trials' values were ranked at their budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from optuna.trial import TrialState

from symattn import keys
from symattn.config import RunConfig
from symattn.sweep.finetune_cells import is_finetune
from symattn.sweep.progress import PROGRESS
from symattn.sweep.records import finished_run
from symattn.sweep.storage import load_study, open_existing_storage
from symattn.tracking.store import reached


@dataclass(frozen=True)
class Extension:
    study: str
    max_steps: int
    extended: list[str]  # cells queued to go on
    stopped_early: list[str]  # left as they are: they escaped and stopped
    failed: list[str]


def _newest_by_cell(study) -> dict:
    newest = {}
    for t in study.get_trials(deepcopy=False):
        cell = t.user_attrs.get("cell")
        if cell and not is_finetune(t) and (cell not in newest or t.number > newest[cell].number):
            newest[cell] = t
    return newest


def extend(study_name: str, storage_url: Optional[str], max_steps: int, client=None) -> Extension:
    """Queue the extension of every cell of `study_name` that ran to its budget (see the module's
    text); ValueError, with nothing queued, for a study that cannot be extended so. `client`: the
    MLflow store of its runs (default: the one the study was queued for)."""
    from symattn.tracking.store import open_store

    study = load_study(study_name, open_existing_storage(study_name, storage_url), storage_url)
    if study.user_attrs.get("spec", {}).get("search"):
        raise ValueError(
            f"study {study_name} is a search, whose trials were ranked at their budget; extend the study "
            "that runs its best values (tuned_from) instead"
        )
    trials = _newest_by_cell(study)
    busy = [
        t.user_attrs["name"] for t in trials.values() if t.state in (TrialState.WAITING, TrialState.RUNNING)
    ]
    if busy:
        raise ValueError(
            f"study {study_name} still has cells waiting or running ({busy[0]}, {len(busy)} in all); "
            "extend it once they have ended (symattn work)"
        )
    for t in trials.values():
        config = RunConfig.model_validate(t.user_attrs["config"])
        optim, every = config.optim, config.eval.every_n_steps
        optim.check_extensible(f"cell {t.user_attrs['name']}")
        if optim.max_steps % every or max_steps % every:
            raise ValueError(
                f"cell {t.user_attrs['name']} evaluates every {every} steps: a budget off that grid ends "
                "with an evaluation a longer run would not make; give budgets on it"
            )
        if not max_steps > optim.max_steps:
            raise ValueError(
                f"--max-steps {max_steps:,} does not extend cell {t.user_attrs['name']} ({optim.max_steps:,} "
                "steps); give a larger budget"
            )
    client = client or open_store(study.user_attrs["mlflow_uri"])
    extended, stopped, failed, queue = [], [], [], []
    for t in sorted(trials.values(), key=lambda t: t.number):
        name = t.user_attrs["name"]
        run = finished_run(client, t) if t.state == TrialState.COMPLETE else None
        if run is None:
            failed.append(name)
        elif keys.STOPPED_EARLY_AT in run.data.tags:
            stopped.append(name)
        else:
            extended.append(name)
            queue.append((t, run))
    for t, run in queue:
        config = t.user_attrs["config"]
        attrs = {k: v for k, v in t.user_attrs.items() if k not in PROGRESS}
        attrs.update(
            config={**config, "optim": {**config["optim"], "max_steps": max_steps}},
            extend_run=run.info.run_id,
            extend_from=reached(run),
            extension_of=t.number,
            attempt=1,
        )
        study.enqueue_trial(t.params, user_attrs=attrs)
    return Extension(study_name, max_steps, extended, stopped, failed)
