"""Our runs, read from an MLflow store into tidy frames (`analysis.frames.Frames`).

`load_runs` reads one experiment or study: its pre-training runs (`runs_frame`), their metric
histories (`metrics_frame`) and the fine-tuning runs started from them (`glue_frame`, each with its
recipe: `recipe_labels`). The paper's imported runs are read with the same readers
(`analysis.paper_results.imported_paper_frames`).
"""

from __future__ import annotations

import fnmatch
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from analysis.frames import (
    COUNT_COLUMNS,
    CURVE_COLUMNS,
    GLUE_COLUMNS,
    GLUE_METRICS,
    RUN_COLUMNS,
    TAG_COLUMNS,
    Frames,
    canonical_metric,
    final_checkpoints,
    to_ints,
)
from symattn import keys
from symattn.config import current_params
from symattn.model.variants import variant_label
from symattn.paths import default_tracking_uri


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
    return to_ints(frame.reindex(columns=RUN_COLUMNS + extra))


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
    return to_ints(pd.DataFrame(rows, columns=GLUE_COLUMNS))


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
