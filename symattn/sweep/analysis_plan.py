"""A study's analysis, stated before its cells run: the primary endpoint, the comparisons, the
correction for multiplicity, and every secondary endpoint with what defines it (a loss "at step N"
names N). A spec gives it as its `analysis:` block:

    analysis:
      name: primary                      # an analysis of the study is known by its name
      endpoint: {measure: escape, margin: 0.25}   # escape from the floor, as a time to event
      comparisons:                       # [arm, reference], by attention label (`symattn params`)
        - [symmetric, vanilla]
        - [pairwise, vanilla]
      correction: holm                   # holm (the default), bonferroni, or none
      alpha: 0.05
      secondary:
        - {measure: loss_at_step, step: 3000}
      equivalence: {hazard_ratio: 1.5}   # only with it may a comparison conclude "equivalent"

`symattn queue` records the block in the study (`register`). Once a cell has started, the block of
that name is fixed: a changed block is refused in one line, unless it takes a new name, and then it
is recorded as a second analysis of the same runs, with the number of cells that had started
before it was stated, so that the report labels it exploratory.
"""

from __future__ import annotations

import time
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from symattn.config import digest

ANALYSES = "analyses"  # the study's user attribute: {name: registration}


class Endpoint(BaseModel):
    """The primary endpoint: the step at which a run's validation loss leaves its floor by
    `margin` nats (and stays there), a time to event; a run that never did is censored at its
    last evaluation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measure: Literal["escape"] = Field("escape", description="escape as a time to event")
    margin: float = Field(0.25, gt=0, description="nats below the run's floor that count as escaped")


class Secondary(BaseModel):
    """A secondary endpoint, everything that defines it fixed in advance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measure: Literal["loss_at_step"] = Field(description="the validation loss at a step")
    step: int = Field(ge=1, description="an evaluated step; paired within matched groups")


class Equivalence(BaseModel):
    """The margin within which two arms count as equivalent: a hazard ratio whose interval lies
    inside [1 / hazard_ratio, hazard_ratio]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hazard_ratio: float = Field(gt=1, description="equivalent: its interval inside [1/HR, HR]")


class AnalysisPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        "primary", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="a changed analysis needs a new name"
    )
    endpoint: Endpoint = Field(default_factory=Endpoint, description="the primary endpoint")
    comparisons: list[tuple[str, str]] = Field(
        min_length=1, description="[arm, reference] pairs of attention labels"
    )
    correction: Literal["holm", "bonferroni", "none"] = Field("holm", description="over the comparisons")
    alpha: float = Field(0.05, gt=0, lt=1, description="the level each adjusted p is read at")
    secondary: list[Secondary] = Field(default_factory=list, description="secondary endpoints")
    equivalence: Optional[Equivalence] = Field(None, description="the only way a comparison reads equivalent")

    @model_validator(mode="after")
    def _check(self) -> "AnalysisPlan":
        if self.equivalence is not None and self.alpha < 0.025:
            raise ValueError(
                "analysis.equivalence is judged with the 95% interval (two one-sided tests at 0.025 each); "
                "give alpha of at least 0.025, or drop equivalence"
            )
        for arm, reference in self.comparisons:
            if arm == reference:
                raise ValueError(f"analysis.comparisons compares {arm!r} with itself; name two arms")
        pairs = [frozenset(c) for c in self.comparisons]
        if len(set(pairs)) != len(pairs):
            raise ValueError("analysis.comparisons names a pair twice; give each comparison once")
        steps = [s.step for s in self.secondary]
        if len(set(steps)) != len(steps):
            raise ValueError("analysis.secondary names a step twice; give each endpoint once")
        return self

    def arms(self) -> list[str]:
        return sorted({label for pair in self.comparisons for label in pair})

    def check_cells(self, cells) -> None:
        """Refuse comparisons of arms the design does not have, and a loss at a step its runs do
        not evaluate (before `max_steps`, on the evaluation grid)."""
        labels = sorted({cell.config.model.attention.label for cell in cells})
        missing = [arm for arm in self.arms() if arm not in labels]
        if missing:
            raise ValueError(
                f"analysis.comparisons names the arm {missing[0]!r}, which no cell has; the arms are "
                f"{', '.join(labels)}"
            )
        for s in self.secondary:
            for cell in cells:
                optim, every = cell.config.optim, cell.config.eval.every_n_steps
                if s.step > optim.max_steps or s.step % every:
                    raise ValueError(
                        f"analysis.secondary loss_at_step {s.step}: cell {cell.name} evaluates every "
                        f"{every} steps up to {optim.max_steps}; give a step it evaluates"
                    )

    def smallest_adjusted_p(self, groups: int) -> float:
        """The smallest p-value a comparison over `groups` matched groups can give, after the
        correction over the comparisons (exact two-sided sign test: 2 / 2^n)."""
        m = len(self.comparisons) if self.correction != "none" else 1
        return min(1.0, 2.0 / 2.0**groups * m)

    def reach_warning(self, cells) -> str:
        """A warning where no result could reach `alpha`: too few matched groups for the number of
        comparisons (empty otherwise)."""
        groups = len({cell.group for cell in cells})
        smallest = self.smallest_adjusted_p(groups)
        if smallest < self.alpha:
            return ""
        return (
            f"warning: analysis {self.name!r}: {groups} matched groups give an exact p of "
            f"{2.0 / 2.0**groups:.3g} at best, {smallest:.3g} after {self.correction} over "
            f"{len(self.comparisons)} comparisons: no comparison can reach p < {self.alpha:g}; add "
            "seeds or state fewer comparisons"
        )

    def digest(self) -> str:
        return digest(self.model_dump(mode="json"))


def _started(study) -> int:
    return sum(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False))


def check_registration(study, plan: Optional[AnalysisPlan]) -> None:
    """Refuse (ValueError) a changed plan of a name that `study`'s cells have run under; writes
    nothing, so that a refused `queue` leaves the study as it was."""
    if plan is None:
        return
    known = registered(study).get(plan.name)
    if known is None or known["digest"] == plan.digest():
        return
    started = _started(study)
    if started:
        raise ValueError(
            f"analysis {plan.name!r} of study {study.study_name} was stated before its cells ran and "
            f"{started} have started since; restore it as it was, or give the new block another "
            "analysis.name to record it as a second analysis (reported as exploratory)"
        )


def register(study, plan: Optional[AnalysisPlan], cells=()) -> Optional[dict]:
    """Record `plan` in the Optuna `study` (its user attribute `analyses`), after
    `check_registration`, with the ids of the pre-training `cells` it is stated for (a cell's id is
    its config's hash: a run of another cell departs from the plan). Returns its registration."""
    if plan is None:
        return None
    check_registration(study, plan)
    analyses = registered(study)
    known = analyses.get(plan.name)
    if known is not None and known["digest"] == plan.digest():
        return known
    started = _started(study)
    analyses[plan.name] = {
        "plan": plan.model_dump(mode="json"),
        "digest": plan.digest(),
        "registered_at": time.time(),
        "cells_started": started,  # 0: stated before any result existed (pre-registered)
        "cells": sorted({cell.id for cell in cells}),
    }
    study.set_user_attr(ANALYSES, analyses)
    return analyses[plan.name]


def registered(study) -> dict[str, dict]:
    """The analyses recorded in `study`, by name."""
    return dict(study.user_attrs.get(ANALYSES, {}))


def pre_registered(registration: dict) -> bool:
    return registration["cells_started"] == 0
