"""Scores of fine-tuning runs, on the tidy fine-tuning frame (`analysis.frames.GLUE_COLUMNS`), by
suite of tasks:

- `glue`: the paper's GLUE aggregation (defined once, in `symattn.data.metrics`): every table column
  and the GLUE score, in percent;
- `offline`: the offline proxy score, where GLUE is unavailable (on the CPU): the mean over the
  offline tasks a study fine-tuned of each task's headline metric (the one `symattn.data.
  task_registry.TASKS` names: rotten-tomatoes accuracy, sms-spam F1, trec6 accuracy, bbc-news
  accuracy), in percent.

A score exists only where every task of its set has a value: a partial set is never passed off as
the score. Tables give mean and standard deviation (ddof=1) over fine-tuning seeds (and pre-training
runs, where a row pools several).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from symattn.data.metrics import GLUE_COLUMNS as COLUMNS  # the paper's table: column -> (task, metrics)
from symattn.data.metrics import GLUE_SCORE_KEYS, SCORE_METRICS
from symattn.data.task_registry import OFFLINE_TASKS, TASKS

SCORE_COLUMNS = list(GLUE_SCORE_KEYS)  # WNLI is left out of the score
SCORE = "score"
# What keeps one curve of scores apart from another: a run's fine-tunings of two recipes are two.
RUN_KEYS = ["pretrain_run_id", "size", "variant", "seed", "group", "setting", "recipe", "checkpoint_step"]
GLUE_TASKS = tuple(dict.fromkeys(task for task, _ in COLUMNS.values()))
_METRIC_NAMES = {"f1": "F1", "matthews_correlation": "MCC", "pearson": "Pearson", "spearmanr": "Spearman"}


@dataclass(frozen=True)
class Suite:
    """Tasks that make one score: table column -> (task, metrics averaged), and the columns the
    score averages."""

    name: str  # "glue" or "offline"
    columns: dict
    score_columns: tuple

    @property
    def tasks(self) -> tuple:
        return tuple(dict.fromkeys(task for task, _ in self.columns.values()))

    @property
    def short(self) -> str:
        """The score's name, for titles and axis labels: `GLUE score`, `offline proxy score`."""
        return "GLUE score" if self.name == "glue" else "offline proxy score"

    @property
    def label(self) -> str:
        """The score with its definition: `offline proxy score (mean of rotten-tomatoes accuracy,
        sms-spam F1)`; never called GLUE when it is not."""
        return self.short if self.name == "glue" else f"{self.short} ({self.definition})"

    @property
    def definition(self) -> str:
        """`mean of rotten-tomatoes accuracy, sms-spam F1` (GLUE's is the paper's, see the module)."""
        return f"mean of {', '.join(map(self.describe, self.score_columns))}"

    def describe(self, column: str) -> str:
        """A column with its metric: `sms-spam F1`."""
        _, metrics = self.columns[column]
        return f"{column} {' and '.join(_METRIC_NAMES.get(m, m) for m in metrics)}"


GLUE = Suite("glue", COLUMNS, tuple(SCORE_COLUMNS))


def offline_suite(tasks) -> Suite:
    """The offline proxy score over the offline tasks among `tasks` (the study's task set), in the
    registry's order, each scored by its registry metric."""
    present = set(tasks)
    names = [n for n in OFFLINE_TASKS if n in present]
    return Suite("offline", {n: (n, SCORE_METRICS[TASKS[n].metric]) for n in names}, tuple(names))


def suites(tasks) -> list[Suite]:
    """The suites of the fine-tuned `tasks` (names), GLUE first; an offline suite holds every
    offline task among them."""
    tasks = {t for t in tasks if isinstance(t, str)}
    found = [GLUE] if tasks & set(GLUE_TASKS) else []
    if tasks - set(GLUE_TASKS):
        offline = offline_suite(tasks)
        found += [offline] if offline.columns else []
    return found


def suite_of(glue: pd.DataFrame, suite=None) -> Suite:
    """`suite` (a `Suite`, or its name) for the tasks of `glue`; by default GLUE where any GLUE task
    is there (as always), else the offline proxy score."""
    if isinstance(suite, Suite):
        return suite
    found = suites(glue["task"].dropna().unique())
    if suite is None:
        return found[0] if found else GLUE
    named = [s for s in found if s.name == suite]
    if named:
        return named[0]
    if suite not in ("glue", "offline"):
        raise ValueError(f"suite must be 'glue' or 'offline', not {suite!r}")
    return GLUE if suite == "glue" else Suite("offline", {}, ())


def task_scores(glue: pd.DataFrame, keys=None, suite=None) -> pd.DataFrame:
    """One row per fine-tuning run set (`keys` + `finetune_seed`): every table column of the suite
    (`suite_of`) in percent and its score. A missing component leaves its column, and the score,
    NaN: a partial set of tasks is never passed off as the score."""
    suite = suite_of(glue, suite)
    keys = [k for k in (keys or RUN_KEYS) if k in glue] + ["finetune_seed"]
    glue = glue[glue["task"].isin(suite.tasks)]
    if glue.empty:
        return pd.DataFrame(columns=[*keys, *suite.columns, SCORE])
    # groupby keeps runs with a missing key (dropna=False) without pivot_table's cartesian product.
    wide = glue.groupby(keys + ["task", "metric"], dropna=False, sort=False)["value"].mean().unstack("metric")
    by_task = {task: part.droplevel("task") for task, part in wide.groupby(level="task")}
    out = {}
    for column, (task, metrics) in suite.columns.items():
        part = by_task.get(task)
        if part is None or not set(metrics) <= set(part.columns):
            out[column] = pd.Series(dtype=float)
            continue
        out[column] = part[list(metrics)].mean(axis=1, skipna=False) * 100
    frame = pd.DataFrame(out).reindex(columns=list(suite.columns))
    frame[SCORE] = frame[list(suite.score_columns)].mean(axis=1, skipna=False)
    return frame.reset_index()


def with_settings(glue: pd.DataFrame, run_settings: pd.Series, settings: list) -> pd.DataFrame:
    """Fine-tuning rows with a `setting`: their pre-training run's (`run_settings`, by run id) and
    their recipe where recipes differ (`lr=0.002; fine-tuning epochs=3.0`), so that neither two
    pre-training settings nor two fine-tuning recipes are pooled. Rows are ordered by the
    pre-training setting's place in `settings`, then by recipe: the order figures are numbered in."""
    pretrain = glue["pretrain_run_id"].map(run_settings).fillna("")
    recipe = glue["recipe"].fillna("") if "recipe" in glue else pd.Series("", index=glue.index)
    setting = ["; ".join(part for part in pair if part) for pair in zip(pretrain, recipe)]
    rank = pretrain.map({s: i for i, s in enumerate(settings)}).to_numpy()
    order = pd.DataFrame({"s": rank, "r": recipe.to_numpy()}).sort_values(["s", "r"], kind="stable").index
    return glue.assign(setting=setting).iloc[order]


def glue_table(glue: pd.DataFrame, by=("size", "variant"), suite=None) -> pd.DataFrame:
    """Mean and std over fine-tuning seeds (and pre-training runs, where a `by` cell has several)
    of every column and of the score: one row per `by`, columns `<column>` (mean), `<column>_std`,
    `n_seeds` (fine-tuning seeds), `n_runs` (pre-training runs) and `n` (scores)."""
    suite = suite_of(glue, suite)
    scores = task_scores(glue, suite=suite)
    by = [b for b in by if b in scores]
    columns = list(suite.columns) + [SCORE]
    grouped = scores.groupby(by, sort=False)
    mean, std = grouped[columns].mean(), grouped[columns].std(ddof=1)
    table = mean.join(std.add_suffix("_std"))
    table["n_seeds"] = grouped["finetune_seed"].nunique()
    table["n_runs"] = grouped["pretrain_run_id"].nunique()
    table["n"] = grouped[SCORE].count()
    ordered = [c for col in columns for c in (col, f"{col}_std")] + ["n_seeds", "n_runs", "n"]
    return table[ordered].reset_index()


def scores_over_checkpoints(glue: pd.DataFrame, suite=None) -> pd.DataFrame:
    """The suite's score per pre-training run and checkpoint (mean over its fine-tuning seeds that
    have every task; `n_seeds` counts them), sorted by step: the curve that the paper's
    convergence threshold is applied to."""
    scores = task_scores(glue, suite=suite)
    keys = [k for k in RUN_KEYS if k in scores]
    out = (
        scores.groupby(keys, dropna=False, sort=False)
        .agg(score=(SCORE, "mean"), n_seeds=(SCORE, "count"))
        .reset_index()
    )
    return out.dropna(subset=["score"]).sort_values(["pretrain_run_id", "checkpoint_step"], ignore_index=True)


def variant_curves(scores: pd.DataFrame, by=("size", "variant")) -> pd.DataFrame:
    """Per `by` and checkpoint: mean and std (ddof=1) of the score over every pre-training run x
    fine-tuning seed that has one (`task_scores` rows; `scores_over_checkpoints` rows count one per
    run), with `n` (scores), `n_runs` and `n_seeds` (the most fine-tuning seeds of one run)."""
    by = [b for b in by if b in scores]
    scores = scores.dropna(subset=[SCORE])
    per_run = scores.groupby([*by, "checkpoint_step", "pretrain_run_id"], sort=False)[SCORE].count()
    grouped = scores.groupby([*by, "checkpoint_step"], sort=False)
    out = grouped[SCORE].agg(mean="mean", std="std", n="count")
    out["n_runs"] = grouped["pretrain_run_id"].nunique()
    out["n_seeds"] = per_run.groupby(level=[*by, "checkpoint_step"], sort=False).max()
    return out.reset_index().sort_values([*by, "checkpoint_step"], ignore_index=True)


def crossing_brackets(scores: pd.DataFrame, crossings: pd.DataFrame) -> pd.DataFrame:
    """`crossings` (`convergence.glue_crossings`) with the checkpoints around each first crossing:
    `below_step`, the last checkpoint below the threshold before it (NaN when the first checkpoint
    is already across), and `above_step`, the first at or above it (NaN when none is: the run is
    censored at its last checkpoint, `below_step`)."""
    below, above = [], []
    for row in crossings.itertuples():
        run = scores[scores["pretrain_run_id"] == row.pretrain_run_id].sort_values("checkpoint_step")
        steps = run["checkpoint_step"].to_numpy(dtype=float)
        across = np.flatnonzero(run["score"].to_numpy(dtype=float) >= row.threshold)
        if len(across):
            first = across[0]
            below.append(steps[first - 1] if first else np.nan)
            above.append(steps[first])
        else:
            below.append(steps[-1] if len(steps) else np.nan)
            above.append(np.nan)
    return crossings.assign(below_step=below, above_step=above)


def finetune_noise(glue: pd.DataFrame, suite=None) -> pd.DataFrame:
    """Per pre-training run, checkpoint and table column (each task, and the score): the std
    (ddof=1) of the value across fine-tuning seeds and their number `n` (std NaN below 2)."""
    suite = suite_of(glue, suite)
    scores = task_scores(glue, suite=suite)
    keys = [k for k in RUN_KEYS if k in scores]
    columns = list(suite.columns) + [SCORE]
    long = scores.melt(id_vars=keys + ["finetune_seed"], value_vars=columns, var_name="column")
    long = long.dropna(subset=["value"])
    out = long.groupby(keys + ["column"], dropna=False, sort=False)["value"].agg(std="std", n="count")
    order = {c: i for i, c in enumerate(columns)}
    out = out.reset_index()
    return out.sort_values(
        ["pretrain_run_id", "checkpoint_step", "column"],
        key=lambda s: s.map(order) if s.name == "column" else s,
    ).reset_index(drop=True)


def noise_summary(noise: pd.DataFrame, by=("size", "variant")) -> pd.DataFrame:
    """Per `by` and column: the median over checkpoints (and runs) of the fine-tuning-seed std,
    over the cells with 2 seeds or more, with what it rests on: `n_cells` (run x checkpoint cells),
    `n_checkpoints`, `n_runs`, and seeds per cell (`seeds_min`, `seeds_max`)."""
    by = [b for b in by if b in noise]
    usable = noise[noise["n"] >= 2]
    grouped = usable.groupby([*by, "column"], sort=False)
    out = grouped["std"].agg(median_std="median", n_cells="count")
    out["n_checkpoints"] = grouped["checkpoint_step"].nunique()
    out["n_runs"] = grouped["pretrain_run_id"].nunique()
    out["seeds_min"], out["seeds_max"] = grouped["n"].min(), grouped["n"].max()
    return out.reset_index()
