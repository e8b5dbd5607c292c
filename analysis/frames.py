"""Tidy frames from MLflow runs and from the paper's published results.

Both sources produce the same `Frames`:
- `runs`: one row per run (attributes: variant, size, seed, matched group, parameter counts, state);
- `curves`: one row per run x metric x step (`run_id, metric, step, value`);
- `glue`: fine-tuning results (GLUE or offline tasks, `analysis.glue` scores each suite) of the
  final checkpoints, one row per metric value
  (`pretrain_run_id, size, variant, seed, group, checkpoint_step, finetune_seed, recipe, task, metric,
  value`; `recipe` names the fine-tuning recipe where the runs' recipes differ, see `recipe_labels`);
- `glue_checkpoints`: the same for every pre-training checkpoint that was fine-tuned.
"""

from __future__ import annotations

import fnmatch
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.paths import REFERENCE_DIR
from symattn import keys
from symattn.config import current_params
from symattn.paths import default_tracking_uri
from symattn.variants import COEFFICIENT_INITS, COEFFICIENT_SCHEMES, variant_label

PAPER_NAME = "acl2024"

# The paper's pairwise coefficients: one full d_h x d_h matrix per head, initialised with torch.randn.
DEFAULT_SCHEME, DEFAULT_INIT = COEFFICIENT_SCHEMES[0], COEFFICIENT_INITS[0]

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

# Parameter counts of BertForMaskedLM as published with the paper (Courtois et al., ACL Findings 2024).
PAPER_PARAMS = {
    ("base", "vanilla"): 109_514_298,
    ("base", "symmetric"): 102_427_194,
    ("base", "pairwise"): 103_017_018,
    ("small", "vanilla"): 28_795_194,
    ("small", "symmetric"): 27_744_570,
    ("small", "pairwise"): 27_875_642,
}
PAPER_VARIANTS = ("vanilla", "symmetric", "pairwise")
PAPER_FINAL_STEP = 200_000
# The GLUE dev results: the final models (5 fine-tuning seeds), the base models over checkpoints (1).
PAPER_GLUE_FILES = {"final": "glue_final_5seeds.csv", "checkpoints": "glue_over_checkpoints.csv"}


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


def _number(text):
    """A param value as int or float when it is one, else the string."""
    if not isinstance(text, str):
        return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _to_ints(df: pd.DataFrame) -> pd.DataFrame:
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


# ---------------------------------------------------------------- the paper's published results


def _paper_run_id(size: str, variant: str) -> str:
    return f"{PAPER_NAME}/{size}/{variant}"


def paper_runs(sizes=("base", "small")) -> pd.DataFrame:
    """The paper's six pre-training runs (one seed per variant and size) as a runs frame."""
    rows = []
    for size in sizes:
        for variant in PAPER_VARIANTS:
            pairwise = variant == "pairwise"
            rows.append(
                {
                    "run_id": _paper_run_id(size, variant),
                    "experiment_id": PAPER_NAME,
                    "run_name": f"bert_{size}_{variant}",
                    "state": "FINISHED",
                    "kind": keys.PRETRAIN,
                    "study": PAPER_NAME,
                    "size": size,
                    "attention": variant,
                    "scheme": DEFAULT_SCHEME if pairwise else "none",
                    "init": DEFAULT_INIT if pairwise else "none",
                    "variant": variant,
                    "seed": 1,
                    "group": f"{PAPER_NAME}/{size}",
                    "params_total": PAPER_PARAMS[(size, variant)],
                }
            )
    return _to_ints(pd.DataFrame(rows).reindex(columns=RUN_COLUMNS))


_LOSS_COLUMN = re.compile(r"^bert_(?P<size>[a-z]+)_(?P<variant>[a-z]+)_[\d-]+ - eval/loss$")


def paper_curves(sizes=("base", "small"), reference_dir: Path = REFERENCE_DIR) -> pd.DataFrame:
    """The paper's evaluation-loss curves as a curves frame (metric `val/loss`)."""
    parts = []
    for size in sizes:
        raw = pd.read_csv(Path(reference_dir) / f"validation_loss_bert_{size}.csv")
        # The exported "Step" counts tracker log calls, not optimizer steps: each 250 optimizer
        # steps gave 10 training logs and 1 evaluation, so evaluation k sits at tracker step
        # 11k - 1. The file's last row (tracker step 8801) re-evaluates the final model and is
        # left out, as the authors' plotting notebook does.
        tracker = raw["Step"].astype(int)
        keep = (tracker + 1) % 11 == 0
        steps = (tracker[keep] + 1) // 11 * 250
        for column in raw.columns:
            match = _LOSS_COLUMN.match(column)
            if match:
                parts.append(
                    pd.DataFrame(
                        {
                            "run_id": _paper_run_id(match["size"], match["variant"]),
                            "metric": keys.VAL_LOSS,
                            "step": steps.to_numpy(),
                            "value": raw.loc[keep, column].astype(float).to_numpy(),
                        }
                    )
                )
    curves = pd.concat(parts, ignore_index=True)
    curves["step"] = curves["step"].astype("int64")
    return curves[CURVE_COLUMNS]


def canonical_metric(name: str) -> str:
    """`eval_accuracy_mm` (HF) and `eval/accuracy_mm` (our runs) both become `accuracy_mm`."""
    return re.sub(r"^eval[_/]", "", name)


def paper_glue(which: str = "final", reference_dir: Path = REFERENCE_DIR) -> pd.DataFrame:
    """The paper's GLUE dev results: `final` (200K-step models, 5 fine-tuning seeds, base and small)
    or `checkpoints` (base models along pre-training, 1 fine-tuning seed)."""
    raw = pd.read_csv(Path(reference_dir) / PAPER_GLUE_FILES[which])
    raw["metric"] = raw["metric"].map(canonical_metric)
    raw = raw[raw["metric"].isin(GLUE_METRICS)].copy()
    if "checkpoint_step" not in raw:
        raw["checkpoint_step"] = PAPER_FINAL_STEP
    raw["pretrain_run_id"] = [_paper_run_id(s, v) for s, v in zip(raw["size"], raw["variant"])]
    raw["seed"] = 1
    raw["group"] = PAPER_NAME + "/" + raw["size"]
    raw["recipe"] = ""  # one recipe, the paper's
    return _paper_glue_order(_to_ints(raw[GLUE_COLUMNS]))


def _paper_glue_order(glue: pd.DataFrame) -> pd.DataFrame:
    """The paper's fine-tuning rows in one order, whichever source they were read from."""
    by = ["size", "variant", "checkpoint_step", "finetune_seed", "task", "metric"]
    return glue.sort_values(by, kind="stable").reset_index(drop=True)


def paper_frames(reference_dir: Path = REFERENCE_DIR) -> Frames:
    return Frames(
        runs=paper_runs(),
        curves=paper_curves(reference_dir=reference_dir),
        glue=paper_glue("final", reference_dir),
        glue_checkpoints=paper_glue("checkpoints", reference_dir),
        source=PAPER_NAME,
    )


# ---------------------------------------------------------------- MLflow


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The given URI, else the training code's default ($MLFLOW_TRACKING_URI, else the project's
    local store `mlflow.db`)."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        # Reading must never create (and migrate) an empty store as a side effect.
        if not path.exists():
            raise FileNotFoundError(f"no MLflow store at {path.resolve()} ({uri})")
    return uri


def client(tracking_uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))


def _paged(call, **kwargs) -> list:
    items, token = [], None
    while True:
        page = call(page_token=token, **kwargs)
        items.extend(page)
        token = page.token
        if not token:
            return items


def search_runs(mlflow_client, name: str | None = None, tags: dict | None = None) -> list:
    """Runs of the experiment called `name`; if there is none, runs tagged `study=name` in any
    experiment (a sweep names its experiment after its study, but runs may be logged elsewhere).
    `tags` narrows the search (`{"kind": "pretrain", "size": "small"}`)."""
    from mlflow.entities import ViewType

    experiments = _paged(mlflow_client.search_experiments, view_type=ViewType.ACTIVE_ONLY, max_results=1000)
    by_name = {e.name: e.experiment_id for e in experiments}
    filters = dict(tags or {})
    if name is None:
        ids = list(by_name.values())
    elif name in by_name:
        ids = [by_name[name]]
    else:
        ids = list(by_name.values())
        filters[keys.STUDY] = name
    if not ids:
        return []
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in filters.items())
    runs = _paged(
        mlflow_client.search_runs,
        experiment_ids=ids,
        filter_string=query,
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1000,
    )
    if name is not None and not runs and name not in by_name:
        raise LookupError(f"no experiment and no study named {name!r} in {mlflow_client.tracking_uri}")
    return runs


def runs_frame(runs: list) -> pd.DataFrame:
    """Attributes of MLflow runs, one row per run; params other than the counts become `param.<name>`."""
    rows = []
    for run in runs:
        tags, params = run.data.tags, current_params(run.data.params)
        row = {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "run_name": run.info.run_name,
            "state": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(run.info.end_time, unit="ms", utc=True)
            if run.info.end_time
            else pd.NaT,
        }
        row.update({tag: tags.get(tag) for tag in TAG_COLUMNS})
        row[keys.KIND] = row[keys.KIND] or keys.PRETRAIN
        # The training code tags its own label; runs without one get the same rule here.
        row[keys.VARIANT] = tags.get(keys.VARIANT) or variant_label(
            row[keys.ATTENTION], row[keys.SCHEME], row[keys.INIT]
        )
        row.update({count: _number(params[count]) for count in COUNT_COLUMNS if count in params})
        row.update({f"param.{k}": _number(v) for k, v in params.items() if k not in COUNT_COLUMNS})
        rows.append(row)
    frame = pd.DataFrame(rows)
    extra = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    return _to_ints(frame.reindex(columns=RUN_COLUMNS + extra))


def _matches(key: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def metrics_frame(
    mlflow_client, runs: list, metrics=(keys.VAL_LOSS,), max_workers: int | None = None
) -> pd.DataFrame:
    """Full histories of the metrics matching `metrics` (glob patterns, e.g. `diag/*`)."""
    patterns = [metrics] if isinstance(metrics, str) else list(metrics)
    jobs = [
        (run.info.run_id, key) for run in runs for key in sorted(run.data.metrics) if _matches(key, patterns)
    ]
    if max_workers is None:
        # A local sqlite store answers fastest serially; a tracking server gains from threads.
        max_workers = 1 if mlflow_client.tracking_uri.startswith(("sqlite:", "file:", "/")) else 8

    def history(job):
        run_id, key = job
        return [
            (run_id, key, m.step, m.value, m.timestamp) for m in mlflow_client.get_metric_history(run_id, key)
        ]

    if max_workers > 1:
        with ThreadPoolExecutor(max_workers) as pool:
            parts = list(pool.map(history, jobs))
    else:
        parts = [history(job) for job in jobs]
    frame = pd.DataFrame([row for part in parts for row in part], columns=CURVE_COLUMNS + ["timestamp"])
    # A resumed run may log a step twice: the later value wins.
    frame = frame.sort_values(["run_id", "metric", "step", "timestamp"], kind="stable").drop_duplicates(
        ["run_id", "metric", "step"], keep="last"
    )
    frame["step"] = frame["step"].astype("int64")
    frame["value"] = frame["value"].astype(float)
    return frame[CURVE_COLUMNS].reset_index(drop=True)


# A fine-tuning run's params (`symattn finetune` logs its config as `finetune.<key>`) that are not
# its recipe: what a design varies per run (task, seed), what follows from the task (total_steps),
# and what does not change results (threads, eval_batch_size) or says where data is (glue_dir).
_NOT_RECIPE = ("task", "seed", "total_steps", "threads", "eval_batch_size", "glue_dir")
RECIPE_PREFIX = "finetune."


def recipe_labels(finetune_runs: list) -> dict[str, str]:
    """Per fine-tuning run id, its recipe as the recipe settings that differ between the runs
    (`fine-tuning epochs=3.0, lr=2e-05`; `unrecorded` for a run that did not log one); "" for
    every run when they share one recipe. Runs of different recipes must never be pooled."""
    recipes = {
        run.info.run_id: {
            key[len(RECIPE_PREFIX) :]: value
            for key, value in run.data.params.items()
            if key.startswith(RECIPE_PREFIX) and key[len(RECIPE_PREFIX) :] not in _NOT_RECIPE
        }
        for run in finetune_runs
    }
    names = sorted({key for recipe in recipes.values() for key in recipe})
    varying = [k for k in names if len({recipe.get(k) for recipe in recipes.values()}) > 1]
    if not varying:
        return dict.fromkeys(recipes, "")
    return {
        run_id: "fine-tuning " + ", ".join(f"{k}={recipe.get(k, 'unrecorded')}" for k in varying)
        for run_id, recipe in recipes.items()
    }


def glue_frame(finetune_runs: list, pretrain: pd.DataFrame) -> pd.DataFrame:
    """Final eval metrics of fine-tuning runs, keyed by the pre-training run they started from,
    with their recipe (`recipe_labels`)."""
    attrs = pretrain.set_index("run_id") if len(pretrain) else pd.DataFrame()
    recipes = recipe_labels(finetune_runs)
    rows = []
    for run in finetune_runs:
        tags = run.data.tags
        parent = tags.get(keys.PRETRAIN_RUN_ID)
        # Attributes come from the pre-training run; the run's own tags stand in if it is absent.
        source = (
            attrs.loc[parent]
            if parent in attrs.index
            else {
                "size": tags.get(keys.SIZE),
                "seed": tags.get(keys.SEED),
                "group": tags.get(keys.GROUP),
                "variant": tags.get(keys.VARIANT)
                or variant_label(tags.get(keys.ATTENTION), tags.get(keys.SCHEME), tags.get(keys.INIT)),
            }
        )
        for key, value in run.data.metrics.items():
            metric = canonical_metric(key)
            if key.startswith(("eval/", "eval_")) and metric in GLUE_METRICS:
                rows.append(
                    {
                        "pretrain_run_id": parent,
                        "size": source["size"],
                        "variant": source["variant"],
                        "seed": source["seed"],
                        "group": source["group"],
                        "checkpoint_step": tags.get(keys.CHECKPOINT_STEP),
                        "finetune_seed": tags.get(keys.FINETUNE_SEED),
                        "recipe": recipes[run.info.run_id],
                        "task": tags.get(keys.TASK),
                        "metric": metric,
                        "value": float(value),
                    }
                )
    return _to_ints(pd.DataFrame(rows, columns=GLUE_COLUMNS))


def final_checkpoints(glue: pd.DataFrame) -> pd.DataFrame:
    """Rows of each pre-training run's last fine-tuned checkpoint (per recipe)."""
    if glue.empty:
        return glue
    by = ["pretrain_run_id", "recipe"] if "recipe" in glue else ["pretrain_run_id"]
    last = glue.groupby(by, dropna=False)["checkpoint_step"].transform("max")
    keep = (glue["checkpoint_step"] == last).fillna(False) | last.isna()
    return glue[keep.astype(bool)].reset_index(drop=True)


def load_runs(
    name: str | None, tracking_uri: str | None = None, metrics=(keys.VAL_LOSS,), tags: dict | None = None
) -> Frames:
    """Frames of the runs of an experiment or study `name` (see `search_runs`)."""
    mlflow_client = client(tracking_uri)
    found = search_runs(mlflow_client, name, tags)
    runs = runs_frame(found)
    if runs.empty:
        return Frames(runs=runs, curves=pd.DataFrame(columns=CURVE_COLUMNS), source=name or "")
    # By kind: a sweep's study run (kind `study`, the parent of its cells' runs) is neither.
    kinds = dict(zip(runs["run_id"], runs[keys.KIND]))
    pretrain_ids = {run_id for run_id, kind in kinds.items() if kind == keys.PRETRAIN}
    pretrain_runs = [r for r in found if r.info.run_id in pretrain_ids]
    finetune_runs = [r for r in found if kinds[r.info.run_id] == keys.FINETUNE]
    pretrain = runs[runs["run_id"].isin(pretrain_ids)].reset_index(drop=True)
    glue = glue_frame(finetune_runs, pretrain)
    return Frames(
        runs=pretrain,
        curves=metrics_frame(mlflow_client, pretrain_runs, metrics),
        glue=final_checkpoints(glue),
        glue_checkpoints=glue,
        source=name or "",
    )


def imported_paper_frames(tracking_uri: str | None = None) -> Frames:
    """`paper_frames` from the paper's runs imported into MLflow (`symattn import acl2024`), read
    as our own runs are (`search_runs`, `runs_frame`, `metrics_frame`, `glue_frame`): the same
    frames but for the run ids, which are the MLflow runs'. The final fine-tunings and those over
    checkpoints are told apart by the reference file each run was imported from."""
    mlflow_client = client(tracking_uri)
    imported = {keys.IMPORTED_FROM: PAPER_NAME}
    try:
        pretrain = search_runs(mlflow_client, PAPER_NAME, {**imported, keys.KIND: keys.PRETRAIN})
    except LookupError:
        pretrain = []
    if len(pretrain) != len(PAPER_PARAMS) or any(r.info.status != "FINISHED" for r in pretrain):
        raise LookupError(
            f"{len(pretrain)} of the paper's {len(PAPER_PARAMS)} pre-training runs are imported in "
            f"{mlflow_client.tracking_uri}; import them with: symattn import {PAPER_NAME} "
            f"--tracking-uri {mlflow_client.tracking_uri}"
        )
    order = {run_id: i for i, run_id in enumerate(paper_runs()["run_id"])}
    pretrain.sort(key=lambda run: order[run.data.tags[keys.IMPORTED_ID]])
    runs = runs_frame(pretrain)

    def glue_of(file: str) -> pd.DataFrame:
        found = search_runs(
            mlflow_client, PAPER_NAME, {**imported, keys.KIND: keys.FINETUNE, keys.IMPORTED_FILE: file}
        )
        return _paper_glue_order(glue_frame(found, runs))

    return Frames(
        runs=runs,
        curves=metrics_frame(mlflow_client, pretrain),
        glue=glue_of(PAPER_GLUE_FILES["final"]),
        glue_checkpoints=glue_of(PAPER_GLUE_FILES["checkpoints"]),
        source=PAPER_NAME,
    )


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
