"""A small MLflow store with real runs and known curves, shared by the analysis tests.

Design: size `tiny`, three matched groups (seeds 1-3) of vanilla / symmetric / pairwise, plus a
RUNNING pairwise-diagonal run in group 1 and a FAILED earlier attempt of vanilla seed 1. Every
validation loss is piecewise linear: 9 -> 6 over steps 50-200, a plateau at 6 until step E, a
linear drop to 2 over 400 steps, then 2. Evaluations every 50 steps up to 2000, so every
measure has an exact answer (see `escape`). Group 1 has fine-tuning runs at checkpoints 500,
1000 and 2000 (one seed; two at 2000) with every GLUE component equal to SCORES/100.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import pytest

EXPERIMENT = "symattn-test"
STUDY = "test-study"
LAST = 2000
EVERY = 50
# Step at which each run leaves the plateau; None never does.
ESCAPE = {
    ("pairwise", 1): 400,
    ("pairwise", 2): 450,
    ("pairwise", 3): 500,
    ("symmetric", 1): 600,
    ("symmetric", 2): 650,
    ("symmetric", 3): None,
    ("vanilla", 1): 800,
    ("vanilla", 2): 900,
    ("vanilla", 3): 1000,
}
DIAGONAL_ESCAPE, DIAGONAL_LAST = 700, 1000
# GLUE score (every component x 100) per variant and checkpoint, fine-tuning seed 1; seed 2 at
# checkpoint 2000 scores one point more.
SCORES = {
    "pairwise": {500: 60.0, 1000: 77.0, 2000: 80.0},
    "vanilla": {500: 60.0, 1000: 70.0, 2000: 78.0},
    "symmetric": {500: 60.0, 1000: 70.0, 2000: 74.0},
}
TASK_METRICS = {
    "cola": ["matthews_correlation"],
    "sst2": ["accuracy"],
    "mrpc": ["accuracy", "f1"],
    "stsb": ["pearson", "spearmanr"],
    "qqp": ["accuracy", "f1"],
    "mnli": ["accuracy", "accuracy_mm"],
    "qnli": ["accuracy"],
    "rte": ["accuracy"],
    "wnli": ["accuracy"],
}
# The context-free loss of the runs' validation targets, which every run logs (beside the data's
# expected floor L*, 0.05 higher here): the plateau sits on it.
FLOOR = 6.0
PARAMS = {"vanilla": 1000, "symmetric": 900, "pairwise": 916}
SCHEME = {"vanilla": ("none", "none"), "symmetric": ("none", "none"), "pairwise": ("full", "normal")}


def val_loss(step, escape):
    """The known validation-loss curve of a run leaving the plateau at `escape`."""
    if step <= 200:
        return 9.0 - (step - 50) / 150 * 3
    if escape is None or step <= escape:
        return 6.0
    return max(2.0, 6.0 - (step - escape) / 400 * 4)


def _pretrain(
    client,
    experiment_id,
    attention,
    seed,
    escape,
    last=LAST,
    status="FINISHED",
    scheme=None,
    init=None,
    start=None,
    variant=None,
):
    from mlflow.entities import Metric, Param

    scheme, init = (scheme, init) if scheme else SCHEME[attention]
    tags = {
        "attention": attention,
        "scheme": scheme,
        "init": init,
        "size": "tiny",
        **({"variant": variant} if variant else {}),
        "seed": str(seed),
        "group": f"tiny-s{seed}",
        "study": STUDY,
        "kind": "pretrain",
        "data_fingerprint": "abc123",
        "git_commit": "0" * 40,
    }
    run = client.create_run(
        experiment_id, start_time=start, tags=tags, run_name=f"{attention}-{scheme}-s{seed}"
    )
    total = PARAMS.get(attention, 950)
    params = [
        Param(k, str(v))
        for k, v in {
            "model.size": "tiny",
            "optim.lr": 1e-4,
            "seed": seed,
            "params_total": total,
            "data.context_free_loss": FLOOR + 0.05,
            "data.val_context_free_loss": FLOOR,
            "params_non_embedding": total - 500,
            "params_attention": total - 800,
            "flops_per_token": 6 * total,
        }.items()
    ]
    now = int(time.time() * 1000)
    metrics = [Metric("val/loss", val_loss(s, escape), now, s) for s in range(EVERY, last + 1, EVERY)]
    metrics += [Metric("train/loss", val_loss(s, escape) + 0.1, now, s) for s in range(10, last + 1, 10)]
    metrics += [Metric("train/lr", 1e-4, now, s) for s in range(10, last + 1, 10)]
    metrics += [Metric("diag/layer0/entropy", 1.0 + s / 1000, now, s) for s in range(100, last + 1, 100)]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def _finetune(client, experiment_id, parent, checkpoint, seed, task, score):
    from mlflow.entities import Metric

    tags = {
        "kind": "finetune",
        "pretrain_run_id": parent,
        "checkpoint_step": str(checkpoint),
        "task": task,
        "finetune_seed": str(seed),
        "study": STUDY,
    }
    run = client.create_run(experiment_id, tags=tags)
    value = 0.5 if task == "wnli" else score / 100
    metrics = [Metric(f"eval/{m}", value, 0, 100) for m in TASK_METRICS[task]]
    metrics.append(Metric("eval/loss", 0.7, 0, 100))  # not a GLUE metric: ignored
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id)


def build_store(directory) -> dict:
    """Create the store (once: sqlite stores must not be created concurrently); return its facts."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{directory}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    # Artifacts (none are logged) would default to ./mlartifacts: keep the store self-contained.
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=f"file://{directory}/artifacts")
    ids = {}
    start = int(time.time() * 1000)
    # An earlier failed attempt of the vanilla seed-1 cell, which the retry supersedes.
    failed = _pretrain(
        client, experiment_id, "vanilla", 1, 800, last=300, status="FAILED", start=start - 60_000
    )
    for (attention, seed), escape in ESCAPE.items():
        ids[(attention, seed)] = _pretrain(client, experiment_id, attention, seed, escape, start=start)
    diagonal = _pretrain(
        client,
        experiment_id,
        "pairwise",
        1,
        DIAGONAL_ESCAPE,
        last=DIAGONAL_LAST,
        status="RUNNING",
        scheme="diagonal",
        init="identity",
        start=start,
        variant="pairwise-diagonal-identity",
    )
    for attention, by_step in SCORES.items():
        for checkpoint, score in by_step.items():
            for task in TASK_METRICS:
                _finetune(client, experiment_id, ids[(attention, 1)], checkpoint, 1, task, score)
                if checkpoint == LAST:
                    _finetune(client, experiment_id, ids[(attention, 1)], checkpoint, 2, task, score + 1)
    return {
        "uri": uri,
        "experiment": EXPERIMENT,
        "study": STUDY,
        "ids": ids,
        "failed": failed,
        "diagonal": diagonal,
    }


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    # sqlite commits a transaction per MLflow call; in memory (tmpfs) the store builds ~3x faster.
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        directory = tempfile.mkdtemp(prefix="symattn-analysis-", dir="/dev/shm")
        yield build_store(directory)
        shutil.rmtree(directory, ignore_errors=True)
    else:
        yield build_store(tmp_path_factory.mktemp("mlflow-store"))


@pytest.fixture(scope="session")
def loaded(store):
    from analysis import mlflow_runs

    return mlflow_runs.load_runs(store["experiment"], store["uri"], metrics=("val/loss", "train/*", "diag/*"))


def expected_escape(attention, seed, margin=0.25):
    """Escape with a margin below the floor: the loss falls 1 per 100 steps after leaving 6, so it
    reaches 6 - margin 100 * margin steps after the plateau ends."""
    escape = ESCAPE[(attention, seed)]
    return math.nan if escape is None else escape + 100 * margin


def curve_of(escape, last=LAST):
    steps = np.arange(EVERY, last + 1, EVERY, dtype=float)
    return steps, np.array([val_loss(s, escape) for s in steps])


@pytest.fixture(scope="session")
def known():
    """The store's design and helpers (test modules cannot import conftest under importlib mode)."""
    names = [
        "EXPERIMENT",
        "STUDY",
        "LAST",
        "EVERY",
        "ESCAPE",
        "FLOOR",
        "DIAGONAL_ESCAPE",
        "DIAGONAL_LAST",
        "SCORES",
        "TASK_METRICS",
        "PARAMS",
        "val_loss",
        "curve_of",
        "expected_escape",
    ]
    return SimpleNamespace(**{name: globals()[name] for name in names})


ESCAPES = {"vanilla": 400, "symmetric": 300, "pairwise": 200}  # variant -> step it leaves the plateau


def plateau_loss(step: int, escape: int | None) -> float:
    """6.0 on the plateau until `escape` (None: to the end), then down to 2.0 at 0.01 a step."""
    return 6.0 if escape is None or step <= escape else max(2.0, 6.0 - (step - escape) / 100)


def matched_group(
    client,
    exp_id: str,
    size: str = "tiny",
    seed: int = 0,
    lift: float = 0.0,
    parent: str | None = None,
    study: str | None = None,
    escapes: dict | None = None,
) -> list[str]:
    """Three finished runs of one matched group in a real store, with known validation curves
    (each leaves the plateau at its ESCAPES step, or as `escapes` says, None for never; `lift`
    raises every loss); their run ids."""
    from mlflow.entities import Metric, Param

    from symattn import keys

    ids = []
    for variant, escape in {**ESCAPES, **(escapes or {})}.items():
        tags = {
            keys.KIND: keys.PRETRAIN,
            keys.ATTENTION: variant,
            keys.SCHEME: "none",
            keys.INIT: "none",
            keys.VARIANT: variant,
            keys.SIZE: size,
            keys.SEED: str(seed),
            keys.GROUP: f"{size}-s{seed}",
            **({keys.STUDY: study, keys.PARENT_RUN_ID: parent} if study else {}),
        }
        run_id = client.create_run(exp_id, tags=tags, run_name=f"{size}-{variant}-s{seed}").info.run_id
        params = [Param("params_total", "1000"), Param(keys.VAL_FLOOR, "6.0")]
        metrics = [Metric(keys.VAL_LOSS, plateau_loss(s, escape) + lift, 0, s) for s in range(50, 1001, 50)]
        client.log_batch(run_id, metrics=metrics, params=params)
        client.set_terminated(run_id)
        ids.append(run_id)
    return ids
