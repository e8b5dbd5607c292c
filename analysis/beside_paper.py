"""A study's runs and the paper's imported runs in one list, by escape step.

`symattn figures NAME` writes it (`beside_the_paper.csv`/`.md`) when the store holds the runs of
`symattn import acl2024`. Each escape is in its own run's optimizer steps (the paper's steps are of
256 x 512 tokens, ours of the study's batch) and from the floor its run names (`escape_floor`): the
list orders runs, it does not compare speeds, and it is exploratory.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import frames, mlflow_runs
from symattn import keys
from symattn.convergence import TARGETS_FLOOR, floor_tag

NOTE = (
    "Exploratory: each escape is in its own run's steps and from the floor it names; sizes, data and "
    "batches differ, so the order is not a comparison of speed. Censored runs (never escaped) last, "
    "by their last evaluation."
)


def _floor(run) -> str:
    """What the run's escape is measured from: its tag, or (a run made before runs named it) its
    validation targets' floor from its params."""
    if keys.ESCAPE_FLOOR in run.data.tags:
        return run.data.tags[keys.ESCAPE_FLOOR]
    level = run.data.params.get(keys.VAL_FLOOR)
    return floor_tag(TARGETS_FLOOR, float(level)) if level is not None else ""


def _row(client, run, source: str) -> dict:
    from symattn.sweep.search import run_escape

    tags = run.data.tags
    try:  # as the run recorded it, else measured again from its curve (a run of an earlier version)
        censored, low, step = run_escape(client, run)
    except ValueError:  # no floor recorded: nothing to measure from
        censored, low, step = True, math.nan, math.nan
    return {
        "source": source,
        "run": run.info.run_name,
        "size": tags.get(keys.SIZE),
        "variant": tags.get(keys.VARIANT),
        "seed": tags.get(keys.SEED),
        "escape": tags.get(keys.ESCAPE, ""),
        "escape_step": math.nan if censored else step,
        "censored": censored,
        "bound": low,
        "floor": _floor(run),
    }


def table(client, name: str, run_ids) -> pd.DataFrame | None:
    """The study `name`'s runs (`run_ids`) and the paper's pre-training runs, escaped ones first by
    escape step, then censored ones by bound; None when the store holds no paper runs."""
    experiment = client.get_experiment_by_name(frames.PAPER_NAME)
    if experiment is None or experiment.lifecycle_stage != "active":
        return None
    paper = mlflow_runs.search_runs(client, frames.PAPER_NAME, {keys.KIND: keys.PRETRAIN})
    if not paper:
        return None
    ours = [client.get_run(run_id) for run_id in run_ids]
    rows = [_row(client, run, name) for run in ours] + [_row(client, run, frames.PAPER_NAME) for run in paper]
    frame = pd.DataFrame(rows)
    order = frame["escape_step"].where(~frame["censored"], frame["bound"])
    return (
        frame.assign(_order=order).sort_values(["censored", "_order"], kind="stable").drop(columns="_order")
    )
