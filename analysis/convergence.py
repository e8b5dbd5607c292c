"""Steps to convergence over a set of runs: every run under every definition of
`symattn.convergence` (the measure of one curve) as one table, censored outcomes kept as what is
known of them, and the crossing steps of fine-tuning scores over checkpoints.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from analysis.frames import curve
from symattn import keys
from symattn.convergence import (
    MARGINS,
    PATIENCE,
    WINDOW,
    Convergence,
    baseline_target,
    escape_definition,
    plateau_escape,
    plateau_level,
    steps_to_target,
    threshold_crossing,
)


def curve_floors(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """One plateau level per data set (size) for runs whose data's floor cannot be computed (the
    paper's): the median of the runs' own plateau levels (`plateau_level`)."""
    levels = {}
    for run_id in runs["run_id"]:
        steps, loss = curve(curves, run_id)
        levels[run_id] = plateau_level(steps, loss) if len(steps) else float("nan")
    levels = pd.Series(levels)
    by_size = runs.set_index("run_id")["size"]
    return levels.groupby(by_size).transform("median")


def describe_definition(name: str) -> str:
    """A title for a definition id of `convergence_table` / `glue_report.crossings_as_convergence`."""
    if match := re.fullmatch(r"escape_([\d.]+)", name):
        return f"escape: floor \u2212 {match[1]}"
    if name == "plateau_escape":
        return "plateau escape (each curve's own level)"
    if name == "baseline_final":
        return "baseline's final loss"
    if match := re.fullmatch(r"baseline_([\d.]+)pct", name):
        return f"{match[1]}% of baseline's improvement"
    if match := re.fullmatch(r"loss<=([\d.]+)", name):
        return f"loss \u2264 {match[1]}"
    if match := re.fullmatch(r"(glue|offline)>=([\d.]+)%_(\S+)", name):
        score = "GLUE" if match[1] == "glue" else "offline proxy score"
        return f"{score} \u2265 {match[2]}% of {match[3]}'s final"
    return name


# What a measure says of one run (`Convergence`), as columns.
OUTCOME_COLUMNS = ["step", "bound", "censored", "status", "low", "high"]
RESULT_COLUMNS = ["run_id", "size", "variant", "seed", "group", "definition", *OUTCOME_COLUMNS, "target"]


def _outcome(result: Convergence) -> dict:
    return {column: getattr(result, column) for column in OUTCOME_COLUMNS}


def _row(run, definition: str, result: Convergence) -> dict:
    return {
        "run_id": run.run_id,
        "size": run.size,
        "variant": run.variant,
        "seed": run.seed,
        "group": run.group,
        "definition": definition,
        **_outcome(result),
        "target": result.target,
    }


def convergence_table(
    curves: pd.DataFrame,
    runs: pd.DataFrame,
    floors=None,
    metric: str = keys.VAL_LOSS,
    baseline: str = "vanilla",
    margins=MARGINS,
    thresholds=(),
    fractions=(1.0, 0.9),
    window: int = WINDOW,
    patience: int = PATIENCE,
) -> pd.DataFrame:
    """Steps to convergence of every run under every loss-based definition, one row per run x
    definition: `escape_<m>` for each margin m (the loss falls m below its data's floor L*, see
    `plateau_escape`), `loss<=T` for each threshold T, and `baseline_final` / `baseline_<p>pct`
    (the matched baseline run's final loss, or p% of its improvement).

    `floors` maps run id to the floor of the run's data (a dict or Series; "curve" asks for each
    curve's own plateau level); runs without one get no escape rows. The baseline is the
    `baseline` variant of the same matched group; groups without one are skipped for those
    definitions."""
    floors = {} if floors is None else dict(floors)
    rows = []
    columns = ["run_id", "size", "variant", "seed", "group"]
    table = runs[columns].astype(object).where(runs[columns].notna(), None)
    for run in table.itertuples(index=False):
        steps, loss = curve(curves, run.run_id, metric)
        if len(steps) == 0:
            continue
        floor = floors.get(run.run_id)
        if floor is not None and not (isinstance(floor, float) and math.isnan(floor)):
            for margin in margins:
                rows.append(
                    _row(
                        run,
                        escape_definition(margin),
                        plateau_escape(steps, loss, floor, margin, window, patience),
                    )
                )
        for threshold in thresholds:
            rows.append(
                _row(run, f"loss<={threshold:g}", steps_to_target(steps, loss, threshold, window, patience))
            )
        base = table[(table["group"] == run.group) & (table["variant"] == baseline)]
        if run.group is None or base.empty:
            continue
        base_steps, base_loss = curve(curves, base.iloc[0]["run_id"], metric)
        if len(base_steps) == 0:
            continue
        for fraction in fractions:
            name = "baseline_final" if fraction == 1 else f"baseline_{fraction * 100:g}pct"
            target = baseline_target(base_steps, base_loss, fraction)
            rows.append(_row(run, name, steps_to_target(steps, loss, target, window, patience)))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def glue_crossings(scores: pd.DataFrame, reference: str = "pairwise", fraction: float = 0.95) -> pd.DataFrame:
    """The paper's measure: per pre-training run, the first checkpoint step at which its GLUE score
    crosses `fraction` of the final score of the `reference` variant of its matched group,
    interpolated between checkpoints. `scores` has one row per run x checkpoint (`glue.
    scores_over_checkpoints`). Columns: run and group keys, threshold, step, bound, censored,
    status, low, high."""
    rows = []
    for group, part in scores.groupby("group", sort=False, dropna=False):
        ref = part[part["variant"] == reference].sort_values("checkpoint_step")
        if ref.empty:
            continue
        threshold = fraction * float(ref["score"].iloc[-1])
        for run_id, run in part.groupby("pretrain_run_id", sort=False):
            result = threshold_crossing(run["checkpoint_step"], run["score"], threshold, "up")
            first = run.iloc[0]
            rows.append(
                {
                    "pretrain_run_id": run_id,
                    "size": first["size"],
                    "variant": first["variant"],
                    "seed": first["seed"],
                    "group": group,
                    "threshold": threshold,
                    **_outcome(result),
                }
            )
    return pd.DataFrame(
        rows, columns=["pretrain_run_id", "size", "variant", "seed", "group", "threshold", *OUTCOME_COLUMNS]
    )
