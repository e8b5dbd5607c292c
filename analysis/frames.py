"""Tidy frames: the shape every source of runs is read into, and the selections a report makes.

Every source gives the same `Frames` (our runs from MLflow: `analysis.mlflow_runs`; the paper's
published results: `analysis.paper_results`; an earlier report's export: `analysis.export`):
- `runs`: one row per run (attributes: variant, size, seed, matched group, parameter counts, state);
- `curves`: one row per run x metric x step (`run_id, metric, step, value`);
- `glue`: fine-tuning results (GLUE or offline tasks, `analysis.glue` scores each suite) of the
  final checkpoints, one row per metric value
  (`pretrain_run_id, size, variant, seed, group, checkpoint_step, finetune_seed, recipe, task, metric,
  value`; `recipe` names the fine-tuning recipe where the runs' recipes differ, see
  `mlflow_runs.recipe_labels`);
- `glue_checkpoints`: the same for every pre-training checkpoint that was fine-tuned.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from symattn import keys

# The name the paper's results go by: their frames' source and their MLflow experiment.
PAPER_NAME = "acl2024"

# Tags and params read from every run (names: `symattn.keys`).
TAG_COLUMNS = [
    keys.KIND,
    keys.STUDY,
    keys.SIZE,
    keys.ATTENTION,
    keys.SCHEME,
    keys.INIT,
    keys.SEED,
    keys.GROUP,
    keys.DATA_FINGERPRINT,
    keys.GIT_COMMIT,
    keys.PRETRAIN_RUN_ID,
    keys.CHECKPOINT_STEP,
    keys.STOPPED_EARLY_AT,
    keys.STOPPED_AT_STEP,
    keys.EXTENDED_TO,
    keys.CELL,
    keys.TASK,
    keys.FINETUNE_SEED,
]
COUNT_COLUMNS = [*keys.PARAM_COUNTS, keys.FLOPS_PER_TOKEN]
RUN_COLUMNS = (
    ["run_id", "experiment_id", "run_name", "state", "start_time", "end_time", keys.VARIANT]
    + TAG_COLUMNS
    + COUNT_COLUMNS
)
CURVE_COLUMNS = ["run_id", "metric", "step", "value"]
GLUE_COLUMNS = [
    "pretrain_run_id",
    "size",
    "variant",
    "seed",
    "group",
    "checkpoint_step",
    "finetune_seed",
    "recipe",
    "task",
    "metric",
    "value",
]
# Metric names as the HF GLUE script writes them, without their `eval_` / `eval/` prefix; they hold
# every metric a task's score averages (`symattn.data.metrics.SCORE_METRICS`), offline tasks' too.
GLUE_METRICS = {
    "accuracy",
    "accuracy_mm",
    "f1",
    "matthews_correlation",
    "pearson",
    "spearmanr",
    "combined_score",
}
INT_COLUMNS = [keys.SEED, keys.CHECKPOINT_STEP, keys.FINETUNE_SEED]


@dataclass
class Frames:
    runs: pd.DataFrame
    curves: pd.DataFrame
    glue: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=GLUE_COLUMNS))
    glue_checkpoints: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=GLUE_COLUMNS))
    source: str = ""


def _missing(value) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or str(value).strip().lower() in {"", "none", "nan", "null", "<na>"}
    )


def to_ints(df: pd.DataFrame) -> pd.DataFrame:
    """Seeds, steps and counts as nullable integers, in place (every reader's last step)."""
    for column in INT_COLUMNS:
        if column in df:
            df[column] = pd.to_numeric(df[column], errors="coerce").astype("Int64")
    # Counts stay integers even where some runs (fine-tuning ones) lack them.
    for column in COUNT_COLUMNS:
        if column in df:
            values = pd.to_numeric(df[column], errors="coerce")
            whole = values.dropna()
            df[column] = values.astype("Int64") if (whole == whole.round()).all() else values
    return df


def canonical_metric(name: str) -> str:
    """`eval_accuracy_mm` (HF) and `eval/accuracy_mm` (our runs) both become `accuracy_mm`."""
    return re.sub(r"^eval[_/]", "", name)


def final_checkpoints(glue: pd.DataFrame) -> pd.DataFrame:
    """Rows of each pre-training run's last fine-tuned checkpoint (per recipe)."""
    if glue.empty:
        return glue
    by = ["pretrain_run_id", "recipe"] if "recipe" in glue else ["pretrain_run_id"]
    last = glue.groupby(by, dropna=False)["checkpoint_step"].transform("max")
    keep = (glue["checkpoint_step"] == last).fillna(False) | last.isna()
    return glue[keep.astype(bool)].reset_index(drop=True)


# ---------------------------------------------------------------- selection

_STATE_RANK = {"FINISHED": 0, "RUNNING": 1, "KILLED": 2, "FAILED": 3}


def one_run_per_cell(runs: pd.DataFrame, states=None) -> pd.DataFrame:
    """One run per design cell (matched group x variant; size x seed x variant without groups):
    a retried cell keeps its best attempt (finished before running before killed before failed),
    then its latest. `states` keeps only runs in those states."""
    if states is not None:
        runs = runs[runs["state"].isin(states)]
    if runs.empty:
        return runs
    cell = (
        runs["group"]
        .astype("string")
        .fillna(runs["size"].astype("string") + "/" + runs["seed"].astype("string"))
    )
    ranked = runs.assign(_cell=cell, _rank=runs["state"].map(_STATE_RANK).fillna(4))
    if "start_time" in ranked and ranked["start_time"].notna().any():
        ranked = ranked.sort_values("start_time", ascending=False, kind="stable")
    ranked = ranked.sort_values("_rank", kind="stable")
    kept = ranked.drop_duplicates(["_cell", "variant"], keep="first")
    return kept.drop(columns=["_cell", "_rank"]).sort_index().reset_index(drop=True)


def as_at(data: Frames, step: int) -> Frames:
    """The runs as they stood at `step`, e.g. an extended study at its first budget: every curve
    cut there, an early stop after it undone, and no wall-clock for a run that went on past it
    (its time up to the step is not recorded). Fine-tuning scores are kept as they are."""
    before = pd.to_numeric(data.curves["step"]) <= step
    curves = data.curves[before]
    runs = data.runs.copy()
    if keys.STOPPED_EARLY_AT in runs:
        later = pd.to_numeric(runs[keys.STOPPED_EARLY_AT], errors="coerce") > step
        runs[keys.STOPPED_EARLY_AT] = runs[keys.STOPPED_EARLY_AT].mask(later)
    went_on = data.curves.loc[~before, "run_id"].unique()
    if "end_time" in runs:
        runs["end_time"] = runs["end_time"].mask(runs["run_id"].isin(went_on))
    return Frames(runs, curves, data.glue, data.glue_checkpoints, data.source)


# Run params that change results (symattn.config), minus what a matched group or a seed varies and
# what follows from other settings; a design's settings are the values of these that differ.
_RESULT_PARAMS = ("param.model.", "param.data.", "param.optim.", "param.eval.")
_NOT_A_SETTING = (
    "param.model.attention.",
    "param.data.seed",
    "param.model.vocab_size",
    *(f"param.{key}" for key in (keys.DATA_FLOOR, keys.UNIGRAM_ENTROPY, keys.VAL_FLOOR)),
)


def setting_labels(runs: pd.DataFrame) -> pd.Series:
    """Per run, the design setting it belongs to besides its attention variant and seed, as
    `key=value` pairs of the settings that differ between the runs (e.g. `lr=0.002,
    init_std=0.049`); "" for every run when they all share one setting. Runs of different
    settings must never be pooled as one variant."""
    columns = [c for c in runs.columns if c.startswith(_RESULT_PARAMS) and not c.startswith(_NOT_A_SETTING)]
    varying = [c for c in columns if runs[c].astype(str).nunique(dropna=False) > 1]
    names = {c: c.rsplit(".", 1)[-1] for c in varying}
    if len(set(names.values())) < len(names):  # same last part in two blocks: keep the block
        names = {c: c[len("param.") :] for c in varying}
    labels = (
        [
            ", ".join(f"{names[c]}={v}" for c, v in zip(varying, row))
            for row in runs[varying].astype(str).itertuples(index=False)
        ]
        if varying
        else [""] * len(runs)
    )
    return pd.Series(labels, index=runs.index, name="setting")


def curve(curves: pd.DataFrame, run_id: str, metric: str = keys.VAL_LOSS) -> tuple:
    """(steps, values) of one run's metric, sorted by step."""
    one = curves[(curves["run_id"] == run_id) & (curves["metric"] == metric)].sort_values("step")
    return one["step"].to_numpy(dtype=float), one["value"].to_numpy(dtype=float)
