"""The paper's published results as MLflow runs (`symattn import acl2024`), in the shape of our own.

The experiment `acl2024` gets one pre-training run per published model (BERT-base and -small x
vanilla, symmetric, pairwise; one seed), tagged as `symattn train` tags its runs (kind, size,
attention, variant, seed, group), with its parameter count as a param and its validation loss as
the metric history `val/loss` by optimizer step; and one fine-tuning run per published GLUE
fine-tuning (one `eval_results.json` of the authors), as `symattn finetune` writes them: kind
`finetune`, a child of its pre-training run, tagged with the checkpoint step, task and fine-tuning
seed, every value as `eval/<metric>`. Two series of fine-tunings exist, apart: the final models with
5 seeds (`glue_final_5seeds.csv`) and the base models over checkpoints with one
(`glue_over_checkpoints.csv`); the tag `imported_file` says which.

Every run is tagged `imported_from=acl2024` and with an `imported_id`; a second import adds only
what is missing (a run left unfinished by an interrupted import is replaced, a second run of one
result is removed). An import checks and writes under the store's lock, the one every writer of a
sqlite store takes (`symattn.tracking.store`), so imports started at once take turns and the later finds
the earlier's runs. Imported runs carry no config hash, checkpoint or kept weights: nothing can
resume or fine-tune them.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis import convergence, frames, mlflow_runs, paper_results
from analysis.paths import REFERENCE_DIR
from symattn import keys
from symattn.convergence import CURVE_FLOOR, escape_metrics, floor_tag, headline_escape
from symattn.naming import finetune_cell_name

PAPER = frames.PAPER_NAME
COMMAND = f"symattn import {PAPER}"
REPOSITORY = "mcrts/ACL2024-SymmetricAttentionBert"
EXPERIMENT_NOTE = (
    "The published results of Courtois et al., *Symmetric Dot-Product Attention for Efficient "
    "Training of BERT Language Models* (Findings of ACL 2024), imported by `symattn import acl2024` "
    "from `analysis/reference/acl2024/` (the authors' raw results, MIT licence, from "
    f"`{REPOSITORY}`); nothing was re-computed.\n\n"
    "- Six pre-training runs (BERT-base and BERT-small x vanilla, symmetric, pairwise; one seed), "
    "with their validation loss by optimizer step (`val/loss`) and their parameter count.\n"
    "- Their GLUE dev results as fine-tuning runs, children of their pre-training run: the final "
    "(200K-step) models with 5 fine-tuning seeds (tag `imported_file` = `glue_final_5seeds.csv`), "
    "and the base models over pre-training checkpoints with one (`glue_over_checkpoints.csv`).\n\n"
    "`symattn figures acl2024 --from-mlflow` draws the paper's figures and tables from these runs."
)
_STAMP = re.compile(r"(\d{8}-\d{6})")
# The pre-training run's tags its fine-tuning runs carry, as `symattn finetune` copies them.
_INHERITED = (keys.VARIANT, keys.ATTENTION, keys.SCHEME, keys.INIT, keys.SIZE, keys.SEED, keys.GROUP)


@dataclass
class ImportResult:
    experiment_id: str
    created: int  # runs written by this import (created + kept: every result)
    kept: int  # complete runs found from an earlier import
    replaced: int  # of `created`: results whose run an interrupted import left unfinished, written again
    seconds: float
    duplicates: int = 0  # further runs of a result already held (or of a removed run's children): deleted

    def counts(self) -> str:
        """`762 runs imported, 0 already there`, and what was deleted, only where something was."""
        text = f"{self.created} run{'' if self.created == 1 else 's'} imported, {self.kept} already there"
        if self.replaced:
            text += f", {self.replaced} unfinished {'one' if self.replaced == 1 else 'ones'} replaced"
        if self.duplicates:
            text += f", {self.duplicates} duplicate{'' if self.duplicates == 1 else 's'} removed"
        return text


def _millis(stamp: str) -> int:
    """`20240204-093411` (the authors' run names; the time zone is not recorded: read as UTC)."""
    return int(datetime.strptime(stamp, "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc).timestamp() * 1000)


def _pretrain_starts(reference_dir: Path) -> dict[str, int]:
    """The start time of each pre-training run, from the authors' run names in the loss files."""
    starts = {}
    for size in ("base", "small"):
        header = pd.read_csv(Path(reference_dir) / f"validation_loss_bert_{size}.csv", nrows=0).columns
        for column in header:
            match = paper_results._LOSS_COLUMN.match(column)
            if match:
                stamp = _STAMP.search(column).group(1)
                starts[paper_results._paper_run_id(match["size"], match["variant"])] = _millis(stamp)
    return starts


@dataclass
class _Run:
    """One run to write: its identity and everything it records."""

    imported_id: str
    name: str
    start: int
    tags: dict
    params: dict
    metrics: list  # (key, value, step)
    parent: str | None = None  # the imported id of its pre-training run


def _pretrain_runs(reference_dir: Path) -> list[_Run]:
    runs = paper_results.paper_runs()
    curves = paper_results.paper_curves(reference_dir=reference_dir)
    starts = _pretrain_starts(reference_dir)
    floors = convergence.curve_floors(curves, runs)  # the paper's data cannot give a floor
    out = []
    for row in runs.itertuples(index=False):
        row = row._asdict()
        steps, loss = frames.curve(curves, row["run_id"])
        escape = headline_escape(steps, loss, floors[row["run_id"]])
        tags = {
            keys.KIND: keys.PRETRAIN,
            **{k: str(row[k]) for k in (keys.SIZE, keys.ATTENTION, keys.SCHEME, keys.INIT, keys.VARIANT)},
            keys.SEED: str(row[keys.SEED]),
            keys.GROUP: row[keys.GROUP],
            keys.IMPORTED_FILE: f"validation_loss_bert_{row['size']}.csv",
            keys.ESCAPE: str(escape),
            keys.ESCAPE_FLOOR: floor_tag(CURVE_FLOOR, floors[row["run_id"]]),
            keys.NOTE: (
                f"BERT-{row['size']}, {row['variant']} attention: the paper's pre-training run "
                f"(one seed, {paper_results.PAPER_FINAL_STEP:,} steps), imported by `{COMMAND}`; "
                f"validation loss every 250 steps from `analysis/reference/acl2024/"
                f"validation_loss_bert_{row['size']}.csv`, parameter count as published."
            ),
        }
        curve = curves[curves["run_id"] == row["run_id"]]
        out.append(
            _Run(
                imported_id=row["run_id"],
                name=row["run_name"],
                start=starts[row["run_id"]],
                tags=tags,
                params={"params_total": int(row["params_total"])},
                metrics=[
                    *((keys.VAL_LOSS, v, s) for s, v in zip(curve["step"].tolist(), curve["value"].tolist())),
                    *((key, value, int(steps[-1])) for key, value in escape_metrics(escape).items()),
                ],
            )
        )
    return out


def _metric_name(raw: str) -> str:
    """`eval_accuracy_mm` (HF's `run_glue`) -> `eval/accuracy_mm`, as `symattn finetune` names it."""
    return keys.EVAL_PREFIX + raw.removeprefix("eval_") if raw.startswith("eval_") else raw


def _finetune_runs(reference_dir: Path, parents: dict[str, _Run]) -> list[_Run]:
    out = []
    for series, file in paper_results.PAPER_GLUE_FILES.items():
        raw = pd.read_csv(Path(reference_dir) / file)
        if "checkpoint_step" not in raw:
            raw["checkpoint_step"] = paper_results.PAPER_FINAL_STEP
        # One run per eval_results.json of the authors: a (model, checkpoint, task, seed).
        for source, part in raw.groupby("source", sort=False):
            first = part.iloc[0]
            size, variant, task = first["size"], first["variant"], first["task"]
            step, seed = int(first["checkpoint_step"]), int(first["finetune_seed"])
            parent = parents[paper_results._paper_run_id(size, variant)]
            inherited = {k: parent.tags[k] for k in _INHERITED}
            tags = {
                keys.KIND: keys.FINETUNE,
                **inherited,
                keys.CHECKPOINT_STEP: str(step),
                keys.TASK: task,
                keys.FINETUNE_SEED: str(seed),
                keys.IMPORTED_FILE: file,
                keys.NOTE: (
                    f"The paper's GLUE dev results of {task} (fine-tuning seed {seed}) on BERT-{size} "
                    f"{variant} at pre-training step {step:,}, imported by `{COMMAND}` from "
                    f"`analysis/reference/acl2024/{file}`, whose rows came from the authors' "
                    f"`{source}` ({REPOSITORY})."
                ),
            }
            stamp = _STAMP.findall(source)
            out.append(
                _Run(
                    imported_id=f"{PAPER}/{series}/{size}/{variant}/step{step}/{task}/ft{seed}",
                    name=finetune_cell_name(parent.name, step, task, seed),
                    start=_millis(stamp[-1]) if stamp else parent.start,
                    tags=tags,
                    params={},
                    metrics=[(_metric_name(m), float(v), 0) for m, v in zip(part["metric"], part["value"])],
                    parent=parent.imported_id,
                )
            )
    return out


def paper_runs_to_import(reference_dir: Path = REFERENCE_DIR) -> list[_Run]:
    """Every run of the import, pre-training runs first, read and checked before any store is
    opened."""
    pretrain = _pretrain_runs(reference_dir)
    return pretrain + _finetune_runs(reference_dir, {run.imported_id: run for run in pretrain})


def _write(client, exp_id: str, run: _Run, parent_id: str | None) -> str:
    """One run in three calls: created with its tags, its values in batches, then FINISHED."""
    from mlflow.entities import Metric, Param

    tags = {
        **run.tags,
        keys.IMPORTED_FROM: PAPER,
        keys.IMPORTED_ID: run.imported_id,
        keys.SOURCE_NAME: COMMAND,
        keys.SOURCE_TYPE: keys.LOCAL_SOURCE,
    }
    if parent_id is not None:
        tags[keys.PRETRAIN_RUN_ID] = parent_id
        tags[keys.PARENT_RUN_ID] = parent_id
    run_id = client.create_run(exp_id, start_time=run.start, tags=tags, run_name=run.name).info.run_id
    metrics = [Metric(key, float(value), run.start, int(step)) for key, value, step in run.metrics]
    params = [Param(k, str(v)) for k, v in run.params.items()]
    for i in range(0, max(1, len(metrics)), 999):  # at most 1,000 values per batch, params included
        client.log_batch(run_id, metrics=metrics[i : i + 999], params=params if i == 0 else [])
    client.update_run(run_id, status="FINISHED")  # no end time: the published results give no duration
    return run_id


def _complete_with(client, found, run: _Run) -> None:
    """A run of an earlier import gets what this version records and it lacks (the escape tags and
    metrics of a pre-training run)."""
    from mlflow.entities import Metric, RunTag

    tags = [RunTag(k, v) for k, v in run.tags.items() if k not in found.data.tags]
    metrics = [
        Metric(key, float(value), run.start, int(step))
        for key, value, step in run.metrics
        if key.startswith(keys.ESCAPE) and key not in found.data.metrics
    ]
    if tags or metrics:
        client.log_batch(found.info.run_id, metrics=metrics, tags=tags)


def import_paper(tracking_uri: str | None = None, reference_dir: Path = REFERENCE_DIR) -> ImportResult:
    """Import the paper's results into the experiment `acl2024` of the store (created if needed),
    adding only the runs it does not hold complete yet. Everything is read and checked first."""
    from filelock import FileLock

    from symattn.paths import check_uri, sqlite_path
    from symattn.tracking.store import open_store
    from symattn.tracking.ui_view import ClientStore, cell_filter, write_view

    uri = check_uri(tracking_uri)
    todo = paper_runs_to_import(reference_dir)
    started = time.perf_counter()
    client = open_store(uri)
    db = sqlite_path(uri)
    # Another store (a server, PostgreSQL) has no such lock: imports at once there may both write,
    # and the next import removes the duplicates.
    with FileLock(f"{db}.lock") if db else nullcontext():
        exp_id, created, kept, replaced, duplicates = _import(client, todo)
        write_view(ClientStore(client), exp_id, PAPER, "The paper's pre-training runs", cell_filter())
    return ImportResult(exp_id, created, kept, replaced, time.perf_counter() - started, duplicates)


def _import(client, todo: list[_Run]) -> tuple[str, int, int, int, int]:
    """The check-and-write: (experiment id, created, kept, replaced, duplicates)."""
    from mlflow.entities import ViewType

    from symattn.tracking.store import experiment_id

    exp_id = experiment_id(client, PAPER, EXPERIMENT_NOTE)
    existing = mlflow_runs._paged(
        client.search_runs,
        experiment_ids=[exp_id],
        filter_string=f"tags.`{keys.IMPORTED_FROM}` = '{PAPER}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1000,
    )
    # Of several complete runs of one result, the one kept is the one most runs name as their
    # parent (so its fine-tuning runs stay), then the earliest: never a coin toss of run ids.
    children = Counter(r.data.tags.get(keys.PRETRAIN_RUN_ID) for r in existing)
    by_id: dict[str, list] = {}
    for found in sorted(existing, key=lambda r: (-children[r.info.run_id], r.info.start_time, r.info.run_id)):
        by_id.setdefault(found.data.tags.get(keys.IMPORTED_ID), []).append(found)
    done, kept, created, replaced, duplicates = {}, 0, 0, 0, 0
    for run in todo:  # pre-training runs first: a fine-tuning run's parent is settled before it
        found = by_id.get(run.imported_id, [])
        parent = done.get(run.parent) if run.parent else None
        complete = [
            r
            for r in found
            if r.info.status == "FINISHED"
            and (parent is None or r.data.tags.get(keys.PRETRAIN_RUN_ID) == parent)
        ]
        for other in found:
            if not complete or other is not complete[0]:
                client.delete_run(other.info.run_id)
        if complete:
            _complete_with(client, complete[0], run)
            done[run.imported_id] = complete[0].info.run_id
            kept += 1
            duplicates += len(found) - 1
            continue
        # An unfinished run of an interrupted import is replaced; any other run is a duplicate
        # (a complete run under a removed parent).
        unfinished = any(r.info.status != "FINISHED" for r in found)
        replaced += unfinished
        duplicates += len(found) - unfinished
        done[run.imported_id] = _write(client, exp_id, run, parent)
        created += 1
    return exp_id, created, kept, replaced, duplicates
