"""A search per cell: one Optuna study per cell of the design, TPE proposing values of one numeric
setting (e.g. each variant's learning rate); a trial's value is its run's final validation loss or
its escape step (`SearchSpec.objective`, `trial_value`). Every search of a spec proposes the same
values, spread over the range, for its first trials (`startup_value`), so the variants start from
the same candidates. `tuned_values` reads the best value of each search of a finished study,
for a spec that runs matched seeds at them (`SweepSpec.tuned_from`)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from symattn import keys
from symattn.config import RunConfig, apply_overrides, digest, flatten
from symattn.naming import cell_name
from symattn.sweep import optuna_internals as internals
from symattn.sweep.records import cell_attrs
from symattn.sweep.spec import Cell, SearchSpec, SweepSpec


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


def van_der_corput(n: int) -> float:
    """The n-th point (n >= 1) of the base-2 van der Corput sequence: 0.5, 0.25, 0.75, 0.125, ..."""
    u, scale = 0.0, 0.5
    while n:
        n, bit = divmod(n, 2)
        u += bit * scale
        scale /= 2
    return u


def startup_value(search: SearchSpec, asked: int) -> float:
    """The value of the `asked`-th proposal (from 0) of a search's start-up phase: the range's
    (log-)midpoint first, then its quarters, eighths, ...: spread over the range for any budget,
    and the same for every search of the spec."""
    u = van_der_corput(asked + 1)
    if search.log:
        return math.exp(math.log(search.low) + u * (math.log(search.high) - math.log(search.low)))
    return search.low + u * (search.high - search.low)


def _sampler_seed(seed: int, asked: int) -> int:
    """A seed per proposal: hashed, since generators seeded with consecutive integers start alike."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{asked}".encode()).digest()[:4], "little")


def ask(study: optuna.Study, search: SearchSpec, base: dict, index: int) -> FrozenTrial:
    """A new trial of a search study: its proposed value, written into the cell's config. The first
    min(4, trials) proposals are `startup_value`s, the rest TPE's."""
    # The sampler lives only in this process: seeded by the proposals so far, so each proposal is
    # new and a search replays the same proposals.
    asked = sum(1 for t in study.get_trials(deepcopy=False) if "retry_of" not in t.user_attrs)
    startup = min(4, search.trials)
    tpe = optuna.samplers.TPESampler(seed=_sampler_seed(search.seed, asked), n_startup_trials=startup)
    if asked < startup:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.sampler = optuna.samplers.PartialFixedSampler(
                {search.param: startup_value(search, asked)}, tpe
            )
    else:
        study.sampler = tpe
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


# --------------------------------------------------------------------------- a trial's value


def escape_value(
    censored: bool, low: float, step: float, final_loss: float, level: float, budget: int
) -> float:
    """The value of a trial of an escape search, in steps, lower is better. A run that escaped is
    worth its escape step (`escape/step`; 0 if it was already across at its first evaluation,
    `escape/low` 0). One that did not by its last evaluation (censored: not reached, or crossed too
    late to be confirmed) is worth its budget (`max_steps`) plus one budget per nat its final
    validation loss lies above the escape level (its floor - 0.25), never less than the budget. An
    exact escape is confirmed evaluations before a run's end, so below its budget: every censored
    trial ranks after every escaped one, and among censored ones the nearer the level the better.
    TPE uses only the order of the values."""
    if not censored:
        return float(step)
    if low == 0:  # across at the first evaluation: escaped at or before it
        return 0.0
    gap = final_loss - level if math.isfinite(final_loss) else math.inf
    return float(budget) * (1.0 + min(max(gap, 0.0), 1e6))


def escape_level(run) -> float:
    """The level a run's escape is measured at: its validation targets' floor (else the data's
    L*) minus the headline margin (`symattn.convergence.headline_escape`)."""
    from symattn.convergence import MARGINS

    params = run.data.params
    floor = params.get(keys.VAL_FLOOR) or params.get(keys.DATA_FLOOR)
    if floor is None:
        raise ValueError(f"run {run.info.run_id} records no floor ({keys.VAL_FLOOR}); its escape is unknown")
    return float(floor) - MARGINS[0]


def run_escape(client, run) -> tuple[bool, float, float]:
    """(censored, low, step) of a FINISHED run's escape: as it recorded them when it ended
    (`symattn.keys`), else measured again from its validation curve."""
    metrics = run.data.metrics
    if keys.ESCAPE_CENSORED in metrics and keys.ESCAPE_LOW in metrics:
        censored = bool(metrics[keys.ESCAPE_CENSORED])
        return censored, metrics[keys.ESCAPE_LOW], metrics.get(keys.ESCAPE_STEP, math.nan)
    from symattn.convergence import MARGINS, headline_escape

    history = client.get_metric_history(run.info.run_id, keys.VAL_LOSS)
    escape = headline_escape(
        [m.step for m in history], [m.value for m in history], escape_level(run) + MARGINS[0]
    )
    return escape.censored, escape.low, escape.step


def trial_value(search: SearchSpec, client, run) -> Optional[float]:
    """A search trial's value from its FINISHED run, as `search.objective` says."""
    final = run.data.metrics.get(keys.VAL_LOSS)
    if search.objective == "final_loss":
        return final
    censored, low, step = run_escape(client, run)
    budget = int(float(run.data.params["optim.max_steps"]))
    return escape_value(censored, low, step, math.nan if final is None else final, escape_level(run), budget)


# --------------------------------------------------------------------------- the second stage


def tuning_key(cfg: RunConfig, param: str) -> str:
    """What a cell shares with the search it takes its value from: every setting that changes
    results but the seeds and the searched param."""
    d = cfg.to_dict()
    for block in ("speed", "tracking", "checkpoint"):
        d.pop(block)
    d["model"]["attention"] = cfg.model.attention.identity()
    flat = flatten(d)
    for key in ("seed", "data.seed", param):
        flat.pop(key, None)
    return digest(flat)


@dataclass(frozen=True)
class Tuned:
    """The best value of each search of a finished search study, by `tuning_key`."""

    study: str
    param: str
    best: dict  # tuning key -> (best value, the search cell's name)

    def override(self, cfg: RunConfig) -> str:
        """`param=value` for a cell: its search's best value; a ValueError if no search has its settings."""
        found = self.best.get(tuning_key(cfg, self.param))
        if found is None:
            names = ", ".join(name for _, name in self.best.values())
            raise ValueError(
                f"no search of study {self.study!r} has this cell's settings but for the seed and "
                f"{self.param} (it searched {names}); change the spec's base or axes to match"
            )
        return f"{self.param}={json.dumps(found[0])}"


def tuned_values(study_name: str, storage_url: Optional[str] = None) -> Tuned:
    """The best `search.param` value of every search of the finished search study `study_name`;
    a ValueError (one line) if it is not a search study or a search has trials left."""
    from symattn.sweep.storage import load_study, open_existing_storage

    storage = open_existing_storage(study_name, storage_url)
    study = load_study(study_name, storage, storage_url)
    raw = study.user_attrs.get("spec", {})
    if not raw.get("search"):
        raise ValueError(
            f"tuned_from: study {study_name!r} has no search; name a study queued from a spec with search"
        )
    search = SearchSpec.model_validate(raw["search"])
    best = {}
    for name, attrs in study.user_attrs.get("searches", {}).items():
        cfg = RunConfig.model_validate(attrs["config"])
        label = f"{cfg.model.size}-{cfg.model.attention.label}"
        one = optuna.load_study(study_name=name, storage=storage)
        trials = one.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        pending = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        if pending or budget_used(one) < search.trials:
            raise ValueError(
                f"tuned_from: the search of {label} in {study_name!r} is not finished ({len(complete)} of "
                f"{search.trials} trials complete); run `symattn work {study_name}` first"
            )
        if not complete:
            raise ValueError(f"tuned_from: no trial of the search of {label} in {study_name!r} completed")
        winner = min(complete, key=lambda t: (t.value, t.number))
        best[tuning_key(cfg, search.param)] = (winner.params[search.param], label)
    if not best:
        raise ValueError(f"tuned_from: study {study_name!r} holds no search; queue it first")
    return Tuned(study_name, search.param, best)
