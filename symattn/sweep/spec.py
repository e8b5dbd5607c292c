"""Sweep specs: a base run config and design axes, expanded into cells and validated before anything
is written. A matched group is the cells that share everything but the attention block."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from symattn import keys
from symattn.config import FinetuneConfig, RunConfig, apply_overrides, digest, flatten, read_yaml_mapping
from symattn.model.config import EARLIER_NAMES, same_setting
from symattn.sweep.analysis_plan import AnalysisPlan


class StoresSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    optuna: Optional[str] = Field(
        None, description="Optuna storage URL or journal path (default: `<project>/optuna.journal`)"
    )
    mlflow: Optional[str] = Field(
        None,
        description="MLflow store (default: the base config's `tracking.uri`, else `<project>/mlflow.db`)",
    )


class WorkersSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_device: int = Field(1, ge=1, description="cells run at once on each device")
    heartbeat_seconds: float = Field(10.0, gt=0, description="how often a running cell says it is alive")
    grace_seconds: float = Field(
        60.0, gt=0, description="a cell silent this long is taken as dead and retried"
    )
    max_retries: int = Field(3, ge=0, description="tries of a failing cell after its first")


# What a trial's value is, by objective, as optuna-dashboard names it (a grid cell's: `final_loss`).
OBJECTIVE_NAMES = {
    "final_loss": "final val/loss",
    "escape": "escape step (censored: budget + a budget per nat above the level)",
}


class SearchSpec(BaseModel):
    """A search per cell over one numeric setting (e.g. the learning rate of each variant, for a fair
    comparison): Optuna TPE proposes values, each trial is one run, `trials` per cell.

    `objective`, what a trial's value is (lower is better): `final_loss`, its run's last validation
    loss (runs pruned on it with `pruner: median`); `escape`, its run's escape step from the floor,
    a run that never escaped ranked after every one that did (`search.escape_value`). An escape
    search is not pruned (`pruner: none`, its default): on the plateau the validation loss does
    not tell which run will leave it first, so a loss-based pruner would stop runs that were about
    to escape; a run that has escaped frees its slot by `eval.stop_below` instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    param: str = Field("optim.lr", description="the numeric run setting searched")
    low: float = Field(description="lower end of its range")
    high: float = Field(description="upper end of its range")
    log: bool = Field(True, description="search on a log scale")
    trials: int = Field(8, ge=1, description="trials per cell: every cell (variant) gets the same budget")
    objective: Literal["final_loss", "escape"] = Field("final_loss", description="what a trial's value is")
    pruner: Literal["median", "none"] = Field(
        "median", description="`none` by default with `objective: escape`"
    )
    warmup_evals: int = Field(2, ge=0, description="evaluations before a run may be pruned")
    seed: int = Field(0, description="seed of the TPE sampler")

    @model_validator(mode="before")
    @classmethod
    def _default_pruner(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("objective") == "escape" and "pruner" not in data:
            data = {**data, "pruner": "none"}
        return data

    @model_validator(mode="after")
    def _check(self) -> "SearchSpec":
        if self.objective == "escape" and self.pruner != "none":
            raise ValueError(
                "objective: escape takes pruner: none; the validation loss on the plateau does not "
                "predict the escape step, so pruning on it would stop runs about to escape"
            )
        if self.objective == "escape" and self.param == "optim.max_steps":
            raise ValueError(
                "objective: escape ranks a run that did not escape by its budget; search another "
                "param than optim.max_steps, or use objective: final_loss"
            )
        if not self.low < self.high:
            raise ValueError(f"search range low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(
                f"a log-scale search needs low > 0 (got {self.low}); set log: false or raise low"
            )
        check_axis_key(self.param)
        if not isinstance(flatten(RunConfig().to_dict()).get(self.param), (int, float)):
            raise ValueError(f"search param {self.param!r} is not a numeric run setting (e.g. optim.lr)")
        return self


class FinetuneSpec(BaseModel):
    """Fine-tuning cells attached to the pre-training cells: one per kept step, task and seed of
    each pre-training cell, queued with the sweep and run once their pre-training cell is COMPLETE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[str] = Field(
        min_length=1, description="GLUE tasks and the offline ones (`symattn.data.tasks`)"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], min_length=1, description="fine-tuning seeds (the paper: 5)"
    )
    steps: Union[Literal["all"], list[int]] = Field(
        "all", description="the kept series, or some of its steps"
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="fine-tuning settings (`FinetuneConfig`: epochs, lr, ...)"
    )

    @model_validator(mode="after")
    def _check(self) -> "FinetuneSpec":
        from symattn.data.task_registry import TASKS as TASK_NAMES

        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown:
            raise ValueError(f"finetune: unknown task {unknown[0]!r}; choose from {', '.join(TASK_NAMES)}")
        if {"task", "seed"} & set(self.config):
            raise ValueError(
                "finetune.config sets task or seed; give them as finetune.tasks and finetune.seeds"
            )
        for name, values in (("tasks", self.tasks), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"finetune.{name} repeats a value; each cell must be distinct")
        FinetuneConfig.model_validate(self.config)
        return self


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the study's name")
    description: str = Field("", description="one line, shown on the study's MLflow experiment")
    base: dict[str, Any] = Field(
        default_factory=dict,
        description="a run config (`symattn/config.py`), or the path of one relative to the spec",
    )
    axes: dict[str, list[Any]] = Field(
        default_factory=dict,
        description=(
            "dotted run setting -> values; the cells are the product, group by group (attention "
            "fastest); `seed` sets `data.seed` too unless the base does"
        ),
    )
    stores: StoresSpec = Field(default_factory=StoresSpec, description="where the study's stores are")
    workers: WorkersSpec = Field(default_factory=WorkersSpec, description="how workers run the cells")
    search: Optional[SearchSpec] = Field(None, description="a search per cell over one setting (Optuna TPE)")
    finetune: Optional[FinetuneSpec] = Field(
        None, description="fine-tuning cells on each cell's kept weights, run once it is COMPLETE"
    )
    analysis: Optional[AnalysisPlan] = Field(
        None, description="the analysis, stated before the cells run; fixed once a cell started"
    )
    tuned_from: Optional[str] = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description=(
            "a finished search study: each cell takes the search param from the best trial of the "
            "cell with its settings but the seed"
        ),
    )

    @model_validator(mode="after")
    def _search_not_an_axis(self) -> "SweepSpec":
        if self.search is not None and self.search.param in self.axes:
            raise ValueError(f"{self.search.param!r} is both an axis and the search param; keep one")
        if self.tuned_from is not None and self.search is not None:
            raise ValueError(
                "a spec with tuned_from runs the best values of a finished search; move its search "
                "block to a spec of its own"
            )
        if self.tuned_from is not None and self.tuned_from == self.name:
            raise ValueError(f"tuned_from names the spec itself ({self.name!r}); name the search study")
        if self.search is not None and self.finetune is not None:
            raise ValueError(
                "a spec with a search cannot fine-tune; fine-tune the chosen runs in a spec of their own"
            )
        return self

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        axes = _current_names(axes)
        for key, values in axes.items():
            if not values:
                raise ValueError(f"axis {key!r} is empty; give it at least one value or remove it")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ValueError(f"axis {key!r} repeats a value; each cell must be distinct")
        return axes


@dataclass(frozen=True)
class Cell:
    id: str  # stable hash of the cell's result-changing config
    name: str  # readable: size-variant-lr-seed
    config: RunConfig
    index: int  # position in queue order
    axes: dict[str, Any] = field(default_factory=dict)  # its value of each design axis, as the spec gives it

    @property
    def group(self) -> str:
        """Its matched group: the config's, or the design's where rates are tuned per variant."""
        return self.config.tracking.tags.get(keys.GROUP) or self.config.group_id()


# Axes under the earlier name of a setting, as a run config reads them (`model_config.EARLIER_NAMES`).
_EARLIER_AXES = {
    f"model.attention.{earlier}": f"model.attention.{name}" for earlier, name in EARLIER_NAMES.items()
}


def _current_names(axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The axes with each earlier setting name replaced by its current one, in the spec's order, so
    that a spec means the same cells (ids, names, trial params) under either name."""
    for earlier, name in _EARLIER_AXES.items():
        if earlier in axes and name in axes:
            short = same_setting(earlier.rsplit(".", 1)[-1], name.rsplit(".", 1)[-1])
            raise ValueError(f"{earlier} and {name}: {short}")
    return {_EARLIER_AXES.get(key, key): values for key, values in axes.items()}


def check_axis_key(key: str) -> None:
    """Refuse an axis that names no setting of a run config."""
    if key == "seed":
        return
    probe = flatten(RunConfig().to_dict())
    if (
        key in probe
        or any(k.startswith(key + ".") for k in probe)
        or key.startswith(("data.source", "tracking.tags."))
    ):
        return
    raise ValueError(
        f"unknown axis {key!r}: it names no run setting (e.g. model.size, model.attention.variant, optim.lr, seed)"
    )


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """A spec from YAML; `overrides` (`key=value`, as `symattn train` takes) change its base config,
    after the spec's own `set:` list (the same overrides, for a spec built on a shared base file)."""
    p = Path(path)
    raw = read_yaml_mapping(p, "sweep spec")
    if isinstance(raw.get("base"), str):  # base: path of a run config, relative to the spec
        raw["base"] = read_yaml_mapping(p.parent / raw["base"], "base config")
    own = raw.pop("set", None) or []
    if not isinstance(own, list) or not all(isinstance(item, str) for item in own):
        raise ValueError(f"sweep spec {str(p)!r}: set must be a list of key=value strings")
    overrides = [*own, *overrides]
    if overrides:
        base = raw.get("base")
        if not isinstance(base, dict):
            raise ValueError(f"sweep spec {str(p)!r}: base must be a mapping or the path of a run config")
        raw["base"] = apply_overrides(copy.deepcopy(base), list(overrides))
    raw.setdefault("name", p.stem)
    return SweepSpec.model_validate(raw)


def spec_digest(spec: SweepSpec) -> str:
    # A spec without an analysis keeps the digest it had before specs could state one.
    return digest(spec.model_dump(mode="json", exclude={"analysis"} if spec.analysis is None else None))
