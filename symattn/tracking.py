"""MLflow: store set-up, experiments, run creation and lookup for resume, and what a run records.

Metrics are buffered and written in one batch when a checkpoint is written, so the store never holds
a step that a resumed run will compute again: a resumed curve has no duplicated or missing steps.
Each point keeps the time it was logged, not the time it was written, so MLflow's time axes are true.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Optional

from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from symattn import keys
from symattn.paths import check_uri, project_root, sqlite_path

PACKAGES = ("symattn", "torch", "pytorch-lightning", "mlflow", "optuna", "tokenizers", "numpy")
_BATCH = 100  # MLflow's limit of params per log_batch call is 100


def open_store(uri: Optional[str] = None) -> MlflowClient:
    """A client on the store, created or migrated now, not mid-run. Two processes creating or
    migrating one sqlite file at once crash, so for a sqlite store they take turns."""
    uri = check_uri(uri)
    db = sqlite_path(uri)
    with FileLock(f"{db}.lock") if db else nullcontext():
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates or migrates the schema
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created if needed. A sqlite store keeps its artifacts beside it, in
    mlartifacts/ next to the database file (the default store: at the project root)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} is deleted; restore it or pick another tracking.experiment"
            )
        return exp.experiment_id
    db = sqlite_path(client.tracking_uri)
    location = (db.resolve().parent / "mlartifacts" / name).as_uri() if db else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another worker created it first
        return client.get_experiment_by_name(name).experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def kept_checkpoints(run) -> dict[int, dict]:
    """The weights an MLflow run kept (`checkpoint.keep`), by step: {"path", "sha256"}."""
    prefix = keys.KEPT_CHECKPOINT_PREFIX
    return {
        int(tag[len(prefix) :]): json.loads(value)
        for tag, value in run.data.tags.items()
        if tag.startswith(prefix)
    }


def find_resumable_run(client: MlflowClient, exp_id: str, config_hash: str) -> Optional[str]:
    """The newest unfinished run of this exact config in the experiment, if any."""
    runs = client.search_runs(
        [exp_id],
        filter_string=f"tags.config_hash = '{config_hash}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


class RunTracker:
    """One MLflow run: buffered metrics written in batches, final status, artifacts. `seconds` is
    the time spent in its calls so far, which is what tracking costs the training loop."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.pending: list[Metric] = []  # not yet in the store
        self.floor: dict[str, int] = {}  # per metric: steps up to here are already in the store
        self.seconds = 0.0

    @contextmanager
    def _timed(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    @classmethod
    def create(
        cls, client: MlflowClient, exp_id: str, run_name: Optional[str], tags: dict, params: dict
    ) -> "RunTracker":
        run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
        tracker = cls(client, run.info.run_id)
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            client.log_batch(tracker.run_id, params=items[i : i + _BATCH])
        return tracker

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Buffers the points (a few microseconds, counted in `seconds`); `flush` writes them."""
        start = time.perf_counter()
        now = int(time.time() * 1000)
        self.pending.extend(
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if step > self.floor.get(k, -1) or k.startswith(keys.TIME_PREFIX)
        )
        self.seconds += time.perf_counter() - start

    def flush(self) -> None:
        if not self.pending:
            return
        with self._timed():
            for i in range(0, len(self.pending), 1000):
                self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
            self.pending = []

    def set_resume_floor(self) -> None:
        """On resume: points at or before the last step the store holds for a metric are dropped.
        They are recomputed from the checkpoint (identically) and were logged before the stop."""
        run = self.client.get_run(self.run_id)
        self.floor = {
            key: max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)
            for key in run.data.metrics
        }

    def set_tags(self, tags: dict[str, str]) -> None:
        with self._timed():
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def set_status(self, status: str) -> None:
        with self._timed():
            if status == "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                self.client.set_terminated(self.run_id, status=status)

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def _param_value(v) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."
