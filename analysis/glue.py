"""The paper's GLUE aggregation (defined once, in `symattn.data.metrics`), on the tidy GLUE frame
(`analysis.frames.GLUE_COLUMNS`): every table column and the GLUE score in percent. Tables give
mean and standard deviation (ddof=1) over fine-tuning seeds.
"""

from __future__ import annotations

import pandas as pd

from symattn.data.metrics import GLUE_COLUMNS as COLUMNS  # the paper's table: column -> (task, metrics)
from symattn.data.metrics import GLUE_SCORE_KEYS

SCORE_COLUMNS = list(GLUE_SCORE_KEYS)  # WNLI is left out of the score
SCORE = "score"
RUN_KEYS = ["pretrain_run_id", "size", "variant", "seed", "group", "checkpoint_step"]


def task_scores(glue: pd.DataFrame, keys=None) -> pd.DataFrame:
    """One row per fine-tuning run set (`keys` + `finetune_seed`): every table column in percent and
    the GLUE score. A missing component leaves its column, and the score, NaN: a partial set of
    tasks is never passed off as a GLUE score."""
    keys = [k for k in (keys or RUN_KEYS) if k in glue] + ["finetune_seed"]
    # groupby keeps runs with a missing key (dropna=False) without pivot_table's cartesian product.
    wide = glue.groupby(keys + ["task", "metric"], dropna=False, sort=False)["value"].mean().unstack("metric")
    by_task = {task: part.droplevel("task") for task, part in wide.groupby(level="task")}
    out = {}
    for column, (task, metrics) in COLUMNS.items():
        part = by_task.get(task)
        if part is None or not set(metrics) <= set(part.columns):
            out[column] = pd.Series(dtype=float)
            continue
        out[column] = part[list(metrics)].mean(axis=1, skipna=False) * 100
    frame = pd.DataFrame(out).reindex(columns=list(COLUMNS))
    frame[SCORE] = frame[SCORE_COLUMNS].mean(axis=1, skipna=False)
    return frame.reset_index()


def glue_table(glue: pd.DataFrame, by=("size", "variant")) -> pd.DataFrame:
    """Mean and std over fine-tuning seeds of every column and of the score: one row per `by`,
    columns `<column>` (mean), `<column>_std`, and `n_seeds`."""
    scores = task_scores(glue)
    by = list(by)
    columns = list(COLUMNS) + [SCORE]
    grouped = scores.groupby(by, sort=False)[columns]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    table = mean.join(std.add_suffix("_std"))
    table["n_seeds"] = scores.groupby(by, sort=False)["finetune_seed"].nunique()
    ordered = [c for col in columns for c in (col, f"{col}_std")] + ["n_seeds"]
    return table[ordered].reset_index()


def scores_over_checkpoints(glue: pd.DataFrame) -> pd.DataFrame:
    """GLUE score per pre-training run and checkpoint (mean over its fine-tuning seeds), sorted by
    step: the curve that the paper's convergence threshold is applied to."""
    scores = task_scores(glue)
    keys = [k for k in RUN_KEYS if k in scores]
    out = (
        scores.groupby(keys, dropna=False, sort=False)
        .agg(score=(SCORE, "mean"), n_seeds=("finetune_seed", "nunique"))
        .reset_index()
    )
    return out.dropna(subset=["score"]).sort_values(["pretrain_run_id", "checkpoint_step"], ignore_index=True)
